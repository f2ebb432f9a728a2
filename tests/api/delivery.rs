//! Delivery through the outbox: push notifications to a fake FCM that was down for a while,
//! operator webhooks retried until delivered or dead-lettered and redelivered by hand, and two
//! servers draining one outbox without delivering anything twice.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::fakes;
use crate::helpers::{
    error_fields, fresh_database, json_body, make_admin, problem, register, service_id,
    spawn_app_in, spawn_app_with, test_settings, TestApp,
};
use crate::money::{book_and_offer, therapist_near};

fn quick_outbox(settings: &mut hilot::config::Settings, max_attempts: u32) {
    let i = &mut settings.integrations;
    i.outbox_poll_ms = 50;
    i.outbox_backoff_base_ms = 100;
    i.outbox_backoff_max_s = 1;
    i.outbox_max_attempts = max_attempts;
    i.outbox_timeout_s = 5;
    // The fake receivers listen on loopback.
    i.webhook_private_addresses = true;
}

/// Settings that push through a fake FCM on `port`, with a quick outbox.
fn pushing_to(port: u16, max_attempts: u32) -> hilot::config::Settings {
    let mut settings = test_settings();
    quick_outbox(&mut settings, max_attempts);
    settings.integrations.fcm_url = format!("http://127.0.0.1:{port}");
    settings.integrations.fcm_project_id = Some("hilot-test".into());
    settings
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_push_waits_out_a_sender_that_is_down_and_arrives() {
    let port = fakes::reserve_port();
    let app = spawn_app_with(pushing_to(port, 50)).await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let bad = problem(
        app.post_as(
            &customer,
            "/v1/me/devices",
            &json!({"device_type": "android", "token": ""}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&bad), ["token"]);
    problem(
        app.post_as(
            &customer,
            "/v1/me/devices",
            &json!({"device_type": "fridge", "token": "x"}),
        )
        .await,
        422,
    )
    .await;
    let device = json_body(
        app.post_as(
            &customer,
            "/v1/me/devices",
            &json!({"device_type": "android", "token": "device-token-1", "app_version": "2.1.0"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(device["is_active"], true);

    let id = book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;

    // Nothing listens on FCM's port: the push is tried, fails, and waits, never lost.
    let db = app.db.clone();
    wait_until("two failed push attempts", || {
        let db = db.clone();
        async move {
            let attempts: Option<i32> = sqlx::query_scalar(
                "SELECT max(attempts) FROM outbox WHERE channel = 'push' AND status = 'pending' AND last_error IS NOT NULL",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            attempts.unwrap_or(0) >= 2
        }
    })
    .await;

    let fcm = fakes::fcm_on(port).await;
    let sent = fcm
        .wait_for(
            "/v1/projects/hilot-test/messages:send",
            1,
            Duration::from_secs(30),
        )
        .await;
    let message = sent[0].json()["message"].clone();
    assert_eq!(message["token"], "device-token-1");
    assert_eq!(message["notification"]["title"], "Booking accepted");
    assert_eq!(message["data"]["type"], "booking.accepted");
    assert_eq!(message["data"]["booking_id"], id.as_str());

    let notifications = json_body(app.get_as(&customer, "/v1/notifications").await, 200).await;
    let accepted = notifications
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "booking.accepted")
        .unwrap_or_else(|| panic!("{notifications}"))
        .clone();
    assert_eq!(accepted["is_read"], false);
    let read_path = format!(
        "/v1/notifications/{}/read",
        accepted["id"].as_str().unwrap()
    );
    problem(
        app.post_as(&therapist.token, &read_path, &json!({})).await,
        404,
    )
    .await;
    let read = json_body(app.post_as(&customer, &read_path, &json!({})).await, 200).await;
    assert_eq!(read["is_read"], true);
    let unread = json_body(
        app.get_as(&customer, "/v1/notifications?unread=true").await,
        200,
    )
    .await;
    assert!(unread
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["id"] != accepted["id"]));
    fcm.stop().await;
}

/// Verifies a Standard Webhooks signature as a receiver would.
fn verify(secret: &str, id: &str, timestamp: &str, body: &str, signature: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signature == format!("v1,{expected}")
}

async fn endpoint(app: &TestApp, admin: &str, url: String, events: Value) -> Value {
    json_body(
        app.post_as(
            admin,
            "/v1/admin/webhooks",
            &json!({"url": url, "events": events}),
        )
        .await,
        201,
    )
    .await
}

async fn deliveries(app: &TestApp, admin: &str, endpoint: &Value) -> Vec<Value> {
    let path = format!(
        "/v1/admin/webhooks/{}/deliveries",
        endpoint["id"].as_str().unwrap()
    );
    json_body(app.get_as(admin, &path).await, 200)
        .await
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn webhooks_are_retried_until_delivered_or_dead_lettered_and_redelivered() {
    let receiver = fakes::webhook_receiver().await;
    receiver
        .state
        .failures_left
        .lock()
        .push(("/flaky".into(), 2));
    receiver.state.statuses.lock().push(("/down".into(), 500));
    let mut settings = test_settings();
    quick_outbox(&mut settings, 3);
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let (customer, _) = register(&app, "customer").await;

    for (body, field) in [
        (
            json!({"url": "ftp://example.com/hook", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (
            json!({"url": "https://example.com/hook", "events": ["booking.exploded"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/hook", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/hook", "events": ["*"], "secret": "hunter2"}),
            "secret",
        ),
    ] {
        let refused = problem(app.post_as(&admin, "/v1/admin/webhooks", &body).await, 422).await;
        assert_eq!(error_fields(&refused), [field], "{body}");
    }
    problem(
        app.post_as(
            &customer,
            "/v1/admin/webhooks",
            &json!({"url": "https://example.com", "events": ["*"]}),
        )
        .await,
        403,
    )
    .await;

    let fast = endpoint(
        &app,
        &admin,
        format!("{}/fast", receiver.url),
        json!(["booking.created"]),
    )
    .await;
    let flaky = endpoint(
        &app,
        &admin,
        format!("{}/flaky", receiver.url),
        json!(["booking.*"]),
    )
    .await;
    let down = endpoint(&app, &admin, format!("{}/down", receiver.url), json!(["*"])).await;
    let secret = fast["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let listed = json_body(app.get_as(&admin, "/v1/admin/webhooks").await, 200).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("secret").is_none()),
        "secrets are shown once"
    );

    // A booking is created: every endpoint subscribed hears booking.created.
    let swedish = service_id(&app, "swedish-massage").await;
    let booked = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "hook-1")
        .json(&json!({"service_id": swedish, "booking_type": "now",
                      "location": {"lat": 14.5547, "lng": 121.0244, "address": "Ayala"}}))
        .send()
        .await
        .unwrap();
    let booking = json_body(booked, 201).await;

    // The healthy endpoint gets it at once, whatever the others do.
    let got = receiver.wait_for("/fast", 1, Duration::from_secs(10)).await;
    let hook = &got[0];
    let (id, timestamp, signature) = (
        hook.header("webhook-id").unwrap(),
        hook.header("webhook-timestamp").unwrap(),
        hook.header("webhook-signature").unwrap(),
    );
    assert!(id.starts_with("msg_"));
    assert!(
        verify(&secret, id, timestamp, &hook.body, signature),
        "the signature verifies"
    );
    let event = hook.json();
    assert_eq!(event["type"], "booking.created");
    assert_eq!(event["data"]["booking_id"], booking["id"]);

    // The flaky one fails twice and is delivered on the third attempt, same message id.
    let flaky_hits = receiver
        .wait_for("/flaky", 3, Duration::from_secs(20))
        .await;
    let ids: HashSet<&str> = flaky_hits
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "retries keep the webhook-id");
    let db = app.db.clone();
    let flaky_id = flaky["id"].as_str().unwrap().to_owned();
    wait_until("the flaky delivery recorded", || {
        let (db, flaky_id) = (db.clone(), flaky_id.clone());
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id \
                 WHERE e.uuid = $1::uuid AND o.status = 'delivered')",
            )
            .bind(flaky_id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    })
    .await;
    let flaky_deliveries = deliveries(&app, &admin, &flaky).await;
    assert_eq!(flaky_deliveries[0]["status"], "delivered");
    assert_eq!(flaky_deliveries[0]["attempts"], 3);

    // The down one is dead-lettered after three attempts.
    let down_id = down["id"].as_str().unwrap().to_owned();
    wait_until("the dead letter", || {
        let (db, down_id) = (db.clone(), down_id.clone());
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id \
                 WHERE e.uuid = $1::uuid AND o.status = 'dead')",
            )
            .bind(down_id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    })
    .await;
    let dead = deliveries(&app, &admin, &down).await;
    assert_eq!(dead[0]["status"], "dead");
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["last_status_code"], 500);
    assert_eq!(receiver.received_on("/down").len(), 3);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("hilot_outbox_deliveries_total"),
        "metrics count deliveries"
    );

    // The endpoint recovers; an admin redelivers the dead letter by hand.
    receiver.state.statuses.lock().clear();
    let redeliver = format!(
        "/v1/admin/webhooks/{}/deliveries/{}/redeliver",
        down_id,
        dead[0]["id"].as_str().unwrap()
    );
    let again = json_body(app.post_as(&admin, &redeliver, &json!({})).await, 200).await;
    assert_eq!(again["status"], "pending");
    let hits = receiver.wait_for("/down", 4, Duration::from_secs(10)).await;
    assert_eq!(hits[3].header("webhook-id"), hits[0].header("webhook-id"));
    problem(
        app.post_as(
            &admin,
            &format!(
                "/v1/admin/webhooks/{down_id}/deliveries/{}/redeliver",
                uuid::Uuid::new_v4()
            ),
            &json!({}),
        )
        .await,
        404,
    )
    .await;
    receiver.stop().await;
}

#[tokio::test]
async fn webhooks_never_reach_internal_addresses_unless_the_operator_allows_them() {
    let receiver = fakes::webhook_receiver().await;
    let mut settings = test_settings();
    quick_outbox(&mut settings, 3);
    settings.integrations.webhook_private_addresses = false;
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("{}/hook", receiver.url),
        format!("http://localhost:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.5:6379/".to_owned(),
    ] {
        let refused = problem(
            app.post_as(
                &admin,
                "/v1/admin/webhooks",
                &json!({"url": url, "events": ["*"]}),
            )
            .await,
            422,
        )
        .await;
        assert_eq!(error_fields(&refused), ["url"], "{url}: {refused}");
    }
    // An endpoint already in the table (registered while the operator allowed internal
    // addresses): its deliveries are dead-lettered at the first attempt, and none arrives.
    let admin_id: i64 = sqlx::query_scalar("SELECT min(id) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    hilot::webhooks::create_endpoint(
        &app.db,
        &format!("{}/inside", receiver.url),
        &["*".to_owned()],
        &hilot::webhooks::new_secret(),
        None,
        admin_id,
    )
    .await
    .unwrap();
    let mut tx = app.db.begin().await.unwrap();
    hilot::webhooks::emit(&mut tx, "payout.completed", json!({"n": 1}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let db = app.db.clone();
    wait_until("the delivery is dead-lettered", || {
        let db = db.clone();
        async move {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE channel = 'webhook' AND status = 'dead' \
                 AND attempts = 1 AND last_error LIKE '%internal address%')",
            )
            .fetch_one(&db)
            .await
            .unwrap()
        }
    })
    .await;
    assert!(receiver.received_on("/inside").is_empty());
    app.shutdown().await;
    receiver.stop().await;
}

#[tokio::test]
async fn pushes_go_to_a_users_ten_latest_devices_and_never_to_a_phone_now_someone_elses() {
    let port = fakes::reserve_port();
    let fcm = fakes::fcm_on(port).await;
    let app = spawn_app_with(pushing_to(port, 3)).await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let device = |n: usize| format!("customer-device-{n}");
    // Twelve installs: the two registered first are retired.
    for n in 0..12 {
        json_body(
            app.post_as(
                &customer,
                "/v1/me/devices",
                &json!({"device_type": "android", "token": device(n)}),
            )
            .await,
            201,
        )
        .await;
    }
    // The last phone changes hands: its new owner signs in and registers it.
    let (new_owner, _) = register(&app, "customer").await;
    json_body(
        app.post_as(
            &new_owner,
            "/v1/me/devices",
            &json!({"device_type": "android", "token": device(11)}),
        )
        .await,
        201,
    )
    .await;
    problem(
        app.post_as(
            &customer,
            "/v1/me/devices",
            &json!({"device_type": "android", "token": "x".repeat(1025)}),
        )
        .await,
        422,
    )
    .await;

    let id = book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    let path = "/v1/projects/hilot-test/messages:send";
    fcm.wait_for(path, 9, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut tokens: Vec<String> = fcm
        .received_on(path)
        .iter()
        .map(|r| r.json()["message"].clone())
        .filter(|m| m["data"]["booking_id"] == id.as_str())
        .map(|m| m["token"].as_str().unwrap().to_owned())
        .filter(|t| t.starts_with("customer-device-"))
        .collect();
    tokens.sort();
    let mut expected: Vec<String> = (2..11).map(device).collect();
    expected.sort();
    assert_eq!(tokens, expected);

    // Signing out of the login that registered them takes the devices with it: the therapist
    // setting out reaches the customer's notifications, not those phones.
    let sent_before = fcm.received_on(path).len();
    expect_no_content(app.post_as(&customer, "/v1/auth/logout", &json!({})).await).await;
    crate::money::set_status(&app, &therapist.token, &id, "en_route").await;
    let db = app.db.clone();
    wait_until("the en_route notification is written", || {
        let db = db.clone();
        async move {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM notifications WHERE type = 'booking.en_route')",
            )
            .fetch_one(&db)
            .await
            .unwrap()
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after: Vec<Value> = fcm.received_on(path)[sent_before..]
        .iter()
        .map(|r| r.json()["message"].clone())
        .filter(|m| {
            m["token"]
                .as_str()
                .unwrap_or("")
                .starts_with("customer-device-")
        })
        .collect();
    assert!(after.is_empty(), "pushed after logout: {after:?}");
    app.shutdown().await;
    fcm.stop().await;
}

/// A logout answers 204 with no body.
async fn expect_no_content(response: reqwest::Response) {
    assert_eq!(response.status().as_u16(), 204);
}

#[tokio::test]
async fn two_servers_drain_one_outbox_and_deliver_each_webhook_once() {
    let receiver = fakes::webhook_receiver().await;
    let database = fresh_database().await;
    let mut settings = test_settings();
    quick_outbox(&mut settings, 5);
    let first = spawn_app_in(database.clone(), settings.clone()).await;
    let second = spawn_app_in(database, settings).await;
    let admin = make_admin(&first).await;
    endpoint(
        &first,
        &admin,
        format!("{}/all", receiver.url),
        json!(["*"]),
    )
    .await;
    const EVENTS: usize = 40;
    for n in 0..EVENTS {
        let mut tx = first.db.begin().await.unwrap();
        hilot::webhooks::emit(&mut tx, "payout.completed", json!({"n": n}))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    receiver
        .wait_for("/all", EVENTS, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = receiver.received_on("/all");
    let ids: HashSet<String> = hits
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), EVENTS, "every event arrived");
    assert_eq!(hits.len(), EVENTS, "none twice");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_booking_reminds_both_parties_once() {
    let app = crate::helpers::spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _socket, _service) = therapist_near(&app, &admin).await;
    let (customer, user) = register(&app, "customer").await;
    // Scheduled bookings are not dispatched by this server yet: arrange an accepted one directly.
    sqlx::query(
        "INSERT INTO bookings (customer_id, provider_id, service_id, type, booking_type, status, scheduled_at, \
             service_price, total_amount, provider_earnings, commission_amount, commission_rate) \
         SELECT u.id, p.id, (SELECT min(id) FROM services), 'home_service', 'scheduled', 'accepted', \
             now() + interval '30 minutes', 800, 800, 680, 120, 15 \
         FROM users u, providers p WHERE u.uuid = $1::uuid AND p.uuid = $2::uuid",
    )
    .bind(user["id"].as_str().unwrap())
    .bind(&therapist.provider_id)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(
        hilot::notifications::reminders::sweep(&app.db)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        hilot::notifications::reminders::sweep(&app.db)
            .await
            .unwrap(),
        0,
        "once"
    );
    for token in [&customer, &therapist.token] {
        let listed = json_body(app.get_as(token, "/v1/notifications").await, 200).await;
        let reminders: Vec<&Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "booking.reminder")
            .collect();
        assert_eq!(reminders.len(), 1, "{listed}");
        assert!(
            reminders[0]["action_data"]["minutes_before"]
                .as_i64()
                .unwrap()
                <= 30
        );
    }
}
