//! Dispatcher actions from the console, through the real server: offer to a chosen therapist,
//! reassign, cancel with a fee decision, mark a therapist offline, write to the parties; each
//! audited, each refused to non-admins and for bad input.

use serde_json::{json, Value};

use crate::console::{book_home, next_matching, set_status, take_offer, therapist_at, MAKATI};
use crate::helpers::{error_fields, json_body, make_admin, problem, register, spawn_app, TestApp};
use crate::sockets::{connect, Socket};

/// 15 km north of Makati: beyond the test therapists' 10 km travel limit, so the matcher never
/// offers them a Makati booking on its own; only a dispatcher does.
const FAR: (f64, f64) = (MAKATI.0 + 0.135, MAKATI.1);

async fn audit_actions(app: &TestApp, admin: &str, booking_id: &str) -> Vec<Value> {
    let detail = json_body(
        app.get_as(admin, &format!("/v1/admin/bookings/{booking_id}"))
            .await,
        200,
    )
    .await;
    detail["audit"].as_array().unwrap().clone()
}

async fn customer_socket(app: &TestApp, customer: &str) -> Socket {
    connect(app, "/v1/ws/customer", customer).await
}

#[tokio::test]
async fn a_dispatcher_offers_a_pending_booking_to_a_chosen_therapist_who_accepts_it() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (chosen, mut chosen_socket, service) = therapist_at(&app, &admin, FAR.0, FAR.1).await;
    let (customer, _) = register(&app, "customer").await;
    let mut customer_ws = customer_socket(&app, &customer).await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/bookings/{id}/offers");

    // Only admins; bad input is problem+json.
    problem(
        app.post_as(
            &customer,
            &path,
            &json!({"therapist_id": chosen.provider_id}),
        )
        .await,
        403,
    )
    .await;
    let unknown = problem(
        app.post_as(
            &admin,
            &path,
            &json!({"therapist_id": uuid::Uuid::new_v4()}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(error_fields(&unknown), ["therapist_id"]);
    problem(
        app.post_as(&admin, &path, &json!({"therapist": 1})).await,
        422,
    )
    .await;

    let offers = json_body(
        app.post_as(
            &admin,
            &path,
            &json!({"therapist_id": chosen.provider_id, "reason": "regular of this customer"}),
        )
        .await,
        201,
    )
    .await;
    let last = offers.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["provider"]["id"], chosen.provider_id.as_str());
    assert_eq!(last["outcome"], "open");

    // The matcher owns the offer: the therapist's socket gets it, and they accept as always.
    let offer = next_matching(&mut chosen_socket, "the dispatcher's offer", |f| {
        f["type"] == "offer" && f["booking_id"] == id.as_str()
    })
    .await;
    assert!(offer["earnings"].is_string(), "{offer}");
    chosen_socket
        .send_json(&json!({"type": "offer.accept", "booking_id": id}))
        .await;
    next_matching(&mut customer_ws, "accepted", |f| {
        f["type"] == "booking.status" && f["booking_id"] == id.as_str() && f["status"] == "accepted"
    })
    .await;

    // The panel shows the offer's outcome and the audit row (actor, address, reason).
    let detail = json_body(
        app.get_as(&admin, &format!("/v1/admin/bookings/{id}"))
            .await,
        200,
    )
    .await;
    let offer_row = detail["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["provider"]["id"] == chosen.provider_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(offer_row["outcome"], "accepted");
    assert_eq!(
        detail["booking"]["provider"]["id"],
        chosen.provider_id.as_str()
    );
    let audit = detail["audit"].as_array().unwrap();
    let row = audit
        .iter()
        .find(|a| a["action"] == "booking.offered")
        .unwrap();
    assert!(row["actor_name"].is_string(), "{row}");
    assert_eq!(row["ip_address"], "127.0.0.1");
    assert_eq!(row["new_values"]["reason"], "regular of this customer");
    assert_eq!(
        row["new_values"]["offered_to"]["id"],
        chosen.provider_id.as_str()
    );

    // Offering a booking that is no longer pending names its status.
    let late = problem(
        app.post_as(&admin, &path, &json!({"therapist_id": chosen.provider_id}))
            .await,
        409,
    )
    .await;
    assert!(
        late["detail"].as_str().unwrap().contains("accepted"),
        "{late}"
    );
}

#[tokio::test]
async fn a_dispatcher_reassigns_an_accepted_booking_and_the_first_therapist_is_freed() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (first, mut first_socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (second, mut second_socket, _) = therapist_at(&app, &admin, FAR.0, FAR.1).await;
    let (customer, _) = register(&app, "customer").await;
    let mut customer_ws = customer_socket(&app, &customer).await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    take_offer(&mut first_socket, &id).await;
    let path = format!("/v1/admin/bookings/{id}/reassign");

    problem(
        app.post_as(
            &customer,
            &path,
            &json!({"therapist_id": second.provider_id, "reason": "x"}),
        )
        .await,
        403,
    )
    .await;
    let no_reason = problem(
        app.post_as(
            &admin,
            &path,
            &json!({"therapist_id": second.provider_id, "reason": " "}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&no_reason), ["reason"]);
    let same = problem(
        app.post_as(
            &admin,
            &path,
            &json!({"therapist_id": first.provider_id, "reason": "x"}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&same), ["therapist_id"]);

    let moved = json_body(
        app.post_as(
            &admin,
            &path,
            &json!({"therapist_id": second.provider_id, "reason": "flat tyre"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(moved["status"], "accepted");
    assert_eq!(moved["provider"]["id"], second.provider_id.as_str());

    // The first therapist is told; the new one and the customer get the status.
    let told = next_matching(&mut first_socket, "booking.reassigned", |f| {
        f["type"] == "booking.reassigned" && f["booking_id"] == id.as_str()
    })
    .await;
    assert_eq!(told["reason"], "flat tyre");
    next_matching(&mut second_socket, "the booking", |f| {
        f["type"] == "booking.status"
            && f["booking_id"] == id.as_str()
            && f["reason"] == "reassigned"
    })
    .await;
    next_matching(&mut customer_ws, "the reassignment", |f| {
        f["type"] == "booking.status"
            && f["booking_id"] == id.as_str()
            && f["reason"] == "reassigned"
    })
    .await;
    let seen = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}")).await,
        200,
    )
    .await;
    assert_eq!(seen["provider"]["id"], second.provider_id.as_str());
    // The first therapist no longer sees it as theirs.
    problem(
        app.post_as(
            &first.token,
            &format!("/v1/bookings/{id}/status"),
            &json!({"status": "en_route"}),
        )
        .await,
        404,
    )
    .await;

    // Freed cleanly: the matcher offers the first therapist the next booking near them.
    let (other_customer, _) = register(&app, "customer").await;
    let next = book_home(&app, &other_customer, &service, MAKATI.0, MAKATI.1).await;
    take_offer(&mut first_socket, next["id"].as_str().unwrap()).await;

    let audit = audit_actions(&app, &admin, &id).await;
    let row = audit
        .iter()
        .find(|a| a["action"] == "booking.reassigned")
        .unwrap();
    assert_eq!(
        row["old_values"]["therapist_id"],
        first.provider_id.as_str()
    );
    assert_eq!(
        row["new_values"]["therapist_id"],
        second.provider_id.as_str()
    );
    assert_eq!(row["new_values"]["reason"], "flat tyre");

    // A booking that is not accepted cannot be reassigned; the status is named.
    let pending = book_home(&app, &customer, &service, 18.2, 120.6).await;
    let refused = problem(
        app.post_as(
            &admin,
            &format!(
                "/v1/admin/bookings/{}/reassign",
                pending["id"].as_str().unwrap()
            ),
            &json!({"therapist_id": second.provider_id, "reason": "x"}),
        )
        .await,
        409,
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("pending"));
}

#[tokio::test]
async fn a_dispatcher_cancels_with_a_reason_and_decides_the_fee() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (_therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let mut customer_ws = customer_socket(&app, &customer).await;

    // Charged: the customer pays what the policy asks of a late customer cancellation.
    let charged = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let charged_id = charged["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &charged_id).await;
    let path = format!("/v1/admin/bookings/{charged_id}/cancel");
    problem(
        app.post_as(
            &customer,
            &path,
            &json!({"reason": "x", "charge_fee": true}),
        )
        .await,
        403,
    )
    .await;
    let missing = problem(
        app.post_as(&admin, &path, &json!({"reason": "x"})).await,
        422,
    )
    .await;
    assert!(missing["type"].is_string());
    let cancelled = json_body(
        app.post_as(
            &admin,
            &path,
            &json!({"reason": "customer phoned: not at home", "charge_fee": true}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    let fee: f64 = cancelled["cancellation_fee"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(fee > 0.0, "{cancelled}");
    for ws in [&mut customer_ws, &mut socket] {
        let frame = next_matching(ws, "the cancellation", |f| {
            f["type"] == "booking.status"
                && f["booking_id"] == charged_id.as_str()
                && f["status"] == "cancelled"
        })
        .await;
        assert_eq!(frame["reason"], "customer phoned: not at home");
    }
    // The fee is on the customer's ledger, written with the cancellation.
    let ledger_fee: Option<rust_decimal::Decimal> = sqlx::query_scalar(
        "SELECT sum(w.amount) FROM wallet_transactions w JOIN bookings b ON b.id = w.booking_id \
         WHERE b.uuid = $1 AND w.entry_kind = 'cancellation_fee'",
    )
    .bind(uuid::Uuid::parse_str(&charged_id).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        ledger_fee.map(|d| d.to_string().parse::<f64>().unwrap()),
        Some(fee)
    );
    let again = problem(
        app.post_as(&admin, &path, &json!({"reason": "x", "charge_fee": false}))
            .await,
        409,
    )
    .await;
    assert!(again["detail"].as_str().unwrap().contains("cancelled"));

    // The charged fee went unpaid (cash, an empty wallet): that customer owes it and cannot
    // book again until it is paid, so another customer books from here on.
    let owed = json_body(app.get_as(&customer, "/v1/wallet").await, 200).await;
    assert_eq!(owed["balance"].as_str().unwrap(), format!("-{fee:.2}"));
    let (customer, _) = register(&app, "customer").await;
    // Waived: no fee, although the policy would have charged a customer.
    let waived = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let waived_id = waived["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &waived_id).await;
    let cancelled = json_body(
        app.post_as(
            &admin,
            &format!("/v1/admin/bookings/{waived_id}/cancel"),
            &json!({"reason": "therapist unwell", "charge_fee": false}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["cancellation_fee"], "0.00");

    let audit = audit_actions(&app, &admin, &charged_id).await;
    let row = audit
        .iter()
        .find(|a| a["action"] == "booking.cancelled")
        .unwrap();
    assert_eq!(row["old_values"]["status"], "accepted");
    assert_eq!(row["new_values"]["reason"], "customer phoned: not at home");
    assert_eq!(row["new_values"]["charge_fee"], true);

    // An admin cancelling through the customers' `/cancel` is audited too; a customer is not.
    let through_bookings = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let through_id = through_bookings["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &through_id).await;
    json_body(
        app.post_as(
            &admin,
            &format!("/v1/bookings/{through_id}/cancel"),
            &json!({"reason": "duplicate request"}),
        )
        .await,
        200,
    )
    .await;
    let audit = audit_actions(&app, &admin, &through_id).await;
    let row = audit
        .iter()
        .find(|a| a["action"] == "booking.cancelled")
        .unwrap_or_else(|| panic!("no audit row for an admin's cancellation: {audit:?}"));
    assert_eq!(row["old_values"]["status"], "accepted");
    assert_eq!(row["new_values"]["reason"], "duplicate request");
    assert!(row["actor_name"].is_string(), "{row}");
    let by_customer = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let by_customer_id = by_customer["id"].as_str().unwrap().to_owned();
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{by_customer_id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await,
        200,
    )
    .await;
    assert!(audit_actions(&app, &admin, &by_customer_id)
        .await
        .is_empty());
}

#[tokio::test]
async fn an_admin_marking_a_no_show_is_audited_and_the_therapists_own_steps_are_not() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.001, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    take_offer(&mut socket, &id).await;
    set_status(&app, &therapist.token, &id, "en_route").await;
    set_status(&app, &therapist.token, &id, "arrived").await;
    assert!(audit_actions(&app, &admin, &id).await.is_empty());

    let after = set_status(&app, &admin, &id, "no_show").await;
    assert_eq!(after["status"], "no_show");
    // Missing the visit costs what cancelling at the last moment would (the default policy's
    // 50 %), never less.
    let total: rust_decimal::Decimal = after["pricing"]["total_amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let half = (total / rust_decimal::Decimal::from(2)).round_dp(2);
    assert_eq!(after["cancellation_fee"], format!("{half:.2}"), "{after}");
    let audit = audit_actions(&app, &admin, &id).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["action"], "booking.status_changed");
    assert_eq!(audit[0]["old_values"]["status"], "arrived");
    assert_eq!(audit[0]["new_values"]["status"], "no_show");
}

#[tokio::test]
async fn a_therapist_marked_offline_hears_it_and_their_open_offer_moves_on() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    next_matching(&mut socket, "the offer", |f| {
        f["type"] == "offer" && f["booking_id"] == id.as_str()
    })
    .await;
    let path = format!("/v1/admin/therapists/{}/offline", therapist.provider_id);

    problem(
        app.post_as(&therapist.token, &path, &json!({"reason": "x"}))
            .await,
        403,
    )
    .await;
    problem(
        app.post_as(
            &admin,
            &format!("/v1/admin/therapists/{}/offline", uuid::Uuid::new_v4()),
            &json!({"reason": "x"}),
        )
        .await,
        404,
    )
    .await;
    let empty = problem(
        app.post_as(&admin, &path, &json!({"reason": ""})).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&empty), ["reason"]);

    let answer = json_body(
        app.post_as(&admin, &path, &json!({"reason": "not answering the phone"}))
            .await,
        200,
    )
    .await;
    assert_eq!(answer["online"], false);
    assert_eq!(answer["was_online"], true);
    let told = next_matching(&mut socket, "availability", |f| f["type"] == "availability").await;
    assert_eq!(told["online"], false);
    assert_eq!(told["by"], "dispatcher");
    assert_eq!(told["reason"], "not answering the phone");
    next_matching(&mut socket, "the withdrawal", |f| {
        f["type"] == "offer.withdrawn" && f["booking_id"] == id.as_str()
    })
    .await;
    let offers = json_body(
        app.get_as(&admin, &format!("/v1/admin/bookings/{id}/offers"))
            .await,
        200,
    )
    .await;
    assert_eq!(offers[0]["outcome"], "withdrawn");
    // No more offers: a dispatcher cannot offer them one either.
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
        refused["detail"].as_str().unwrap().contains("offline"),
        "{refused}"
    );

    let audit: (String, Value) = sqlx::query_as(
        "SELECT a.action, a.new_values FROM audit_logs a JOIN providers p ON p.id = a.auditable_id \
         WHERE a.auditable_type = 'provider' AND p.uuid = $1 AND a.action = 'therapist.marked_offline'",
    )
    .bind(uuid::Uuid::parse_str(&therapist.provider_id).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audit.0, "therapist.marked_offline");
    assert_eq!(audit.1["reason"], "not answering the phone");
    assert_eq!(audit.1["offers_withdrawn"], json!([id]));
}

#[tokio::test]
async fn a_dispatcher_writes_to_the_parties_of_a_booking() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) =
        therapist_at(&app, &admin, MAKATI.0 + 0.01, MAKATI.1).await;
    let (customer, _) = register(&app, "customer").await;
    let mut customer_ws = customer_socket(&app, &customer).await;
    let booking = book_home(&app, &customer, &service, MAKATI.0, MAKATI.1).await;
    let id = booking["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/bookings/{id}/messages");

    take_offer(&mut socket, &id).await;
    problem(
        app.post_as(&customer, &path, &json!({"body": "hi"})).await,
        403,
    )
    .await;
    let empty = problem(
        app.post_as(&admin, &path, &json!({"body": "  "})).await,
        422,
    )
    .await;
    assert_eq!(error_fields(&empty), ["body"]);
    problem(
        app.post_as(&admin, &path, &json!({"body": "hi", "to": "everyone"}))
            .await,
        422,
    )
    .await;

    let both = json_body(
        app.post_as(
            &admin,
            &path,
            &json!({"body": "Heavy rain on EDSA: expect delays"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(both.as_array().unwrap().len(), 2);
    for ws in [&mut customer_ws, &mut socket] {
        let frame = next_matching(ws, "the dispatcher's message", |f| {
            f["type"] == "message" && f["from"] == "dispatcher"
        })
        .await;
        assert_eq!(frame["body"], "Heavy rain on EDSA: expect delays");
    }
    let only_customer = json_body(
        app.post_as(
            &admin,
            &path,
            &json!({"body": "Your therapist is 5 minutes away", "to": "customer"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(only_customer[0]["to"], "customer");

    let customer_sees = json_body(
        app.get_as(&customer, &format!("/v1/bookings/{id}/messages"))
            .await,
        200,
    )
    .await;
    let bodies = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["from"] == "dispatcher")
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        bodies(&customer_sees),
        [
            "Heavy rain on EDSA: expect delays",
            "Your therapist is 5 minutes away"
        ]
    );
    let therapist_sees = json_body(
        app.get_as(&therapist.token, &format!("/v1/bookings/{id}/messages"))
            .await,
        200,
    )
    .await;
    assert_eq!(
        bodies(&therapist_sees),
        ["Heavy rain on EDSA: expect delays"]
    );

    let audit = audit_actions(&app, &admin, &id).await;
    let rows: Vec<&Value> = audit
        .iter()
        .filter(|a| a["action"] == "booking.messaged")
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["new_values"]["to"], json!(["customer"]));
}
