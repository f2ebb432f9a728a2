#![allow(dead_code)] // Shared helpers: not every test module uses every one.
//! `spawn_app()`: the real server on port 0, against a fresh database built from the migrations,
//! and the real Redis. Every test gets its own database, so tests run in parallel.

use std::sync::OnceLock;
use std::time::Duration;

use hilot::config::{local_env_value, Settings};
use hilot::startup::{Application, StopHandle};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// Key of the advisory lock that serialises building the template database.
const TEMPLATE_LOCK_KEY: i64 = 0x68696c6f_74706c00;

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// A pool on this test's own database, for arranging state and asserting on it.
    pub db: PgPool,
    pub db_name: String,
    /// The URL of this test's database (for running the `hilot` binary against it).
    pub db_url: String,
    pub client: reqwest::Client,
    pub stop: StopHandle,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the server")
    }

    /// Sends a raw body with a JSON content type.
    pub async fn post_raw(&self, path: &str, body: &'static str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches the server")
    }

    /// A JSON call without a token (register, login).
    pub async fn post_public(&self, path: &str, body: &Value) -> reqwest::Response {
        send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        send(self.client.get(self.url(path)).bearer_auth(token)).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        send(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    pub async fn put_as(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        send(
            self.client
                .put(self.url(path))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    pub async fn delete_as(&self, token: &str, path: &str) -> reqwest::Response {
        send(self.client.delete(self.url(path)).bearer_auth(token)).await
    }

    /// Stops the server the way SIGTERM does, and waits for it to finish draining.
    pub async fn shutdown(self) {
        self.stop.stop();
        self.server
            .await
            .expect("server task joins")
            .expect("server drains cleanly");
    }
}

/// The admin URL of the test cluster: `HILOT_TEST_DATABASE_URL`, else `scripts/dev-env`'s file.
/// No fallback to "skip": without a database the tests fail and say how to get one.
pub fn admin_database_url() -> String {
    std::env::var("HILOT_TEST_DATABASE_URL")
        .ok()
        .or_else(|| local_env_value("HILOT_TEST_DATABASE_URL"))
        .expect("no test database: run `scripts/dev-env up` (or set HILOT_TEST_DATABASE_URL)")
}

pub fn test_redis_url() -> String {
    std::env::var("HILOT_TEST_REDIS_URL")
        .ok()
        .or_else(|| local_env_value("HILOT_TEST_REDIS_URL"))
        .expect("no test Redis: run `scripts/dev-env up` (or set HILOT_TEST_REDIS_URL)")
}

fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("test database URL parses");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// A name for the template that changes whenever a migration changes.
fn template_name() -> String {
    let mut digest = 0u64;
    for migration in hilot::db::MIGRATOR.iter() {
        for byte in migration.checksum.iter() {
            digest = digest.rotate_left(5) ^ u64::from(*byte);
        }
    }
    format!("hilot_template_{digest:016x}")
}

/// Builds (once per migration set, across processes) a migrated template database.
async fn ensure_template(admin_url: &str) -> String {
    let name = template_name();
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to the test cluster (is `scripts/dev-env up` running?)");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{building}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{building}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&with_database(admin_url, &building))
                .await
                .unwrap();
            hilot::db::MIGRATOR
                .run(&pool)
                .await
                .expect("migrations apply to a fresh database");
            pool.close().await;
        }
        sqlx::query(&format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .unwrap();
    name
}

/// Creates a fresh database for one test, copied from the migrated template.
pub async fn fresh_database() -> (String, String) {
    let admin_url = admin_database_url();
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    let template = match TEMPLATE.get() {
        Some(t) => t.clone(),
        None => {
            let t = ensure_template(&admin_url).await;
            let _ = TEMPLATE.set(t.clone());
            t
        }
    };
    let name = format!("hilot_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    // CREATE DATABASE ... TEMPLATE fails while another session is briefly connected to the
    // template (only the builder ever is), so retry a few times.
    let mut attempt = 0;
    loop {
        let result = sqlx::query(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .execute(&mut admin)
        .await;
        match result {
            Ok(_) => break,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::debug!(%e, "template busy, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("creating test database from template: {e}"),
        }
    }
    (name.clone(), with_database(&admin_url, &name))
}

/// Makes one test database unreachable, as if its server had gone away: new connections are
/// refused and existing ones are cut.
pub async fn take_database_down(db_name: &str) {
    let mut admin = PgConnection::connect(&admin_database_url()).await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{db_name}\" WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(db_name)
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Settings every test starts from; a test may change them before calling `spawn_app_with`.
pub fn test_settings() -> Settings {
    Settings {
        bind: "127.0.0.1:0".into(),
        redis_url: Some(test_redis_url()),
        workers: Some(2),
        shutdown_grace_s: 5,
        // Tests register many accounts from one address; the limit has a test of its own.
        register_burst_per_address: 1_000,
        ..Settings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let database = fresh_database().await;
    spawn_app_in(database, settings).await
}

/// Starts the app on a database the test prepared (e.g. filled before start-up, to test the
/// index rebuild, or reused after a restart).
pub async fn spawn_app_in((db_name, db_url): (String, String), mut settings: Settings) -> TestApp {
    init_test_logging();
    settings.database_url = Some(db_url.clone());
    let app = Application::build(settings)
        .await
        .expect("the application builds");
    let port = app.port();
    let stop = app.stop_handle();
    let db = PgPoolOptions::new()
        .max_connections(5)
        .connect(&db_url)
        .await
        .expect("test pool connects");
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db,
        db_name,
        db_url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Below the server's keep-alive (5 s), so an idle connection the server is closing
            // is never reused.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        stop,
        server,
    }
}

/// Logs from the server under test, shown by the test runner only when a test fails.
fn init_test_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// Reads a problem+json body and checks its content type and status.
pub async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("request reaches the server")
}

/// Reads a JSON body after checking the status.
/// The therapist accepts the booking over HTTP; the answer must be 200, its body is returned.
pub async fn accept(app: &TestApp, therapist_token: &str, booking_id: &str) -> Value {
    let path = format!("/v1/bookings/{booking_id}/accept");
    json_body(app.post_as(therapist_token, &path, &json!({})).await, 200).await
}

pub async fn json_body(response: reqwest::Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.expect("body reads");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).expect("body is JSON")
}

/// The `errors[].field` names of a problem+json body.
pub fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A password the policy accepts.
pub const PASSWORD: &str = "a sound passphrase";

/// A valid Philippine mobile number, distinct for every call in this process.
pub fn next_phone() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let start = *START.get_or_init(|| (uuid::Uuid::new_v4().as_u128() % 9_000_000) as u32);
    let n = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000_000;
    format!("+63917{n:07}")
}

/// The body `POST /v1/auth/register` accepts, for `phone` and `role`.
pub fn registration(phone: &str, role: &str) -> Value {
    json!({
        "phone": phone,
        "password": PASSWORD,
        "first_name": "Maria",
        "last_name": "Santos",
        "role": role,
    })
}

/// Registers a new `customer` or `therapist`; answers its token and `user`.
pub async fn register(app: &TestApp, role: &str) -> (String, Value) {
    let body = json_body(
        app.post_public("/v1/auth/register", &registration(&next_phone(), role))
            .await,
        201,
    )
    .await;
    (
        body["token"].as_str().unwrap().to_owned(),
        body["user"].clone(),
    )
}

pub async fn login(app: &TestApp, phone: &str, password: &str) -> reqwest::Response {
    app.post_public(
        "/v1/auth/login",
        &json!({ "phone": phone, "password": password }),
    )
    .await
}

/// An admin made the way `hilot admin create` makes one, logged in; answers its token.
pub async fn make_admin(app: &TestApp) -> String {
    let phone = next_phone();
    hilot::accounts::create_admin(&app.db, &phone, PASSWORD)
        .await
        .expect("admin is created");
    let body = json_body(login(app, &phone, PASSWORD).await, 200).await;
    body["token"].as_str().unwrap().to_owned()
}

/// A therapist profile based in Makati that travels 10 km.
pub fn profile_body() -> Value {
    json!({
        "base_lat": 14.5547,
        "base_lng": 121.0244,
        "service_radius_km": 10,
        "bio": "Ten years of Swedish and deep tissue massage",
        "specializations": ["Swedish", "Deep Tissue"],
        "license_number": "TESDA-12345",
        "has_own_equipment": true,
    })
}

pub struct Therapist {
    pub token: String,
    pub user: Value,
    pub provider_id: String,
}

/// A registered therapist with a profile (verification pending).
pub async fn therapist_with_profile(app: &TestApp) -> Therapist {
    let (token, user) = register(app, "therapist").await;
    let profile = json_body(
        app.put_as(&token, "/v1/therapist/profile", &profile_body())
            .await,
        200,
    )
    .await;
    Therapist {
        token,
        user,
        provider_id: profile["provider_id"].as_str().unwrap().to_owned(),
    }
}

/// A therapist with a profile, verified by an admin through the admin API.
pub async fn verified_therapist(app: &TestApp, admin_token: &str) -> Therapist {
    let therapist = therapist_with_profile(app).await;
    let verified = json_body(
        app.post_as(
            admin_token,
            &format!("/v1/admin/providers/{}/verify", therapist.provider_id),
            &json!({ "status": "verified" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(verified["verification_status"], "verified");
    therapist
}

/// The public id of a seeded service, by slug.
pub async fn service_id(app: &TestApp, slug: &str) -> String {
    let services = json_body(app.get("/v1/services").await, 200).await;
    services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slug"] == slug)
        .unwrap_or_else(|| panic!("no seeded service {slug}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}
