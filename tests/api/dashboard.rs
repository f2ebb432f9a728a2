//! The dispatch dashboard: viewport socket, GeoJSON, counts, hexagons, the page.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{
    accept, json_body, make_admin, problem, register, spawn_app, spawn_app_with, test_settings,
    TestApp,
};
use crate::live::{online_therapist, ping};
use crate::sockets::{connect, refused_status, Socket};

const MAKATI: (f64, f64) = (14.5547, 121.0244);
/// A box around Makati, and one around Quezon City (15 km north).
const MAKATI_BOX: [f64; 4] = [121.00, 14.53, 121.05, 14.58];
const QC_BOX: [f64; 4] = [121.02, 14.64, 121.07, 14.69];

async fn dashboard(app: &TestApp, admin: &str, bbox: [f64; 4]) -> (Socket, Value) {
    let mut socket = connect(app, "/v1/ws/dashboard", admin).await;
    socket
        .send_json(&json!({"type": "subscribe", "bbox": bbox}))
        .await;
    let snapshot = socket.next_json().await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (socket, snapshot)
}

/// Frames that arrive within `window`.
async fn frames_for(socket: &mut Socket, window: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + window;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, socket.next_json()).await {
            Ok(frame) => frames.push(frame),
            Err(_) => break,
        }
    }
    frames
}

#[tokio::test]
async fn only_what_lies_in_the_viewport_arrives_and_moving_it_changes_what_arrives() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (makati, _) = online_therapist(&app, &admin).await;
    let (qc, _) = online_therapist(&app, &admin).await;
    let mut makati_socket = connect(&app, "/v1/ws/therapist", &makati.token).await;
    let mut qc_socket = connect(&app, "/v1/ws/therapist", &qc.token).await;
    makati_socket.send_json(&ping(1, MAKATI.0, MAKATI.1)).await;
    qc_socket.send_json(&ping(1, 14.6760, 121.0437)).await;
    makati_socket.next_json().await;
    qc_socket.next_json().await;

    let (mut watcher, snapshot) = dashboard(&app, &admin, MAKATI_BOX).await;
    let ids: Vec<&str> = snapshot["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [makati.provider_id.as_str()]);
    assert_eq!(snapshot["providers"][0]["status"], "available");

    // Both move; only the one inside the box is reported.
    makati_socket
        .send_json(&ping(2, MAKATI.0 + 0.0001, MAKATI.1))
        .await;
    qc_socket.send_json(&ping(2, 14.6761, 121.0437)).await;
    let frames = frames_for(&mut watcher, Duration::from_millis(800)).await;
    let moved: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "provider.moved")
        .collect();
    assert_eq!(moved.len(), 1, "{frames:?}");
    assert_eq!(moved[0]["provider_id"], makati.provider_id.as_str());
    assert!((moved[0]["lat"].as_f64().unwrap() - (MAKATI.0 + 0.0001)).abs() < 1e-9);

    // Moving the viewport to Quezon City: a new snapshot, then only QC's therapist.
    watcher
        .send_json(&json!({"type": "subscribe", "bbox": QC_BOX}))
        .await;
    let snapshot = watcher.next_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["providers"][0]["provider_id"],
        qc.provider_id.as_str()
    );
    makati_socket
        .send_json(&ping(3, MAKATI.0 + 0.0002, MAKATI.1))
        .await;
    qc_socket.send_json(&ping(3, 14.6762, 121.0437)).await;
    let frames = frames_for(&mut watcher, Duration::from_millis(800)).await;
    let moved: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "provider.moved")
        .collect();
    assert_eq!(moved.len(), 1, "{frames:?}");
    assert_eq!(moved[0]["provider_id"], qc.provider_id.as_str());

    // Going offline shows up as a status change.
    json_body(
        app.put_as(
            &qc.token,
            "/v1/therapist/availability",
            &json!({"online": false}),
        )
        .await,
        200,
    )
    .await;
    let frames = frames_for(&mut watcher, Duration::from_millis(800)).await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "provider.status" && f["status"] == "offline"),
        "{frames:?}"
    );

    // Bad frames get an error; the socket stays usable.
    watcher
        .send_json(&json!({"type": "subscribe", "bbox": [121.0, 14.6, 121.1, 14.5]}))
        .await;
    assert_eq!(watcher.next_json().await["code"], "invalid_bbox");
    watcher.send_text("not json".into()).await;
    assert_eq!(watcher.next_json().await["code"], "invalid_json");
    watcher
        .send_json(&json!({"type": "subscribe", "bbox": MAKATI_BOX}))
        .await;
    assert_eq!(watcher.next_json().await["type"], "snapshot");
    app.shutdown().await;
}

#[tokio::test]
async fn updates_are_coalesced_to_the_configured_rate() {
    let mut settings = test_settings();
    settings.dashboard_flushes_per_s = 2.0;
    settings.socket_frames_per_s = 100;
    settings.socket_frame_burst = 100;
    settings.max_speed_kmh = 10_000.0;
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
    socket.send_json(&ping(0, MAKATI.0, MAKATI.1)).await;
    socket.next_json().await;
    let (mut watcher, _) = dashboard(&app, &admin, MAKATI_BOX).await;

    // 40 fixes in 2 s; at 2 flushes a second the dashboard gets at most about 5 updates,
    // and the last one it gets is the latest fix.
    let started = Instant::now();
    for seq in 1..=40 {
        socket
            .send_json(&ping(seq, MAKATI.0 + seq as f64 * 1e-5, MAKATI.1))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let frames = frames_for(&mut watcher, Duration::from_millis(1500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let moved: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "provider.moved")
        .collect();
    let allowed = (elapsed * 2.0).ceil() as usize + 1;
    assert!(
        !moved.is_empty() && moved.len() <= allowed,
        "{} updates in {elapsed:.1} s",
        moved.len()
    );
    let last = moved.last().unwrap();
    assert!(
        (last["lat"].as_f64().unwrap() - (MAKATI.0 + 40.0 * 1e-5)).abs() < 1e-9,
        "latest wins: {last}"
    );
    app.shutdown().await;
}

/// The server's resident memory (it runs in this test process), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_dashboard_that_never_reads_for_a_minute_stays_bounded_and_holds_up_no_one() {
    let mut settings = test_settings();
    settings.socket_frames_per_s = 100;
    settings.socket_frame_burst = 100;
    settings.max_speed_kmh = 10_000.0;
    let app = spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let mut therapists = Vec::new();
    for i in 0..10 {
        let (therapist, _) = online_therapist(&app, &admin).await;
        let mut socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
        socket
            .send_json(&ping(0, MAKATI.0 + i as f64 * 1e-3, MAKATI.1))
            .await;
        socket.next_json().await;
        therapists.push(socket);
    }
    // One dashboard subscribes and then never reads again.
    let (_stalled, _) = dashboard(&app, &admin, MAKATI_BOX).await;
    let (mut reader, _) = dashboard(&app, &admin, MAKATI_BOX).await;

    // A minute of 10 Hz pings from every therapist; the other dashboard keeps reading.
    let started_rss = rss_kib();
    let mut last_lat = vec![0.0; therapists.len()];
    let mut reader_updates = 0usize;
    let mut latest = std::collections::HashMap::new();
    let mut note = |frames: Vec<Value>| {
        let mut moved = 0;
        for frame in frames.iter().filter(|f| f["type"] == "provider.moved") {
            moved += 1;
            latest.insert(
                frame["provider_id"].as_str().unwrap().to_owned(),
                frame["lat"].as_f64().unwrap(),
            );
        }
        moved
    };
    for seq in 1..=600i64 {
        for (i, socket) in therapists.iter_mut().enumerate() {
            let lat = MAKATI.0 + i as f64 * 1e-3 + (seq % 100) as f64 * 1e-6;
            socket.send_json(&ping(seq, lat, MAKATI.1)).await;
            last_lat[i] = lat;
        }
        // Drain the therapists' acks and what reached the reading dashboard.
        for socket in therapists.iter_mut() {
            socket.next_json().await;
        }
        reader_updates += note(frames_for(&mut reader, Duration::from_millis(90)).await);
    }
    let grown_kib = rss_kib().saturating_sub(started_rss);
    assert!(
        grown_kib < 64 * 1024,
        "memory grew by {grown_kib} KiB while a dashboard stalled"
    );
    assert!(
        reader_updates > 1000,
        "the reading dashboard got only {reader_updates} updates"
    );

    // The reading dashboard ends with every therapist's latest position.
    note(frames_for(&mut reader, Duration::from_millis(1000)).await);
    let mut got: Vec<f64> = latest.values().copied().collect();
    got.sort_by(f64::total_cmp);
    let mut want = last_lat.clone();
    want.sort_by(f64::total_cmp);
    assert_eq!(got.len(), want.len(), "{latest:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-9, "stale position: {got:?} vs {want:?}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn booking_changes_reach_dashboards_watching_their_place() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, service) = online_therapist(&app, &admin).await;
    let mut socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
    socket.send_json(&ping(1, MAKATI.0 + 0.001, MAKATI.1)).await;
    socket.next_json().await;
    let (mut watcher, _) = dashboard(&app, &admin, MAKATI_BOX).await;
    let (customer, _) = register(&app, "customer").await;
    let booking = json_body(
        app.client
            .post(app.url("/v1/bookings"))
            .bearer_auth(&customer)
            .header("Idempotency-Key", "dash")
            .json(&json!({"service_id": service, "booking_type": "now", "location": {"lat": MAKATI.0, "lng": MAKATI.1, "address": "Ayala"}}))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let id = booking["id"].as_str().unwrap();
    loop {
        let frame = socket.next_json().await;
        if frame["type"] == "offer" {
            break;
        }
    }
    accept(&app, &therapist.token, id).await;
    let frames = frames_for(&mut watcher, Duration::from_millis(1000)).await;
    // A new booking shows up at once (pending), then its acceptance.
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "booking.status" && f["status"] == "pending"),
        "{frames:?}"
    );
    let status = frames
        .iter()
        .find(|f| f["type"] == "booking.status" && f["status"] == "accepted")
        .unwrap_or_else(|| panic!("no accepted booking.status in {frames:?}"));
    assert_eq!(status["booking_id"], id);
    assert_eq!(status["status"], "accepted");
    assert_eq!(status["provider_id"], therapist.provider_id.as_str());
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "provider.status" && f["status"] == "busy"),
        "{frames:?}"
    );

    // The same picture once, as GeoJSON; the counts; the hexagons.
    let bbox = MAKATI_BOX.map(|v| v.to_string()).join(",");
    let live = json_body(
        app.get_as(&admin, &format!("/v1/dispatch/live?bbox={bbox}"))
            .await,
        200,
    )
    .await;
    assert_eq!(live["type"], "FeatureCollection");
    let kinds: Vec<&str> = live["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"therapist") && kinds.contains(&"booking"),
        "{live}"
    );
    let therapist_feature = live["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["properties"]["kind"] == "therapist")
        .unwrap();
    assert_eq!(therapist_feature["properties"]["status"], "busy");
    assert!(therapist_feature["properties"]["fix_age_s"]
        .as_i64()
        .is_some());
    let stats = json_body(app.get_as(&admin, "/v1/dispatch/stats").await, 200).await;
    assert_eq!(stats["busy"], 1);
    assert_eq!(stats["matched_last_hour"], 1);
    assert_eq!(stats["active_bookings"][0]["booking_id"], id);
    let hexes = json_body(
        app.get_as(&admin, &format!("/v1/dispatch/hexes?bbox={bbox}"))
            .await,
        200,
    )
    .await;
    assert_eq!(hexes["type"], "FeatureCollection");
    app.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_and_its_data_are_for_admins_and_the_page_is_served() {
    let app = spawn_app().await;
    let (customer, _) = register(&app, "customer").await;
    assert_eq!(
        refused_status(&app, "/v1/ws/dashboard", &customer).await,
        403
    );
    assert_eq!(
        refused_status(&app, "/v1/ws/dashboard", "hlt_nope").await,
        401
    );
    problem(
        app.get_as(&customer, "/v1/dispatch/live?bbox=121,14.5,121.1,14.6")
            .await,
        403,
    )
    .await;
    problem(app.get_as(&customer, "/v1/dispatch/stats").await, 403).await;
    let admin = make_admin(&app).await;
    let body = problem(
        app.get_as(&admin, "/v1/dispatch/live?bbox=121,14.5").await,
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "bbox");

    let page = app.get("/").await;
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // The page runs only its own scripts, cannot be framed by another site, and neither it nor
    // an API answer is sniffed into another type.
    let header = |response: &reqwest::Response, name: &str| {
        response.headers()[name].to_str().unwrap().to_owned()
    };
    let policy = header(&page, "content-security-policy");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let api = app.get("/v1/services").await;
    assert_eq!(header(&api, "x-content-type-options"), "nosniff");
    let missing = app.get("/assets/no-such-file.js").await;
    assert_eq!(header(&missing, "x-content-type-options"), "nosniff");
    problem(missing, 404).await;
    app.shutdown().await;
}
