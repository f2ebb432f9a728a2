//! The `hilot` binary itself: start-up failures and draining on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::fresh_database;

const HILOT: &str = env!("CARGO_BIN_EXE_hilot");

#[test]
fn a_bad_database_url_exits_non_zero_with_one_clear_line() {
    let output = Command::new(HILOT)
        .arg("serve")
        .env(
            "DATABASE_URL",
            "postgres://nobody:secret@127.0.0.1:1/nowhere",
        )
        .env("HILOT_BIND", "127.0.0.1:0")
        .env_remove("REDIS_URL")
        .output()
        .expect("hilot runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains("cannot connect to PostgreSQL"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "the password leaked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = Command::new(HILOT)
        .arg("serve")
        .env("DATABASE_URL", "not a url")
        .output()
        .expect("hilot runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn serve_drains_on_sigterm_and_exits_zero() {
    let (_, db_url) = fresh_database().await;
    let port = free_port();
    let mut child = Command::new(HILOT)
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("HILOT_BIND", format!("127.0.0.1:{port}"))
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hilot starts");

    let client = reqwest::Client::new();
    let ready_url = format!("http://127.0.0.1:{port}/health/ready");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(&ready_url).send().await {
            if r.status().is_success() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "server never became ready");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(code) = child.try_wait().unwrap() {
            exited = Some(code);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("hilot did not exit after SIGTERM")
    });
    assert!(code.success(), "exit status {code}");
    assert!(
        client.get(&ready_url).send().await.is_err(),
        "still listening"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
