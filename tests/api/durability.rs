//! A ping acknowledged as stored is never lost: SIGTERM the real binary mid-stream, restart,
//! and find every acknowledged seq in provider_locations exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::binary::Binary;
use crate::helpers::{make_admin, spawn_app};
use crate::live::online_therapist;

fn ping(seq: i64, start: chrono::DateTime<Utc>) -> Value {
    // A slow walk north, a fix every 100 ms of device time.
    json!({
        "type": "location", "seq": seq,
        "lat": 14.5547 + seq as f64 * 1e-6, "lng": 121.0244,
        "accuracy_m": 5.0, "speed_kmh": 4.0,
        "recorded_at": (start + chrono::Duration::milliseconds(100 * seq)).to_rfc3339(),
    })
}

#[tokio::test]
async fn pings_acknowledged_as_stored_survive_sigterm_and_restart_exactly_once() {
    // Arrange: a therapist, set up through the API, and a policy that stores every fix.
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, _) = online_therapist(&app, &admin).await;
    sqlx::query("UPDATE app_settings SET value = '0' WHERE key = 'location_store_interval_s'")
        .execute(&app.db)
        .await
        .unwrap();
    let db = app.db.clone();
    let db_url = app.db_url.clone();
    app.shutdown().await;

    // The binary is killed when the test ends however it ends (no server outlives a failure).
    let mut server = Binary::start(&db_url, &[]);
    server.wait_ready().await;

    // Act: stream pings; SIGTERM the server half-way; keep sending until it closes the socket.
    let (socket, _) =
        tokio_tungstenite::connect_async(server.ws_url("/v1/ws/therapist", &therapist.token))
            .await
            .expect("socket opens");
    let (mut sink, mut stream) = socket.split();
    let reader = tokio::spawn(async move {
        let mut acks: BTreeMap<i64, bool> = BTreeMap::new();
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "ack" {
                    acks.insert(
                        frame["seq"].as_i64().unwrap(),
                        frame["stored"].as_bool().unwrap(),
                    );
                }
            }
        }
        acks
    });
    let start = Utc::now() - chrono::Duration::minutes(5);
    let mut sent = 0;
    for seq in 1..=3000 {
        if seq == 1500 {
            server.sigterm();
        }
        if sink
            .send(Message::text(ping(seq, start).to_string()))
            .await
            .is_err()
        {
            break;
        }
        sent = seq;
        if seq % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let acks = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    let status = server.wait_exit().await;
    assert!(status.success(), "exit status {status}");
    assert!(sent >= 1500, "sent {sent}");

    // Restart on the same database; resend some acknowledged pings through the new server.
    // The binary is killed when the test ends however it ends (no server outlives a failure).
    let mut server = Binary::start(&db_url, &[]);
    server.wait_ready().await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(server.ws_url("/v1/ws/therapist", &therapist.token))
            .await
            .expect("socket opens after restart");
    let resent: Vec<i64> = acks.keys().copied().take(5).collect();
    for seq in &resent {
        socket
            .send(Message::text(ping(*seq, start).to_string()))
            .await
            .unwrap();
    }
    let mut reacked = 0;
    while reacked < resent.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "config" {
                continue;
            }
            assert_eq!(frame["type"], "ack", "{frame}");
            assert_eq!(frame["stored"], true, "{frame}");
            reacked += 1;
        }
    }
    let _ = socket.close(None).await;
    server.sigterm();
    assert!(server.wait_exit().await.success());

    // Assert: every seq acknowledged as stored is there, none twice.
    let stored: Vec<i64> = acks
        .iter()
        .filter(|(_, stored)| **stored)
        .map(|(seq, _)| *seq)
        .collect();
    assert!(
        stored.len() >= 300,
        "only {} pings were acknowledged as stored",
        stored.len()
    );
    let rows: BTreeMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "SELECT l.client_seq, count(*) FROM provider_locations l JOIN providers p ON p.id = l.provider_id \
         WHERE p.uuid = $1::uuid GROUP BY l.client_seq",
    )
    .bind(&therapist.provider_id)
    .fetch_all(&db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for seq in &stored {
        assert_eq!(
            rows.get(seq),
            Some(&1),
            "seq {seq} acknowledged as stored: rows {:?}",
            rows.get(seq)
        );
    }
    assert!(
        rows.values().all(|count| *count == 1),
        "a ping was stored twice"
    );
}
