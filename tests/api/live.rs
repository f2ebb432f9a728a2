//! Live location: the therapist socket, the ping pipeline, the live index and `nearby`.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::helpers::{
    json_body, make_admin, problem, service_id, spawn_app, spawn_app_with, test_settings,
    verified_therapist, TestApp, Therapist,
};
use crate::sockets::{connect, refused_status, Socket};

const MAKATI: (f64, f64) = (14.5547, 121.0244);
const THERAPIST_WS: &str = "/v1/ws/therapist";

/// A verified therapist offering Swedish massage for 800, online.
pub async fn online_therapist(app: &TestApp, admin: &str) -> (Therapist, String) {
    let therapist = verified_therapist(app, admin).await;
    let swedish = service_id(app, "swedish-massage").await;
    price_service(app, &therapist.token, &swedish, "800.00").await;
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
    (therapist, swedish)
}

/// The therapist offers `service` at `price`, 1 km included, 20 a km beyond, up to 10 km.
pub async fn price_service(app: &TestApp, token: &str, service: &str, price: &str) {
    json_body(
        app.put_as(
            token,
            &format!("/v1/therapist/services/{service}"),
            &json!({"price": price, "base_distance_km": 1, "per_km_surcharge": "20.00", "max_travel_distance_km": 10}),
        )
        .await,
        200,
    )
    .await;
}

pub fn ping(seq: i64, lat: f64, lng: f64) -> Value {
    json!({"type": "location", "seq": seq, "lat": lat, "lng": lng, "accuracy_m": 8.0, "heading": 90.0, "speed_kmh": 12.0})
}

fn ping_at(seq: i64, lat: f64, lng: f64, at: chrono::DateTime<Utc>) -> Value {
    let mut frame = ping(seq, lat, lng);
    frame["recorded_at"] = json!(at.to_rfc3339());
    frame
}

async fn expect_error(socket: &mut Socket, frame: Value, code: &str, seq: Option<i64>) {
    socket.send_json(&frame).await;
    let reply = socket.next_json().await;
    assert_eq!(reply["type"], "error", "{frame} got {reply}");
    assert_eq!(reply["code"], code, "{frame} got {reply}");
    assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()));
    match seq {
        Some(seq) => assert_eq!(reply["seq"], seq, "{reply}"),
        None => assert!(
            reply.get("seq").is_none() || reply["seq"].is_null(),
            "{reply}"
        ),
    }
}

pub async fn stored_rows(app: &TestApp, provider_uuid: &str) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT l.client_seq, count(*) FROM provider_locations l JOIN providers p ON p.id = l.provider_id \
         WHERE p.uuid = $1::uuid GROUP BY l.client_seq ORDER BY l.client_seq",
    )
    .bind(provider_uuid)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_bad_or_missing_token_gets_401_and_no_socket() {
    let app = spawn_app().await;
    assert_eq!(refused_status(&app, THERAPIST_WS, "hlt_forged").await, 401);
    assert_eq!(refused_status(&app, THERAPIST_WS, "").await, 401);
    let customer = crate::helpers::register(&app, "customer").await.0;
    assert_eq!(refused_status(&app, THERAPIST_WS, &customer).await, 403);
    app.shutdown().await;
}

#[tokio::test]
async fn acks_arrive_and_every_bad_frame_gets_its_error_while_the_socket_stays_usable() {
    let mut settings = test_settings();
    settings.socket_frame_burst = 100; // this test checks validation, not the limiter
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    let now = Utc::now();

    socket.send_json(&ping(1, MAKATI.0, MAKATI.1)).await;
    assert_eq!(
        socket.next_json().await,
        json!({"type": "ack", "seq": 1, "stored": true})
    );

    socket.send_text("this is not json".into()).await;
    let reply = socket.next_json().await;
    assert_eq!(reply["code"], "invalid_json");
    expect_error(
        &mut socket,
        json!({"type": "teleport", "seq": 2}),
        "unknown_type",
        Some(2),
    )
    .await;
    expect_error(
        &mut socket,
        json!({"type": "location", "seq": 3, "lat": "north"}),
        "invalid_frame",
        Some(3),
    )
    .await;
    expect_error(
        &mut socket,
        ping(4, 91.0, MAKATI.1),
        "invalid_coordinates",
        Some(4),
    )
    .await;
    expect_error(
        &mut socket,
        ping(5, MAKATI.0, -181.0),
        "invalid_coordinates",
        Some(5),
    )
    .await;
    let mut no_accuracy = ping(6, MAKATI.0, MAKATI.1);
    no_accuracy.as_object_mut().unwrap().remove("accuracy_m");
    expect_error(&mut socket, no_accuracy, "accuracy_missing", Some(6)).await;
    let mut negative_accuracy = ping(7, MAKATI.0, MAKATI.1);
    negative_accuracy["accuracy_m"] = json!(-5);
    expect_error(&mut socket, negative_accuracy, "invalid_accuracy", Some(7)).await;
    expect_error(
        &mut socket,
        ping_at(8, MAKATI.0, MAKATI.1, now + Duration::seconds(90)),
        "recorded_in_future",
        Some(8),
    )
    .await;
    expect_error(
        &mut socket,
        ping_at(9, MAKATI.0, MAKATI.1, now - Duration::minutes(15)),
        "recorded_too_long_ago",
        Some(9),
    )
    .await;
    // Quezon City, 15 km north, one second later: a GPS jump.
    expect_error(
        &mut socket,
        ping(10, 14.6760, 121.0437),
        "implausible_jump",
        Some(10),
    )
    .await;
    socket.send_binary(vec![1, 2, 3]).await;
    assert_eq!(socket.next_json().await["code"], "unsupported_frame");
    socket
        .send_text(format!(
            "{{\"type\":\"location\",\"pad\":\"{}\"}}",
            "x".repeat(5000)
        ))
        .await;
    assert_eq!(socket.next_json().await["code"], "frame_too_large");

    // Still usable after all that.
    socket
        .send_json(&ping(11, MAKATI.0 + 0.0001, MAKATI.1))
        .await;
    let ack = socket.next_json().await;
    assert_eq!(
        (ack["type"].clone(), ack["seq"].clone()),
        (json!("ack"), json!(11))
    );
    socket.close().await;
    // Reconnecting does not reset the jump check: the new socket's first fix is checked
    // against the last one the server accepted.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut again = connect(&app, THERAPIST_WS, &therapist.token).await;
    expect_error(
        &mut again,
        ping(1, 14.6760, 121.0437),
        "implausible_jump",
        Some(1),
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_repeated_seq_is_acknowledged_again_and_stored_once() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    let at = Utc::now() - Duration::seconds(2);
    let frame = ping_at(1, MAKATI.0, MAKATI.1, at);
    for _ in 0..3 {
        socket.send_json(&frame).await;
    }
    for _ in 0..3 {
        assert_eq!(
            socket.next_json().await,
            json!({"type": "ack", "seq": 1, "stored": true})
        );
    }
    socket.close().await;
    // A reconnect that resends it is recognised too.
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    socket.send_json(&frame).await;
    assert_eq!(
        socket.next_json().await,
        json!({"type": "ack", "seq": 1, "stored": true})
    );
    assert_eq!(
        stored_rows(&app, &therapist.provider_id).await,
        vec![(1, 1)]
    );
    socket.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_flood_trips_the_per_socket_limiter_and_it_recovers() {
    let app = spawn_app().await; // default: 5 frames/s, burst 10
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    let start = Utc::now() - Duration::seconds(60);
    for seq in 1..=30 {
        // Distinct fixes a metre apart, a second apart: only the limiter can refuse them.
        let at = start + Duration::seconds(seq);
        socket
            .send_json(&ping_at(seq, MAKATI.0 + seq as f64 * 1e-5, MAKATI.1, at))
            .await;
    }
    let mut acks = 0;
    let mut limited = 0;
    for _ in 1..=30 {
        let frame = socket.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") if frame["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert!(
        limited >= 15,
        "{limited} frames refused, {acks} acknowledged"
    );
    // Every frame counts, control frames too: the pong answering the server's first heartbeat
    // may have taken one token of the burst.
    assert!(acks >= 9, "the burst is allowed: {acks}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    socket
        .send_json(&ping_at(31, MAKATI.0, MAKATI.1, Utc::now()))
        .await;
    // Acks wait for their batch while refusals go out at once, so read up to the answer to
    // seq 31, which shows the limiter recovered; anything before it answers the flood.
    let reply = loop {
        let frame = socket.next_json().await;
        if frame["seq"] == 31 {
            break frame;
        }
        let answers_the_flood = frame["type"] == "ack" || frame["code"] == "rate_limited";
        assert!(answers_the_flood, "unexpected frame {frame}");
    };
    assert_eq!(reply["type"], "ack", "the limiter recovered: {reply}");
    socket.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_storage_policy_follows_its_settings() {
    let app = spawn_app().await; // app_settings: every 15 s or 50 m
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    let t0 = Utc::now() - Duration::minutes(5);
    // Standing still, a fix every 5 s: the first, then one each 15 s.
    let mut stored = Vec::new();
    for seq in 0..8 {
        socket
            .send_json(&ping_at(
                seq,
                MAKATI.0,
                MAKATI.1,
                t0 + Duration::seconds(5 * seq),
            ))
            .await;
        let ack = socket.next_json().await;
        assert_eq!(ack["seq"], seq, "{ack}");
        stored.push(ack["stored"].as_bool().unwrap());
    }
    assert_eq!(
        stored,
        [true, false, false, true, false, false, true, false]
    );
    // Moving 60 m within 5 s is stored at once.
    socket
        .send_json(&ping_at(
            8,
            MAKATI.0 + 0.00054,
            MAKATI.1,
            t0 + Duration::seconds(40),
        ))
        .await;
    assert_eq!(socket.next_json().await["stored"], true);
    let rows: Vec<i64> = stored_rows(&app, &therapist.provider_id)
        .await
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(rows, [0, 3, 6, 8]);
    socket.close().await;

    // Zero stores everything (the server re-reads the setting; a restart applies it at once).
    sqlx::query("UPDATE app_settings SET value = '0' WHERE key = 'location_store_interval_s'")
        .execute(&app.db)
        .await
        .unwrap();
    let restarted =
        crate::helpers::spawn_app_in((app.db_name.clone(), app.db_url.clone()), test_settings())
            .await;
    let mut socket = connect(&restarted, THERAPIST_WS, &therapist.token).await;
    for seq in 100..103 {
        socket
            .send_json(&ping_at(
                seq,
                MAKATI.0,
                MAKATI.1,
                t0 + Duration::seconds(60 + seq),
            ))
            .await;
        assert_eq!(socket.next_json().await["stored"], true);
    }
    socket.close().await;
    restarted.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn nearby_answers_from_the_live_index_with_quotes_and_no_coordinates() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (near, swedish) = online_therapist(&app, &admin).await;
    let (far, _) = online_therapist(&app, &admin).await;
    let (customer, _) = crate::helpers::register(&app, "customer").await;
    for (therapist, lat) in [(&near, MAKATI.0 + 0.0085), (&far, MAKATI.0 + 0.027)] {
        let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
        socket.send_json(&ping(1, lat, MAKATI.1)).await;
        assert_eq!(socket.next_json().await["type"], "ack");
        socket.close().await;
    }
    let path = format!(
        "/v1/therapists/nearby?lat={}&lng={}&service_id={swedish}",
        MAKATI.0, MAKATI.1
    );
    let body = json_body(app.get_as(&customer, &path).await, 200).await;
    let therapists = body["therapists"].as_array().unwrap();
    assert_eq!(therapists.len(), 2, "{body}");
    let first = &therapists[0];
    assert_eq!(first["provider_id"], near.provider_id.as_str());
    assert_eq!(therapists[1]["provider_id"], far.provider_id.as_str());
    // Customers are told the distance to the centre of the therapist's H3 cell (about 0.1 km²),
    // rounded to 100 m, and quoted on it; admins see the exact distance.
    let shown = |lat: f64| {
        let centre = hilot::geo::index::cell_centre(hilot::geo::Point::new(lat, MAKATI.1)).unwrap();
        hilot::geo::distance_m(hilot::geo::Point::new(MAKATI.0, MAKATI.1), centre)
    };
    let (near_shown, far_shown) = (shown(MAKATI.0 + 0.0085), shown(MAKATI.0 + 0.027));
    assert_eq!(
        first["distance_m"].as_f64().unwrap(),
        (near_shown / 100.0).round() * 100.0,
        "{near_shown} m to the centre of the cell"
    );
    assert_eq!(first["eta_seconds"].as_u64().unwrap() % 60, 0);
    assert!(first["eta_seconds"].as_u64().unwrap() > 0);
    let exact = json_body(app.get_as(&admin, &path).await, 200).await;
    let distance = exact["therapists"][0]["distance_m"].as_u64().unwrap();
    assert!((935..=950).contains(&distance), "{distance}");
    // The near one is well within the 1 km included, wherever the cell puts them: no
    // surcharge. The far one pays 20 a started km beyond it.
    assert!(near_shown < 1_000.0, "{near_shown}");
    assert_eq!(
        first["quote"],
        json!({"service_price": "800.00", "distance_surcharge": "0.00", "total_amount": "800.00", "currency": "PHP"})
    );
    let far_started_km = (far_shown / 1000.0 - 1.0).ceil();
    assert_eq!(
        therapists[1]["quote"]["distance_surcharge"],
        format!("{}.00", far_started_km * 20.0),
        "{far_shown} m to the centre of the cell"
    );
    let text = body.to_string();
    assert!(
        !text.contains("\"lat\"") && !text.contains("\"lng\""),
        "coordinates leaked: {text}"
    );

    // Offline therapists are not matched; a radius excludes the far one.
    json_body(
        app.put_as(
            &far.token,
            "/v1/therapist/availability",
            &json!({"online": false}),
        )
        .await,
        200,
    )
    .await;
    let body = json_body(app.get_as(&customer, &path).await, 200).await;
    assert_eq!(body["therapists"].as_array().unwrap().len(), 1);
    let body = json_body(
        app.get_as(&customer, &format!("{path}&radius_m=500")).await,
        200,
    )
    .await;
    assert!(body["therapists"].as_array().unwrap().is_empty());

    // Bad input.
    let problem_body = problem(
        app.get_as(
            &customer,
            &format!("/v1/therapists/nearby?lat=95&lng=121&service_id={swedish}"),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(problem_body["errors"][0]["field"], "lat");
    problem(
        app.get_as(
            &customer,
            &format!(
                "/v1/therapists/nearby?lat=14&lng=121&service_id={}",
                uuid::Uuid::new_v4()
            ),
        )
        .await,
        404,
    )
    .await;
    problem(app.get(&path).await, 401).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_customer_narrowing_the_radius_learns_the_therapists_cell_not_their_position() {
    use hilot::geo::{distance_m, index::cell_centre, Point};
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, swedish) = online_therapist(&app, &admin).await;
    let (customer, _) = crate::helpers::register(&app, "customer").await;
    let customer_at = Point::new(MAKATI.0, MAKATI.1);
    // Two places 260 m apart in one cell, north and south of its centre.
    let centre = cell_centre(Point::new(MAKATI.0 + 0.02, MAKATI.1)).unwrap();
    let places = [
        Point::new(centre.lat + 0.0012, centre.lng),
        Point::new(centre.lat - 0.0012, centre.lng),
    ];
    for place in places {
        assert_eq!(cell_centre(place), Some(centre));
    }
    let to_centre = distance_m(customer_at, centre);
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    let mut answers = Vec::new();
    for (seq, place) in places.into_iter().enumerate() {
        // A minute apart: a walk, not a jump.
        let at = Utc::now() - Duration::minutes(4 - seq as i64);
        socket
            .send_json(&ping_at(seq as i64 + 1, place.lat, place.lng, at))
            .await;
        assert_eq!(socket.next_json().await["type"], "ack");
        // The exact distances differ by about 260 m; an attacker would look for the radius at
        // which the therapist appears.
        let mut seen = Vec::new();
        for radius_m in [to_centre.floor() - 1.0, to_centre.ceil() + 1.0] {
            let body = json_body(
                app.get_as(
                    &customer,
                    &format!(
                        "/v1/therapists/nearby?lat={}&lng={}&service_id={swedish}&radius_m={radius_m}",
                        customer_at.lat, customer_at.lng
                    ),
                )
                .await,
                200,
            )
            .await;
            seen.push(body["therapists"].clone());
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0], answers[1],
        "the answers told the two places apart"
    );
    let [outside, inside] = [&answers[0][0], &answers[0][1]];
    assert_eq!(
        outside,
        &json!([]),
        "appears only at the distance to the cell's centre"
    );
    assert_eq!(inside[0]["provider_id"], therapist.provider_id.as_str());
    // Admins see the exact distance, which differs between the two places.
    let mut exact = Vec::new();
    for (seq, place) in places.into_iter().enumerate() {
        let at = Utc::now() - Duration::minutes(2 - seq as i64);
        socket
            .send_json(&ping_at(seq as i64 + 3, place.lat, place.lng, at))
            .await;
        assert_eq!(socket.next_json().await["type"], "ack");
        let body = json_body(
            app.get_as(
                &admin,
                &format!(
                    "/v1/therapists/nearby?lat={}&lng={}&service_id={swedish}",
                    customer_at.lat, customer_at.lng
                ),
            )
            .await,
            200,
        )
        .await;
        exact.push(body["therapists"][0]["distance_m"].as_f64().unwrap());
        assert!((exact[seq] - distance_m(customer_at, place)).abs() <= 1.0);
    }
    assert!((exact[0] - exact[1]).abs() > 200.0, "{exact:?}");
    socket.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_availability_frame_turns_a_verified_therapist_on_and_off() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, THERAPIST_WS, &therapist.token).await;
    socket
        .send_json(&json!({"type": "availability", "online": false}))
        .await;
    assert_eq!(
        socket.next_json().await,
        json!({"type": "availability", "online": false, "verification_status": "verified"})
    );
    let profile = json_body(
        app.get_as(&therapist.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(profile["online"], false);
    socket.close().await;

    let pending = crate::helpers::therapist_with_profile(&app).await;
    let mut socket = connect(&app, THERAPIST_WS, &pending.token).await;
    socket
        .send_json(&json!({"type": "availability", "online": true}))
        .await;
    let reply = socket.next_json().await;
    assert_eq!(reply["type"], "error");
    assert!(
        reply["detail"].as_str().unwrap().contains("pending"),
        "{reply}"
    );
    socket.close().await;
    app.shutdown().await;
}

/// Ids and distances the server answers for one query.
fn answer(body: &Value) -> Vec<(String, u64)> {
    body["therapists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["provider_id"].as_str().unwrap().to_owned(),
                t["distance_m"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn nearby_returns_exactly_what_brute_force_postgis_returns() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261121);
    let database = crate::helpers::fresh_database().await;
    let db = sqlx::PgPool::connect(&database.1).await.unwrap();
    let services: Vec<i64> = sqlx::query_scalar("SELECT id FROM services ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    let swedish = services[0];

    // 3,000 therapists around Metro Manila in every state the index must tell apart.
    const N: usize = 3000;
    let mut cols: HashMap<&str, Vec<Value>> = HashMap::new();
    let mut push = |k: &'static str, v: Value| cols.entry(k).or_default().push(v);
    for i in 0..N {
        push("lat", json!(14.45 + rng.gen::<f64>() * 0.25));
        push("lng", json!(120.95 + rng.gen::<f64>() * 0.15));
        push("verified", json!(rng.gen_bool(0.9)));
        push("online", json!(rng.gen_bool(0.85)));
        push("radius", json!(rng.gen_range(1..=10)));
        push("max_travel", json!(rng.gen_range(1..=10)));
        push("offers", json!(rng.gen_bool(0.8)));
        push("home", json!(rng.gen_bool(0.9)));
        push(
            "age_s",
            json!(if rng.gen_bool(0.9) {
                rng.gen_range(0..20)
            } else {
                1_200 + rng.gen_range(0..600)
            }),
        );
        push("coarse_newer", json!(rng.gen_bool(0.1)));
        push("phone", json!(format!("+6399{:08}", i)));
    }
    let arr = |k: &str| Value::Array(cols[k].clone());
    sqlx::query(include_str!("fixtures/random_therapists.sql"))
        .bind(arr("phone"))
        .bind(arr("lat"))
        .bind(arr("lng"))
        .bind(arr("verified"))
        .bind(arr("online"))
        .bind(arr("radius"))
        .bind(arr("max_travel"))
        .bind(arr("offers"))
        .bind(arr("home"))
        .bind(arr("age_s"))
        .bind(arr("coarse_newer"))
        .bind(swedish)
        .execute(&db)
        .await
        .unwrap();

    // The index is rebuilt from the database at start-up.
    // A presence window of ten minutes: fresh fixes are at most 20 s old and stale ones at least
    // 20 minutes, so however slow a loaded machine is, nobody crosses it during the test.
    let mut settings = test_settings();
    settings.presence_ttl_s = 600;
    let app = crate::helpers::spawn_app_in(database, settings).await;
    // An admin sees exact distances, and is not limited in searches.
    let admin = make_admin(&app).await;
    let service_uuid: String = sqlx::query_scalar("SELECT uuid::text FROM services WHERE id = $1")
        .bind(swedish)
        .fetch_one(&db)
        .await
        .unwrap();
    // The same index, in process: distances unrounded, to 0.1 m of PostGIS's geography
    // distance on the WGS84 spheroid.
    let index = hilot::geo::index::LiveIndex::new(std::time::Duration::from_secs(600));
    hilot::geo::load::rebuild(&db, &index, 100.0).await.unwrap();
    let mut measured = 0;
    for _ in 0..150 {
        let lat = 14.45 + rng.gen::<f64>() * 0.25;
        let lng = 120.95 + rng.gen::<f64>() * 0.15;
        let radius_m: u32 = rng.gen_range(300..=12_000);
        let limit: u32 = rng.gen_range(1..=25);
        let expected: Vec<(String, f64)> =
            sqlx::query_as(include_str!("fixtures/nearby_brute_force.sql"))
                .bind(lng)
                .bind(lat)
                .bind(f64::from(radius_m))
                .bind(swedish)
                .bind(i64::from(limit))
                .fetch_all(&db)
                .await
                .unwrap();
        let hits = index.nearby(
            &hilot::geo::index::NearbyQuery {
                point: hilot::geo::Point::new(lat, lng),
                service_id: swedish,
                radius_m: f64::from(radius_m),
                limit: limit as usize,
                placement: hilot::geo::index::Placement::Exact,
            },
            Utc::now(),
        );
        let what = format!("({lat}, {lng}) within {radius_m} m, {limit} at most");
        assert_eq!(hits.len(), expected.len(), "in process: {what}");
        for (hit, (uuid, want)) in hits.iter().zip(&expected) {
            assert_eq!(
                &hit.uuid.to_string(),
                uuid,
                "in process: {what}: {:?} vs {expected:?}",
                hits.iter()
                    .map(|h| (h.uuid, h.distance_m))
                    .collect::<Vec<_>>()
            );
            assert!(
                (hit.distance_m - want).abs() <= 0.1,
                "geodesic {} vs PostGIS geography {want} for {what}",
                hit.distance_m
            );
        }
        measured += expected.len();
    }
    assert!(
        measured > 500,
        "too few therapists found in process: {measured}"
    );

    let mut compared = 0;
    for _ in 0..150 {
        let lat = 14.45 + rng.gen::<f64>() * 0.25;
        let lng = 120.95 + rng.gen::<f64>() * 0.15;
        let radius_m: u32 = rng.gen_range(300..=12_000);
        let limit: u32 = rng.gen_range(1..=25);
        let path = format!("/v1/therapists/nearby?lat={lat}&lng={lng}&service_id={service_uuid}&radius_m={radius_m}&limit={limit}");
        let served = answer(&json_body(app.get_as(&admin, &path).await, 200).await);
        let expected: Vec<(String, f64)> =
            sqlx::query_as(include_str!("fixtures/nearby_brute_force.sql"))
                .bind(lng)
                .bind(lat)
                .bind(f64::from(radius_m))
                .bind(swedish)
                .bind(i64::from(limit))
                .fetch_all(&db)
                .await
                .unwrap();
        let served_ids: Vec<&String> = served.iter().map(|(id, _)| id).collect();
        let expected_ids: Vec<&String> = expected.iter().map(|(id, _)| id).collect();
        assert_eq!(served_ids, expected_ids, "query {path}");
        for ((_, got), (_, want)) in served.iter().zip(&expected) {
            assert!(
                (*got as f64 - want).abs() <= 0.5 + 1e-6,
                "distance {got} vs PostGIS {want} for {path}"
            );
        }
        compared += expected.len();
    }
    assert!(
        compared > 500,
        "the random queries found too few therapists to prove much: {compared}"
    );
    app.shutdown().await;
}
