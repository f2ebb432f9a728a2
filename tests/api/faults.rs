//! The fault suite: the real binary killed mid-stream, PostgreSQL restarted under it, a row the
//! database refuses for good, a month rollover under load, a dashboard that stops reading, and
//! garbage on every socket. Each asserts what the apps see and what PostgreSQL holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::binary::{Acks, Binary, PrivateCluster};
use crate::helpers::{
    make_admin, register, spawn_app, spawn_app_in, test_settings, TestApp, Therapist,
};
use crate::live::online_therapist;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const MAKATI: (f64, f64) = (14.5547, 121.0244);

/// A therapist set up through the API on `app`, with a policy that stores every fix.
async fn therapist_storing_everything(app: &TestApp) -> Therapist {
    let admin = make_admin(app).await;
    let (therapist, _) = online_therapist(app, &admin).await;
    sqlx::query("UPDATE app_settings SET value = '0' WHERE key = 'location_store_interval_s'")
        .execute(&app.db)
        .await
        .unwrap();
    therapist
}

/// A slow walk north: a fix every 100 ms of device time from `start`.
fn ping(seq: i64, start: DateTime<Utc>) -> Value {
    json!({
        "type": "location", "seq": seq,
        "lat": MAKATI.0 + seq as f64 * 1e-6, "lng": MAKATI.1,
        "accuracy_m": 5.0, "speed_kmh": 4.0, "battery": 50,
        "recorded_at": (start + chrono::Duration::milliseconds(100 * seq)).to_rfc3339(),
    })
}

async fn open(url: &str) -> (SplitSink<Ws, Message>, SplitStream<Ws>) {
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("socket opens: {e}"));
    socket.split()
}

/// Reads a therapist socket until it closes; counts stored acks as they come.
fn read_acks(
    mut stream: SplitStream<Ws>,
    stored: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Acks> {
    tokio::spawn(async move {
        let mut acks = Acks::default();
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            match frame["type"].as_str() {
                Some("ack") => {
                    if frame["stored"] == true {
                        stored.fetch_add(1, Ordering::Relaxed);
                    }
                    acks.by_seq.insert(frame["seq"].as_i64().unwrap(), frame);
                }
                Some("error") => acks.errors.push(frame),
                _ => {}
            }
        }
        acks
    })
}

/// Rows per client seq of one therapist.
async fn stored_rows(db: &PgPool, provider_uuid: &str) -> BTreeMap<i64, i64> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT l.client_seq, count(*) FROM provider_locations l JOIN providers p ON p.id = l.provider_id \
         WHERE p.uuid = $1::uuid GROUP BY l.client_seq",
    )
    .bind(provider_uuid)
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

fn assert_every_stored_ack_is_in_the_database(acks: &Acks, rows: &BTreeMap<i64, i64>) {
    for seq in acks.stored() {
        assert_eq!(
            rows.get(&seq),
            Some(&1),
            "seq {seq} was acknowledged as stored; rows: {:?}",
            rows.get(&seq)
        );
    }
    assert!(rows.values().all(|n| *n == 1), "a ping was stored twice");
}

/// Waits (bounded) until `condition` holds.
async fn eventually(what: &str, patience: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_ping_acknowledged_as_stored() {
    let app = spawn_app().await;
    let therapist = therapist_storing_everything(&app).await;
    let (db, db_url) = (app.db.clone(), app.db_url.clone());
    app.shutdown().await;

    let mut server = Binary::start(&db_url, &[]);
    server.wait_ready().await;
    let (mut sink, stream) = open(&server.ws_url("/v1/ws/therapist", &therapist.token)).await;
    let stored = Arc::new(AtomicUsize::new(0));
    let reader = read_acks(stream, stored.clone());

    // Stream until a few hundred pings are acknowledged as stored, then kill -9 mid-stream.
    let start = Utc::now() - chrono::Duration::minutes(5);
    let mut killed = false;
    for seq in 1..=50_000i64 {
        if !killed && stored.load(Ordering::Relaxed) >= 300 {
            server.kill9();
            killed = true;
        }
        if sink
            .send(Message::text(ping(seq, start).to_string()))
            .await
            .is_err()
        {
            break;
        }
        if seq % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(killed, "the stream never reached 300 stored acks");
    let acks = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the socket ends once the server is gone")
        .unwrap();
    assert!(
        server.wait_exit().await.code().is_none(),
        "killed by a signal"
    );

    assert!(acks.stored().len() >= 300);
    let rows = stored_rows(&db, &therapist.provider_id).await;
    assert_every_stored_ack_is_in_the_database(&acks, &rows);
}

/// Sends a ping every 10 ms for `how_long`, numbering on from `seq`.
async fn send_for(
    sink: &mut SplitSink<Ws, Message>,
    seq: &mut i64,
    start: DateTime<Utc>,
    how_long: Duration,
) {
    let deadline = tokio::time::Instant::now() + how_long;
    while tokio::time::Instant::now() < deadline {
        *seq += 1;
        sink.send(Message::text(ping(*seq, start).to_string()))
            .await
            .expect("the socket stays open through the outage");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_restarted_mid_stream_readiness_says_so_and_the_server_recovers_by_itself() {
    // A cluster of this test's own, so restarting it disturbs no other test.
    let cluster = PrivateCluster::start();
    let admin_db = PgPool::connect(&cluster.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE hilot")
        .execute(&admin_db)
        .await
        .unwrap();
    admin_db.close().await;
    let db_url = cluster.url("hilot");
    let app = spawn_app_in(("hilot".into(), db_url.clone()), test_settings()).await;
    let therapist = therapist_storing_everything(&app).await;
    app.shutdown().await;

    let mut server = Binary::start(&db_url, &[]);
    server.wait_ready().await;
    let (mut sink, stream) = open(&server.ws_url("/v1/ws/therapist", &therapist.token)).await;
    let stored = Arc::new(AtomicUsize::new(0));
    let reader = read_acks(stream, stored.clone());
    let start = Utc::now() - chrono::Duration::minutes(5);
    let mut seq = 0i64;
    // Pings flow; then PostgreSQL goes down while they keep coming.
    send_for(&mut sink, &mut seq, start, Duration::from_secs(2)).await;
    eventually(
        "pings stored before the outage",
        Duration::from_secs(30),
        || stored.load(Ordering::Relaxed) >= 50,
    )
    .await;
    cluster.stop();
    let mut saw_unready = false;
    for _ in 0..20 {
        send_for(&mut sink, &mut seq, start, Duration::from_millis(250)).await;
        if server.readiness().await == Some(503) {
            saw_unready = true;
            break;
        }
    }
    assert!(
        saw_unready,
        "readiness never answered 503 while PostgreSQL was down"
    );
    let stored_during_outage = stored.load(Ordering::Relaxed);

    // PostgreSQL comes back; the same server process stores again without a restart.
    cluster.start_again();
    send_for(&mut sink, &mut seq, start, Duration::from_secs(2)).await;
    let mut ready_again = false;
    for _ in 0..300 {
        if server.readiness().await == Some(200) {
            ready_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready_again,
        "readiness never came back after PostgreSQL did"
    );
    let sent = seq;
    eventually(
        "every ping acknowledged after the outage",
        Duration::from_secs(60),
        || stored.load(Ordering::Relaxed) as i64 >= sent,
    )
    .await;
    assert!(stored.load(Ordering::Relaxed) > stored_during_outage);
    server.sigterm();
    assert!(server.wait_exit().await.success());
    let acks = reader.await.unwrap();

    let db = PgPool::connect(&db_url).await.unwrap();
    let rows = stored_rows(&db, &therapist.provider_id).await;
    assert_every_stored_ack_is_in_the_database(&acks, &rows);
    assert_eq!(
        acks.stored().len() as i64,
        sent,
        "every ping was stored in the end"
    );
    db.close().await;
}

#[tokio::test]
async fn a_ping_the_database_refuses_for_good_is_acked_not_stored_and_the_rest_flow_on() {
    let app = spawn_app().await;
    let therapist = therapist_storing_everything(&app).await;
    // Something PostgreSQL will never take, whatever the retries: battery 13 is refused.
    sqlx::query(
        "ALTER TABLE provider_locations ADD CONSTRAINT no_unlucky_battery CHECK (battery_level IS DISTINCT FROM 13)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (db, db_url) = (app.db.clone(), app.db_url.clone());
    app.shutdown().await;

    // A long flush interval puts the whole burst in one batch.
    let mut server = Binary::start(&db_url, &[("HILOT_PING_FLUSH_INTERVAL_MS", "500")]);
    server.wait_ready().await;
    let (mut sink, stream) = open(&server.ws_url("/v1/ws/therapist", &therapist.token)).await;
    let stored = Arc::new(AtomicUsize::new(0));
    let reader = read_acks(stream, stored.clone());
    let start = Utc::now() - chrono::Duration::minutes(5);
    for seq in 1..=40i64 {
        let mut frame = ping(seq, start);
        if seq == 17 {
            frame["battery"] = json!(13);
        }
        sink.feed(Message::text(frame.to_string())).await.unwrap();
    }
    sink.flush().await.unwrap();
    eventually("39 pings stored", Duration::from_secs(30), || {
        stored.load(Ordering::Relaxed) >= 39
    })
    .await;
    // The rest flow on after it.
    for seq in 41..=60i64 {
        sink.send(Message::text(ping(seq, start).to_string()))
            .await
            .unwrap();
    }
    eventually("later pings stored", Duration::from_secs(30), || {
        stored.load(Ordering::Relaxed) >= 59
    })
    .await;
    let splits = server.metric("hilot_ping_batch_splits_total").await;
    server.sigterm();
    assert!(server.wait_exit().await.success());
    let acks = reader.await.unwrap();

    let refused = &acks.by_seq[&17];
    assert_eq!(refused["stored"], false, "{refused}");
    assert_eq!(refused["reason"], "refused_by_database", "{refused}");
    let stored: BTreeSet<i64> = acks.stored().into_iter().collect();
    let expected: BTreeSet<i64> = (1..=60).filter(|s| *s != 17).collect();
    assert_eq!(stored, expected);
    let rows = stored_rows(&db, &therapist.provider_id).await;
    assert_every_stored_ack_is_in_the_database(&acks, &rows);
    assert!(!rows.contains_key(&17));
    assert!(
        splits.unwrap_or(0.0) >= 1.0,
        "the batch was split: {splits:?}"
    );
}

#[tokio::test]
async fn a_month_rollover_under_load_refuses_no_ping() {
    // The server runs on a clock 20 s before the end of March 2027 (libfaketime), with twenty
    // therapists pinging ten times a second across midnight.
    const THERAPISTS: usize = 20;
    let mut settings = test_settings();
    settings.token_ttl_days = 3650;
    let app = crate::helpers::spawn_app_with(settings).await;
    let admin = make_admin(&app).await;
    let mut therapists = Vec::new();
    for _ in 0..THERAPISTS {
        therapists.push(online_therapist(&app, &admin).await.0);
    }
    sqlx::query("UPDATE app_settings SET value = '0' WHERE key = 'location_store_interval_s'")
        .execute(&app.db)
        .await
        .unwrap();
    let (db, db_url) = (app.db.clone(), app.db_url.clone());
    app.shutdown().await;

    let month_end: DateTime<Utc> = "2027-04-01T00:00:00Z".parse().unwrap();
    let fake_start = month_end - chrono::Duration::seconds(20);
    let faketime = format!("@{}", fake_start.format("%Y-%m-%d %H:%M:%S"));
    let mut server = Binary::start(
        &db_url,
        &[
            (
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            ),
            ("FAKETIME", &faketime),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("TZ", "UTC"),
        ],
    );
    server.wait_ready().await;

    let stored = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for (i, therapist) in therapists.iter().enumerate() {
        let url = server.ws_url("/v1/ws/therapist", &therapist.token);
        let stored = stored.clone();
        streams.push(tokio::spawn(async move {
            let (mut sink, stream) = open(&url).await;
            let reader = read_acks(stream, stored);
            // No `recorded_at`: each fix is stamped with the server's (shifted) clock. 40 s at
            // 10 Hz crosses midnight, whenever the server's clock started.
            for seq in 1..=400i64 {
                let frame = json!({
                    "type": "location", "seq": seq, "accuracy_m": 5.0,
                    "lat": MAKATI.0 + i as f64 * 1e-3 + seq as f64 * 1e-6, "lng": MAKATI.1,
                });
                sink.send(Message::text(frame.to_string())).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (sink, reader)
        }));
    }
    let mut readers = Vec::new();
    for stream in streams {
        readers.push(stream.await.unwrap());
    }
    let sent = THERAPISTS * 400;
    eventually("every ping acknowledged", Duration::from_secs(60), || {
        stored.load(Ordering::Relaxed) >= sent
    })
    .await;
    server.sigterm();
    assert!(server.wait_exit().await.success());
    for (sink, reader) in readers {
        drop(sink);
        let acks = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("sockets end when the server stops")
            .unwrap();
        assert!(acks.errors.is_empty(), "pings refused: {:?}", acks.errors);
        assert_eq!(acks.stored().len(), 400);
    }

    let placed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*) FROM provider_locations GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let placed: BTreeMap<String, i64> = placed.into_iter().collect();
    assert!(
        placed
            .get("provider_locations_y2027m03")
            .is_some_and(|n| *n > 0)
            && placed
                .get("provider_locations_y2027m04")
                .is_some_and(|n| *n > 0),
        "fixes on both sides of midnight: {placed:?}"
    );
    assert_eq!(placed.values().sum::<i64>(), sent as i64, "{placed:?}");
    assert!(
        !placed.keys().any(|p| p.contains("default")),
        "nothing fell into the DEFAULT partition: {placed:?}"
    );
}

#[tokio::test]
async fn a_dashboard_that_stops_reading_past_the_heartbeat_holds_up_no_one() {
    const THERAPISTS: usize = 10;
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let mut therapists = Vec::new();
    for _ in 0..THERAPISTS {
        therapists.push(online_therapist(&app, &admin).await.0);
    }
    let db_url = app.db_url.clone();
    app.shutdown().await;
    let mut server = Binary::start(&db_url, &[("HILOT_MAX_SPEED_KMH", "10000")]);
    server.wait_ready().await;

    let subscribe = json!({"type": "subscribe", "bbox": [120.9, 14.4, 121.2, 14.7]}).to_string();
    // One dashboard subscribes and then never reads again.
    let (mut stalled_sink, mut stalled) = open(&server.ws_url("/v1/ws/dashboard", &admin)).await;
    stalled_sink
        .send(Message::text(subscribe.clone()))
        .await
        .unwrap();
    let (mut reader_sink, mut reader) = open(&server.ws_url("/v1/ws/dashboard", &admin)).await;
    reader_sink.send(Message::text(subscribe)).await.unwrap();

    // 25 s (five heartbeats, past the 20 s client timeout) of 10 Hz pings from every therapist.
    let moves = Arc::new(AtomicUsize::new(0));
    let counting = {
        let moves = moves.clone();
        tokio::spawn(async move {
            let mut per_second: Vec<usize> = Vec::new();
            let mut started = None;
            while let Some(Ok(message)) = reader.next().await {
                if let Message::Close(close) = &message {
                    panic!("the reading dashboard was closed: {close:?}");
                }
                if let Message::Text(text) = message {
                    if text.contains("provider.moved") {
                        moves.fetch_add(1, Ordering::Relaxed);
                        let started = *started.get_or_insert_with(tokio::time::Instant::now);
                        let second = started.elapsed().as_secs() as usize;
                        per_second.resize(per_second.len().max(second + 1), 0);
                        per_second[second] += 1;
                    }
                }
            }
            per_second
        })
    };
    let acked = Arc::new(AtomicUsize::new(0));
    let mut pingers = Vec::new();
    for (i, therapist) in therapists.iter().enumerate() {
        let url = server.ws_url("/v1/ws/therapist", &therapist.token);
        let acked = acked.clone();
        pingers.push(tokio::spawn(async move {
            let (mut sink, stream) = open(&url).await;
            let reader = read_acks(stream, Arc::new(AtomicUsize::new(0)));
            for seq in 1..=250i64 {
                let frame = json!({
                    "type": "location", "seq": seq, "accuracy_m": 5.0,
                    "lat": MAKATI.0 + i as f64 * 1e-3 + (seq % 100) as f64 * 1e-5, "lng": MAKATI.1,
                });
                sink.send(Message::text(frame.to_string())).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sink.send(Message::Close(None)).await.unwrap();
            let acks = tokio::time::timeout(Duration::from_secs(30), reader)
                .await
                .expect("the server answers the close")
                .unwrap();
            acked.fetch_add(acks.by_seq.len(), Ordering::Relaxed);
        }));
    }
    for pinger in pingers {
        pinger.await.unwrap();
    }
    assert_eq!(
        acked.load(Ordering::Relaxed),
        THERAPISTS * 250,
        "every ping acked"
    );
    reader_sink.send(Message::Close(None)).await.unwrap();
    let per_second = tokio::time::timeout(Duration::from_secs(30), counting)
        .await
        .unwrap()
        .unwrap();
    // The reading dashboard heard moves every second of the run, stall or no stall.
    let quiet: Vec<usize> = per_second
        .iter()
        .enumerate()
        .take(24)
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| s)
        .collect();
    assert!(
        quiet.is_empty(),
        "seconds without moves: {quiet:?} of {per_second:?}"
    );

    // The stalled dashboard was closed by the server (heartbeat timeout or send timeout): what
    // it buffered ends in a close, not in a socket left open.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the stalled dashboard is still open");
    server.sigterm();
    assert!(server.wait_exit().await.success());
}

/// Frames shaped like the real ones, then broken at random: fields dropped, values replaced by
/// random JSON, the text cut, garbage spliced in.
fn mangled_frame(rng: &mut impl Rng) -> String {
    let templates = [
        json!({"type": "location", "seq": 1, "lat": 14.55, "lng": 121.02, "accuracy_m": 8.0, "recorded_at": "2026-11-21T10:00:00Z"}),
        json!({"type": "availability", "online": true}),
        json!({"type": "offer.accept", "booking_id": uuid::Uuid::new_v4()}),
        json!({"type": "offer.decline", "booking_id": uuid::Uuid::new_v4()}),
        json!({"type": "status", "booking_id": uuid::Uuid::new_v4(), "status": "en_route"}),
        json!({"type": "subscribe", "bbox": [120.9, 14.4, 121.2, 14.7]}),
    ];
    let random_value = |rng: &mut dyn rand::RngCore| -> Value {
        match rng.gen_range(0..8) {
            0 => Value::Null,
            1 => json!(rng.gen::<bool>()),
            2 => json!(rng.gen::<i64>()),
            3 => json!(rng.gen::<f64>() * 1e6 - 5e5),
            4 => json!("x".repeat(rng.gen_range(0..40))),
            5 => json!([1, "two", null]),
            6 => json!({"nested": {"deeper": [1.5]}}),
            _ => json!(f64::MAX),
        }
    };
    let mut frame = templates[rng.gen_range(0..templates.len())].clone();
    let object = frame.as_object_mut().unwrap();
    let keys: Vec<String> = object.keys().cloned().collect();
    for _ in 0..rng.gen_range(0..3) {
        let key = &keys[rng.gen_range(0..keys.len())];
        match rng.gen_range(0..3) {
            0 => {
                object.remove(key);
            }
            _ => {
                object.insert(key.clone(), random_value(rng));
            }
        }
    }
    if rng.gen_bool(0.2) {
        object.insert("unexpected".into(), random_value(rng));
    }
    let mut text = frame.to_string();
    match rng.gen_range(0..10) {
        0 => text.truncate(rng.gen_range(0..text.len())),
        1 => text.insert_str(rng.gen_range(0..text.len()), "\u{0}}{,\"]"),
        2 => text = "[".repeat(rng.gen_range(1..200)),
        3 => text = "é".repeat(rng.gen_range(0..3000)),
        _ => {}
    }
    // Cut on a character boundary (truncate needs one).
    text
}

/// Every socket answers garbage with error frames and stays open; a good frame still works.
#[tokio::test]
async fn every_socket_survives_mangled_frames() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let db_url = app.db_url.clone();
    app.shutdown().await;
    let mut server = Binary::start(&db_url, &[]);
    server.wait_ready().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let documented = [
        "invalid_json",
        "invalid_frame",
        "unknown_type",
        "frame_too_large",
        "invalid_bbox",
        "unsupported_frame",
        "not_found",
        "validation",
        "conflict",
        "forbidden",
        "invalid_coordinates",
        "accuracy_missing",
        "invalid_accuracy",
        "recorded_too_long_ago",
        "recorded_in_future",
        "implausible_jump",
        "unavailable",
    ];
    for (path, token) in [
        ("/v1/ws/therapist", therapist.token.as_str()),
        ("/v1/ws/dashboard", admin.as_str()),
        ("/v1/ws/customer", customer.as_str()),
    ] {
        let (mut sink, mut stream) = open(&server.ws_url(path, token)).await;
        for _ in 0..150 {
            let text = mangled_frame(&mut rng);
            // Char boundaries: a truncation may have split a multi-byte character.
            let text = String::from_utf8_lossy(text.as_bytes()).into_owned();
            sink.send(Message::text(text)).await.unwrap();
        }
        sink.send(Message::binary(vec![0xff, 0x00])).await.unwrap();
        // A good frame last: it is answered, so everything before it was read.
        let good = match path {
            "/v1/ws/therapist" => {
                json!({"type": "location", "seq": 999_999, "lat": MAKATI.0, "lng": MAKATI.1, "accuracy_m": 5.0})
            }
            "/v1/ws/dashboard" => json!({"type": "subscribe", "bbox": [120.9, 14.4, 121.2, 14.7]}),
            _ => json!({"type": "hello"}),
        };
        sink.send(Message::text(good.to_string())).await.unwrap();
        // Every text frame and the binary one get an answer, except a therapist's resends of a
        // ping still queued (answered once stored): the good frame's answer closes the count.
        let mut replies = 0;
        let answered = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(message) = stream.next().await {
                let message = message.expect("the socket stays open");
                let frame: Value = match message {
                    Message::Text(text) => serde_json::from_str(&text).expect("frames are JSON"),
                    Message::Close(close) => panic!("{path} closed after garbage: {close:?}"),
                    _ => continue,
                };
                if frame["type"] == "config" {
                    continue;
                }
                replies += 1;
                if frame["type"] == "error" {
                    let code = frame["code"].as_str().unwrap_or("");
                    assert!(documented.contains(&code), "{path}: undocumented {frame}");
                }
                let done = match path {
                    "/v1/ws/therapist" => frame["type"] == "ack" && frame["seq"] == 999_999,
                    _ => replies == 152,
                };
                if done {
                    return;
                }
            }
            panic!("{path} ended");
        })
        .await;
        assert!(answered.is_ok(), "{path}: only {replies} answers");
        let _ = sink.send(Message::Close(None)).await;
    }
    server.sigterm();
    assert!(server.wait_exit().await.success());
}
