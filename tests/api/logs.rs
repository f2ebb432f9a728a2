//! Logs without secrets (issue 11): the real server binary, at debug level, after a socket
//! connect (by `?token=` and by `?ticket=`), a nearby query and a booking, has written no token,
//! ticket, password, coordinate or webhook secret (in its URL or its signing key, after failed
//! deliveries), and its access lines carry the route template and the user.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{fresh_database, next_phone, test_redis_url};
use crate::sockets::connect_url;

const HILOT: &str = env!("CARGO_BIN_EXE_hilot");
/// Distinctive digits for every coordinate the test sends, so any trace of one is found.
const CUSTOMER_LAT: &str = "14.5523917";
const CUSTOMER_LNG: &str = "121.0223917";
const BOOKING_LAT: &str = "14.5534861";
const THERAPIST_LAT: &str = "14.5561273";
const PASSWORD: &str = "log test passphrase 7Q";
const WEBHOOK_PATH_SECRET: &str = "T0KEN-in-the-path-5Kq9";

async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder, status: u16) -> Value {
    let _ = client;
    let response = request.send().await.expect("the server answers");
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn no_secret_or_coordinate_reaches_the_log() {
    let (_, db_url) = fresh_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(format!("hilot-log-test-{port}.jsonl"));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(HILOT)
        .arg("serve")
        .env("DATABASE_URL", &db_url)
        .env("REDIS_URL", test_redis_url())
        .env("HILOT_BIND", format!("127.0.0.1:{port}"))
        .env("HILOT_LOG_FORMAT", "json")
        // The webhook below points at loopback, to fail.
        .env("HILOT_WEBHOOK_PRIVATE_ADDRESSES", "true")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(log_file.try_clone().unwrap()))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("hilot starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..150 {
        if client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the server never became ready");
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();

    // Accounts: a customer, a therapist online, an admin.
    let register = |role: &str| json!({"phone": next_phone(), "password": PASSWORD, "first_name": "Lia", "last_name": "Cruz", "role": role});
    let customer = call(
        &client,
        client
            .post(format!("{base}/v1/auth/register"))
            .json(&register("customer")),
        201,
    )
    .await;
    let customer_token = customer["token"].as_str().unwrap().to_owned();
    let therapist = call(
        &client,
        client
            .post(format!("{base}/v1/auth/register"))
            .json(&register("therapist")),
        201,
    )
    .await;
    let therapist_token = therapist["token"].as_str().unwrap().to_owned();
    let admin_phone = next_phone();
    hilot::accounts::create_admin(&pool, &admin_phone, PASSWORD)
        .await
        .unwrap();
    let admin = call(
        &client,
        client
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({"phone": admin_phone, "password": PASSWORD})),
        200,
    )
    .await;
    let admin_token = admin["token"].as_str().unwrap().to_owned();
    let profile = call(
        &client,
        client
            .put(format!("{base}/v1/therapist/profile"))
            .bearer_auth(&therapist_token)
            .json(&json!({"base_lat": 14.55, "base_lng": 121.02, "service_radius_km": 10})),
        200,
    )
    .await;
    let provider = profile["provider_id"].as_str().unwrap();
    call(
        &client,
        client
            .post(format!("{base}/v1/admin/providers/{provider}/verify"))
            .bearer_auth(&admin_token)
            .json(&json!({"status": "verified"})),
        200,
    )
    .await;
    let services = call(&client, client.get(format!("{base}/v1/services")), 200).await;
    let service = services[0]["id"].as_str().unwrap().to_owned();
    call(
        &client,
        client
            .put(format!("{base}/v1/therapist/services/{service}"))
            .bearer_auth(&therapist_token)
            .json(&json!({"price": "800.00"})),
        200,
    )
    .await;
    call(
        &client,
        client
            .put(format!("{base}/v1/therapist/availability"))
            .bearer_auth(&therapist_token)
            .json(&json!({"online": true})),
        200,
    )
    .await;

    // A socket by `?token=`, pinging; one by `?ticket=`.
    let mut therapist_socket = connect_url(&format!(
        "ws://127.0.0.1:{port}/v1/ws/therapist?token={therapist_token}"
    ))
    .await;
    therapist_socket
        .send_text(format!(
            r#"{{"type":"location","seq":1,"lat":{THERAPIST_LAT},"lng":121.0244,"accuracy_m":5}}"#
        ))
        .await;
    assert_eq!(therapist_socket.next_json().await["type"], "ack");
    let ticket = call(
        &client,
        client
            .post(format!("{base}/v1/ws/tickets"))
            .bearer_auth(&customer_token),
        201,
    )
    .await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer_socket = connect_url(&format!(
        "ws://127.0.0.1:{port}/v1/ws/customer?ticket={ticket}"
    ))
    .await;

    // An operator webhook whose URL holds a secret and whose deliveries fail (nothing listens
    // on port 1): the failures are logged, the URL and the signing secret are not.
    let endpoint = call(
        &client,
        client
            .post(format!("{base}/v1/admin/webhooks"))
            .bearer_auth(&admin_token)
            .json(&json!({"url": format!("http://127.0.0.1:1/hooks/{WEBHOOK_PATH_SECRET}"), "events": ["booking.*"]})),
        201,
    )
    .await;
    let webhook_secret = endpoint["secret"].as_str().unwrap().to_owned();

    // A nearby query and a booking, with coordinates of their own.
    call(
        &client,
        client
            .get(format!(
                "{base}/v1/therapists/nearby?lat={CUSTOMER_LAT}&lng={CUSTOMER_LNG}&service_id={service}"
            ))
            .bearer_auth(&customer_token),
        200,
    )
    .await;
    call(
        &client,
        client
            .post(format!("{base}/v1/bookings"))
            .bearer_auth(&customer_token)
            .header("Idempotency-Key", "log-test")
            .body(format!(
                r#"{{"service_id":"{service}","booking_type":"now","location":{{"lat":{BOOKING_LAT},"lng":121.0211,"address":"1 Ayala Ave"}}}}"#
            ))
            .header("content-type", "application/json"),
        201,
    )
    .await;
    therapist_socket.close().await;
    customer_socket.close().await;
    let mut attempted = false;
    for _ in 0..300 {
        attempted = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE channel = 'webhook' AND last_error IS NOT NULL)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if attempted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempted, "no webhook delivery failed yet");

    // Stop the server the way an operator does, then read everything it wrote.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);

    for (what, secret) in [
        ("a customer token", customer_token.as_str()),
        ("a therapist token", therapist_token.as_str()),
        ("an admin token", admin_token.as_str()),
        ("a ticket", ticket.as_str()),
        ("a password", PASSWORD),
        ("a webhook URL's secret", WEBHOOK_PATH_SECRET),
        ("a webhook signing secret", webhook_secret.as_str()),
        ("the customer's latitude", CUSTOMER_LAT),
        ("the customer's longitude", CUSTOMER_LNG),
        ("the booking's latitude", BOOKING_LAT),
        ("the therapist's latitude", THERAPIST_LAT),
    ] {
        assert!(!log.contains(secret), "{what} is in the log");
    }
    assert!(
        !log.contains("hlt_"),
        "something shaped like a token is in the log"
    );
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(lines.len() > 10, "the server wrote no JSON log: {log}");
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:?}");
    // The access line of the nearby call: method, route template, status, latency, request id,
    // and who called.
    let nearby = lines
        .iter()
        .find(|l| l["route"] == "/v1/therapists/nearby" && l["status"] == 200)
        .unwrap_or_else(|| panic!("no access line for nearby: {log}"));
    assert_eq!(nearby["method"], "GET");
    assert!(nearby["elapsed_ms"].is_number());
    assert!(nearby["span"]["request_id"].is_string(), "{nearby}");
    assert!(nearby["span"]["user_id"].is_number(), "{nearby}");
}
