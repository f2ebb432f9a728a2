//! Money rules in one place (issue 11): only `/cancel` cancels, a `now` booking has no
//! `scheduled_at` and pays from its acceptance, the per-customer promo limit holds under
//! concurrency, and a customer holds at most `max_pending_bookings` waiting bookings.

use serde_json::json;

use crate::bookings::{book, booking_body, next_of, set_app_setting, therapist_at};
use crate::helpers::{accept, error_fields, json_body, make_admin, problem, register, spawn_app};

const MAKATI: (f64, f64) = (14.5547, 121.0244);

#[tokio::test]
async fn only_cancel_cancels_and_a_now_booking_pays_from_its_acceptance() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;

    // A `now` booking with a far `scheduled_at` (which made every cancellation free) is refused.
    let mut far = booking_body(&service, MAKATI.0, MAKATI.1);
    far["scheduled_at"] = json!((chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339());
    let refused = problem(book(&app, &customer, "far", &far).await, 422).await;
    assert_eq!(error_fields(&refused), ["scheduled_at"]);

    let booking = json_body(
        book(
            &app,
            &customer,
            "k1",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let id = booking["id"].as_str().unwrap();
    // `/status` never cancels, for the customer (pending) nor for the therapist (accepted).
    let path = format!("/v1/bookings/{id}/status");
    let no = problem(
        app.post_as(&customer, &path, &json!({"status": "cancelled"}))
            .await,
        409,
    )
    .await;
    assert!(no["detail"].as_str().unwrap().contains("/cancel"), "{no}");
    next_of(&mut socket, "offer").await;
    accept(&app, &therapist.token, id).await;
    problem(
        app.post_as(&therapist.token, &path, &json!({"status": "cancelled"}))
            .await,
        409,
    )
    .await;
    // Even with a far `scheduled_at` written in by an old client, the window runs from the
    // acceptance: cancelling now costs the policy's fee (50 % of 800).
    sqlx::query(
        "UPDATE bookings SET scheduled_at = now() + interval '30 days' WHERE uuid = $1::uuid",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .unwrap();
    let cancelled = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancellation_fee"], "400.00");
    assert_eq!(cancelled["cancellation_reason"], "changed my mind");
    assert!(cancelled["cancelled_at"].is_string());
    let (by, customer_id): (Option<i64>, i64) =
        sqlx::query_as("SELECT cancelled_by, customer_id FROM bookings WHERE uuid = $1::uuid")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(by, Some(customer_id));
    app.shutdown().await;
}

#[tokio::test]
async fn ten_concurrent_bookings_get_a_once_per_customer_promo_once() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (_, _socket, service) = therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    set_app_setting(&app, "max_pending_bookings", json!(50)).await;
    sqlx::query(
        "INSERT INTO promo_codes (code, discount_type, discount_value, valid_from, valid_until, usage_limit, per_user_limit) \
         VALUES ('ONCE', 'fixed_amount', 100, now() - interval '1 day', now() + interval '1 day', 1000, 1)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (customer, _) = register(&app, "customer").await;
    let mut body = booking_body(&service, MAKATI.0, MAKATI.1);
    body["promo_code"] = json!("ONCE");
    let attempts = (0..10).map(|i| {
        let (app, customer, body) = (&app, &customer, &body);
        async move { book(app, customer, &format!("promo-{i}"), body).await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut created = 0;
    for answer in answers {
        match answer.status().as_u16() {
            201 => created += 1,
            422 => {
                let refused = problem(answer, 422).await;
                assert_eq!(error_fields(&refused), ["promo_code"]);
            }
            other => panic!("unexpected {other}: {}", answer.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1, "the promo gave more than one discount");
    let uses: i64 = sqlx::query_scalar("SELECT count(*) FROM promo_code_usages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(uses, 1);

    // Cancelling gives the use back: the customer may use it again.
    let booking: (String,) = sqlx::query_as(
        "SELECT b.uuid::text FROM bookings b JOIN promo_code_usages u ON u.booking_id = b.id",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{}/cancel", booking.0),
            &json!({"reason": "wrong address"}),
        )
        .await,
        200,
    )
    .await;
    json_body(book(&app, &customer, "promo-again", &body).await, 201).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_customer_holds_at_most_max_pending_bookings_waiting() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    // Nobody takes them: the therapist never answers, so they stay pending.
    let (_, _socket, service) = therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let body = booking_body(&service, MAKATI.0, MAKATI.1);
    let first = json_body(book(&app, &customer, "w1", &body).await, 201).await;
    json_body(book(&app, &customer, "w2", &body).await, 201).await;
    let third = problem(book(&app, &customer, "w3", &body).await, 409).await;
    assert_eq!(third["type"], "/problems/too-many-pending-bookings");
    // A retry of one already made is still its replay, not a refusal.
    json_body(book(&app, &customer, "w2", &body).await, 201).await;
    // Cancelling one makes room.
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{}/cancel", first["id"].as_str().unwrap()),
            &json!({"reason": "not needed"}),
        )
        .await,
        200,
    )
    .await;
    json_body(book(&app, &customer, "w3", &body).await, 201).await;
    app.shutdown().await;
}
