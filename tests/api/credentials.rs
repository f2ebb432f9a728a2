//! Credentials on open sockets (issue 11): logout, expiry, revocation, a role removed, an account
//! deactivated and a therapist suspended or rejected each close the affected sockets with 4001
//! and the cause, on every node; WebSocket tickets; sockets per user; frame limits.

use std::time::Duration;

use serde_json::json;

use crate::bookings::{book, booking_body, next_of, therapist_at};
use crate::helpers::{
    fresh_database, json_body, make_admin, problem, register, spawn_app, spawn_app_in,
    spawn_app_with, test_settings, TestApp,
};
use crate::live::{online_therapist, ping};
use crate::sockets::{
    connect, connect_url, connect_with_header, refused_status, refused_url_status, Socket,
};

const MAKATI: (f64, f64) = (14.5547, 121.0244);

async fn ticket(app: &TestApp, token: &str) -> String {
    let body = json_body(app.post_as(token, "/v1/ws/tickets", &json!({})).await, 201).await;
    assert_eq!(body["expires_in"], 30);
    body["ticket"].as_str().unwrap().to_owned()
}

fn ticket_url(app: &TestApp, path: &str, ticket: &str) -> String {
    format!("ws://127.0.0.1:{}{path}?ticket={ticket}", app.port)
}

async fn expect_closed(socket: &mut Socket, code: u16, reason: &str) {
    assert_eq!(socket.next_close().await, (code, reason.to_owned()));
}

/// Two servers on one database and one Redis: a cluster of two nodes.
async fn two_nodes() -> (TestApp, TestApp) {
    let database = fresh_database().await;
    let a = spawn_app_in(database.clone(), test_settings()).await;
    let b = spawn_app_in(database, test_settings()).await;
    (a, b)
}

#[tokio::test]
async fn logging_out_on_one_node_closes_that_tokens_sockets_on_the_other() {
    let (a, b) = two_nodes().await;
    let admin = make_admin(&a).await;
    let (therapist, _) = online_therapist(&a, &admin).await;
    // The therapist's app on node B, by header; a second token's socket must survive.
    let mut app_socket = connect_with_header(&b, "/v1/ws/therapist", &therapist.token).await;
    let phone = therapist.user["phone"].as_str().unwrap();
    let other = json_body(
        crate::helpers::login(&a, phone, crate::helpers::PASSWORD).await,
        200,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut other_socket = connect(&b, "/v1/ws/therapist", &other).await;
    // The token was cached on B by the upgrade; logout on A must evict it there too.
    json_body(b.get_as(&therapist.token, "/v1/me").await, 200).await;

    assert_eq!(
        a.post_as(&therapist.token, "/v1/auth/logout", &json!({}))
            .await
            .status(),
        204
    );
    expect_closed(&mut app_socket, 4001, "logged_out").await;
    problem(b.get_as(&therapist.token, "/v1/me").await, 401).await;
    other_socket.send_json(&ping(1, MAKATI.0, MAKATI.1)).await;
    assert_eq!(other_socket.next_json().await["type"], "ack");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn removing_the_therapist_role_closes_the_socket_and_stops_offers_everywhere() {
    let (a, b) = two_nodes().await;
    let admin = make_admin(&a).await;
    // Node B holds the therapist's socket and takes the booking (so B's index and B's dispatch).
    let (therapist, mut socket, service) =
        therapist_at(&b, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let user_id = therapist.user["id"].as_str().unwrap().to_owned();
    let roles = json_body(
        a.put_as(
            &admin,
            &format!("/v1/admin/users/{user_id}/roles"),
            &json!({"roles": ["customer"]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(roles["roles"], json!(["customer"]));
    expect_closed(&mut socket, 4001, "role_removed").await;
    // B no longer matches them: an admin's nearby on B is empty, and a booking on B gets no offer.
    let near = format!(
        "/v1/therapists/nearby?lat={}&lng={}&service_id={service}",
        MAKATI.0, MAKATI.1
    );
    let mut found = true;
    for _ in 0..50 {
        let body = json_body(b.get_as(&admin, &near).await, 200).await;
        found = body["therapists"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["provider_id"] == therapist.provider_id.as_str());
        if !found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!found, "the live index on B still matches a non-therapist");
    // The socket is refused from now on too.
    assert_eq!(
        refused_status(&b, "/v1/ws/therapist", &therapist.token).await,
        403
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn rejection_suspension_deactivation_revocation_and_expiry_each_close_with_their_reason() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;

    // Rejected: the therapist socket closes `suspended`.
    let (rejected, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, "/v1/ws/therapist", &rejected.token).await;
    json_body(
        app.post_as(
            &admin,
            &format!("/v1/admin/providers/{}/verify", rejected.provider_id),
            &json!({"status": "rejected", "reason": "licence expired"}),
        )
        .await,
        200,
    )
    .await;
    expect_closed(&mut socket, 4001, "suspended").await;

    // Suspended: the same, and the audit log has the decision.
    let (suspended, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, "/v1/ws/therapist", &suspended.token).await;
    let summary = json_body(
        app.put_as(
            &admin,
            &format!("/v1/admin/providers/{}/active", suspended.provider_id),
            &json!({"active": false, "reason": "complaints under review"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(summary["provider_id"], suspended.provider_id.as_str());
    expect_closed(&mut socket, 4001, "suspended").await;
    assert_eq!(
        refused_status(&app, "/v1/ws/therapist", &suspended.token).await,
        403
    );

    // Deactivated: every socket of the account closes, and its tokens stop working.
    let (customer, user) = register(&app, "customer").await;
    let mut socket = connect(&app, "/v1/ws/customer", &customer).await;
    json_body(
        app.put_as(
            &admin,
            &format!("/v1/admin/users/{}/active", user["id"].as_str().unwrap()),
            &json!({"active": false}),
        )
        .await,
        200,
    )
    .await;
    expect_closed(&mut socket, 4001, "deactivated").await;
    problem(app.get_as(&customer, "/v1/me").await, 401).await;

    // Revoked: an admin ends every session of a user.
    let (customer, user) = register(&app, "customer").await;
    let mut socket = connect(&app, "/v1/ws/customer", &customer).await;
    let revoked = json_body(
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
    assert_eq!(revoked["revoked"], 1);
    expect_closed(&mut socket, 4001, "revoked").await;

    // Expired: the socket closes when its token's lifetime ends, with no event at all.
    let (customer, _) = register(&app, "customer").await;
    sqlx::query("UPDATE personal_access_tokens SET expires_at = now() + interval '2 seconds'")
        .execute(&app.db)
        .await
        .unwrap();
    let mut socket = connect(&app, "/v1/ws/customer", &customer).await;
    expect_closed(&mut socket, 4001, "expired").await;

    // A demoted admin's dashboard stops streaming (admins are demoted by a super admin).
    let boss = make_admin(&app).await;
    sqlx::query(
        "INSERT INTO model_has_roles (role_id, model_type, model_id) \
         SELECT r.id, 'App\\Models\\User', t.tokenable_id FROM roles r, personal_access_tokens t \
         WHERE r.name = 'super_admin' AND t.token = $1",
    )
    .bind(hilot::accounts::tokens::digest(&boss))
    .execute(&app.db)
    .await
    .unwrap();
    let demoted = make_admin(&app).await;
    let me = json_body(app.get_as(&demoted, "/v1/me").await, 200).await;
    let mut dashboard = connect(&app, "/v1/ws/dashboard", &demoted).await;
    json_body(
        app.put_as(
            &boss,
            &format!("/v1/admin/users/{}/roles", me["id"].as_str().unwrap()),
            &json!({"roles": ["customer"]}),
        )
        .await,
        200,
    )
    .await;
    expect_closed(&mut dashboard, 4001, "role_removed").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_ticket_opens_one_socket_once_within_30_s_on_any_node() {
    let (a, b) = two_nodes().await;
    let (customer, _) = register(&a, "customer").await;
    problem(a.post_public("/v1/ws/tickets", &json!({})).await, 401).await;

    // Made on A, used on B. Shown first at sockets the customer may not open: refused with
    // 403, and not used up by it.
    let one = ticket(&a, &customer).await;
    assert!(one.starts_with("hwt_"), "{one}");
    for path in ["/v1/ws/therapist", "/v1/ws/dashboard"] {
        assert_eq!(refused_url_status(&ticket_url(&b, path, &one)).await, 403);
    }
    let mut socket = connect_url(&ticket_url(&b, "/v1/ws/customer", &one)).await;
    // Used once: a second use is refused.
    assert_eq!(
        refused_url_status(&ticket_url(&b, "/v1/ws/customer", &one)).await,
        401
    );
    // Expired: refused.
    let late = ticket(&a, &customer).await;
    sqlx::query("UPDATE ws_tickets SET expires_at = now() - interval '1 second'")
        .execute(&a.db)
        .await
        .unwrap();
    assert_eq!(
        refused_url_status(&ticket_url(&a, "/v1/ws/customer", &late)).await,
        401
    );
    // An empty ticket (a client's template left blank) counts as none: the token opens it.
    let _by_token = connect_url(&format!(
        "ws://127.0.0.1:{}/v1/ws/customer?ticket=&token={customer}",
        a.port
    ))
    .await;
    // The ticket's socket belongs to the token that made it: logging out closes it.
    a.post_as(&customer, "/v1/auth/logout", &json!({})).await;
    expect_closed(&mut socket, 4001, "logged_out").await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_fourth_socket_of_one_user_and_kind_replaces_the_oldest() {
    let app = spawn_app().await;
    let (customer, _) = register(&app, "customer").await;
    let mut first = connect(&app, "/v1/ws/customer", &customer).await;
    let _second = connect(&app, "/v1/ws/customer", &customer).await;
    let _third = connect(&app, "/v1/ws/customer", &customer).await;
    let mut fourth = connect(&app, "/v1/ws/customer", &customer).await;
    expect_closed(&mut first, 4000, "replaced").await;
    fourth.send_ping().await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_socket_limit_holds_across_nodes() {
    let (a, b) = two_nodes().await;
    let (customer, _) = register(&a, "customer").await;
    let mut oldest = connect(&a, "/v1/ws/customer", &customer).await;
    let _second = connect(&a, "/v1/ws/customer", &customer).await;
    let _third = connect(&b, "/v1/ws/customer", &customer).await;
    // The fourth, on B, pushes out the oldest, on A.
    let _fourth = connect(&b, "/v1/ws/customer", &customer).await;
    expect_closed(&mut oldest, 4000, "replaced").await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn every_frame_counts_on_every_socket_kind_and_oversized_frames_close_with_1009() {
    let mut settings = test_settings();
    settings.socket_frames_per_s = 1;
    settings.socket_frame_burst = 5;
    settings.dashboard_subscribes_per_s = 1;
    settings.dashboard_subscribe_burst = 1;
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let (customer, _) = register(&app, "customer").await;

    // Customer socket: binary frames past the bucket get `rate_limited`, and a flood is closed.
    let mut socket = connect(&app, "/v1/ws/customer", &customer).await;
    for _ in 0..260 {
        if !socket.feed_binary(vec![1, 2, 3]).await {
            break;
        }
    }
    socket.flush().await;
    let mut limited = 0;
    let closed = loop {
        match socket.next_json_or_close().await {
            Some(frame) if frame["code"] == "rate_limited" => limited += 1,
            Some(_) => {}
            None => break true,
        }
    };
    assert!(closed && limited > 0, "{limited} rate_limited frames");

    // A flood paced to slip an admitted frame in every second is closed all the same: the
    // refusals add up across the admitted frames (they refill only at the frame rate). Every
    // answer is read, so the close is the flood's, not a client that stopped reading.
    let mut paced = connect(&app, "/v1/ws/customer", &customer).await;
    let mut close = None;
    'rounds: for _round in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        for _ in 0..90 {
            paced.feed_binary(vec![1, 2, 3]).await;
        }
        paced.flush().await;
        for _ in 0..90 {
            match paced.next_json_or_close_code().await {
                Ok(frame) => assert!(
                    frame["code"] == "rate_limited" || frame["code"] == "unsupported_frame",
                    "{frame}"
                ),
                Err(code) => {
                    close = Some(code);
                    break 'rounds;
                }
            }
        }
    }
    assert_eq!(
        close,
        Some((1008, "too many frames".to_owned())),
        "a paced flood is closed as one"
    );

    // Dashboard: `subscribe` has its own, stricter bucket.
    let mut dashboard = connect(&app, "/v1/ws/dashboard", &admin).await;
    let bbox = json!({"type": "subscribe", "bbox": [121.0, 14.5, 121.1, 14.6]});
    dashboard.send_json(&bbox).await;
    assert_eq!(dashboard.next_json().await["type"], "snapshot");
    dashboard.send_json(&bbox).await;
    let refused = dashboard.next_json().await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("subscribe"));

    // A frame over the protocol limit closes with 1009 on every kind.
    let mut therapist_app = connect(&app, "/v1/ws/customer", &customer).await;
    therapist_app.send_text("x".repeat(70 * 1024)).await;
    assert_eq!(therapist_app.next_close().await.0, 1009);
    app.shutdown().await;
}

#[tokio::test]
async fn offers_reach_only_therapists_who_still_qualify() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let first = json_body(
        book(
            &app,
            &customer,
            "q-1",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let offer = next_of(&mut socket, "offer").await;
    assert_eq!(offer["booking_id"], first["id"]);
    // Suspended while the offer is open: the socket closes, the offer moves on.
    json_body(
        app.put_as(
            &admin,
            &format!("/v1/admin/providers/{}/active", therapist.provider_id),
            &json!({"active": false}),
        )
        .await,
        200,
    )
    .await;
    expect_closed(&mut socket, 4001, "suspended").await;
    // The offer went with the socket: accepting it now is refused (404/409 once the matcher
    // withdrew it; 403 when the accept gets there first, on a loaded machine: the accept reads
    // the suspension itself and withdraws the offer).
    let id = first["id"].as_str().unwrap();
    let status = app
        .post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/accept"),
            &json!({}),
        )
        .await
        .status()
        .as_u16();
    assert!(
        matches!(status, 403 | 404 | 409),
        "accept answered {status}"
    );
    let assigned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bookings WHERE provider_id IS NOT NULL")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(assigned, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_suspended_therapist_can_no_longer_work_their_accepted_booking_over_http() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let booking = json_body(
        book(
            &app,
            &customer,
            "s-1",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let id = booking["id"].as_str().unwrap().to_owned();
    next_of(&mut socket, "offer").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    json_body(
        app.put_as(
            &admin,
            &format!("/v1/admin/providers/{}/active", therapist.provider_id),
            &json!({"active": false}),
        )
        .await,
        200,
    )
    .await;

    // Their token still works (as a customer would), but the booking is no longer theirs to
    // read, move (completing it would earn a payout), cancel or chat on.
    problem(
        app.get_as(&therapist.token, &format!("/v1/bookings/{id}"))
            .await,
        404,
    )
    .await;
    problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/status"),
            &json!({"status": "en_route"}),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/cancel"),
            &json!({"reason": "leaving"}),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/messages"),
            &json!({"body": "still coming"}),
        )
        .await,
        404,
    )
    .await;
    let seen = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}")).await,
        200,
    )
    .await;
    assert_eq!(seen["status"], "accepted");
    app.shutdown().await;
}

#[tokio::test]
async fn a_token_deleted_by_hand_still_closes_its_socket_at_the_next_check() {
    let mut settings = test_settings();
    settings.credential_sweep_s = 1;
    let app = spawn_app_with(settings).await;
    let (customer, _) = register(&app, "customer").await;
    let mut socket = connect(&app, "/v1/ws/customer", &customer).await;
    // No event: an operator deletes the token in psql.
    sqlx::query("DELETE FROM personal_access_tokens")
        .execute(&app.db)
        .await
        .unwrap();
    expect_closed(&mut socket, 4001, "revoked").await;
    app.shutdown().await;
}
