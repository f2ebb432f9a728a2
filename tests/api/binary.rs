//! The real `hilot` binary, started, stopped and killed as an operator (or a crash) would, and a
//! private PostgreSQL cluster that a test may restart without disturbing the others.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const HILOT: &str = env!("CARGO_BIN_EXE_hilot");

/// How long a server (or a cluster) may take to come up on a machine busy with the suite.
const READY_PATIENCE: Duration = Duration::from_secs(90);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `hilot serve` in a child process, on its own port.
pub struct Binary {
    child: Child,
    pub port: u16,
}

impl Binary {
    /// Starts `hilot serve` on `db_url`, single-node, with generous frame limits, plus `env`.
    pub fn start(db_url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(HILOT);
        command
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("HILOT_BIND", format!("127.0.0.1:{port}"))
            .env("HILOT_SOCKET_FRAMES_PER_S", "10000")
            .env("HILOT_SOCKET_FRAME_BURST", "10000")
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // For diagnosis: HILOT_TEST_BINARY_LOG=/some/file keeps the server's log.
        if let Ok(path) = std::env::var("HILOT_TEST_BINARY_LOG") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("the log file opens");
            command.stdout(file.try_clone().unwrap()).stderr(file);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("hilot starts");
        Self { child, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        crate::sockets::ws_url(self.port, path, token)
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + READY_PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hilot exited before it was ready: {status}");
            }
            if let Ok(r) = client.get(self.url("/health/ready")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("hilot on port {} never became ready", self.port);
    }

    /// The readiness status code, or `None` when nothing answers.
    pub async fn readiness(&self) -> Option<u16> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let response = client.get(self.url("/health/ready")).send().await.ok()?;
        Some(response.status().as_u16())
    }

    /// One unlabelled value from `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// kill -9: no draining, no goodbye.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
    }

    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("hilot did not exit");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The frames of a therapist socket, as a test reads them: every ack by seq (a later ack for a
/// seq overwrites an earlier one) and every error frame.
#[derive(Debug, Default)]
pub struct Acks {
    pub by_seq: std::collections::BTreeMap<i64, Value>,
    pub errors: Vec<Value>,
}

impl Acks {
    pub fn stored(&self) -> Vec<i64> {
        self.by_seq
            .iter()
            .filter(|(_, ack)| ack["stored"] == true)
            .map(|(seq, _)| *seq)
            .collect()
    }
}

/// A PostgreSQL cluster of this test's own (initdb in a temporary folder, its own port), so a
/// test can restart PostgreSQL under a running server without touching anyone else's database.
/// PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user.
pub struct PrivateCluster {
    root: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (scripts/dev-env up)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivateCluster {
    pub fn start() -> Self {
        let root = std::env::temp_dir().join(format!("hilot-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres", root.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown of {}", root.display());
        }
        let cluster = Self {
            bin: pg_bin(),
            port: free_port(),
            root,
        };
        let data = cluster.data();
        cluster.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        cluster.start_again();
        cluster
    }

    fn data(&self) -> String {
        self.root.join("data").to_str().unwrap().to_owned()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts (or starts again) the cluster and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.root.display()
        );
        let log = self.root.join("log").to_str().unwrap().to_owned();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "90",
                "start",
            ],
        );
    }

    /// A clean, fast shutdown: sessions are cut, committed data stays.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "-t", "90", "stop"],
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .current_dir("/")
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
