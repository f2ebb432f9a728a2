//! The matcher: batched assignment for least total travel, supply meeting waiting bookings,
//! race losers staying eligible, offers any node can read, and the lease handing a region to
//! another node when its holder dies.

use std::time::Duration;

use serde_json::{json, Value};

use crate::binary::Binary;
use crate::bookings::{book, booking_body, next_of, set_app_setting, therapist_at, MAKATI};
use crate::helpers::{
    fresh_database, json_body, make_admin, register, spawn_app, spawn_app_in, test_settings,
    TestApp,
};
use crate::live::{online_therapist, ping};
use crate::sockets::connect;

/// A point `east_m` metres east of Makati (along its parallel).
fn east(east_m: f64) -> (f64, f64) {
    let metres_per_degree = 111_320.0 * MAKATI.0.to_radians().cos();
    (MAKATI.0, MAKATI.1 + east_m / metres_per_degree)
}

async fn create(app: &TestApp, customer: &str, service: &str, at: (f64, f64), key: &str) -> String {
    json_body(
        book(app, customer, key, &booking_body(service, at.0, at.1)).await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn offers_of(app: &TestApp, admin: &str, booking: &str) -> Vec<Value> {
    json_body(
        app.get_as(admin, &format!("/v1/admin/bookings/{booking}/offers"))
            .await,
        200,
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn two_bookings_in_one_window_get_the_pairing_of_least_total_travel() {
    let app = spawn_app().await;
    // A wide window, so both bookings land in one round on a busy machine too.
    set_app_setting(
        &app,
        "dispatch",
        json!({"offer_timeout_s": 20, "batch_size": 1, "initial_radius_km": 5, "radius_step_km": 5, "batch_window_ms": 3000}),
    )
    .await;
    let admin = make_admin(&app).await;
    // T1 and T2 are 3 km apart. B1 is 1.4 km from T1 and 1.6 km from T2; B2 is 1.0 km from
    // T1 and 4.0 km from T2. First come, nearest first would send T1 to B1 (5.4 km in all).
    let t1_at = east(0.0);
    let t2_at = east(3000.0);
    let (_t1, mut t1, service) = therapist_at(&app, &admin, t1_at.0, t1_at.1).await;
    let (_t2, mut t2, _) = therapist_at(&app, &admin, t2_at.0, t2_at.1).await;
    let (customer, _) = register(&app, "customer").await;
    let b1 = create(&app, &customer, &service, east(1400.0), "b1").await;
    let b2 = create(&app, &customer, &service, east(-1000.0), "b2").await;

    let to_t1 = next_of(&mut t1, "offer").await;
    let to_t2 = next_of(&mut t2, "offer").await;
    assert_eq!(to_t1["booking_id"], b2.as_str(), "T1 takes B2 (1.0 km)");
    assert_eq!(to_t2["booking_id"], b1.as_str(), "T2 takes B1 (1.6 km)");
    assert!((995..=1005).contains(&to_t1["distance_m"].as_u64().unwrap()));
    assert!((1595..=1605).contains(&to_t2["distance_m"].as_u64().unwrap()));

    // Dispatchers read the same from the offers endpoint.
    let offers = offers_of(&app, &admin, &b1).await;
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0]["outcome"], "open");
    assert_eq!(offers[0]["round"], 1);
    assert!((1595..=1605).contains(&offers[0]["distance_m"].as_u64().unwrap()));
    assert!(offers[0]["eta_seconds"].as_i64().unwrap() > 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_therapist_coming_online_near_waiting_bookings_is_offered_the_nearest() {
    let app = spawn_app().await;
    // One customer books all three (more than the default `max_pending_bookings`).
    set_app_setting(&app, "max_pending_bookings", json!(10)).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = online_therapist(&app, &admin).await;
    // Offline for now: the bookings wait with nobody to serve them.
    json_body(
        app.put_as(
            &therapist.token,
            "/v1/therapist/availability",
            &json!({"online": false}),
        )
        .await,
        200,
    )
    .await;
    let (customer, _) = register(&app, "customer").await;
    // Oldest first, farthest first: waiting a few hundred milliseconds longer is worth far less
    // than the kilometres between them.
    let far = create(&app, &customer, &service, east(3000.0), "far").await;
    let middle = create(&app, &customer, &service, east(2000.0), "middle").await;
    let near = create(&app, &customer, &service, east(800.0), "near").await;
    // Let a round find nobody, so the bookings are parked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(offers_of(&app, &admin, &near).await.is_empty());

    json_body(
        app.put_as(
            &therapist.token,
            "/v1/therapist/availability",
            &json!({"online": true}),
        )
        .await,
        200,
    )
    .await;
    let mut socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
    socket.send_json(&ping(1, MAKATI.0, MAKATI.1)).await;
    let offer = next_of(&mut socket, "offer").await;
    assert_eq!(offer["booking_id"], near.as_str());
    assert!((795..=805).contains(&offer["distance_m"].as_u64().unwrap()));
    assert!(offers_of(&app, &admin, &far).await.is_empty());
    assert!(offers_of(&app, &admin, &middle).await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn the_loser_of_an_accept_race_is_offered_the_next_booking() {
    let app = spawn_app().await;
    set_app_setting(
        &app,
        "dispatch",
        json!({"offer_timeout_s": 20, "batch_size": 2, "initial_radius_km": 5, "radius_step_km": 5, "batch_window_ms": 200}),
    )
    .await;
    let admin = make_admin(&app).await;
    let (a, mut a_socket, service) = therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (b, mut b_socket, _) = therapist_at(&app, &admin, MAKATI.0 + 0.002, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let first = create(&app, &customer, &service, MAKATI, "first").await;
    next_of(&mut a_socket, "offer").await;
    next_of(&mut b_socket, "offer").await;
    // A second booking waits: both therapists hold the first one's offer.
    let second = create(
        &app,
        &customer,
        &service,
        (MAKATI.0 - 0.001, MAKATI.1),
        "second",
    )
    .await;

    let path = format!("/v1/bookings/{first}/accept");
    let empty = json!({});
    let (ra, rb) = tokio::join!(
        app.post_as(&a.token, &path, &empty),
        app.post_as(&b.token, &path, &empty)
    );
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let a_won = ra.status().as_u16() == 200;
    let loser_socket = if a_won { &mut b_socket } else { &mut a_socket };
    assert_eq!(
        next_of(loser_socket, "offer.withdrawn").await["reason"],
        "taken"
    );
    // The loser is free at once and gets the waiting booking.
    assert_eq!(
        next_of(loser_socket, "offer").await["booking_id"],
        second.as_str()
    );
    let mut outcomes: Vec<String> = offers_of(&app, &admin, &first)
        .await
        .iter()
        .map(|o| o["outcome"].as_str().unwrap().to_owned())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["accepted", "lost_race"]);
    app.shutdown().await;
}

/// A therapist's eligibility is read again inside the accept, whatever node made the offer or
/// last heard them: one who went offline, or took another booking, since the offer is refused,
/// their offer is withdrawn (they are told), and the booking goes on to the next therapist.
#[tokio::test]
async fn an_accept_rechecks_that_the_therapist_is_still_online_and_free() {
    let app = spawn_app().await;
    set_app_setting(
        &app,
        "dispatch",
        json!({"offer_timeout_s": 30, "batch_size": 1, "initial_radius_km": 5, "radius_step_km": 5, "batch_window_ms": 200}),
    )
    .await;
    let admin = make_admin(&app).await;
    let (near, mut near_socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (next, mut next_socket, _) = therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let booking = create(&app, &customer, &service, MAKATI, "k").await;
    assert_eq!(
        next_of(&mut near_socket, "offer").await["booking_id"],
        booking.as_str()
    );

    // Another node turned the nearest therapist's availability off; this node has not heard.
    sqlx::query("UPDATE providers SET is_available = false WHERE uuid = $1::uuid")
        .bind(&near.provider_id)
        .execute(&app.db)
        .await
        .unwrap();
    let path = format!("/v1/bookings/{booking}/accept");
    let refused = json_body(app.post_as(&near.token, &path, &json!({})).await, 409).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("offline"),
        "{refused}"
    );
    assert_eq!(
        next_of(&mut near_socket, "offer.withdrawn").await["reason"],
        "not_eligible"
    );
    // The booking goes on to the next therapist.
    assert_eq!(
        next_of(&mut next_socket, "offer").await["booking_id"],
        booking.as_str()
    );

    // Meanwhile another node gave that therapist a booking of its own.
    let (other_customer, _) = register(&app, "customer").await;
    let elsewhere = create(&app, &other_customer, &service, (14.8, 121.3), "elsewhere").await;
    sqlx::query(
        "UPDATE bookings SET status = 'accepted', accepted_at = now(), \
             provider_id = (SELECT id FROM providers WHERE uuid = $2::uuid) WHERE uuid = $1::uuid",
    )
    .bind(&elsewhere)
    .bind(&next.provider_id)
    .execute(&app.db)
    .await
    .unwrap();
    let refused = json_body(app.post_as(&next.token, &path, &json!({})).await, 409).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("already have an active booking"),
        "{refused}"
    );
    assert_eq!(
        next_of(&mut next_socket, "offer.withdrawn").await["reason"],
        "not_eligible"
    );
    let outcomes: Vec<Value> = offers_of(&app, &admin, &booking)
        .await
        .iter()
        .map(|o| o["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("withdrawn"), json!("withdrawn")]);
    let shown = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{booking}"))
            .await,
        200,
    )
    .await;
    assert_eq!(shown["status"], "pending", "nobody took the booking");
    app.shutdown().await;
}

/// Whether some session holds an advisory lock in `db_url`'s database.
pub async fn lease_held(app: &TestApp) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_one(&app.db)
    .await
    .unwrap()
        > 0
}

#[tokio::test]
async fn killing_the_node_that_holds_the_lease_hands_waiting_bookings_to_another() {
    // Node A: the real binary, which takes the region's lease first.
    let database = fresh_database().await;
    let mut node_a = Binary::start(&database.1, &[]);
    node_a.wait_ready().await;
    // Node B: an in-process app on the same database, standing by.
    let node_b = spawn_app_in(database, test_settings()).await;
    let mut held = false;
    for _ in 0..100 {
        if lease_held(&node_b).await {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "node A took the matcher lease");

    let admin = make_admin(&node_b).await;
    let (_therapist, mut socket, service) =
        therapist_at(&node_b, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (customer, _) = register(&node_b, "customer").await;
    // Booked through B; the matcher on A hears of it, but the therapist's pings reach B only.
    let booking = create(&node_b, &customer, &service, MAKATI, "k").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        offers_of(&node_b, &admin, &booking).await.is_empty(),
        "A cannot see the therapist"
    );

    node_a.kill9();
    node_a.wait_exit().await;
    // B takes the lease (within seconds), reloads the waiting booking and offers it.
    let offer = next_of(&mut socket, "offer").await;
    assert_eq!(offer["booking_id"], booking.as_str());
    assert!(lease_held(&node_b).await);
    node_b.shutdown().await;
}

/// A node killed without cleaning up leaves its sockets in the cluster's socket sets. They do
/// not count as the therapist's app still connected: when the app's socket here closes, its
/// offer moves on at once instead of waiting out its timeout.
#[tokio::test]
async fn a_socket_left_behind_by_a_dead_node_does_not_hold_an_offer_when_the_app_leaves() {
    let app = spawn_app().await;
    set_app_setting(
        &app,
        "dispatch",
        json!({"offer_timeout_s": 300, "batch_size": 1, "initial_radius_km": 5, "radius_step_km": 5, "batch_window_ms": 200}),
    )
    .await;
    let admin = make_admin(&app).await;
    let (near, near_socket, service) = therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (_next, mut next_socket, _) = therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let mut near_socket = near_socket;
    let booking = create(&app, &customer, &service, MAKATI, "k").await;
    assert_eq!(
        next_of(&mut near_socket, "offer").await["booking_id"],
        booking.as_str()
    );
    // The therapist's socket on a node that has since died (no heartbeat), still in the set.
    let user_id: i64 = sqlx::query_scalar("SELECT user_id FROM providers WHERE uuid = $1::uuid")
        .bind(&near.provider_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let redis = redis::Client::open(crate::helpers::test_redis_url()).unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(format!(
            "hilot:{}:events:sockets:{user_id}:therapist",
            app.db_name
        ))
        .arg(0)
        .arg("4242:1")
        .query_async(&mut connection)
        .await
        .unwrap();

    near_socket.close().await;
    // Long before the 300 s offer timeout, the booking goes on to the next therapist.
    assert_eq!(
        next_of(&mut next_socket, "offer").await["booking_id"],
        booking.as_str()
    );
    let outcomes: Vec<Value> = offers_of(&app, &admin, &booking)
        .await
        .iter()
        .map(|o| o["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("withdrawn"), json!("open")]);
    app.shutdown().await;
}
