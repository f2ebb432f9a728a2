//! Accounts: register, log in, log out, `GET /v1/me`, tokens, login limits, body limits, and
//! the caller's addresses.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    error_fields, json_body, login, make_admin, next_phone, problem, register, registration,
    spawn_app, spawn_app_with, test_settings, TestApp, PASSWORD,
};

// ---------------------------------------------------------------------------------------------
// Register, log in, log out, me
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn register_normalises_the_phone_and_the_token_works_on_me() {
    let app = spawn_app().await;
    let phone = next_phone(); // +63917xxxxxxx
    let local_form = format!("0{} {} {}", &phone[3..6], &phone[6..9], &phone[9..]);

    let response = app
        .post_public("/v1/auth/register", &registration(&local_form, "customer"))
        .await;

    let body = json_body(response, 201).await;
    assert_eq!(body["user"]["phone"], phone.as_str());
    assert_eq!(body["user"]["roles"], json!(["customer"]));
    assert!(body["token_expires_at"].is_string());
    let token = body["token"].as_str().unwrap();
    let me = json_body(app.get_as(token, "/v1/me").await, 200).await;
    assert_eq!(me["id"], body["user"]["id"]);
    assert_eq!(me["phone"], phone.as_str());
    assert_eq!(me["first_name"], "Maria");
    assert_eq!(me["last_name"], "Santos");
    assert_eq!(me["roles"], json!(["customer"]));
    app.shutdown().await;
}

#[tokio::test]
async fn register_as_therapist_grants_the_therapist_role_and_stores_it_in_model_has_roles() {
    let app = spawn_app().await;

    let (token, user) = register(&app, "therapist").await;

    assert_eq!(user["roles"], json!(["therapist"]));
    let me = json_body(app.get_as(&token, "/v1/me").await, 200).await;
    assert_eq!(me["roles"], json!(["therapist"]));
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT r.name FROM model_has_roles mr JOIN roles r ON r.id = mr.role_id \
         JOIN users u ON u.id = mr.model_id WHERE u.uuid = $1::uuid",
    )
    .bind(user["id"].as_str().unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(roles, ["therapist"]);
    app.shutdown().await;
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_phc_strings_at_owasp_cost() {
    let app = spawn_app().await;
    let phone = next_phone();

    app.post_public("/v1/auth/register", &registration(&phone, "customer"))
        .await;

    let stored: String = sqlx::query_scalar("SELECT password FROM users WHERE phone = $1")
        .bind(&phone)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains(PASSWORD));
    app.shutdown().await;
}

#[tokio::test]
async fn tokens_are_random_and_stored_only_as_a_sha256_hex_digest_with_abilities_and_expiry() {
    let app = spawn_app().await;

    let (token, user) = register(&app, "customer").await;
    app.get_as(&token, "/v1/me").await;

    // 256 random bits: 32 bytes in unpadded base64url is 43 characters, after the prefix.
    let secret = token
        .strip_prefix("hlt_")
        .expect("tokens carry the hlt_ prefix");
    assert_eq!(secret.len(), 43, "{token}");
    let (stored, abilities, expires_in_days, last_used): (String, String, f64, bool) =
        sqlx::query_as(
            "SELECT t.token, t.abilities, \
                    EXTRACT(EPOCH FROM t.expires_at - now())::float8 / 86400, \
                    t.last_used_at IS NOT NULL \
             FROM personal_access_tokens t JOIN users u ON u.id = t.tokenable_id \
             WHERE u.uuid = $1::uuid",
        )
        .bind(user["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 64);
    assert!(stored
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_ne!(stored, token);
    assert!(!stored.contains(secret));
    assert_eq!(stored, hilot::accounts::tokens::digest(&token));
    assert_eq!(abilities, r#"["*"]"#);
    assert!(
        (29.9..=30.0).contains(&expires_in_days),
        "{expires_in_days}"
    );
    assert!(last_used, "using the token records last_used_at");
    app.shutdown().await;
}

#[tokio::test]
async fn login_with_the_right_password_answers_a_fresh_token() {
    let app = spawn_app().await;
    let phone = next_phone();
    let registered = json_body(
        app.post_public("/v1/auth/register", &registration(&phone, "customer"))
            .await,
        201,
    )
    .await;

    let body = json_body(login(&app, &format!(" {phone} "), PASSWORD).await, 200).await;

    assert_eq!(body["user"]["id"], registered["user"]["id"]);
    assert_ne!(body["token"], registered["token"]);
    let me = app.get_as(body["token"].as_str().unwrap(), "/v1/me").await;
    assert_eq!(me.status().as_u16(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_phone_answer_the_same_401() {
    let app = spawn_app().await;
    let phone = next_phone();
    app.post_public("/v1/auth/register", &registration(&phone, "customer"))
        .await;

    let wrong_password = problem(login(&app, &phone, "not the password").await, 401).await;
    let unknown_phone = problem(login(&app, &next_phone(), PASSWORD).await, 401).await;

    assert_eq!(wrong_password, unknown_phone);
    assert!(wrong_password.get("token").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn logout_revokes_only_the_token_it_was_called_with() {
    let app = spawn_app().await;
    let phone = next_phone();
    let first = json_body(
        app.post_public("/v1/auth/register", &registration(&phone, "customer"))
            .await,
        201,
    )
    .await;
    let first = first["token"].as_str().unwrap();
    let second = json_body(login(&app, &phone, PASSWORD).await, 200).await;
    let second = second["token"].as_str().unwrap();

    let response = app.post_as(first, "/v1/auth/logout", &json!({})).await;

    assert_eq!(response.status().as_u16(), 204);
    problem(app.get_as(first, "/v1/me").await, 401).await;
    problem(app.post_as(first, "/v1/auth/logout", &json!({})).await, 401).await;
    assert_eq!(app.get_as(second, "/v1/me").await.status().as_u16(), 200);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM personal_access_tokens WHERE token = $1")
            .bind(hilot::accounts::tokens::digest(first))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn missing_malformed_forged_and_expired_tokens_answer_401() {
    let app = spawn_app().await;
    let (token, user) = register(&app, "customer").await;
    let forged = format!("hlt_{}", "A".repeat(43));

    let missing = app.get("/v1/me").await;
    assert_eq!(missing.headers().get("www-authenticate").unwrap(), "Bearer");
    problem(missing, 401).await;
    for bad in ["", "garbage", forged.as_str(), &token[..token.len() - 1]] {
        problem(app.get_as(bad, "/v1/me").await, 401).await;
    }
    let basic = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    problem(basic, 401).await;

    // Expire the (so far unused) token in the database. A token the server has already verified
    // is trusted from its cache for up to TOKEN_CACHE_TTL, so this one is not used beforehand.
    sqlx::query(
        "UPDATE personal_access_tokens SET expires_at = now() - interval '1 second' \
         WHERE tokenable_id = (SELECT id FROM users WHERE uuid = $1::uuid)",
    )
    .bind(user["id"].as_str().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    problem(app.get_as(&token, "/v1/me").await, 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_users_token_answers_401() {
    let app = spawn_app().await;
    let (token, user) = register(&app, "customer").await;

    sqlx::query("UPDATE users SET is_active = FALSE WHERE uuid = $1::uuid")
        .bind(user["id"].as_str().unwrap())
        .execute(&app.db)
        .await
        .unwrap();

    problem(app.get_as(&token, "/v1/me").await, 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_phone_already_registered_in_any_format_answers_409_naming_phone() {
    let app = spawn_app().await;
    let phone = next_phone();
    app.post_public("/v1/auth/register", &registration(&phone, "customer"))
        .await;
    let same_phone_other_format = format!("+63 {}-{}-{}", &phone[3..6], &phone[6..9], &phone[9..]);

    let response = app
        .post_public(
            "/v1/auth/register",
            &registration(&same_phone_other_format, "therapist"),
        )
        .await;

    let body = problem(response, 409).await;
    assert_eq!(error_fields(&body), ["phone"]);
    app.shutdown().await;
}

#[tokio::test]
async fn an_email_already_registered_answers_409_naming_email() {
    let app = spawn_app().await;
    let mut first = registration(&next_phone(), "customer");
    first["email"] = json!("maria@example.com");
    json_body(app.post_public("/v1/auth/register", &first).await, 201).await;
    let mut second = registration(&next_phone(), "customer");
    second["email"] = json!("Maria@Example.com");

    let body = problem(app.post_public("/v1/auth/register", &second).await, 409).await;

    assert_eq!(error_fields(&body), ["email"]);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_registrations_answer_422_naming_the_field() {
    let app = spawn_app().await;
    let without = |field: &str| {
        let mut body = registration(&next_phone(), "customer");
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let with = |field: &str, value: Value| {
        let mut body = registration(&next_phone(), "customer");
        body[field] = value;
        body
    };
    let cases = [
        ("missing phone", without("phone"), "phone"),
        ("missing password", without("password"), "password"),
        ("missing first name", without("first_name"), "first_name"),
        ("missing role", without("role"), "role"),
        ("phone not a number", with("phone", json!("hello")), "phone"),
        ("phone too short", with("phone", json!("123")), "phone"),
        (
            "phone of the wrong type",
            with("phone", json!(9171234567u64)),
            "phone",
        ),
        (
            "short password",
            with("password", json!("s3cret")),
            "password",
        ),
        (
            "common password",
            with("password", json!("Password123")),
            "password",
        ),
        (
            "repetitive password",
            with("password", json!("aaaaaaaaaaaa")),
            "password",
        ),
        (
            "over-long password",
            with("password", json!("ab1!".repeat(33))),
            "password",
        ),
        (
            "blank first name",
            with("first_name", json!("   ")),
            "first_name",
        ),
        (
            // Read right to left on a dispatcher's screen: "exe.png".
            "a name that reverses what follows",
            with("first_name", json!("\u{202E}gnp.exe")),
            "first_name",
        ),
        (
            "a name of zero-width spaces",
            with("last_name", json!("\u{200B}\u{200B}")),
            "last_name",
        ),
        (
            "long last name",
            with("last_name", json!("x".repeat(101))),
            "last_name",
        ),
        ("bad email", with("email", json!("not-an-email")), "email"),
        (
            "admin is not self-service",
            with("role", json!("admin")),
            "role",
        ),
    ];

    for (case, body, field) in cases {
        let response = app.post_public("/v1/auth/register", &body).await;
        assert_eq!(response.status().as_u16(), 422, "{case}");
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), [field], "{case}: {problem}");
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 0, "no bad registration created a user");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_logins_answer_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            "missing password",
            json!({ "phone": next_phone() }),
            "password",
        ),
        ("missing phone", json!({ "password": PASSWORD }), "phone"),
        (
            "bad phone",
            json!({ "phone": "12", "password": PASSWORD }),
            "phone",
        ),
        (
            "empty password",
            json!({ "phone": next_phone(), "password": "" }),
            "password",
        ),
        (
            "over-long password",
            json!({ "phone": next_phone(), "password": "x".repeat(1025) }),
            "password",
        ),
    ];

    for (case, body, field) in cases {
        let response = app.post_public("/v1/auth/login", &body).await;
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), [field], "{case}: {problem}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_json_answers_400_problem_json() {
    let app = spawn_app().await;

    for body in [
        r#"{"phone": "+639171234567", "password": "#,
        r#"{"phone": }"#,
        "not json at all",
        "",
        r#"{"phone": "+639171234567", "password": "a sound passphrase", "first_name": "A",
            "last_name": "B", "role": "customer"} trailing"#,
    ] {
        let response = app.post_raw("/v1/auth/register", body).await;
        let problem = problem(response, 400).await;
        assert_eq!(problem["type"], "/problems/bad-request", "{body:?}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_answers_415_problem_json() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("phone=1&password=2")
        .send()
        .await
        .unwrap();

    problem(response, 415).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_cap_answers_413_problem_json() {
    let mut settings = test_settings();
    settings.max_body_bytes = 1024;
    let app = spawn_app_with(settings).await;
    let mut body = registration(&next_phone(), "customer");
    body["first_name"] = json!("x".repeat(2048));

    let too_big = app.post_public("/v1/auth/register", &body).await;
    let chunked = chunked_post(
        &app,
        "/v1/auth/register",
        &serde_json::to_vec(&body).unwrap(),
    )
    .await;

    let problem_body = problem(too_big, 413).await;
    assert!(problem_body["detail"].as_str().unwrap().contains("1024"));
    // Without a Content-Length the cap still holds while the body streams in.
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(
        chunked
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{chunked}"
    );
    let small_enough = app
        .post_public(
            "/v1/auth/register",
            &registration(&next_phone(), "customer"),
        )
        .await;
    assert_eq!(small_enough.status().as_u16(), 201);
    app.shutdown().await;
}

/// Sends `body` with chunked transfer encoding (no Content-Length); answers the raw response.
async fn chunked_post(app: &TestApp, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(256) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading everything; that is fine.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn the_default_body_cap_is_64_kib() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;
    let mut body = address_body();
    body["address_line2"] = json!("x".repeat(70 * 1024));

    let response = app.post_as(&token, "/v1/me/addresses", &body).await;

    problem(response, 413).await;
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Login limits
// ---------------------------------------------------------------------------------------------

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds")
}

/// Sends the attempts at once, so that slow password hashing cannot refill a bucket between them;
/// answers the statuses in order and the largest Retry-After seen.
async fn login_all_at_once(app: &TestApp, attempts: &[(String, &str)]) -> (Vec<u16>, u64) {
    let responses = futures_util::future::join_all(
        attempts
            .iter()
            .map(|(phone, password)| login(app, phone, password)),
    )
    .await;
    let mut wait = 0;
    let mut statuses = Vec::new();
    for response in responses {
        if response.status().as_u16() == 429 {
            wait = wait.max(retry_after(&response));
            let body = problem(response, 429).await;
            assert_eq!(body["type"], "/problems/rate-limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    statuses.sort_unstable();
    (statuses, wait)
}

#[tokio::test]
async fn login_attempts_per_phone_are_limited_then_recover() {
    let mut settings = test_settings();
    settings.login_burst_per_phone = 2;
    settings.login_replenish_per_phone_s = 1;
    let app = spawn_app_with(settings).await;
    let phone = next_phone();
    app.post_public("/v1/auth/register", &registration(&phone, "customer"))
        .await;

    // Two wrong guesses use up the burst: the third attempt at once is refused...
    let (statuses, wait) = login_all_at_once(
        &app,
        &[
            (phone.clone(), "wrong guess one"),
            // The same phone in its local form counts against the same bucket.
            (format!("0{}", &phone[3..]), "wrong guess two"),
            (phone.clone(), "wrong guess three"),
        ],
    )
    .await;
    assert_eq!(statuses, [401, 401, 429]);
    assert_eq!(wait, 1);
    // ...and so is the right password, until the bucket refills.
    let limited = login(&app, &phone, PASSWORD).await;
    assert_eq!(retry_after(&limited), 1);
    problem(limited, 429).await;

    // Other phones from the same address are unaffected.
    let other = next_phone();
    app.post_public("/v1/auth/register", &registration(&other, "customer"))
        .await;
    assert_eq!(login(&app, &other, PASSWORD).await.status().as_u16(), 200);

    // After Retry-After, the right password works again.
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(login(&app, &phone, PASSWORD).await.status().as_u16(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn login_attempts_per_client_address_are_limited_then_recover() {
    let mut settings = test_settings();
    settings.login_burst_per_address = 3;
    settings.login_replenish_per_address_s = 1;
    let app = spawn_app_with(settings).await;
    let phone = next_phone();
    app.post_public("/v1/auth/register", &registration(&phone, "customer"))
        .await;

    // Four different phones from one address: the fourth attempt exceeds the address's burst.
    let attempts: Vec<(String, &str)> = (0..4).map(|_| (next_phone(), PASSWORD)).collect();
    let (statuses, wait) = login_all_at_once(&app, &attempts).await;
    assert_eq!(statuses, [401, 401, 401, 429]);
    assert_eq!(wait, 1);

    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    assert_eq!(login(&app, &phone, PASSWORD).await.status().as_u16(), 200);
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

fn address_body() -> Value {
    json!({
        "label": "home",
        "address_line1": "123 Ayala Avenue",
        "city": "Makati",
        "province": "Metro Manila",
        "postal_code": "1226",
        "lat": 14.5547,
        "lng": 121.0244,
    })
}

async fn create_address(app: &TestApp, token: &str, body: &Value) -> Value {
    json_body(app.post_as(token, "/v1/me/addresses", body).await, 201).await
}

async fn list_addresses(app: &TestApp, token: &str) -> Vec<Value> {
    let list = json_body(app.get_as(token, "/v1/me/addresses").await, 200).await;
    list.as_array().unwrap().clone()
}

#[tokio::test]
async fn an_address_is_saved_with_its_postgis_point_and_the_first_becomes_default() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;

    let address = create_address(&app, &token, &address_body()).await;

    assert!(uuid::Uuid::parse_str(address["id"].as_str().unwrap()).is_ok());
    assert_eq!(address["label"], "home");
    assert_eq!(address["city"], "Makati");
    assert_eq!(address["country"], "PH");
    assert_eq!(address["lat"], 14.5547);
    assert_eq!(address["lng"], 121.0244);
    assert_eq!(address["is_default"], true);
    let (x, y, srid): (f64, f64, i32) = sqlx::query_as(
        "SELECT ST_X(location::geometry), ST_Y(location::geometry), ST_SRID(location::geometry) \
         FROM user_addresses WHERE uuid = $1::uuid",
    )
    .bind(address["id"].as_str().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((x, y, srid), (121.0244, 14.5547, 4326));
    assert_eq!(list_addresses(&app, &token).await, [address]);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_default_addresses_leave_exactly_one_default() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;
    let mut body = address_body();
    body["is_default"] = json!(true);

    let responses = futures_util::future::join_all(
        (0..6).map(|_| app.post_as(&token, "/v1/me/addresses", &body)),
    )
    .await;

    for response in responses {
        json_body(response, 201).await;
    }
    let list = list_addresses(&app, &token).await;
    assert_eq!(list.len(), 6);
    assert_eq!(list.iter().filter(|a| a["is_default"] == true).count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_new_default_address_takes_over_so_there_is_one_default() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;
    let home = create_address(&app, &token, &address_body()).await;
    let mut work = address_body();
    work["label"] = json!("work");
    let work = create_address(&app, &token, &work).await;
    assert_eq!(
        work["is_default"], false,
        "only the first becomes default unasked"
    );

    let mut gym = address_body();
    gym["label"] = json!("gym");
    gym["is_default"] = json!(true);
    let gym = create_address(&app, &token, &gym).await;

    let list = list_addresses(&app, &token).await;
    let defaults: Vec<&Value> = list.iter().filter(|a| a["is_default"] == true).collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0]["id"], gym["id"]);
    assert_eq!(list[0]["id"], gym["id"], "the default comes first");
    assert_eq!(list.len(), 3);
    assert!(list
        .iter()
        .any(|a| a["id"] == home["id"] && a["is_default"] == false));
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_an_address_removes_it_from_the_list() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;
    let home = create_address(&app, &token, &address_body()).await;
    let other = create_address(&app, &token, &address_body()).await;

    let response = app
        .delete_as(
            &token,
            &format!("/v1/me/addresses/{}", home["id"].as_str().unwrap()),
        )
        .await;

    assert_eq!(response.status().as_u16(), 204);
    let list = list_addresses(&app, &token).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], other["id"]);
    let again = app
        .delete_as(
            &token,
            &format!("/v1/me/addresses/{}", home["id"].as_str().unwrap()),
        )
        .await;
    problem(again, 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn another_users_address_answers_404_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let (token_a, _) = register(&app, "customer").await;
    let (token_b, _) = register(&app, "customer").await;
    let b_address = create_address(&app, &token_b, &address_body()).await;

    let someone_elses = app
        .delete_as(
            &token_a,
            &format!("/v1/me/addresses/{}", b_address["id"].as_str().unwrap()),
        )
        .await;
    let missing = app
        .delete_as(
            &token_a,
            &format!("/v1/me/addresses/{}", uuid::Uuid::new_v4()),
        )
        .await;

    let someone_elses = problem(someone_elses, 404).await;
    let missing = problem(missing, 404).await;
    assert_eq!(someone_elses, missing);
    assert!(list_addresses(&app, &token_a).await.is_empty());
    assert_eq!(list_addresses(&app, &token_b).await, [b_address]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_malformed_address_id_answers_404() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;

    let response = app.delete_as(&token, "/v1/me/addresses/not-a-uuid").await;

    problem(response, 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_addresses_answer_4xx_problem_json_naming_the_field() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;
    let with = |field: &str, value: Value| {
        let mut body = address_body();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = address_body();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        ("lat above 90", with("lat", json!(90.5)), "lat"),
        ("lat below -90", with("lat", json!(-91)), "lat"),
        ("lng above 180", with("lng", json!(180.01)), "lng"),
        ("lng below -180", with("lng", json!(-181)), "lng"),
        ("lat as the string NaN", with("lat", json!("NaN")), "lat"),
        ("lng as a string", with("lng", json!("121.0")), "lng"),
        ("lat null", with("lat", Value::Null), "lat"),
        ("missing lat", without("lat"), "lat"),
        ("missing lng", without("lng"), "lng"),
        ("missing city", without("city"), "city"),
        (
            "missing address line",
            without("address_line1"),
            "address_line1",
        ),
        (
            "blank address line",
            with("address_line1", json!("  ")),
            "address_line1",
        ),
        ("long label", with("label", json!("x".repeat(51))), "label"),
        (
            "long postal code",
            with("postal_code", json!("12345678901")),
            "postal_code",
        ),
        ("bad country", with("country", json!("PHL")), "country"),
        (
            "is_default not a bool",
            with("is_default", json!("yes")),
            "is_default",
        ),
    ];

    for (case, body, field) in cases {
        let response = app.post_as(&token, "/v1/me/addresses", &body).await;
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), [field], "{case}: {problem}");
    }
    assert!(list_addresses(&app, &token).await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_coordinate_too_large_for_a_float_answers_422_naming_the_field() {
    // JSON has no NaN or infinity literal; 1e999 is valid JSON that overflows an f64.
    let app = spawn_app().await;
    let (token, _) = register(&app, "customer").await;

    let response = app
        .client
        .post(app.url("/v1/me/addresses"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"address_line1": "1 Rizal St", "city": "Manila", "lat": 1e999, "lng": 121.0}"#)
        .send()
        .await
        .unwrap();

    let problem = problem(response, 422).await;
    assert_eq!(error_fields(&problem), ["lat"], "{problem}");
    app.shutdown().await;
}

#[tokio::test]
async fn addresses_need_a_customer_token() {
    let app = spawn_app().await;
    let (therapist, _) = register(&app, "therapist").await;
    let admin = make_admin(&app).await;
    let some_id = uuid::Uuid::new_v4();

    problem(app.get("/v1/me/addresses").await, 401).await;
    problem(
        app.post_public("/v1/me/addresses", &address_body()).await,
        401,
    )
    .await;
    problem(
        app.delete_as("", &format!("/v1/me/addresses/{some_id}"))
            .await,
        401,
    )
    .await;
    for token in [&therapist, &admin] {
        problem(app.get_as(token, "/v1/me/addresses").await, 403).await;
        problem(
            app.post_as(token, "/v1/me/addresses", &address_body())
                .await,
            403,
        )
        .await;
        problem(
            app.delete_as(token, &format!("/v1/me/addresses/{some_id}"))
                .await,
            403,
        )
        .await;
    }
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_catalog_lists_the_seeded_services_without_a_token() {
    let app = spawn_app().await;

    let services = json_body(app.get("/v1/services").await, 200).await;

    let services = services.as_array().unwrap();
    let slugs: Vec<&str> = services
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        [
            "swedish-massage",
            "deep-tissue-massage",
            "sports-massage",
            "aromatherapy-massage",
            "hot-stone-massage",
            "foot-spa",
            "body-scrub",
        ]
    );
    let swedish = &services[0];
    assert!(uuid::Uuid::parse_str(swedish["id"].as_str().unwrap()).is_ok());
    assert_eq!(swedish["name"], "Swedish Massage");
    assert_eq!(swedish["category"], "Massage Therapy");
    assert_eq!(swedish["base_price"], "800.00");
    assert_eq!(swedish["currency"], "PHP");
    assert_eq!(swedish["duration_minutes"], 60);
    assert_eq!(services[5]["category"], "Spa Treatments");
    app.shutdown().await;
}
