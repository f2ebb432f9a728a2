//! Scheduled bookings through the real server: schedules, blocked times and slots, requests to a
//! named therapist (accept, decline, lapse), open bookings offered ahead of time or cancelled at
//! the lead time, the no-overlap rule (racing customers and direct SQL), reschedules (approved,
//! rejected, refused for a taken slot, expired, too late), cancellation fees against the start,
//! reminders, book-now and nearby around a later booking, and a schedule across a
//! daylight-saving change.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::bookings::{book, booking_body, next_of, set_app_setting, therapist_at, MAKATI};
use crate::helpers::{
    error_fields, json_body, make_admin, problem, register, spawn_app, TestApp, Therapist,
};
use crate::live::online_therapist;
use crate::sockets::connect;

const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// Short rules for tests: a 5-minute lead time, reminders 60 and 15 minutes ahead.
async fn short_scheduling(app: &TestApp, extra: Value) {
    let mut rules = json!({
        "slot_step_minutes": 15, "travel_buffer_minutes": 15, "lead_minutes": 5,
        "horizon_days": 30, "max_ranges_per_day": 6, "unmatched_warning_minutes": 60,
        "reschedule_timeout_s": 3600, "reminder_minutes": [60, 15],
    });
    for (key, value) in extra.as_object().unwrap() {
        rules[key] = value.clone();
    }
    set_app_setting(app, "scheduling", rules).await;
}

async fn put_schedule(app: &TestApp, therapist: &Therapist, timezone: &str, from: &str, to: &str) {
    let weekly: serde_json::Map<String, Value> = DAYS
        .iter()
        .map(|d| ((*d).to_owned(), json!([{"start": from, "end": to}])))
        .collect();
    let body = json_body(
        app.put_as(
            &therapist.token,
            "/v1/therapist/schedule",
            &json!({"timezone": timezone, "weekly": weekly}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["timezone"], timezone);
    assert_eq!(body["weekly"]["monday"][0]["start"], from);
}

/// A verified therapist offering Swedish massage, online, available every day all day.
async fn scheduled_therapist(app: &TestApp, admin: &str) -> (Therapist, String) {
    let (therapist, service) = online_therapist(app, admin).await;
    put_schedule(app, &therapist, "Asia/Manila", "00:00", "24:00").await;
    (therapist, service)
}

async fn slots_on(
    app: &TestApp,
    token: &str,
    provider: &str,
    service: &str,
    date: NaiveDate,
) -> Vec<DateTime<Utc>> {
    let body = json_body(
        app.get_as(
            token,
            &format!("/v1/therapists/{provider}/slots?service_id={service}&date={date}"),
        )
        .await,
        200,
    )
    .await;
    body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// The therapist's first free slot at or after `after` (today or tomorrow in Manila).
async fn slot_after(
    app: &TestApp,
    token: &str,
    provider: &str,
    service: &str,
    after: DateTime<Utc>,
) -> DateTime<Utc> {
    let manila = FixedOffset::east_opt(8 * 3600).unwrap();
    let first = after.with_timezone(&manila).date_naive();
    for date in [first, first.succ_opt().unwrap()] {
        if let Some(start) = slots_on(app, token, provider, service, date)
            .await
            .into_iter()
            .find(|s| *s >= after)
        {
            return start;
        }
    }
    panic!("no free slot after {after}");
}

/// The next 06:00 in Manila at least two hours away: a start with the rest of that day free
/// after it, so moving a booking a few hours later stays within one day of the all-day schedule
/// whatever the time the test runs (a session across midnight spans two days' ranges).
fn next_manila_morning() -> DateTime<Utc> {
    let manila = FixedOffset::east_opt(8 * 3600).unwrap();
    let soonest = (Utc::now() + chrono::Duration::hours(2)).with_timezone(&manila);
    let mut day = soonest.date_naive();
    loop {
        let morning = day
            .and_hms_opt(6, 0, 0)
            .unwrap()
            .and_local_timezone(manila)
            .unwrap();
        if morning >= soonest {
            return morning.with_timezone(&Utc);
        }
        day = day.succ_opt().unwrap();
    }
}

fn scheduled_body(service: &str, at: DateTime<Utc>, provider: Option<&str>) -> Value {
    let mut body = booking_body(service, MAKATI.0, MAKATI.1);
    body["booking_type"] = json!("scheduled");
    body["scheduled_at"] = json!(at);
    if let Some(provider) = provider {
        body["provider_id"] = json!(provider);
    }
    body
}

async fn booking(app: &TestApp, token: &str, id: &str) -> Value {
    json_body(app.get_as(token, &format!("/v1/bookings/{id}")).await, 200).await
}

/// Polls the booking until `done` holds (generous deadline for a loaded machine).
async fn wait_for_booking(
    app: &TestApp,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let current = booking(app, token, id).await;
        if done(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the booking never got there: {current}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request to the therapist for the first slot after `after`, then accepted by them.
/// The customer asks the named therapist for `at`; answers the booking's id.
async fn request_named(
    app: &TestApp,
    customer: &str,
    key: &str,
    service: &str,
    at: DateTime<Utc>,
    therapist: &Therapist,
) -> String {
    json_body(
        book(
            app,
            customer,
            key,
            &scheduled_body(service, at, Some(&therapist.provider_id)),
        )
        .await,
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn accepted_request(
    app: &TestApp,
    customer: &str,
    therapist: &Therapist,
    service: &str,
    after: DateTime<Utc>,
    key: &str,
) -> (String, DateTime<Utc>) {
    let at = slot_after(app, customer, &therapist.provider_id, service, after).await;
    let created = json_body(
        book(
            app,
            customer,
            key,
            &scheduled_body(service, at, Some(&therapist.provider_id)),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let accepted = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/accept"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(accepted["status"], "accepted");
    (id, at)
}

#[tokio::test]
async fn a_request_to_a_named_therapist_is_accepted_reminded_and_carried_out() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = scheduled_therapist(&app, &admin).await;
    let mut therapist_socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
    let (customer, _) = register(&app, "customer").await;
    let mut customer_socket = connect(&app, "/v1/ws/customer", &customer).await;

    // Slots near the customer count the therapist, without saying who or where they are.
    let at = slot_after(
        &app,
        &customer,
        &therapist.provider_id,
        &service,
        Utc::now() + chrono::Duration::minutes(20),
    )
    .await;
    let manila = FixedOffset::east_opt(8 * 3600).unwrap();
    let near = json_body(
        app.get_as(
            &customer,
            &format!(
                "/v1/slots?lat={}&lng={}&service_id={service}&date={}",
                MAKATI.0,
                MAKATI.1,
                at.with_timezone(&manila).date_naive()
            ),
        )
        .await,
        200,
    )
    .await;
    let offered = near["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["start"]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap()
                == at
        })
        .unwrap_or_else(|| panic!("{at} is offered near the customer: {near}"));
    assert_eq!(offered["therapists"], 1);
    assert_eq!(offered["best_quote"]["currency"], "PHP");
    assert!(!near.to_string().contains(&therapist.provider_id));

    // The therapist charges more than the catalog for this service.
    crate::live::price_service(&app, &therapist.token, &service, "950.00").await;

    // A minute that is inside their hours but no slot of theirs is refused, naming the field.
    let off_grid = problem(
        book(
            &app,
            &customer,
            "off-grid",
            &scheduled_body(
                &service,
                at + chrono::Duration::minutes(7),
                Some(&therapist.provider_id),
            ),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(off_grid["errors"][0]["field"], "scheduled_at", "{off_grid}");
    assert!(
        off_grid["detail"].as_str().unwrap().contains("slots"),
        "{off_grid}"
    );

    // Booked for later with the therapist named: a request that holds the slot.
    let created = json_body(
        book(
            &app,
            &customer,
            "named",
            &scheduled_body(&service, at, Some(&therapist.provider_id)),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["booking_type"], "scheduled");
    assert_eq!(
        created["requested_provider"]["id"],
        therapist.provider_id.as_str()
    );
    assert!(created["request_expires_at"].is_string());
    let request = next_of(&mut therapist_socket, "booking.request").await;
    assert_eq!(request["booking_id"], id.as_str());
    let date = at.with_timezone(&manila).date_naive();
    assert!(
        !slots_on(&app, &customer, &therapist.provider_id, &service, date)
            .await
            .contains(&at),
        "a pending request holds its slot"
    );

    let accepted = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/accept"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["provider"]["id"], therapist.provider_id.as_str());
    // Until then the price was the catalog's estimate; accepted, it is the therapist's own.
    assert_eq!(created["pricing"]["service_price"], "800.00", "{created}");
    assert_eq!(accepted["pricing"]["service_price"], "950.00", "{accepted}");
    assert_eq!(accepted["pricing"]["total_amount"], "950.00", "{accepted}");

    // Within an hour of the start: both are reminded, on their sockets and in their notifications.
    for socket in [&mut customer_socket, &mut therapist_socket] {
        let reminder = next_of(socket, "booking.reminder").await;
        assert_eq!(reminder["booking_id"], id.as_str());
        assert_eq!(reminder["mark"], 60);
        assert!(reminder["minutes_before"].as_i64().unwrap() <= 60);
    }
    let notifications = json_body(app.get_as(&customer, "/v1/notifications").await, 200).await;
    let reminders = notifications
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "booking.reminder")
        .count();
    assert_eq!(reminders, 1, "{notifications}");

    // Where the therapist was between accepting and setting out (at home, at other jobs) is
    // theirs: it is stored, but never replayed to this customer.
    sqlx::query(
        "INSERT INTO provider_locations (provider_id, latitude, longitude, created_at) \
         SELECT id, 14.6000, 121.0500, now() FROM providers WHERE uuid = $1::uuid",
    )
    .bind(&therapist.provider_id)
    .execute(&app.db)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Not before its lead time: setting out (and so running the whole visit and completing
    // it, which opens its money and review) waits until the booking is due.
    let early = problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/status"),
            &json!({"status": "en_route"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        early["detail"].as_str().unwrap().contains("lead time"),
        "{early}"
    );
    // A lead time of two days makes the visit due now (the next Manila morning is up to 26 h
    // away).
    short_scheduling(&app, json!({"lead_minutes": 2880})).await;
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        let changed = json_body(
            app.post_as(
                &therapist.token,
                &format!("/v1/bookings/{id}/status"),
                &json!({"status": status}),
            )
            .await,
            200,
        )
        .await;
        assert_eq!(changed["status"], status);
        assert_eq!(
            next_of(&mut customer_socket, "booking.status").await["status"],
            status
        );
    }
    let replayed = |token: String| {
        let (app, id) = (&app, &id);
        async move {
            let trip = json_body(
                app.get_as(&token, &format!("/v1/bookings/{id}/trip")).await,
                200,
            )
            .await;
            trip["features"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["properties"]["kind"] == "fix")
                .map(|f| f["geometry"]["coordinates"][1].as_f64().unwrap())
                .collect::<Vec<f64>>()
        }
    };
    assert!(
        !replayed(customer.clone()).await.contains(&14.6),
        "the customer's replay starts when the therapist set out"
    );
    assert!(replayed(admin.clone()).await.contains(&14.6));
    let done = booking(&app, &customer, &id).await;
    assert_eq!(
        done["scheduled_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at
    );
    app.shutdown().await;
}

#[tokio::test]
async fn scheduled_bookings_outside_the_rules_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = online_therapist(&app, &admin).await;
    // Mornings only in Manila (01:00-04:00 UTC), with a break blocked tomorrow.
    put_schedule(&app, &therapist, "Asia/Manila", "09:00", "12:00").await;
    let (customer, _) = register(&app, "customer").await;
    let manila = FixedOffset::east_opt(8 * 3600).unwrap();
    let tomorrow = (Utc::now() + chrono::Duration::days(1))
        .with_timezone(&manila)
        .date_naive();
    let morning = |hour: u32| {
        tomorrow
            .and_hms_opt(hour, 0, 0)
            .unwrap()
            .and_local_timezone(manila)
            .unwrap()
            .with_timezone(&Utc)
    };
    let blocked = json_body(
        app.post_as(
            &therapist.token,
            "/v1/therapist/blocked-times",
            &json!({"starts_at": morning(10), "ends_at": morning(11), "reason": "dentist"}),
        )
        .await,
        201,
    )
    .await;
    assert!(blocked["id"].is_string());
    let slots = slots_on(&app, &customer, &therapist.provider_id, &service, tomorrow).await;
    assert!(
        slots.contains(&morning(9)) && !slots.contains(&morning(10)),
        "{slots:?}"
    );

    let cases = [
        (
            scheduled_body(&service, morning(15), Some(&therapist.provider_id)),
            "scheduled_at",
            422,
        ),
        (
            scheduled_body(&service, morning(10), Some(&therapist.provider_id)),
            "scheduled_at",
            422,
        ),
        (
            scheduled_body(&service, Utc::now() - chrono::Duration::hours(1), None),
            "scheduled_at",
            422,
        ),
        (
            scheduled_body(&service, Utc::now() + chrono::Duration::minutes(2), None),
            "scheduled_at",
            422,
        ),
        (
            scheduled_body(&service, Utc::now() + chrono::Duration::days(40), None),
            "scheduled_at",
            422,
        ),
    ];
    for (n, (body, field, status)) in cases.into_iter().enumerate() {
        let refused = problem(
            book(&app, &customer, &format!("bad-{n}"), &body).await,
            status,
        )
        .await;
        assert_eq!(error_fields(&refused), [field], "case {n}: {refused}");
    }
    let mut no_time = scheduled_body(&service, morning(9), None);
    no_time.as_object_mut().unwrap().remove("scheduled_at");
    let refused = problem(book(&app, &customer, "no-time", &no_time).await, 422).await;
    assert_eq!(error_fields(&refused), ["scheduled_at"]);
    let mut now_named = booking_body(&service, MAKATI.0, MAKATI.1);
    now_named["provider_id"] = json!(therapist.provider_id);
    let refused = problem(book(&app, &customer, "now-named", &now_named).await, 422).await;
    assert_eq!(error_fields(&refused), ["provider_id"]);

    // Bad schedules and blocked times.
    let overlapping = problem(
        app.put_as(
            &therapist.token,
            "/v1/therapist/schedule",
            &json!({"weekly": {"monday": [{"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}}),
        )
        .await,
        422,
    )
    .await;
    assert!(
        error_fields(&overlapping)[0].starts_with("weekly.monday"),
        "{overlapping}"
    );
    let seven: Vec<Value> = (0..7)
        .map(|h| json!({"start": format!("{:02}:00", 8 + h), "end": format!("{:02}:30", 8 + h)}))
        .collect();
    let too_many = problem(
        app.put_as(
            &therapist.token,
            "/v1/therapist/schedule",
            &json!({"weekly": {"tuesday": seven}}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&too_many), ["weekly.tuesday"], "{too_many}");
    let zone = problem(
        app.put_as(
            &therapist.token,
            "/v1/therapist/schedule",
            &json!({"timezone": "Mars/Olympus", "weekly": {}}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&zone), ["timezone"]);
    let backwards = problem(
        app.post_as(
            &therapist.token,
            "/v1/therapist/blocked-times",
            &json!({"starts_at": morning(11), "ends_at": morning(10)}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&backwards), ["ends_at"]);
    // Nothing was half-written: the schedule is still mornings.
    let schedule = json_body(
        app.get_as(&therapist.token, "/v1/therapist/schedule").await,
        200,
    )
    .await;
    assert_eq!(
        schedule["weekly"]["monday"],
        json!([{"start": "09:00", "end": "12:00"}])
    );
    // The break is lifted: its hour is bookable again; it is gone for good.
    let lifted = format!(
        "/v1/therapist/blocked-times/{}",
        blocked["id"].as_str().unwrap()
    );
    let removed = app.delete_as(&therapist.token, &lifted).await;
    assert_eq!(removed.status().as_u16(), 204);
    let slots = slots_on(&app, &customer, &therapist.provider_id, &service, tomorrow).await;
    assert!(slots.contains(&morning(10)), "{slots:?}");
    problem(app.delete_as(&therapist.token, &lifted).await, 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn two_customers_racing_for_one_slot_one_wins_and_the_database_refuses_overlaps() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = scheduled_therapist(&app, &admin).await;
    let (first, _) = register(&app, "customer").await;
    let (second, _) = register(&app, "customer").await;
    let at = slot_after(
        &app,
        &first,
        &therapist.provider_id,
        &service,
        Utc::now() + chrono::Duration::hours(3),
    )
    .await;
    let body = scheduled_body(&service, at, Some(&therapist.provider_id));
    let (a, b) = tokio::join!(
        book(&app, &first, "race", &body),
        book(&app, &second, "race", &body)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    let loser = if a.status().as_u16() == 409 { a } else { b };
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
    let refused = problem(loser, 409).await;
    assert_eq!(error_fields(&refused), ["scheduled_at"]);

    // Even straight SQL cannot give the therapist an overlapping booking (30 minutes later).
    let overlap = sqlx::query(
        "INSERT INTO bookings (customer_id, provider_id, service_id, type, booking_type, status, scheduled_at, \
             accepted_at, duration_minutes, buffer_minutes, service_price, total_amount, provider_earnings, \
             commission_amount, commission_rate) \
         SELECT customer_id, requested_provider_id, service_id, type, booking_type, 'accepted', \
             scheduled_at + interval '30 minutes', now(), duration_minutes, buffer_minutes, service_price, \
             total_amount, provider_earnings, commission_amount, commission_rate \
         FROM bookings WHERE requested_provider_id IS NOT NULL",
    )
    .execute(&app.db)
    .await
    .expect_err("the exclusion constraint refuses it");
    assert_eq!(
        overlap.as_database_error().and_then(|e| e.constraint()),
        Some("excl_bookings_therapist_overlap"),
        "{overlap}"
    );
    // Clear of the session and its travel buffers, it is accepted.
    sqlx::query(
        "INSERT INTO bookings (customer_id, provider_id, service_id, type, booking_type, status, scheduled_at, \
             accepted_at, duration_minutes, buffer_minutes, service_price, total_amount, provider_earnings, \
             commission_amount, commission_rate) \
         SELECT customer_id, requested_provider_id, service_id, type, booking_type, 'accepted', \
             scheduled_at + interval '1 day', now(), duration_minutes, buffer_minutes, service_price, \
             total_amount, provider_earnings, commission_amount, commission_rate \
         FROM bookings WHERE requested_provider_id IS NOT NULL",
    )
    .execute(&app.db)
    .await
    .expect("a booking a day later fits");
    app.shutdown().await;
}

#[tokio::test]
async fn a_named_therapist_declines_one_request_and_lets_another_lapse() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = scheduled_therapist(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let at = slot_after(
        &app,
        &customer,
        &therapist.provider_id,
        &service,
        Utc::now() + chrono::Duration::hours(2),
    )
    .await;
    let declined = request_named(&app, &customer, "declined", &service, at, &therapist).await;
    // A dispatcher does not offer a request: its named therapist answers it.
    let refused = problem(
        app.post_as(
            &admin,
            &format!("/v1/admin/bookings/{declined}/offers"),
            &json!({"therapist_id": therapist.provider_id}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("named"),
        "{refused}"
    );
    // Named, the therapist may see and decline the request, but not cancel the customer's
    // booking as though they were its party (or an admin).
    let refused = problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{declined}/cancel"),
            &json!({"reason": "not mine to keep"}),
        )
        .await,
        403,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("customer"),
        "{refused}"
    );
    assert_eq!(
        booking(&app, &customer, &declined).await["status"],
        "pending"
    );
    json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{declined}/decline"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    let seen = booking(&app, &customer, &declined).await;
    assert_eq!(seen["status"], "cancelled");
    assert_eq!(seen["cancellation_reason"], "declined_by_therapist");
    // Declined, the request (the customer's address) is no longer the therapist's to see.
    problem(
        app.get_as(&therapist.token, &format!("/v1/bookings/{declined}"))
            .await,
        404,
    )
    .await;
    let theirs = json_body(app.get_as(&therapist.token, "/v1/bookings").await, 200).await;
    assert!(!theirs.to_string().contains(&declined), "{theirs}");

    // The slot is free again; this time the therapist has a second to answer and does not.
    set_app_setting(&app, "scheduled_request_timeout", json!(1)).await;
    let lapsing = request_named(&app, &customer, "lapsing", &service, at, &therapist).await;
    let lapsed = wait_for_booking(&app, &customer, &lapsing, |b| b["status"] == "cancelled").await;
    assert_eq!(lapsed["cancellation_reason"], "request_expired");
    let late = app
        .post_as(
            &therapist.token,
            &format!("/v1/bookings/{lapsing}/accept"),
            &json!({}),
        )
        .await;
    assert_eq!(late.status().as_u16(), 409);

    // A third request, which the customer withdraws before the therapist answers: the
    // therapist, shown the request, is told it is gone.
    set_app_setting(&app, "scheduled_request_timeout", json!(3600)).await;
    let mut therapist_socket = connect(&app, "/v1/ws/therapist", &therapist.token).await;
    let withdrawn = request_named(&app, &customer, "withdrawn", &service, at, &therapist).await;
    let request = next_of(&mut therapist_socket, "booking.request").await;
    assert_eq!(request["booking_id"], withdrawn.as_str());
    // The therapist raises their price after the request came: they cannot accept it at the
    // new price (the customer asked on the old terms).
    crate::live::price_service(&app, &therapist.token, &service, "1200.00").await;
    let refused = problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{withdrawn}/accept"),
            &json!({}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("changed"),
        "{refused}"
    );
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{withdrawn}/cancel"),
            &json!({"reason": "found someone nearer"}),
        )
        .await,
        200,
    )
    .await;
    let gone = loop {
        let status = next_of(&mut therapist_socket, "booking.status").await;
        assert_eq!(status["booking_id"], withdrawn.as_str(), "{status}");
        if status["status"] != "pending" {
            break status;
        }
    };
    assert_eq!(gone["status"], "cancelled", "{gone}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_reschedule_is_approved_and_another_rejected() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = scheduled_therapist(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let (id, at) = accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        next_manila_morning(),
        "resched",
    )
    .await;

    // A stranger cannot touch it.
    let (stranger, _) = register(&app, "customer").await;
    let later = at + chrono::Duration::hours(3);
    problem(
        app.post_as(
            &stranger,
            &format!("/v1/bookings/{id}/reschedule"),
            &json!({"scheduled_at": later}),
        )
        .await,
        404,
    )
    .await;

    let proposed = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/reschedule"),
            &json!({"scheduled_at": later, "reason": "running late"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(proposed["status"], "pending");
    assert_eq!(proposed["requested_by"], "customer");
    let request = proposed["id"].as_str().unwrap();
    let approved = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/reschedule/{request}/approve"),
            &json!({"notes": "see you then"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(approved["status"], "approved");
    let moved = booking(&app, &customer, &id).await;
    assert_eq!(
        moved["scheduled_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        later
    );

    // The therapist asks to move it back; the customer says no and the time stays.
    let proposed = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/reschedule"),
            &json!({"scheduled_at": at}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(proposed["requested_by"], "therapist");
    let request = proposed["id"].as_str().unwrap();
    let rejected = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/reschedule/{request}/reject"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(rejected["status"], "rejected");
    let kept = booking(&app, &customer, &id).await;
    assert_eq!(
        kept["scheduled_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        later
    );
    let history = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}/reschedule"))
            .await,
        200,
    )
    .await;
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["approved", "rejected"]);
    app.shutdown().await;
}

/// The reschedule history's statuses, oldest first.
async fn reschedule_statuses(app: &TestApp, token: &str, id: &str) -> Vec<String> {
    json_body(
        app.get_as(token, &format!("/v1/bookings/{id}/reschedule"))
            .await,
        200,
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|r| r["status"].as_str().unwrap().to_owned())
    .collect()
}

#[tokio::test]
async fn a_reschedule_fails_when_its_slot_was_taken_expires_unanswered_and_stops_once_started() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = scheduled_therapist(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let (id, at) = accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        next_manila_morning(),
        "taken",
    )
    .await;

    // The customer asks for three hours later; before the therapist answers, another customer
    // books that time. Approving now would overlap: 409, and the booking stays where it was.
    let later = at + chrono::Duration::hours(3);
    let proposed = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/reschedule"),
            &json!({"scheduled_at": later}),
        )
        .await,
        201,
    )
    .await;
    let request = proposed["id"].as_str().unwrap().to_owned();
    let (other, _) = register(&app, "customer").await;
    json_body(
        book(
            &app,
            &other,
            "the-later-slot",
            &scheduled_body(&service, later, Some(&therapist.provider_id)),
        )
        .await,
        201,
    )
    .await;
    problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/reschedule/{request}/approve"),
            &json!({}),
        )
        .await,
        409,
    )
    .await;
    let kept = booking(&app, &customer, &id).await;
    assert_eq!(
        kept["scheduled_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at
    );
    json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/reschedule/{request}/reject"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;

    // A request nobody answers expires (here after a second), and cannot be answered after.
    short_scheduling(&app, json!({"reschedule_timeout_s": 1})).await;
    let proposed = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/reschedule"),
            &json!({"scheduled_at": at + chrono::Duration::hours(5)}),
        )
        .await,
        201,
    )
    .await;
    let request = proposed["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = reschedule_statuses(&app, &customer, &id).await;
        if statuses == ["rejected", "expired"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never expired: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/reschedule/{request}/approve"),
            &json!({}),
        )
        .await,
        409,
    )
    .await;

    // Once the therapist is on the way (the visit due: a lead time of two days), the booking can
    // no longer move.
    short_scheduling(&app, json!({"lead_minutes": 2880})).await;
    json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/status"),
            &json!({"status": "en_route"}),
        )
        .await,
        200,
    )
    .await;
    let refused = problem(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/reschedule"),
            &json!({"scheduled_at": at + chrono::Duration::hours(6)}),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(error_fields(&refused), ["booking_id"], "{refused}");
    app.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_scheduled_booking_is_free_until_free_before_hours_before_its_start_or_once_the_therapist_is_late(
) {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    set_app_setting(
        &app,
        "cancellation_policy",
        json!({"free_before_hours": 3, "fee_percentage": 50}),
    )
    .await;
    let admin = make_admin(&app).await;
    let (therapist, service) = scheduled_therapist(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let cancel = |id: String| {
        let app = &app;
        let customer = customer.clone();
        async move {
            json_body(
                app.post_as(
                    &customer,
                    &format!("/v1/bookings/{id}/cancel"),
                    &json!({"reason": "plans changed"}),
                )
                .await,
                200,
            )
            .await
        }
    };

    // Five hours ahead: outside the three-hour window, free.
    let (far, _) = accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        Utc::now() + chrono::Duration::hours(5),
        "far",
    )
    .await;
    let cancelled = cancel(far).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancellation_fee"], "0.00", "{cancelled}");

    // An hour ahead: inside the window, half the total.
    let (near, _) = accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        Utc::now() + chrono::Duration::hours(1),
        "near",
    )
    .await;
    let total: f64 = booking(&app, &customer, &near).await["pricing"]["total_amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let cancelled = cancel(near).await;
    let fee: f64 = cancelled["cancellation_fee"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 0.0);
    assert!((fee - total / 2.0).abs() < 0.01, "{cancelled}");

    // Inside the window too, but its start passed ten minutes ago and the therapist never set
    // out: dispatchers see them late, and the customer who gives up owes nothing. (Another
    // customer: the first owes the fee above, and books again only once it is paid.)
    let (customer, _) = register(&app, "customer").await;
    let (late, _) = accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        Utc::now() + chrono::Duration::hours(1),
        "late",
    )
    .await;
    sqlx::query(
        "UPDATE bookings SET scheduled_at = now() - interval '10 minutes' WHERE uuid = $1::uuid",
    )
    .bind(&late)
    .execute(&app.db)
    .await
    .unwrap();
    let alerts = json_body(app.get_as(&admin, "/v1/admin/alerts").await, 200).await;
    let alert = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["booking_id"] == late.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no alert for the late therapist: {alerts}"));
    assert_eq!(alert["kind"], "therapist_late");
    assert_eq!(alert["provider_id"], therapist.provider_id.as_str());
    assert!(
        alert["detail"].as_str().unwrap().contains("not set out"),
        "{alert}"
    );
    let cancelled = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{late}/cancel"),
            &json!({"reason": "nobody came"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["cancellation_fee"], "0.00", "{cancelled}");
    app.shutdown().await;
}

#[tokio::test]
async fn an_open_scheduled_booking_is_offered_ahead_of_time_to_a_therapist_with_room() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.002, MAKATI.1).await;
    put_schedule(&app, &therapist, "Asia/Manila", "00:00", "24:00").await;
    let (customer, _) = register(&app, "customer").await;
    let at = slot_after(
        &app,
        &customer,
        &therapist.provider_id,
        &service,
        Utc::now() + chrono::Duration::hours(3),
    )
    .await;
    let created = json_body(
        book(&app, &customer, "open", &scheduled_body(&service, at, None)).await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert!(created["requested_provider"].is_null());
    let offer = next_of(&mut socket, "offer").await;
    assert_eq!(offer["booking_id"], id);
    let accepted = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/accept"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(
        accepted["scheduled_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_open_booking_nobody_takes_is_cancelled_at_the_lead_time_after_a_warning() {
    let app = spawn_app().await;
    short_scheduling(
        &app,
        json!({"lead_minutes": 1, "unmatched_warning_minutes": 1}),
    )
    .await;
    // A booking for later is offered at least as long as one for now: keep that short here.
    set_app_setting(
        &app,
        "booking_timeout",
        json!({"pending": 2, "accepted": 1800}),
    )
    .await;
    let admin = make_admin(&app).await;
    let (_therapist, service) = online_therapist(&app, &admin).await; // no schedule: no room
    let (customer, _) = register(&app, "customer").await;
    let mut customer_socket = connect(&app, "/v1/ws/customer", &customer).await;
    let at = Utc::now() + chrono::Duration::seconds(66);
    let created = json_body(
        book(
            &app,
            &customer,
            "unmatched",
            &scheduled_body(&service, at, None),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let warning = next_of(&mut customer_socket, "booking.unmatched").await;
    assert_eq!(warning["booking_id"], id);
    let cancelled = wait_for_booking(&app, &customer, id, |b| b["status"] == "cancelled").await;
    assert_eq!(cancelled["cancellation_reason"], "no_therapist_available");
    let cancelled_at: DateTime<Utc> = cancelled["cancelled_at"].as_str().unwrap().parse().unwrap();
    assert!(cancelled_at >= at - chrono::Duration::minutes(1) - chrono::Duration::seconds(2));
    app.shutdown().await;
}

#[tokio::test]
async fn slots_follow_a_schedule_across_a_daylight_saving_change() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({"horizon_days": 366})).await;
    let admin = make_admin(&app).await;
    let (therapist, service) = online_therapist(&app, &admin).await;
    put_schedule(&app, &therapist, "America/New_York", "09:00", "12:00").await;
    let (customer, _) = register(&app, "customer").await;
    // New York springs forward on Sunday 14 March 2027: 09:00 is 14:00 UTC before, 13:00 after.
    let mut firsts = Vec::new();
    for day in 13..=15 {
        let date = NaiveDate::from_ymd_opt(2027, 3, day).unwrap();
        let slots = slots_on(&app, &customer, &therapist.provider_id, &service, date).await;
        assert_eq!(
            slots.len(),
            9,
            "09:00 to 11:00 every 15 minutes on {date}: {slots:?}"
        );
        firsts.push(slots[0].format("%H:%M").to_string());
    }
    assert_eq!(firsts, ["14:00", "13:00", "13:00"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_therapist_with_a_booking_for_later_still_takes_book_now_work_until_then() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    put_schedule(&app, &therapist, "Asia/Manila", "00:00", "24:00").await;
    let (customer, _) = register(&app, "customer").await;
    // Accepted for four hours from now: plenty of room for a session now.
    let (later, _) = accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        Utc::now() + chrono::Duration::hours(4),
        "later",
    )
    .await;
    let (other, _) = register(&app, "customer").await;
    let created = json_body(
        book(
            &app,
            &other,
            "now",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(next_of(&mut socket, "offer").await["booking_id"], id);
    let accepted = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/accept"),
            &json!({}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["provider"]["id"], therapist.provider_id.as_str());
    // On that job, they cannot set out for the later one too, even once it is due (a lead
    // time of two days): 409, not a server error.
    short_scheduling(&app, json!({"lead_minutes": 2880})).await;
    let refused = problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{later}/status"),
            &json!({"status": "en_route"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("another booking"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_booking_for_later_reassigned_is_no_trip_until_the_new_therapist_sets_out() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (first, _first_socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.02, MAKATI.1).await;
    put_schedule(&app, &first, "Asia/Manila", "00:00", "24:00").await;
    let (second, mut second_socket, _) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    put_schedule(&app, &second, "Asia/Manila", "00:00", "24:00").await;
    let (customer, _) = register(&app, "customer").await;
    let (id, _) = accepted_request(
        &app,
        &customer,
        &first,
        &service,
        Utc::now() + chrono::Duration::hours(4),
        "later",
    )
    .await;
    let mut customer_socket = connect(&app, "/v1/ws/customer", &customer).await;
    let moved = json_body(
        app.post_as(
            &admin,
            &format!("/v1/admin/bookings/{id}/reassign"),
            &json!({"therapist_id": second.provider_id, "reason": "first is unwell"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(moved["provider"]["id"], second.provider_id.as_str());

    // The new therapist's whereabouts are not the customer's until they set out...
    second_socket
        .send_json(&crate::live::ping(2, MAKATI.0 + 0.0011, MAKATI.1))
        .await;
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let frame = customer_socket.next_json().await;
            if frame["type"] == "booking.location" || frame["type"] == "provider.location" {
                return frame;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "the customer was sent {quiet:?}");
    // ...and until then they take book-now work.
    let (other, _) = register(&app, "customer").await;
    let created = json_body(
        book(
            &app,
            &other,
            "now",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let offer = next_of(&mut second_socket, "offer").await;
    assert_eq!(offer["booking_id"], created["id"]);
}

#[tokio::test]
async fn book_now_and_nearby_skip_a_therapist_whose_next_booking_leaves_no_room() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    // The nearer therapist has a scheduled booking soon: a 60-minute session now would run into
    // it. The farther one is free.
    let (busy_later, mut busy_socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    put_schedule(&app, &busy_later, "Asia/Manila", "00:00", "24:00").await;
    let (customer, _) = register(&app, "customer").await;
    accepted_request(
        &app,
        &customer,
        &busy_later,
        &service,
        Utc::now() + chrono::Duration::minutes(20),
        "soon",
    )
    .await;
    let (free, mut free_socket, _) = therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;

    let (other, _) = register(&app, "customer").await;
    // The customer's search shows only the therapist who could come now.
    let nearby = json_body(
        app.get_as(
            &other,
            &format!(
                "/v1/therapists/nearby?lat={}&lng={}&service_id={service}",
                MAKATI.0, MAKATI.1
            ),
        )
        .await,
        200,
    )
    .await;
    let shown: Vec<&str> = nearby["therapists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["provider_id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [free.provider_id.as_str()], "{nearby}");
    let created = json_body(
        book(
            &app,
            &other,
            "now",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let offer = next_of(&mut free_socket, "offer").await;
    assert_eq!(offer["booking_id"], id);
    let offers = json_body(
        app.get_as(&admin, &format!("/v1/admin/bookings/{id}/offers"))
            .await,
        200,
    )
    .await;
    let offered: Vec<&str> = offers
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["provider"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(offered, [free.provider_id.as_str()], "{offers}");
    // The nearer therapist heard nothing of it.
    busy_socket
        .send_json(&crate::live::ping(2, MAKATI.0 + 0.001, MAKATI.1))
        .await;
    loop {
        let frame = busy_socket.next_json().await;
        assert_ne!(frame["type"], "offer", "{frame}");
        if frame["type"] == "ack" {
            break;
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_dispatcher_cannot_offer_work_now_that_would_overlap_a_booking_for_later() {
    let app = spawn_app().await;
    short_scheduling(&app, json!({})).await;
    let admin = make_admin(&app).await;
    let (therapist, _socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    put_schedule(&app, &therapist, "Asia/Manila", "00:00", "24:00").await;
    let (customer, _) = register(&app, "customer").await;
    // Accepted for 30 minutes from now: no room for an hour's session now.
    accepted_request(
        &app,
        &customer,
        &therapist,
        &service,
        Utc::now() + chrono::Duration::minutes(30),
        "soon",
    )
    .await;
    let (other, _) = register(&app, "customer").await;
    let created = json_body(
        book(
            &app,
            &other,
            "now",
            &booking_body(&service, MAKATI.0, MAKATI.1),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    // The matcher does not offer it to them; neither can a dispatcher, whose offer the
    // therapist could not accept and which would only hold the booking until it expired.
    let refused = problem(
        app.post_as(
            &admin,
            &format!("/v1/admin/bookings/{id}/offers"),
            &json!({"therapist_id": therapist.provider_id}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("calendar"),
        "{refused}"
    );
    let offers = json_body(
        app.get_as(&admin, &format!("/v1/admin/bookings/{id}/offers"))
            .await,
        200,
    )
    .await;
    assert_eq!(offers, json!([]), "{offers}");
}
