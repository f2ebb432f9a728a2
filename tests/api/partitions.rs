//! The partition manager: month boundaries and retention.

use std::process::Command;
use std::time::Instant;

use chrono::{NaiveDate, TimeZone, Utc};
use hilot::geo::Point;
use hilot::ingest::writer::{insert_batch, PingRecord};
use hilot::partitions::{self, partition_name};

use crate::helpers::fresh_database;

const HILOT: &str = env!("CARGO_BIN_EXE_hilot");

async fn provider(db: &sqlx::PgPool) -> i64 {
    let user: i64 =
        sqlx::query_scalar("INSERT INTO users (phone) VALUES ('+639170000001') RETURNING id")
            .fetch_one(db)
            .await
            .unwrap();
    sqlx::query_scalar(
        "INSERT INTO providers (user_id, type) VALUES ($1, 'therapist') RETURNING id",
    )
    .bind(user)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn pings_on_both_sides_of_a_month_end_land_in_their_partitions_with_none_rejected() {
    let (_, url) = fresh_database().await;
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let provider_id = provider(&db).await;
    let month_end = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    partitions::ensure(&db, NaiveDate::from_ymd_opt(2026, 12, 15).unwrap(), 1)
        .await
        .unwrap();

    let times = [
        month_end - chrono::Duration::milliseconds(1),
        month_end,
        month_end + chrono::Duration::milliseconds(1),
    ];
    let batch: Vec<PingRecord> = times
        .iter()
        .enumerate()
        .map(|(i, at)| PingRecord {
            provider_id,
            seq: i as i64,
            key: hilot::ingest::DedupeKey::Fix {
                seq: i as i64,
                recorded_at_ms: at.timestamp_millis(),
            },
            point: Point::new(14.5547, 121.0244),
            accuracy_m: 5.0,
            heading: None,
            speed_kmh: None,
            battery: None,
            recorded_at: *at,
            queued_at: Instant::now(),
            ack: None,
        })
        .collect();
    insert_batch(&db, &batch)
        .await
        .expect("no ping is rejected");

    let placed: Vec<(i64, String)> = sqlx::query_as(
        "SELECT client_seq, tableoid::regclass::text FROM provider_locations ORDER BY client_seq",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        placed,
        vec![
            (0, "provider_locations_y2026m12".to_owned()),
            (1, "provider_locations_y2027m01".to_owned()),
            (2, "provider_locations_y2027m01".to_owned()),
        ]
    );
}

#[tokio::test]
async fn rotate_drops_partitions_past_retention_and_nothing_else() {
    let (_, url) = fresh_database().await;
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let provider_id = provider(&db).await;
    let today = Utc::now().date_naive();
    // Partitions 1 to 5 months back, each holding one row (retention is 3 months).
    for back in 1..=5 {
        let month = partitions::month_offset(today, -back);
        sqlx::query("SELECT ensure_provider_locations_partition($1)")
            .bind(month)
            .execute(&db)
            .await
            .unwrap();
        sqlx::query("INSERT INTO provider_locations (provider_id, latitude, longitude, created_at) VALUES ($1, 14.5, 121.0, $2)")
            .bind(provider_id)
            .bind(Utc.from_utc_datetime(&month.and_hms_opt(12, 0, 0).unwrap()))
            .execute(&db)
            .await
            .unwrap();
    }
    let before: Vec<String> = partition_names(&db).await;

    let output = Command::new(HILOT)
        .args(["partitions", "rotate"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);

    let after = partition_names(&db).await;
    let dropped: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
    let expected = [
        partition_name(partitions::month_offset(today, -5)),
        partition_name(partitions::month_offset(today, -4)),
    ];
    assert_eq!(dropped, expected.iter().collect::<Vec<_>>());
    for name in &expected {
        assert!(stdout.contains(name.as_str()), "{stdout}");
    }
    for kept in [-3, -2, -1, 0, 1] {
        let name = partition_name(partitions::month_offset(today, kept));
        assert!(after.contains(&name), "{name} must be kept");
    }
    assert!(after.contains(&"provider_locations_default".to_owned()));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_locations")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 3, "rows of kept partitions remain");

    let status = Command::new(HILOT)
        .args(["partitions", "status"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("provider_locations_default"));
}

async fn partition_names(db: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'provider_locations'::regclass ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}
