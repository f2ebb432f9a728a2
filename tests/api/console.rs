//! The dispatch console: trip replay, search, alerts, the booking detail panel.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    error_fields, json_body, make_admin, problem, register, spawn_app, spawn_app_with,
    test_settings, TestApp, Therapist,
};
use crate::live::{online_therapist, ping};
use crate::sockets::{connect, Socket};
use crate::stores::{always_open, book_in_store, verified_store};

pub const MAKATI: (f64, f64) = (14.5547, 121.0244);

/// Reads frames until one matches (within 20 s).
pub async fn next_matching(
    socket: &mut Socket,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let wait = async {
        loop {
            let frame = socket.next_json().await;
            if matches(&frame) {
                return frame;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
}

/// Waits for the ack of `seq`, which must say stored.
pub async fn stored_ack(socket: &mut Socket, seq: i64) {
    let ack = next_matching(socket, "ack", |f| f["type"] == "ack" && f["seq"] == seq).await;
    assert_eq!(ack["stored"], true, "{ack}");
}

/// A therapist online at (`lat`, `lng`) with their socket open, and the service id.
pub async fn therapist_at(
    app: &TestApp,
    admin: &str,
    lat: f64,
    lng: f64,
) -> (Therapist, Socket, String) {
    let (therapist, service) = online_therapist(app, admin).await;
    let mut socket = connect(app, "/v1/ws/therapist", &therapist.token).await;
    socket.send_json(&ping(1, lat, lng)).await;
    next_matching(&mut socket, "the first ack", |f| f["type"] == "ack").await;
    (therapist, socket, service)
}

/// A customer's book-now booking at (`lat`, `lng`); answers its id.
pub async fn book_home(app: &TestApp, customer: &str, service: &str, lat: f64, lng: f64) -> Value {
    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(customer)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({
            "service_id": service,
            "booking_type": "now",
            "location": {"lat": lat, "lng": lng, "address": "6750 Ayala Ave, Makati"},
        }))
        .send()
        .await
        .unwrap();
    json_body(response, 201).await
}

/// The therapist takes the offer of `booking_id` that reaches their socket.
pub async fn take_offer(socket: &mut Socket, booking_id: &str) {
    next_matching(socket, "the offer", |f| {
        f["type"] == "offer" && f["booking_id"] == booking_id
    })
    .await;
    socket
        .send_json(&json!({"type": "offer.accept", "booking_id": booking_id}))
        .await;
    next_matching(socket, "accepted", |f| {
        f["type"] == "booking.status" && f["booking_id"] == booking_id && f["status"] == "accepted"
    })
    .await;
}

pub async fn set_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    json_body(
        app.post_as(
            token,
            &format!("/v1/bookings/{id}/status"),
            &json!({"status": status}),
        )
        .await,
        200,
    )
    .await
}

#[tokio::test]
async fn a_trip_replays_from_acceptance_to_arrival_for_admins_and_the_customer_after_completion() {
    let mut settings = test_settings();
    settings.max_speed_kmh = 2_000.0;
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let (stranger, _) = register(&app, "customer").await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &id).await;
    set_status(&app, &therapist.token, &id, "en_route").await;

    // Five fixes on the way, each stored (every fix of a therapist on a booking is).
    let path = [0.008, 0.006, 0.004, 0.002, 0.0015];
    for (i, offset) in path.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seq = 2 + i as i64;
        socket
            .send_json(&ping(seq, MAKATI.0 + offset, MAKATI.1))
            .await;
        stored_ack(&mut socket, seq).await;
    }
    set_status(&app, &therapist.token, &id, "arrived").await;
    // A fix after arrival is not part of the trip.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.send_json(&ping(20, MAKATI.0, MAKATI.1)).await;
    stored_ack(&mut socket, 20).await;

    // The customer waits for completion; strangers and the therapist see nothing.
    let early = problem(
        app.get_as(&customer, &format!("/v1/bookings/{id}/trip"))
            .await,
        409,
    )
    .await;
    assert!(
        early["detail"].as_str().unwrap().contains("arrived"),
        "{early}"
    );
    problem(
        app.get_as(&stranger, &format!("/v1/bookings/{id}/trip"))
            .await,
        404,
    )
    .await;
    problem(
        app.get_as(&therapist.token, &format!("/v1/bookings/{id}/trip"))
            .await,
        404,
    )
    .await;
    problem(
        app.get_as(
            &admin,
            &format!("/v1/bookings/{}/trip", uuid::Uuid::new_v4()),
        )
        .await,
        404,
    )
    .await;

    let response = app.get_as(&admin, &format!("/v1/bookings/{id}/trip")).await;
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/geo+json"
    );
    let trip = json_body(response, 200).await;
    assert_eq!(trip["type"], "FeatureCollection");
    let line = &trip["features"][0];
    assert_eq!(line["geometry"]["type"], "LineString");
    let coordinates = line["geometry"]["coordinates"].as_array().unwrap();
    let lats: Vec<f64> = coordinates.iter().map(|c| c[1].as_f64().unwrap()).collect();
    let expected: Vec<f64> = path.iter().map(|o| MAKATI.0 + o).collect();
    assert_eq!(lats.len(), expected.len(), "{line}");
    for (got, want) in lats.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-7, "{lats:?} vs {expected:?}");
    }
    let times = line["properties"]["times"].as_array().unwrap();
    assert_eq!(times.len(), coordinates.len());
    let times: Vec<chrono::DateTime<chrono::Utc>> = times
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(line["properties"]["points"], 5);
    assert_eq!(line["properties"]["arrived"], true);
    assert!(line["properties"]["distance_m"].as_u64().unwrap() > 600);
    let kinds: Vec<&str> = trip["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["trip", "fix", "fix", "fix", "fix", "fix", "destination"]
    );
    assert_eq!(trip["features"][1]["properties"]["accuracy_m"], 8.0);

    set_status(&app, &therapist.token, &id, "in_progress").await;
    set_status(&app, &therapist.token, &id, "completed").await;
    let mine = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}/trip"))
            .await,
        200,
    )
    .await;
    assert_eq!(mine["features"][0]["geometry"], line["geometry"]);
}

#[tokio::test]
async fn dispatchers_find_therapists_bookings_and_stores_by_name_phone_or_number() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.002, MAKATI.1).await;
    let therapist_phone: String = sqlx::query_scalar(
        "SELECT u.phone FROM users u JOIN providers p ON p.user_id = u.id WHERE p.uuid = $1::uuid",
    )
    .bind(&therapist.provider_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    sqlx::query("UPDATE users u SET first_name = 'Rosario', last_name = 'Dimaculangan' FROM providers p WHERE p.user_id = u.id AND p.uuid = $1::uuid")
        .bind(&therapist.provider_id)
        .execute(&app.db)
        .await
        .unwrap();
    let (customer, _) = register(&app, "customer").await;
    // Far from the therapist, so it stays pending and they stay available.
    let booking = book_home(&app, &customer, &service, 18.2, 120.6).await;
    let store = verified_store(
        &app,
        &admin,
        "Lotus Garden Spa",
        (14.56, 121.03),
        2,
        always_open(),
    )
    .await;

    let search = |q: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let path = format!("/v1/admin/search?q={}", urlencode(&q));
            json_body(app.get_as(&admin, &path).await, 200).await
        }
    };
    let by_name = search("dimacul".into()).await;
    assert_eq!(
        by_name["therapists"][0]["provider_id"],
        therapist.provider_id.as_str()
    );
    assert_eq!(by_name["therapists"][0]["name"], "Rosario Dimaculangan");
    assert_eq!(by_name["therapists"][0]["status"], "available");
    // Its live position, to fly to.
    assert!((by_name["therapists"][0]["lat"].as_f64().unwrap() - (MAKATI.0 + 0.002)).abs() < 1e-6);

    // The local form of the phone finds its E.164 owner.
    let local = format!("0{}", &therapist_phone[3..]);
    let by_phone = search(local).await;
    assert_eq!(
        by_phone["therapists"][0]["provider_id"],
        therapist.provider_id.as_str()
    );

    let number = booking["booking_number"].as_str().unwrap();
    let by_number = search(number.to_owned()).await;
    assert_eq!(by_number["bookings"][0]["booking_id"], booking["id"]);
    assert_eq!(by_number["bookings"][0]["status"], "pending");
    assert!((by_number["bookings"][0]["lng"].as_f64().unwrap() - 120.6).abs() < 1e-6);

    let by_store = search("lotus".into()).await;
    assert_eq!(by_store["stores"][0]["store_id"], store.store_id.as_str());
    assert_eq!(by_store["stores"][0]["lat"], 14.56);

    // Wildcards are literal; nothing matches a lone percent sign.
    let literal = search("%%".into()).await;
    assert_eq!(literal["therapists"], json!([]));
    assert_eq!(literal["bookings"], json!([]));

    let short = problem(app.get_as(&admin, "/v1/admin/search?q=a").await, 422).await;
    assert_eq!(error_fields(&short), ["q"]);
    problem(
        app.get_as(&customer, "/v1/admin/search?q=rosario").await,
        403,
    )
    .await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn alerts_name_waiting_bookings_silent_therapists_and_overrunning_sessions() {
    let mut settings = test_settings();
    settings.watch_interval_s = 1;
    let app = spawn_app_with(settings).await;
    sqlx::query(
        "UPDATE app_settings SET value = '{\"pending_wait_s\": 1, \"silent_s\": 2, \"overrun_margin_s\": 0}' WHERE key = 'alerts'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let admin = make_admin(&app).await;
    let (customer, _) = register(&app, "customer").await;
    let mut dashboard = connect(&app, "/v1/ws/dashboard", &admin).await;
    dashboard
        .send_json(&json!({"type": "subscribe", "bbox": [120.9, 14.4, 121.2, 14.7]}))
        .await;
    next_matching(&mut dashboard, "the snapshot", |f| f["type"] == "snapshot").await;

    // A booking nobody can take (no therapist near the far north).
    let swedish = crate::helpers::service_id(&app, "swedish-massage").await;
    let waiting = book_home(&app, &customer, &swedish, 18.2, 120.6).await;
    // A therapist who accepts, then goes quiet.
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.003, MAKATI.1).await;
    let active = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let active_id = active["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &active_id).await;
    // An in-store session that started long ago.
    let store = verified_store(&app, &admin, "Late Spa", (14.57, 121.02), 2, always_open()).await;
    let visit = json_body(
        book_in_store(&app, &customer, &store.store_id, None).await,
        201,
    )
    .await;
    let visit_id = visit["id"].as_str().unwrap().to_owned();
    for status in ["confirm", "status"] {
        let body = if status == "status" {
            json!({"status": "arrived"})
        } else {
            json!({})
        };
        json_body(
            app.post_as(
                &store.token,
                &format!("/v1/store/bookings/{visit_id}/{status}"),
                &body,
            )
            .await,
            200,
        )
        .await;
    }
    json_body(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{visit_id}/status"),
            &json!({"status": "in_progress"}),
        )
        .await,
        200,
    )
    .await;
    sqlx::query(
        "UPDATE bookings SET started_at = now() - interval '2 hours' WHERE uuid = $1::uuid",
    )
    .bind(&visit_id)
    .execute(&app.db)
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let list = json_body(app.get_as(&admin, "/v1/admin/alerts").await, 200).await;
        let alerts = list["alerts"].as_array().unwrap().clone();
        let has = |kind: &str, id: &str| {
            alerts
                .iter()
                .any(|a| a["kind"] == kind && a["booking_id"] == id)
        };
        if has("booking_waiting", waiting["id"].as_str().unwrap())
            && has("therapist_silent", &active_id)
            && has("session_overrun", &visit_id)
        {
            break alerts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alerts never all showed: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let silent = alerts
        .iter()
        .find(|a| a["kind"] == "therapist_silent")
        .unwrap();
    assert_eq!(silent["severity"], "critical");
    assert_eq!(silent["provider_id"], therapist.provider_id.as_str());
    assert!(
        silent["detail"].as_str().unwrap().contains("no position"),
        "{silent}"
    );
    assert_eq!(silent["id"], format!("therapist_silent:{active_id}"));
    let overrun = alerts
        .iter()
        .find(|a| a["kind"] == "session_overrun")
        .unwrap();
    assert_eq!(overrun["provider_name"], "Late Spa");
    assert_eq!(overrun["place"], "in_store");

    // The therapist speaks again: their alert clears.
    socket
        .send_json(&ping(50, MAKATI.0 + 0.002, MAKATI.1))
        .await;
    stored_ack(&mut socket, 50).await;
    let list = json_body(app.get_as(&admin, "/v1/admin/alerts").await, 200).await;
    assert!(
        !list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "therapist_silent"),
        "{list}"
    );
    problem(app.get_as(&customer, "/v1/admin/alerts").await, 403).await;
}

#[tokio::test]
async fn the_detail_panel_shows_parties_timeline_trip_and_visit() {
    let mut settings = test_settings();
    settings.max_speed_kmh = 2_000.0;
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.004, MAKATI.1).await;
    let (customer, customer_user) = register(&app, "customer").await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &id).await;
    set_status(&app, &therapist.token, &id, "en_route").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.send_json(&ping(2, MAKATI.0 + 0.003, MAKATI.1)).await;
    stored_ack(&mut socket, 2).await;
    for (token, body) in [
        (&customer, "The gate is the blue one"),
        (&therapist.token, "Ten minutes away"),
    ] {
        json_body(
            app.post_as(
                token,
                &format!("/v1/bookings/{id}/messages"),
                &json!({ "body": body }),
            )
            .await,
            201,
        )
        .await;
    }

    let detail = json_body(
        app.get_as(&admin, &format!("/v1/admin/bookings/{id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(detail["booking"]["id"], id.as_str());
    assert_eq!(detail["booking"]["status"], "en_route");
    let statuses: Vec<&str> = detail["booking"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "accepted", "en_route"]);
    assert_eq!(detail["customer"]["phone"], customer_user["phone"]);
    assert_eq!(detail["provider"]["id"], therapist.provider_id.as_str());
    assert_eq!(detail["provider"]["kind"], "therapist");
    assert!(detail["trip"]["points"].as_i64().unwrap() >= 1, "{detail}");
    assert!(detail["visit"].is_null());
    // The payment as the money modules see it: cash, due once a therapist accepted.
    assert_eq!(detail["payment"]["method"], "cash");
    assert_eq!(detail["payment"]["status"], "due_in_cash");
    assert_eq!(detail["payment"]["paid_amount"], "0.00");
    assert_eq!(
        detail["payment"]["amount"],
        detail["booking"]["pricing"]["total_amount"]
    );
    assert_eq!(detail["payment"], detail["booking"]["payment"]);
    // The parties' chat, oldest first; a dispatcher reading it marks nothing read.
    let messages = detail["messages"].as_array().unwrap();
    let said: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["body"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("customer", "The gate is the blue one"),
            ("therapist", "Ten minutes away")
        ]
    );
    assert!(messages.iter().all(|m| m["read_at"].is_null()), "{detail}");
    let unread: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE is_read IS NOT TRUE")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(unread, 2);

    let store = verified_store(&app, &admin, "Panel Spa", (14.57, 121.02), 1, always_open()).await;
    let visit = json_body(
        book_in_store(&app, &customer, &store.store_id, None).await,
        201,
    )
    .await;
    let in_store = json_body(
        app.get_as(
            &admin,
            &format!("/v1/admin/bookings/{}", visit["id"].as_str().unwrap()),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(in_store["provider"]["kind"], "store");
    assert_eq!(in_store["provider"]["name"], "Panel Spa");
    assert!(in_store["visit"]["starts_at"].is_string());
    assert!(in_store["trip"].is_null());
    assert_eq!(in_store["payment"]["status"], "pending");
    assert_eq!(in_store["messages"], json!([]));

    problem(
        app.get_as(&customer, &format!("/v1/admin/bookings/{id}"))
            .await,
        403,
    )
    .await;
    problem(
        app.get_as(
            &admin,
            &format!("/v1/admin/bookings/{}", uuid::Uuid::new_v4()),
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn stores_in_view_show_their_rooms_in_use() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Map Spa", (14.556, 121.02), 3, always_open()).await;
    let (customer, _) = register(&app, "customer").await;
    json_body(
        book_in_store(&app, &customer, &store.store_id, None).await,
        201,
    )
    .await;
    let shown = json_body(
        app.get_as(&admin, "/v1/dispatch/stores?bbox=121.0,14.5,121.1,14.6")
            .await,
        200,
    )
    .await;
    assert_eq!(shown[0]["store_id"], store.store_id.as_str());
    assert_eq!(shown[0]["rooms_in_use"], 1);
    assert_eq!(shown[0]["number_of_rooms"], 3);
    let elsewhere = json_body(
        app.get_as(&admin, "/v1/dispatch/stores?bbox=120.0,14.5,120.1,14.6")
            .await,
        200,
    )
    .await;
    assert_eq!(elsewhere, json!([]));
    problem(
        app.get_as(&admin, "/v1/dispatch/stores?bbox=1,2,3").await,
        422,
    )
    .await;
    problem(
        app.get_as(&customer, "/v1/dispatch/stores?bbox=121.0,14.5,121.1,14.6")
            .await,
        403,
    )
    .await;
}
