//! Reviews moving the therapist's rating, and the booking chat across both sockets and REST.

use serde_json::json;

use crate::helpers::{
    error_fields, json_body, make_admin, problem, register, spawn_app, spawn_app_with,
    test_settings,
};
use crate::money::{book_and_offer, complete, next_of, set_status, therapist_near};
use crate::sockets::connect;

#[tokio::test]
async fn reviews_move_the_average_and_hidden_ones_leave_it() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    let path = format!("/v1/bookings/{id}/review");
    crate::helpers::accept(&app, &therapist.token, &id).await;
    // Before completion: refused.
    problem(
        app.post_as(&customer, &path, &json!({"overall_rating": 5}))
            .await,
        409,
    )
    .await;
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    for bad in [
        json!({"overall_rating": 6}),
        json!({"overall_rating": 0}),
        json!({"overall_rating": 4, "quality_rating": 9}),
    ] {
        let refused = problem(app.post_as(&customer, &path, &bad).await, 422).await;
        assert!(!error_fields(&refused).is_empty(), "{refused}");
    }
    let (stranger, _) = register(&app, "customer").await;
    problem(
        app.post_as(&stranger, &path, &json!({"overall_rating": 1}))
            .await,
        404,
    )
    .await;

    let review = json_body(
        app.post_as(
            &customer,
            &path,
            &json!({"overall_rating": 4, "comment": "Great pressure", "tags": ["On-time"]}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(review["reviewer_type"], "customer");
    problem(
        app.post_as(&customer, &path, &json!({"overall_rating": 5}))
            .await,
        409,
    )
    .await;
    // The therapist reviews the customer; that does not touch the therapist's own rating.
    json_body(
        app.post_as(&therapist.token, &path, &json!({"overall_rating": 2}))
            .await,
        201,
    )
    .await;

    let rating = |app: &crate::helpers::TestApp| {
        let db = app.db.clone();
        let provider = therapist.provider_id.clone();
        async move {
            sqlx::query_as::<_, (rust_decimal::Decimal, i32)>(
                "SELECT average_rating, total_reviews FROM providers WHERE uuid = $1::uuid",
            )
            .bind(provider)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(rating(&app).await, (rust_decimal::Decimal::new(400, 2), 1));
    let listed = json_body(
        app.get_as(
            &customer,
            &format!("/v1/therapists/{}/reviews", therapist.provider_id),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // The booking's view shows the new average to the customer.
    let booking = crate::money::booking(&app, &customer, &id).await;
    assert_eq!(booking["provider"]["average_rating"], "4.00");

    // An admin hides it: it leaves the average and the public list.
    let review_id = review["id"].as_str().unwrap();
    problem(
        app.post_as(
            &customer,
            &format!("/v1/admin/reviews/{review_id}/moderate"),
            &json!({"is_visible": false}),
        )
        .await,
        403,
    )
    .await;
    let hidden = json_body(
        app.post_as(
            &admin,
            &format!("/v1/admin/reviews/{review_id}/moderate"),
            &json!({"is_visible": false, "is_flagged": true, "flagged_reason": "abusive"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(hidden["is_visible"], false);
    assert_eq!(hidden["is_flagged"], true);
    assert_eq!(rating(&app).await, (rust_decimal::Decimal::ZERO, 0));
    let listed = json_body(
        app.get_as(
            &customer,
            &format!("/v1/therapists/{}/reviews", therapist.provider_id),
        )
        .await,
        200,
    )
    .await;
    assert!(listed.as_array().unwrap().is_empty());
    let flagged = json_body(
        app.get_as(&admin, "/v1/admin/reviews?flagged=true").await,
        200,
    )
    .await;
    assert_eq!(flagged.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn customer_and_therapist_chat_across_both_sockets() {
    let app = spawn_app().await;
    sqlx::query("UPDATE app_settings SET value = $1 WHERE key = 'messaging'")
        .bind(json!({"max_length": 200, "per_minute": 6, "open_after_completion_minutes": 60}))
        .execute(&app.db)
        .await
        .unwrap();
    let admin = make_admin(&app).await;
    let (therapist, mut therapist_socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let mut customer_socket = connect(&app, "/v1/ws/customer", &customer).await;
    let id = book_and_offer(&app, &customer, &mut therapist_socket, &service, "cash").await;
    let path = format!("/v1/bookings/{id}/messages");
    // Pending: the chat is not open yet.
    problem(
        app.post_as(&customer, &path, &json!({"body": "hello?"}))
            .await,
        409,
    )
    .await;
    crate::helpers::accept(&app, &therapist.token, &id).await;

    // Customer socket -> therapist socket.
    customer_socket
        .send_json(&json!({"type": "message", "booking_id": id, "body": "Gate code is 1234"}))
        .await;
    let heard = next_of(&mut therapist_socket, "message").await;
    assert_eq!(heard["body"], "Gate code is 1234");
    assert_eq!(heard["from"], "customer");
    assert_eq!(heard["booking_id"], id.as_str());
    assert!(heard["id"].is_string() && heard["at"].is_string());
    let echoed = next_of(&mut customer_socket, "message").await;
    assert_eq!(echoed["id"], heard["id"]);

    // Therapist over REST -> customer socket.
    let sent = json_body(
        app.post_as(
            &therapist.token,
            &path,
            &json!({"body": "Thanks, 5 minutes away"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(sent["from"], "therapist");
    let heard = next_of(&mut customer_socket, "message").await;
    assert_eq!(heard["body"], "Thanks, 5 minutes away");

    // Therapist socket -> customer socket.
    therapist_socket
        .send_json(&json!({"type": "message", "booking_id": id, "body": "Parking now"}))
        .await;
    assert_eq!(
        next_of(&mut customer_socket, "message").await["body"],
        "Parking now"
    );

    // Read receipts: the customer reads; the therapist hears about it.
    let listed = json_body(app.get_as(&customer, &path).await, 200).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed[1]["read_at"].is_null());
    let receipt = json_body(
        app.post_as(&customer, &format!("{path}/read"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(receipt["message_ids"].as_array().unwrap().len(), 2);
    let read = next_of(&mut therapist_socket, "message.read").await;
    assert_eq!(read["by"], "customer");
    let listed = json_body(app.get_as(&therapist.token, &path).await, 200).await;
    assert!(listed[1]["read_at"].is_string(), "{listed}");
    assert!(
        listed[0]["read_at"].is_null(),
        "the therapist has not read the customer's message"
    );

    // Nobody else reads or writes; bad bodies are refused; a bad frame gets an error frame.
    let (stranger, _) = register(&app, "customer").await;
    problem(app.get_as(&stranger, &path).await, 404).await;
    problem(
        app.post_as(&stranger, &path, &json!({"body": "hi"})).await,
        404,
    )
    .await;
    problem(app.get_as(&admin, &path).await, 404).await;
    assert_eq!(
        error_fields(
            &problem(
                app.post_as(&customer, &path, &json!({"body": "   "})).await,
                422
            )
            .await
        ),
        ["body"]
    );
    assert_eq!(
        error_fields(
            &problem(
                app.post_as(&customer, &path, &json!({"body": "x".repeat(201)}))
                    .await,
                422
            )
            .await
        ),
        ["body"]
    );
    customer_socket
        .send_json(&json!({"type": "message", "booking_id": id, "body": ""}))
        .await;
    let error = next_of(&mut customer_socket, "error").await;
    assert_eq!(error["code"], "validation");
    let mut stranger_socket = connect(&app, "/v1/ws/customer", &stranger).await;
    stranger_socket
        .send_json(&json!({"type": "message", "booking_id": id, "body": "let me in"}))
        .await;
    assert_eq!(
        next_of(&mut stranger_socket, "error").await["code"],
        "not_found"
    );

    // Rate: six a minute per sender (one sent so far by the customer).
    for n in 0..5 {
        json_body(
            app.post_as(&customer, &path, &json!({"body": format!("msg {n}")}))
                .await,
            201,
        )
        .await;
    }
    let limited = app
        .post_as(&customer, &path, &json!({"body": "one too many"}))
        .await;
    assert!(limited.headers().contains_key("retry-after"));
    problem(limited, 429).await;

    // After completion the chat stays open a while, then closes.
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    json_body(
        app.post_as(&therapist.token, &path, &json!({"body": "Thank you!"}))
            .await,
        201,
    )
    .await;
    sqlx::query(
        "UPDATE bookings SET completed_at = now() - interval '2 hours' WHERE uuid = $1::uuid",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    problem(
        app.post_as(&therapist.token, &path, &json!({"body": "Hello again"}))
            .await,
        409,
    )
    .await;
    let _ = complete;
}

/// Chat rides the sockets' limits (issue 11): every chat frame takes a token of the socket's
/// bucket, an oversized one gets an error frame or closes with 1009, and a socket closed for
/// ended credentials carries no more chat.
#[tokio::test]
async fn chat_frames_obey_the_socket_limits_and_stop_with_the_credentials() {
    let mut settings = test_settings();
    settings.socket_frames_per_s = 1;
    settings.socket_frame_burst = 3;
    let app = spawn_app_with(settings).await;
    sqlx::query("UPDATE app_settings SET value = $1 WHERE key = 'messaging'")
        .bind(json!({"max_length": 1000, "per_minute": 100, "open_after_completion_minutes": 60}))
        .execute(&app.db)
        .await
        .unwrap();
    let admin = make_admin(&app).await;
    let (therapist, mut therapist_socket, service) = therapist_near(&app, &admin).await;
    let (customer, user) = register(&app, "customer").await;
    let id = book_and_offer(&app, &customer, &mut therapist_socket, &service, "cash").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    let path = format!("/v1/bookings/{id}/messages");

    // A burst of chat frames: each is answered by its echo (stored) or by `rate_limited`
    // (dropped), and the bucket refuses some of them.
    const SENT: usize = 20;
    let mut customer_socket = connect(&app, "/v1/ws/customer", &customer).await;
    for n in 0..SENT {
        customer_socket
            .send_json(&json!({"type": "message", "booking_id": id, "body": format!("note {n}")}))
            .await;
    }
    let (mut echoed, mut limited) = (0, 0);
    while echoed + limited < SENT {
        let frame = customer_socket.next_json().await;
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("message"), _) => echoed += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            (Some("error"), _) => panic!("unexpected error frame {frame}"),
            _ => {}
        }
    }
    assert!(limited > 0, "all {SENT} chat frames passed a bucket of 3");
    let stored = json_body(app.get_as(&customer, &path).await, 200).await;
    assert_eq!(
        stored.as_array().unwrap().len(),
        echoed,
        "exactly the admitted frames are stored"
    );

    // Over 4 KiB: an error frame, and the socket stays open (once the bucket has a token).
    let refused = loop {
        customer_socket
            .send_json(&json!({"type": "message", "booking_id": id, "body": "y".repeat(5 * 1024)}))
            .await;
        let error = next_of(&mut customer_socket, "error").await;
        if error["code"] != "rate_limited" {
            break error;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert_eq!(refused["code"], "frame_too_large", "{refused}");
    // Over 64 KiB: the therapist's socket closes with 1009.
    therapist_socket
        .send_json(&json!({"type": "message", "booking_id": id, "body": "x".repeat(70 * 1024)}))
        .await;
    assert_eq!(therapist_socket.next_close().await.0, 1009);

    // Credentials ended: the customer's socket closes with 4001 and their chat stops.
    json_body(
        app.post_as(
            &admin,
            &format!(
                "/v1/admin/users/{}/revoke-tokens",
                user["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        customer_socket.next_close().await,
        (4001, "revoked".to_owned())
    );
    problem(
        app.post_as(&customer, &path, &json!({"body": "still here?"}))
            .await,
        401,
    )
    .await;
    let after = json_body(app.get_as(&therapist.token, &path).await, 200).await;
    assert_eq!(after.as_array().unwrap().len(), echoed);
    app.shutdown().await;
}
