//! The schema does what the seed says: triggers, partitions, seed data.

use chrono::{Datelike, Duration, TimeZone, Utc};
use hilot::partitions::{month_offset, partition_name};
use sqlx::PgPool;

use crate::helpers::spawn_app;

const TABLES: &[&str] = &[
    "users",
    "personal_access_tokens",
    "user_addresses",
    "roles",
    "permissions",
    "model_has_roles",
    "model_has_permissions",
    "role_has_permissions",
    "providers",
    "therapist_profiles",
    "store_profiles",
    "provider_documents",
    "provider_locations",
    "service_categories",
    "services",
    "provider_services",
    "bookings",
    "booking_locations",
    "booking_timeline",
    "transactions",
    "wallets",
    "wallet_transactions",
    "payouts",
    "promo_codes",
    "promo_code_usages",
    "reviews",
    "messages",
    "notifications",
    "device_tokens",
    "app_settings",
    "audit_logs",
];

async fn insert_user(db: &PgPool, phone: &str) -> i64 {
    sqlx::query_scalar("INSERT INTO users (phone, first_name) VALUES ($1, 'Test') RETURNING id")
        .bind(phone)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn insert_therapist(db: &PgPool, phone: &str) -> (i64, i64) {
    let user_id = insert_user(db, phone).await;
    let provider_id = sqlx::query_scalar(
        "INSERT INTO providers (user_id, type, verification_status) VALUES ($1, 'therapist', 'verified') RETURNING id",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
    .unwrap();
    (user_id, provider_id)
}

async fn insert_booking(db: &PgPool, customer_id: i64, provider_id: Option<i64>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO bookings (customer_id, provider_id, service_id, type, booking_type, \
             service_price, total_amount, provider_earnings, commission_amount, commission_rate) \
         VALUES ($1, $2, (SELECT id FROM services WHERE slug = 'swedish-massage'), 'home_service', 'now', \
             800, 800, 680, 120, 15) RETURNING id",
    )
    .bind(customer_id)
    .bind(provider_id)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_seed_table_exists_with_this_and_next_months_partitions() {
    let app = spawn_app().await;
    for table in TABLES {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("public.{table}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert!(exists, "table {table} is missing");
    }
    let today = Utc::now().date_naive();
    for month in [month_offset(today, 0), month_offset(today, 1)] {
        let name = partition_name(month);
        let parent: Option<String> = sqlx::query_scalar(
            "SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = to_regclass($1)",
        )
        .bind(&name)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        assert_eq!(parent.as_deref(), Some("provider_locations"), "{name}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn seed_data_is_loaded() {
    let app = spawn_app().await;
    let roles: Vec<String> = sqlx::query_scalar("SELECT name FROM roles ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        roles,
        [
            "customer",
            "therapist",
            "store_owner",
            "admin",
            "super_admin"
        ]
    );
    let services: i64 = sqlx::query_scalar("SELECT count(*) FROM services")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(services, 7);
    let swedish_category: String = sqlx::query_scalar(
        "SELECT c.slug FROM services s JOIN service_categories c ON c.id = s.category_id WHERE s.slug = 'swedish-massage'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(swedish_category, "massage-therapy");
    let pending_timeout: serde_json::Value =
        sqlx::query_scalar("SELECT value FROM app_settings WHERE key = 'booking_timeout'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(pending_timeout["pending"], 300);
    app.shutdown().await;
}

#[tokio::test]
async fn a_new_user_gets_a_wallet() {
    let app = spawn_app().await;
    let user_id = insert_user(&app.db, "+639170000001").await;
    let (balance, currency): (rust_decimal::Decimal, String) =
        sqlx::query_as("SELECT balance, currency FROM wallets WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(balance, rust_decimal::Decimal::ZERO);
    assert_eq!(currency, "PHP");
    app.shutdown().await;
}

#[tokio::test]
async fn booking_numbers_have_the_seed_format_and_increase() {
    let app = spawn_app().await;
    let customer = insert_user(&app.db, "+639170000002").await;
    let mut numbers = Vec::new();
    for _ in 0..3 {
        let id = insert_booking(&app.db, customer, None).await;
        let number: String =
            sqlx::query_scalar("SELECT booking_number FROM bookings WHERE id = $1")
                .bind(id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        numbers.push(number);
    }
    let year = Utc::now().year();
    for number in &numbers {
        let (prefix, digits) = number.split_at(9);
        assert_eq!(prefix, format!("SPC-{year}-"), "{number}");
        assert_eq!(digits.len(), 6, "{number}");
        assert!(digits.chars().all(|c| c.is_ascii_digit()), "{number}");
    }
    let mut sorted = numbers.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, numbers, "numbers increase strictly");
    app.shutdown().await;
}

#[tokio::test]
async fn a_status_change_writes_a_timeline_row() {
    let app = spawn_app().await;
    let customer = insert_user(&app.db, "+639170000003").await;
    let (_, provider) = insert_therapist(&app.db, "+639170000004").await;
    let booking = insert_booking(&app.db, customer, Some(provider)).await;
    sqlx::query("UPDATE bookings SET status = 'accepted' WHERE id = $1")
        .bind(booking)
        .execute(&app.db)
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, description FROM booking_timeline WHERE booking_id = $1 ORDER BY id",
    )
    .bind(booking)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(
        rows.iter().any(|(status, _)| status == "accepted"),
        "timeline: {rows:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn geography_columns_follow_latitude_and_longitude() {
    let app = spawn_app().await;
    let user = insert_user(&app.db, "+639170000005").await;
    let (lng, lat): (f64, f64) = sqlx::query_as(
        "INSERT INTO user_addresses (user_id, address_line1, city, latitude, longitude) \
         VALUES ($1, '6750 Ayala Ave', 'Makati', 14.5547, 121.0244) \
         RETURNING ST_X(location::geometry), ST_Y(location::geometry)",
    )
    .bind(user)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!((lng - 121.0244).abs() < 1e-9 && (lat - 14.5547).abs() < 1e-9);

    // Moving the address moves the geography too.
    let (lng, lat): (f64, f64) = sqlx::query_as(
        "UPDATE user_addresses SET latitude = 14.5995, longitude = 120.9842 WHERE user_id = $1 \
         RETURNING ST_X(location::geometry), ST_Y(location::geometry)",
    )
    .bind(user)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!((lng - 120.9842).abs() < 1e-9 && (lat - 14.5995).abs() < 1e-9);

    let (_, provider) = insert_therapist(&app.db, "+639170000006").await;
    let (lng, lat): (f64, f64) = sqlx::query_as(
        "INSERT INTO provider_locations (provider_id, latitude, longitude) VALUES ($1, 14.55, 121.02) \
         RETURNING ST_X(location::geometry), ST_Y(location::geometry)",
    )
    .bind(provider)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!((lng - 121.02).abs() < 1e-9 && (lat - 14.55).abs() < 1e-9);
    app.shutdown().await;
}

#[tokio::test]
async fn the_rating_trigger_averages_customer_reviews_into_the_provider() {
    let app = spawn_app().await;
    let (therapist_user, provider) = insert_therapist(&app.db, "+639170000007").await;
    let mut ratings = Vec::new();
    for (i, rating) in [5, 4, 4].into_iter().enumerate() {
        let customer = insert_user(&app.db, &format!("+63917000010{i}")).await;
        let booking = insert_booking(&app.db, customer, Some(provider)).await;
        sqlx::query(
            "INSERT INTO reviews (booking_id, reviewer_id, reviewee_id, reviewer_type, overall_rating) \
             VALUES ($1, $2, $3, 'customer', $4)",
        )
        .bind(booking)
        .bind(customer)
        .bind(therapist_user)
        .bind(rating)
        .execute(&app.db)
        .await
        .unwrap();
        ratings.push(rating);
        // The therapist's review of the customer must not count toward the therapist.
        sqlx::query(
            "INSERT INTO reviews (booking_id, reviewer_id, reviewee_id, reviewer_type, overall_rating) \
             VALUES ($1, $2, $3, 'provider', 1)",
        )
        .bind(booking)
        .bind(therapist_user)
        .bind(customer)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let (average, total): (rust_decimal::Decimal, i32) =
        sqlx::query_as("SELECT average_rating, total_reviews FROM providers WHERE id = $1")
            .bind(provider)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(total, 3);
    assert_eq!(average.to_string(), "4.33");
    app.shutdown().await;
}

#[tokio::test]
async fn pings_land_in_their_months_partition_or_the_default() {
    let app = spawn_app().await;
    let (_, provider) = insert_therapist(&app.db, "+639170000008").await;
    let next_month = month_offset(Utc::now().date_naive(), 1);
    let in_next_month = Utc.from_utc_datetime(&next_month.and_hms_opt(12, 0, 0).unwrap());
    let far_ahead = Utc::now() + Duration::days(3 * 365);

    let mut partitions = Vec::new();
    for at in [in_next_month, far_ahead] {
        let partition: String = sqlx::query_scalar(
            "INSERT INTO provider_locations (provider_id, latitude, longitude, created_at) \
             VALUES ($1, 14.55, 121.02, $2) RETURNING tableoid::regclass::text",
        )
        .bind(provider)
        .bind(at)
        .fetch_one(&app.db)
        .await
        .unwrap();
        partitions.push(partition);
    }
    assert_eq!(
        partitions,
        [
            partition_name(next_month),
            "provider_locations_default".to_owned()
        ]
    );

    let body: serde_json::Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(body["checks"]["default_partition_rows"], 1);
    app.shutdown().await;
}
