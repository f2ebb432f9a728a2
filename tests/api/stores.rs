//! Stores: set-up with opening hours and rooms, nearby stores, in-store bookings and their
//! lifecycle, room capacity under concurrent bookings.

use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{json, Value};

use crate::helpers::{
    error_fields, json_body, make_admin, problem, register, service_id, spawn_app, spawn_app_with,
    test_settings, TestApp,
};

pub const MAKATI: (f64, f64) = (14.5547, 121.0244);

/// Open every day, all day.
pub fn always_open() -> Value {
    let day = json!([{"open": "00:00", "close": "24:00"}]);
    json!({
        "monday": day, "tuesday": day, "wednesday": day, "thursday": day,
        "friday": day, "saturday": day, "sunday": day,
    })
}

pub fn store_body(name: &str, lat: f64, lng: f64, rooms: i32, hours: Value) -> Value {
    json!({
        "store_name": name,
        "description": "Spa with sauna",
        "address_line1": "7800 Makati Ave",
        "city": "Makati",
        "lat": lat,
        "lng": lng,
        "timezone": "Asia/Manila",
        "opening_hours": hours,
        "amenities": ["WiFi", "Sauna"],
        "number_of_rooms": rooms,
        "payment_methods": ["Cash", "GCash"],
    })
}

pub struct Store {
    pub token: String,
    pub store_id: String,
}

/// A store owner's verified store at (`lat`, `lng`) selling Swedish massage at 900.
pub async fn verified_store(
    app: &TestApp,
    admin: &str,
    name: &str,
    (lat, lng): (f64, f64),
    rooms: i32,
    hours: Value,
) -> Store {
    let (token, _) = register(app, "store_owner").await;
    let store = json_body(
        app.put_as(
            &token,
            "/v1/store/profile",
            &store_body(name, lat, lng, rooms, hours),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(store["verification_status"], "pending");
    let store_id = store["store_id"].as_str().unwrap().to_owned();
    let swedish = service_id(app, "swedish-massage").await;
    json_body(
        app.put_as(
            &token,
            &format!("/v1/store/services/{swedish}"),
            &json!({"price": "900.00"}),
        )
        .await,
        200,
    )
    .await;
    json_body(
        app.post_as(
            admin,
            &format!("/v1/admin/providers/{store_id}/verify"),
            &json!({"status": "verified"}),
        )
        .await,
        200,
    )
    .await;
    Store { token, store_id }
}

pub async fn book_in_store(
    app: &TestApp,
    customer: &str,
    store_id: &str,
    scheduled_at: Option<chrono::DateTime<Utc>>,
) -> reqwest::Response {
    book_in_store_with(app, customer, store_id, scheduled_at, json!({})).await
}

/// [`book_in_store`] with more fields in the body (a promo code).
pub async fn book_in_store_with(
    app: &TestApp,
    customer: &str,
    store_id: &str,
    scheduled_at: Option<chrono::DateTime<Utc>>,
    extra: Value,
) -> reqwest::Response {
    let service = service_id(app, "swedish-massage").await;
    let mut body = json!({
        "service_id": service,
        "type": "in_store",
        "store_id": store_id,
        "booking_type": if scheduled_at.is_some() { "scheduled" } else { "now" },
    });
    if let Some(at) = scheduled_at {
        body["scheduled_at"] = json!(at);
    }
    for (key, value) in extra.as_object().into_iter().flatten() {
        body[key] = value.clone();
    }
    app.client
        .post(app.url("/v1/bookings"))
        .bearer_auth(customer)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .expect("request reaches the server")
}

#[tokio::test]
async fn a_store_sets_up_hours_rooms_and_services_and_is_found_once_verified() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (owner, _) = register(&app, "store_owner").await;
    let (customer, _) = register(&app, "customer").await;

    // Bad hours and rooms are refused, each named, and nothing is written.
    let bad = store_body(
        "Oasis Spa",
        MAKATI.0,
        MAKATI.1,
        0,
        json!({
            "monday": [{"open": "09:00", "close": "13:00"}, {"open": "12:00", "close": "18:00"}],
            "tuesday": [{"open": "25:00", "close": "26:00"}],
            "wednesday": [{"open": "18:00", "close": "09:00"}],
        }),
    );
    let mut with_bad_zone = bad.clone();
    with_bad_zone["timezone"] = json!("Mars/Olympus");
    let refused = problem(
        app.put_as(&owner, "/v1/store/profile", &with_bad_zone)
            .await,
        422,
    )
    .await;
    let fields = error_fields(&refused);
    for field in [
        "number_of_rooms",
        "timezone",
        "opening_hours.monday[1]",
        "opening_hours.tuesday[0].open",
        "opening_hours.tuesday[0].close",
        "opening_hours.wednesday[0].close",
    ] {
        assert!(
            fields.contains(&field.to_owned()),
            "{field} not named in {refused}"
        );
    }
    problem(app.get_as(&owner, "/v1/store/profile").await, 404).await;
    // Only store owners keep stores.
    problem(
        app.put_as(
            &customer,
            "/v1/store/profile",
            &store_body("X", 14.5, 121.0, 1, always_open()),
        )
        .await,
        403,
    )
    .await;

    // A good profile, in the seed's own form of hours.
    let seed_hours = json!({
        "monday": {"open": "09:00", "close": "21:00", "closed": false},
        "sunday": {"closed": true},
    });
    let store = json_body(
        app.put_as(
            &owner,
            "/v1/store/profile",
            &store_body("Oasis Spa", MAKATI.0, MAKATI.1, 3, seed_hours),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(store["store_name"], "Oasis Spa");
    assert_eq!(store["number_of_rooms"], 3);
    assert_eq!(store["timezone"], "Asia/Manila");
    assert_eq!(
        store["opening_hours"]["monday"],
        json!([{"open": "09:00", "close": "21:00"}])
    );
    assert_eq!(store["opening_hours"]["sunday"], json!([]));
    assert_eq!(store["opening_hours"]["tuesday"], json!([]));
    assert_eq!(store["amenities"], json!(["WiFi", "Sauna"]));
    let store_id = store["store_id"].as_str().unwrap().to_owned();

    let swedish = service_id(&app, "swedish-massage").await;
    let priced = json_body(
        app.put_as(
            &owner,
            &format!("/v1/store/services/{swedish}"),
            &json!({"price": "950.50"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(priced["services"][0]["price"], "950.50");
    problem(
        app.put_as(
            &owner,
            &format!("/v1/store/services/{swedish}"),
            &json!({"price": "-1"}),
        )
        .await,
        422,
    )
    .await;

    // Pending stores are neither shown nor found.
    problem(
        app.get_as(&customer, &format!("/v1/stores/{store_id}"))
            .await,
        404,
    )
    .await;
    let nearby_path = format!(
        "/v1/stores/nearby?lat={}&lng={}&service_id={swedish}",
        MAKATI.0, MAKATI.1
    );
    let none = json_body(app.get_as(&customer, &nearby_path).await, 200).await;
    assert_eq!(none["stores"], json!([]));

    json_body(
        app.post_as(
            &admin,
            &format!("/v1/admin/providers/{store_id}/verify"),
            &json!({"status": "verified"}),
        )
        .await,
        200,
    )
    .await;
    let shown = json_body(
        app.get_as(&customer, &format!("/v1/stores/{store_id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(shown["verification_status"], "verified");
    let found = json_body(app.get_as(&customer, &nearby_path).await, 200).await;
    assert_eq!(found["stores"][0]["store_id"], store_id.as_str());
    assert_eq!(found["stores"][0]["distance_m"], 0);
    assert_eq!(found["stores"][0]["price"], "950.50");

    // The profile row holds what was sent; the location trigger filled the geography.
    let (rooms, tz, located): (i32, String, bool) = sqlx::query_as(
        "SELECT number_of_rooms, timezone, location IS NOT NULL FROM store_profiles",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((rooms, tz.as_str(), located), (3, "Asia/Manila", true));
}

#[tokio::test]
async fn nearby_stores_are_the_verified_ones_selling_the_service_nearest_first() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (customer, _) = register(&app, "customer").await;
    let swedish = service_id(&app, "swedish-massage").await;
    let near = verified_store(&app, &admin, "Near", (14.5565, 121.0244), 1, always_open()).await;
    let middle = verified_store(
        &app,
        &admin,
        "Middle",
        (14.5547, 121.0400),
        1,
        always_open(),
    )
    .await;
    let _far = verified_store(
        &app,
        &admin,
        "Far away",
        (14.7000, 121.1000),
        1,
        always_open(),
    )
    .await;
    // One that does not sell the service in store.
    let other = verified_store(&app, &admin, "Other", (14.5550, 121.0250), 1, always_open()).await;
    app.delete_as(&other.token, &format!("/v1/store/services/{swedish}"))
        .await;

    let answer = json_body(
        app.get_as(
            &customer,
            &format!(
                "/v1/stores/nearby?lat={}&lng={}&service_id={swedish}&radius_m=5000",
                MAKATI.0, MAKATI.1
            ),
        )
        .await,
        200,
    )
    .await;
    let stores = answer["stores"].as_array().unwrap();
    let ids: Vec<&str> = stores
        .iter()
        .map(|s| s["store_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [near.store_id.as_str(), middle.store_id.as_str()]);
    // Distances are PostGIS's geodesic ones, to the metre.
    let expected: f64 = sqlx::query_scalar(
        "SELECT ST_Distance(ST_MakePoint(121.0400, 14.5547)::geography, ST_MakePoint($2, $1)::geography)",
    )
    .bind(MAKATI.0)
    .bind(MAKATI.1)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stores[1]["distance_m"], expected.round() as i64);
    assert_eq!(stores[0]["open_now"], true);
    assert_eq!(stores[0]["lat"], 14.5565);

    // Bad queries name the field.
    let bad = problem(
        app.get_as(
            &customer,
            &format!("/v1/stores/nearby?lat=91&lng=0&service_id={swedish}"),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&bad), ["lat"]);
    problem(
        app.get_as(
            &customer,
            &format!("/v1/stores/nearby?lat=1&lng=1&service_id={swedish}&radius_m=0"),
        )
        .await,
        422,
    )
    .await;
    problem(
        app.get_as(
            &customer,
            &format!(
                "/v1/stores/nearby?lat=1&lng=1&service_id={}",
                uuid::Uuid::new_v4()
            ),
        )
        .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn nearby_stores_come_from_a_knn_scan_and_match_brute_force_over_thousands() {
    let app = spawn_app().await;
    let (customer, _) = register(&app, "customer").await;
    let swedish = service_id(&app, "swedish-massage").await;
    let service: i64 = sqlx::query_scalar("SELECT id FROM services WHERE slug = 'swedish-massage'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    sqlx::query(include_str!("fixtures/random_stores.sql"))
        .bind(3000_i32)
        .bind(service)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("ANALYZE store_profiles, providers, provider_services")
        .execute(&app.db)
        .await
        .unwrap();

    for (lat, lng) in [(14.5547, 121.0244), (14.6, 121.05), (14.45, 121.0)] {
        let answer = json_body(
            app.get_as(
                &customer,
                &format!("/v1/stores/nearby?lat={lat}&lng={lng}&service_id={swedish}&radius_m=3000&limit=20"),
            )
            .await,
            200,
        )
        .await;
        let got: Vec<String> = answer["stores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["store_id"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT p.uuid FROM store_profiles sp JOIN providers p ON p.id = sp.provider_id \
             WHERE ST_DWithin(sp.location, ST_MakePoint($2, $1)::geography, 3000) \
             ORDER BY ST_Distance(sp.location, ST_MakePoint($2, $1)::geography), p.id LIMIT 20",
        )
        .bind(lat)
        .bind(lng)
        .fetch_all(&app.db)
        .await
        .unwrap();
        let expected: Vec<String> = expected.iter().map(|u| u.to_string()).collect();
        assert!(!expected.is_empty());
        assert_eq!(got, expected, "at ({lat}, {lng})");
    }

    // The planner, on a realistic table, walks the GiST index nearest first.
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN {}",
        include_str!("../../sql/stores_nearby.sql")
    ))
    .bind(14.5547_f64)
    .bind(121.0244_f64)
    .bind(service)
    .bind(3000.0_f64)
    .bind(20_i64)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Scan using idx_store") && plan.contains("Order By"),
        "not a GiST KNN scan:\n{plan}"
    );
}

#[tokio::test]
async fn an_in_store_booking_is_confirmed_checked_in_served_and_completed() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Oasis", MAKATI, 2, always_open()).await;
    let (customer, _) = register(&app, "customer").await;
    let (stranger, _) = register(&app, "customer").await;

    let booking = json_body(
        book_in_store(&app, &customer, &store.store_id, None).await,
        201,
    )
    .await;
    assert_eq!(booking["status"], "pending");
    assert_eq!(booking["type"], "in_store");
    assert_eq!(booking["pricing"]["service_price"], "900.00");
    assert_eq!(booking["provider"]["id"], store.store_id.as_str());
    assert_eq!(booking["visit"]["store_id"], store.store_id.as_str());
    assert_eq!(booking["visit"]["store_name"], "Oasis");
    assert_eq!(booking["location"]["lat"], MAKATI.0);
    let id = booking["id"].as_str().unwrap().to_owned();

    // Not confirmed yet: no check-in.
    let early = problem(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/check-in"),
            &json!({}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        early["detail"].as_str().unwrap().contains("pending"),
        "{early}"
    );
    // Only the store confirms; strangers see nothing.
    problem(
        app.post_as(
            &stranger,
            &format!("/v1/bookings/{id}/check-in"),
            &json!({}),
        )
        .await,
        404,
    )
    .await;
    problem(
        app.post_as(
            &customer,
            &format!("/v1/store/bookings/{id}/confirm"),
            &json!({}),
        )
        .await,
        403,
    )
    .await;
    let (other_owner, _) = register(&app, "store_owner").await;
    problem(
        app.post_as(
            &other_owner,
            &format!("/v1/store/bookings/{id}/confirm"),
            &json!({}),
        )
        .await,
        404,
    )
    .await;

    let listed = json_body(
        app.get_as(&store.token, "/v1/store/bookings?status=pending")
            .await,
        200,
    )
    .await;
    assert_eq!(listed[0]["id"], id.as_str());

    let confirmed = json_body(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/confirm"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(confirmed["status"], "accepted");
    assert!(confirmed["accepted_at"].is_string());
    let again = problem(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/confirm"),
            &json!({}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        again["detail"].as_str().unwrap().contains("accepted"),
        "{again}"
    );
    // Too early to call it a no-show (the grace period has not passed).
    problem(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/status"),
            &json!({"status": "no_show"}),
        )
        .await,
        409,
    )
    .await;

    let arrived = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/check-in"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(arrived["status"], "arrived");
    assert!(arrived["visit"]["checked_in_at"].is_string());
    // Checked in, the customer can no longer cancel (the store or a dispatcher can).
    problem(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/cancel"),
            &json!({"reason": "changed my mind at the desk"}),
        )
        .await,
        403,
    )
    .await;
    // The customer cannot start the session; the store does.
    problem(
        app.post_as(
            &customer,
            &format!("/v1/store/bookings/{id}/status"),
            &json!({"status": "in_progress"}),
        )
        .await,
        403,
    )
    .await;
    let started = json_body(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/status"),
            &json!({"status": "in_progress"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(started["status"], "in_progress");
    let done = json_body(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/status"),
            &json!({"status": "completed"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(done["status"], "completed");
    let statuses: Vec<&str> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["pending", "accepted", "arrived", "in_progress", "completed"]
    );
    assert_eq!(done["timeline"][1]["description"], "Confirmed by the store");

    // The customer sees it in their own list and by id.
    let mine = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}")).await,
        200,
    )
    .await;
    assert_eq!(mine["status"], "completed");
}

#[tokio::test]
async fn in_store_bookings_respect_opening_hours_and_bad_requests_write_nothing() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    // Open Mondays 09:00–12:00 Manila time only.
    let hours = json!({"monday": [{"open": "09:00", "close": "12:00"}]});
    let store = verified_store(&app, &admin, "Mornings", MAKATI, 1, hours).await;
    let (customer, _) = register(&app, "customer").await;

    // The next Monday 10:00 Manila (02:00Z) fits; 11:30 runs past closing; Tuesday is closed.
    let now = Utc::now();
    let mut monday = (now + ChronoDuration::days(1)).date_naive();
    while chrono::Datelike::weekday(&monday) != chrono::Weekday::Mon {
        monday = monday.succ_opt().unwrap();
    }
    let at = |day: chrono::NaiveDate, h: u32, m: u32| {
        day.and_hms_opt(h, m, 0).unwrap().and_utc() - ChronoDuration::hours(8)
    };
    let closed = problem(
        book_in_store(&app, &customer, &store.store_id, Some(at(monday, 11, 30))).await,
        409,
    )
    .await;
    assert!(
        closed["detail"].as_str().unwrap().contains("not open"),
        "{closed}"
    );
    problem(
        book_in_store(
            &app,
            &customer,
            &store.store_id,
            Some(at(monday.succ_opt().unwrap(), 10, 0)),
        )
        .await,
        409,
    )
    .await;
    let fits = json_body(
        book_in_store(&app, &customer, &store.store_id, Some(at(monday, 10, 0))).await,
        201,
    )
    .await;
    assert_eq!(fits["booking_type"], "scheduled");
    assert_eq!(fits["visit"]["starts_at"], json!(at(monday, 10, 0)));
    // Past the booking horizon (30 days, as for home visits): refused, naming the field.
    let mut far = monday + chrono::Days::new(28);
    while far <= (now + ChronoDuration::days(31)).date_naive() {
        far = far + chrono::Days::new(7);
    }
    let beyond = problem(
        book_in_store(&app, &customer, &store.store_id, Some(at(far, 10, 0))).await,
        422,
    )
    .await;
    assert_eq!(beyond["errors"][0]["field"], "scheduled_at", "{beyond}");

    // Malformed in-store requests name the field.
    let service = service_id(&app, "swedish-massage").await;
    for (body, field) in [
        (
            json!({"service_id": service, "type": "in_store", "booking_type": "now"}),
            "store_id",
        ),
        (
            json!({"service_id": service, "type": "in_store", "store_id": store.store_id, "booking_type": "now",
                   "location": {"lat": 14.5, "lng": 121.0, "address": "x"}}),
            "location",
        ),
        (
            json!({"service_id": service, "type": "in_store", "store_id": store.store_id, "booking_type": "scheduled"}),
            "scheduled_at",
        ),
        (
            json!({"service_id": service, "type": "in_store", "store_id": uuid::Uuid::new_v4(), "booking_type": "now"}),
            "store_id",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/v1/bookings"))
            .bearer_auth(&customer)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        let refused = problem(response, 422).await;
        assert_eq!(error_fields(&refused), [field], "{body}");
    }
    let (bookings, visits): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bookings), (SELECT count(*) FROM store_visits)",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (bookings, visits),
        (1, 1),
        "a refused booking left rows behind"
    );
}

#[tokio::test]
async fn concurrent_bookings_never_hold_more_rooms_than_the_store_has() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Two rooms", MAKATI, 2, always_open()).await;
    let mut customers = Vec::new();
    for _ in 0..6 {
        customers.push(register(&app, "customer").await.0);
    }
    let slot = Utc::now() + ChronoDuration::hours(3);
    let attempts = customers
        .iter()
        .map(|token| book_in_store(&app, token, &store.store_id, Some(slot)));
    let answers = futures_util::future::join_all(attempts).await;
    let mut created = Vec::new();
    let mut full = 0;
    for answer in answers {
        match answer.status().as_u16() {
            201 => created.push(answer.json::<Value>().await.unwrap()),
            409 => {
                let body = problem(answer, 409).await;
                assert!(
                    body["detail"].as_str().unwrap().contains("every room"),
                    "{body}"
                );
                full += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                answer.text().await.unwrap()
            ),
        }
    }
    assert_eq!((created.len(), full), (2, 4));
    // The database agrees: never more than two live visits overlap.
    let overlapping: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM store_visits v JOIN bookings b ON b.id = v.booking_id \
         WHERE b.status IN ('pending','accepted','arrived','in_progress') AND v.slot @> $1::timestamptz",
    )
    .bind(slot + ChronoDuration::minutes(1))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(overlapping, 2);
    // A slot that starts as another ends does not overlap it.
    let first_ends = created[0]["visit"]["ends_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<Utc>>()
        .unwrap();
    json_body(
        book_in_store(&app, &customers[5], &store.store_id, Some(first_ends)).await,
        201,
    )
    .await;

    // A cancellation frees its room for the next customer.
    let first = created[0]["id"].as_str().unwrap();
    let cancel = app
        .post_as(
            &store.token,
            &format!("/v1/store/bookings/{first}/decline"),
            &json!({"reason": "Therapist called in sick"}),
        )
        .await;
    let declined = json_body(cancel, 200).await;
    assert_eq!(declined["status"], "cancelled");
    assert_eq!(declined["cancellation_reason"], "Therapist called in sick");
    let (late, _) = register(&app, "customer").await;
    json_body(
        book_in_store(&app, &late, &store.store_id, Some(slot)).await,
        201,
    )
    .await;
    let (later, _) = register(&app, "customer").await;
    problem(
        book_in_store(&app, &later, &store.store_id, Some(slot)).await,
        409,
    )
    .await;
}

#[tokio::test]
async fn one_customer_cannot_hold_every_room_waiting_visits_count_toward_the_limit() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "One room", MAKATI, 1, always_open()).await;
    let (hoarder, _) = register(&app, "customer").await;
    // Six visits at once, an hour apart: only `max_pending_bookings` (2) are taken, however
    // the requests race.
    let start = Utc::now() + ChronoDuration::days(2);
    let slot = |i: i64| start + ChronoDuration::hours(i);
    let attempts = (0..6).map(|i| book_in_store(&app, &hoarder, &store.store_id, Some(slot(i))));
    let mut held = Vec::new();
    for (i, answer) in futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .enumerate()
    {
        match answer.status().as_u16() {
            201 => held.push(i as i64),
            409 => {
                let body = problem(answer, 409).await;
                assert_eq!(
                    body["type"], "/problems/too-many-pending-bookings",
                    "{body}"
                );
            }
            other => panic!("{other}: {}", answer.text().await.unwrap()),
        }
    }
    assert_eq!(held.len(), 2, "{held:?}");
    // Every other slot's room is free for other customers.
    for i in (0..6).filter(|i| !held.contains(i)) {
        let (other, _) = register(&app, "customer").await;
        json_body(
            book_in_store(&app, &other, &store.store_id, Some(slot(i))).await,
            201,
        )
        .await;
    }
}

#[tokio::test]
async fn a_suspended_store_can_no_longer_confirm_its_visits() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Paused", MAKATI, 2, always_open()).await;
    let (customer, _) = register(&app, "customer").await;
    let visit = json_body(
        book_in_store(&app, &customer, &store.store_id, None).await,
        201,
    )
    .await;
    let id = visit["id"].as_str().unwrap().to_owned();
    json_body(
        app.put_as(
            &admin,
            &format!("/v1/admin/providers/{}/active", store.store_id),
            &json!({"active": false}),
        )
        .await,
        200,
    )
    .await;
    let refused = problem(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/confirm"),
            &json!({}),
        )
        .await,
        403,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("suspended"),
        "{refused}"
    );
    let seen = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}")).await,
        200,
    )
    .await;
    assert_eq!(seen["status"], "pending");
}

#[tokio::test]
async fn unconfirmed_visits_end_and_confirmed_ones_become_no_shows_after_the_grace_period() {
    let mut settings = test_settings();
    settings.watch_interval_s = 1;
    let app = spawn_app_with(settings).await;
    sqlx::query(
        "UPDATE app_settings SET value = '{\"no_show_grace_minutes\": 0, \"check_in_early_minutes\": 60}' WHERE key = 'in_store'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Strict", MAKATI, 3, always_open()).await;
    let (customer, _) = register(&app, "customer").await;
    // A no-show owes a fee, which keeps its customer from booking again until paid: the
    // confirmed visit is another customer's.
    let (absent, _) = register(&app, "customer").await;

    let confirmed = json_body(
        book_in_store(&app, &absent, &store.store_id, None).await,
        201,
    )
    .await;
    let confirmed_id = confirmed["id"].as_str().unwrap().to_owned();
    // Confirming races the sweep (grace 0): whichever wins, the booking ends no_show or cancelled.
    let _ = app
        .post_as(
            &store.token,
            &format!("/v1/store/bookings/{confirmed_id}/confirm"),
            &json!({}),
        )
        .await;
    // The visit the store never confirms used a once-per-customer promo code.
    sqlx::query(
        "INSERT INTO promo_codes (code, discount_type, discount_value, valid_from, valid_until, usage_limit, per_user_limit) \
         VALUES ('VISITONCE', 'fixed_amount', 100, now() - interval '1 day', now() + interval '1 day', 1000, 1)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let unconfirmed = json_body(
        book_in_store_with(
            &app,
            &customer,
            &store.store_id,
            None,
            json!({"promo_code": "VISITONCE"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(
        unconfirmed["pricing"]["promo_discount"], "100.00",
        "{unconfirmed}"
    );
    let unconfirmed_id = unconfirmed["id"].as_str().unwrap().to_owned();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = json_body(
            app.get_as(&absent, &format!("/v1/bookings/{confirmed_id}"))
                .await,
            200,
        )
        .await;
        let b = json_body(
            app.get_as(&customer, &format!("/v1/bookings/{unconfirmed_id}"))
                .await,
            200,
        )
        .await;
        if ["no_show", "cancelled"].contains(&a["status"].as_str().unwrap())
            && b["status"] == "cancelled"
        {
            if a["status"] == "no_show" {
                // Half of the 900.00 visit: what cancelling at the last moment would cost.
                assert_eq!(a["cancellation_fee"], "450.00", "{a}");
                let last = a["timeline"].as_array().unwrap().last().unwrap().clone();
                assert!(
                    last["description"].as_str().unwrap().starts_with("No-show"),
                    "{last}"
                );
            }
            assert_eq!(b["cancellation_reason"], "store_did_not_confirm");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep never ended them: {a} {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The store never confirmed, so the customer has their promo code back.
    let again = json_body(
        book_in_store_with(
            &app,
            &customer,
            &store.store_id,
            None,
            json!({"promo_code": "VISITONCE"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(again["pricing"]["promo_discount"], "100.00", "{again}");
    // A no-show cannot check in any more.
    problem(
        app.post_as(
            &absent,
            &format!("/v1/bookings/{confirmed_id}/check-in"),
            &json!({}),
        )
        .await,
        409,
    )
    .await;
}

#[tokio::test]
async fn an_in_store_visit_paid_by_card_starts_only_once_it_is_paid() {
    let (app, gateway) = crate::money::money_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Oasis", MAKATI, 2, always_open()).await;
    let (customer, _) = register(&app, "customer").await;
    let booking = json_body(
        book_in_store_with(
            &app,
            &customer,
            &store.store_id,
            None,
            json!({"payment_method": "card"}),
        )
        .await,
        201,
    )
    .await;
    let id = booking["id"].as_str().unwrap().to_owned();
    let store_call = |status: &'static str| {
        let app = &app;
        let token = store.token.clone();
        let id = id.clone();
        async move {
            app.post_as(
                &token,
                &format!("/v1/store/bookings/{id}/status"),
                &json!({ "status": status }),
            )
            .await
        }
    };
    json_body(
        app.post_as(
            &store.token,
            &format!("/v1/store/bookings/{id}/confirm"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/check-in"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    // Unpaid: the store can neither start nor complete the session (it would earn on a
    // payment the customer never made).
    let refused = problem(store_call("in_progress").await, 409).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("not paid yet"),
        "{refused}"
    );
    problem(store_call("completed").await, 409).await;
    let unpaid = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}")).await,
        200,
    )
    .await;
    assert_eq!(unpaid["status"], "arrived");

    // Paid in the app: the session starts and completes, and the ledger balances.
    let intent = json_body(
        app.post_as(&customer, &format!("/v1/bookings/{id}/payment"), &json!({}))
            .await,
        200,
    )
    .await["intent_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = crate::money::pay_intent(&app, &gateway, &intent).await;
    assert_eq!(paid["webhook_status"], 200, "{paid}");
    assert_eq!(
        json_body(store_call("in_progress").await, 200).await["status"],
        "in_progress"
    );
    assert_eq!(
        json_body(store_call("completed").await, 200).await["status"],
        "completed"
    );
    let check = json_body(app.get_as(&admin, "/v1/admin/ledger/check").await, 200).await;
    assert_eq!(check["ok"], true, "{check}");
}

#[tokio::test]
async fn promo_conditions_hold_when_a_customer_sends_bookings_at_once() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let store = verified_store(&app, &admin, "Oasis", MAKATI, 4, always_open()).await;
    sqlx::query(
        "INSERT INTO promo_codes (code, discount_type, discount_value, valid_from, valid_until, usage_limit, per_user_limit, new_customers_only) \
         VALUES ('ONCE', 'fixed_amount', 100, now() - interval '1 day', now() + interval '1 day', 1000, 1, false), \
                ('NEW1', 'fixed_amount', 100, now() - interval '1 day', now() + interval '1 day', 1000, 1, true), \
                ('NEW2', 'fixed_amount', 100, now() - interval '1 day', now() + interval '1 day', 1000, 1, true)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let at = |hours: i64| Some(Utc::now() + ChronoDuration::hours(hours));
    let promo = |code: &str| json!({ "promo_code": code });

    // One code, once per customer, in two bookings sent together: one is booked, the other is
    // told why (422 on promo_code), never a 500.
    let (customer, _) = register(&app, "customer").await;
    let (a, b) = tokio::join!(
        book_in_store_with(&app, &customer, &store.store_id, at(20), promo("ONCE")),
        book_in_store_with(&app, &customer, &store.store_id, at(21), promo("ONCE")),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 422]);

    // Two "new customers only" codes sent together by a new customer: only the first booking
    // is a new customer's.
    let (newcomer, _) = register(&app, "customer").await;
    let (a, b) = tokio::join!(
        book_in_store_with(&app, &newcomer, &store.store_id, at(20), promo("NEW1")),
        book_in_store_with(&app, &newcomer, &store.store_id, at(21), promo("NEW2")),
    );
    let mut answers = [a.status().as_u16(), b.status().as_u16()];
    answers.sort_unstable();
    assert_eq!(answers, [201, 422]);
    let uses: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM promo_code_usages u JOIN promo_codes c ON c.id = u.promo_code_id \
         WHERE c.code IN ('NEW1', 'NEW2')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(uses, 1);

    // A code for certain therapists and stores only: this store is not one of them, so it is
    // refused, and a code for this store applies.
    sqlx::query(
        "INSERT INTO promo_codes (code, discount_type, discount_value, valid_from, valid_until, usage_limit, per_user_limit, applicable_provider_ids) \
         SELECT c.code, 'fixed_amount', 100, now() - interval '1 day', now() + interval '1 day', 1000, 1, c.ids \
         FROM (VALUES ('ELSEWHERE', '[999999]'::json), \
                      ('HERE', (SELECT json_build_array(id) FROM providers WHERE uuid = $1))) c(code, ids)",
    )
    .bind(uuid::Uuid::parse_str(&store.store_id).unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    let (third, _) = register(&app, "customer").await;
    let refused = problem(
        book_in_store_with(&app, &third, &store.store_id, at(22), promo("ELSEWHERE")).await,
        422,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("certain therapists"),
        "{refused}"
    );
    let booked = json_body(
        book_in_store_with(&app, &third, &store.store_id, at(22), promo("HERE")).await,
        201,
    )
    .await;
    assert_eq!(booked["pricing"]["promo_discount"], "100.00", "{booked}");
    app.shutdown().await;
}
