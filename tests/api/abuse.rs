//! Abuse cases of issue 11 that are not about sockets or money: bad input is 4xx, never 5xx;
//! bounded password hashing; registration, nearby and body-arrival limits; passwords.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bookings::{book, booking_body};
use crate::helpers::{
    error_fields, json_body, make_admin, next_phone, problem, register, registration, service_id,
    spawn_app, spawn_app_with, test_settings, PASSWORD,
};
use crate::live::online_therapist;
use crate::sockets::connect;

#[tokio::test]
async fn a_nul_in_any_text_or_json_field_is_a_422_naming_it() {
    let app = spawn_app().await;
    let mut body = registration(&next_phone(), "customer");
    body["email"] = json!("a\u{0}b@example.com");
    let refused = problem(app.post_public("/v1/auth/register", &body).await, 422).await;
    assert_eq!(error_fields(&refused), ["email"]);

    let (customer, _) = register(&app, "customer").await;
    let service = service_id(&app, "swedish-massage").await;
    let mut booking = booking_body(&service, 14.55, 121.02);
    booking["promo_code"] = json!("WELCOME\u{0}");
    let refused = problem(book(&app, &customer, "nul", &booking).await, 422).await;
    assert_eq!(error_fields(&refused), ["promo_code"]);

    let (therapist, _) = register(&app, "therapist").await;
    let profile = json!({
        "base_lat": 14.55, "base_lng": 121.02, "service_radius_km": 5,
        "default_schedule": {"monday": [{"start": "09:00\u{0}", "end": "18:00"}]},
    });
    let refused = problem(
        app.put_as(&therapist, "/v1/therapist/profile", &profile)
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&refused), ["default_schedule.monday[0].start"]);
    let refused = problem(
        app.get_as(&customer, "/v1/bookings?status=pending%00")
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&refused), ["status"]);
    app.shutdown().await;
}

#[tokio::test]
async fn composed_values_must_fit_their_column() {
    let app = spawn_app().await;
    let (customer, _) = register(&app, "customer").await;
    let service = service_id(&app, "swedish-massage").await;
    // Each line within its own limit, together longer than a booking's address holds.
    let address = json_body(
        app.post_as(
            &customer,
            "/v1/me/addresses",
            &json!({"address_line1": "a".repeat(255), "address_line2": "b".repeat(255),
                    "city": "Makati", "lat": 14.55, "lng": 121.02}),
        )
        .await,
        201,
    )
    .await;
    let body = json!({"service_id": service, "booking_type": "now", "address_id": address["id"]});
    let refused = problem(book(&app, &customer, "long", &body).await, 422).await;
    assert_eq!(error_fields(&refused), ["address_id"]);
    app.shutdown().await;
}

#[tokio::test]
async fn viewports_of_any_size_answer_on_the_socket_and_over_http() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut therapist_socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
    therapist_socket
        .send_json(&crate::live::ping(1, 14.5547, 121.0244))
        .await;
    assert_eq!(therapist_socket.next_json().await["type"], "ack");
    let mut dashboard = connect(&app, "/v1/ws/dashboard", &admin).await;
    for bbox in [
        json!([-180, -90, 180, 90]),
        json!([-540, -85, 540, 85]),
        json!([170, -10, -170, 10]),
    ] {
        dashboard
            .send_json(&json!({"type": "subscribe", "bbox": bbox}))
            .await;
        let snapshot = dashboard.next_json().await;
        assert_eq!(snapshot["type"], "snapshot", "{bbox}: {snapshot}");
        let seen = snapshot["providers"].as_array().unwrap().len();
        let world = bbox[0] != 170;
        assert_eq!(seen, usize::from(world), "{bbox}");
        tokio::time::sleep(Duration::from_millis(600)).await; // the subscribe bucket
    }
    for path in ["live", "hexes"] {
        for bbox in ["-180,-90,180,90", "-400,-85,400,85", "170,-10,-170,10"] {
            json_body(
                app.get_as(&admin, &format!("/v1/dispatch/{path}?bbox={bbox}"))
                    .await,
                200,
            )
            .await;
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn too_large_and_too_slow_bodies_answer_413_and_408_as_problems() {
    let mut settings = test_settings();
    settings.body_timeout_s = 1;
    let app = spawn_app_with(settings).await;
    let (customer, _) = register(&app, "customer").await;
    let big = "x".repeat(100 * 1024);
    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "big")
        .header("content-type", "application/json")
        .body(format!("{{\"customer_notes\": \"{big}\"}}"))
        .send()
        .await
        .unwrap();
    problem(response, 413).await;

    // One byte, then nothing: the body never completes.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn hashing_is_bounded_and_registration_is_limited_per_address() {
    let mut settings = test_settings();
    settings.hash_concurrency = Some(1);
    settings.hash_queue = 1;
    let app = spawn_app_with(settings).await;
    let attempts = (0..12).map(|_| {
        let app = &app;
        async move {
            app.post_public(
                "/v1/auth/register",
                &registration(&next_phone(), "customer"),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut busy = 0;
    for answer in answers {
        match answer.status().as_u16() {
            201 => {}
            503 => {
                assert_eq!(answer.headers()["retry-after"], "1");
                problem(answer, 503).await;
                busy += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        busy > 0,
        "twelve hashes at once with room for two never refused one"
    );

    let mut settings = test_settings();
    settings.register_burst_per_address = 2;
    let app2 = spawn_app_with(settings).await;
    for _ in 0..2 {
        json_body(
            app2.post_public(
                "/v1/auth/register",
                &registration(&next_phone(), "customer"),
            )
            .await,
            201,
        )
        .await;
    }
    let response = app2
        .post_public(
            "/v1/auth/register",
            &registration(&next_phone(), "customer"),
        )
        .await;
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 429).await;
    app.shutdown().await;
    app2.shutdown().await;
}

#[tokio::test]
async fn nearby_and_slots_are_rate_limited_per_customer() {
    let mut settings = test_settings();
    settings.nearby_burst_per_user = 3;
    let app = spawn_app_with(settings).await;
    let (customer, _) = register(&app, "customer").await;
    let service = service_id(&app, "swedish-massage").await;
    let path = format!("/v1/therapists/nearby?lat=14.55&lng=121.02&service_id={service}");
    for _ in 0..3 {
        json_body(app.get_as(&customer, &path).await, 200).await;
    }
    let response = app.get_as(&customer, &path).await;
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 429).await;
    // Slots near a place draw on the same bucket: enough of them would trace the circle each
    // therapist travels around their base.
    let date = (chrono::Utc::now() + chrono::Duration::days(1)).date_naive();
    let slots = format!("/v1/slots?lat=14.55&lng=121.02&service_id={service}&date={date}");
    problem(app.get_as(&customer, &slots).await, 429).await;
    // Another customer has a bucket of their own.
    let (other, _) = register(&app, "customer").await;
    json_body(app.get_as(&other, &path).await, 200).await;
    json_body(app.get_as(&other, &slots).await, 200).await;
    app.shutdown().await;
}

#[tokio::test]
async fn passwords_holding_the_phone_or_the_name_or_too_common_are_refused() {
    let app = spawn_app().await;
    let phone = next_phone();
    let national = phone.trim_start_matches("+63");
    for (password, why) in [
        (format!("my phone 0{national}!"), "phone number"),
        (format!("+63 {national} secret"), "phone number"),
        ("maria-santos-rocks".to_owned(), "name"),
        ("password1".to_owned(), "too easy to guess"),
        ("iloveyou".to_owned(), "too easy to guess"),
    ] {
        let mut body = registration(&phone, "customer");
        body["password"] = json!(password);
        let refused = problem(app.post_public("/v1/auth/register", &body).await, 422).await;
        assert_eq!(error_fields(&refused), ["password"], "{password}");
        assert!(
            refused["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(why),
            "{password}: {refused}"
        );
    }
    let mut body = registration(&phone, "customer");
    body["password"] = json!(PASSWORD);
    json_body(app.post_public("/v1/auth/register", &body).await, 201).await;
    app.shutdown().await;
}
