//! Money end to end: wallet, cash and card payments (through a fake gateway and its signed
//! webhook), cancellation fees and refunds, tips, payouts, and the ledger check after each.

use std::time::Duration;

use hilot::config::Settings;
use serde_json::{json, Value};

use crate::fakes::{self, FakeServer};
use crate::helpers::{
    json_body, make_admin, problem, register, spawn_app_with, test_settings, TestApp, Therapist,
};
use crate::live::{online_therapist, ping};
use crate::sockets::{connect, Socket};

pub const MAKATI: (f64, f64) = (14.5547, 121.0244);

/// Settings with the fake gateway and a quick outbox.
pub fn money_settings(gateway: &FakeServer) -> Settings {
    let mut settings = test_settings();
    let i = &mut settings.integrations;
    i.gateway_url = gateway.url.clone();
    i.gateway_secret_key = Some(fakes::GATEWAY_SECRET_KEY.into());
    i.gateway_webhook_secret = Some(fakes::GATEWAY_WEBHOOK_SECRET.into());
    i.outbox_poll_ms = 50;
    i.outbox_backoff_base_ms = 100;
    i.outbox_backoff_max_s = 1;
    i.outbox_max_attempts = 4;
    i.outbox_timeout_s = 5;
    settings
}

/// The app with a fake gateway wired both ways.
pub async fn money_app() -> (TestApp, FakeServer) {
    let gateway = fakes::gateway().await;
    let app = spawn_app_with(money_settings(&gateway)).await;
    *gateway.state.webhook_target.lock() = Some(app.url("/v1/payments/webhook"));
    (app, gateway)
}

/// A therapist online 500 m north of Makati, socket open.
pub async fn therapist_near(app: &TestApp, admin: &str) -> (Therapist, Socket, String) {
    let (therapist, service) = online_therapist(app, admin).await;
    let mut socket = connect(app, "/v1/ws/therapist", &therapist.token).await;
    socket
        .send_json(&ping(1, MAKATI.0 + 0.0045, MAKATI.1))
        .await;
    assert_eq!(socket.next_json().await["type"], "ack");
    (therapist, socket, service)
}

pub async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let wait = async {
        loop {
            let frame = socket.next_json().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind} frame within 20 s"))
}

/// Books (with `payment_method`) and waits for the therapist's offer; answers the booking id.
pub async fn book_and_offer(
    app: &TestApp,
    customer: &str,
    socket: &mut Socket,
    service: &str,
    method: &str,
) -> String {
    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(customer)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({
            "service_id": service,
            "booking_type": "now",
            "location": {"lat": MAKATI.0, "lng": MAKATI.1, "address": "6750 Ayala Ave, Makati"},
            "payment_method": method,
        }))
        .send()
        .await
        .unwrap();
    let booking = json_body(response, 201).await;
    assert_eq!(booking["payment"]["method"], method, "{booking}");
    let id = booking["id"].as_str().unwrap().to_owned();
    let offer = next_of(socket, "offer").await;
    assert_eq!(offer["booking_id"], id.as_str());
    id
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

/// Accepts and drives a booking to `completed`.
pub async fn complete(app: &TestApp, therapist: &Therapist, id: &str) -> Value {
    crate::helpers::accept(app, &therapist.token, id).await;
    for status in ["en_route", "arrived", "in_progress"] {
        set_status(app, &therapist.token, id, status).await;
    }
    set_status(app, &therapist.token, id, "completed").await
}

pub async fn wallet(app: &TestApp, token: &str) -> Value {
    json_body(app.get_as(token, "/v1/wallet").await, 200).await
}

/// The ledger check holds.
pub async fn assert_ledger_ok(app: &TestApp) {
    let violations = hilot::money::check::run(&app.db).await.unwrap();
    assert!(
        violations.is_empty(),
        "ledger invariants broken: {violations:#?}"
    );
}

pub async fn booking(app: &TestApp, token: &str, id: &str) -> Value {
    json_body(app.get_as(token, &format!("/v1/bookings/{id}")).await, 200).await
}

/// Tops up a customer's wallet through the fake gateway (intent, attach, signed webhook).
pub async fn top_up(app: &TestApp, gateway: &FakeServer, token: &str, amount: &str) {
    let topup = json_body(
        app.post_as(
            token,
            "/v1/wallet/topups",
            &json!({"amount": amount, "payment_method": "gcash"}),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(topup["status"], "pending");
    let intent = topup["intent_id"].as_str().unwrap();
    assert!(
        topup["client_key"]
            .as_str()
            .is_some_and(|k| k.starts_with(intent)),
        "{topup}"
    );
    let paid = pay_intent(app, gateway, intent).await;
    assert_eq!(paid["webhook_status"], 200, "{paid}");
}

/// The customer's app attaches a payment method; the fake gateway pays and tells Hilot.
pub async fn pay_intent(app: &TestApp, gateway: &FakeServer, intent: &str) -> Value {
    let _ = app;
    json_body(
        reqwest::Client::new()
            .post(format!(
                "{}/v1/payment_intents/{intent}/attach",
                gateway.url
            ))
            .json(&json!({"data": {"attributes": {"payment_method": "pm_test"}}}))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await
}

#[tokio::test]
async fn a_booking_paid_by_wallet_settles_into_the_ledger() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;

    // An empty wallet cannot pay; a top-up through the gateway fills it.
    let refused = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(&customer)
        .header("Idempotency-Key", "wallet-too-poor")
        .json(
            &json!({"service_id": service, "booking_type": "now", "payment_method": "wallet",
                      "location": {"lat": MAKATI.0, "lng": MAKATI.1, "address": "Ayala"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::error_fields(&problem(refused, 422).await),
        ["payment_method"]
    );
    top_up(&app, &gateway, &customer, "1000.00").await;
    assert_eq!(wallet(&app, &customer).await["balance"], "1000.00");

    let id = book_and_offer(&app, &customer, &mut socket, &service, "wallet").await;
    let accepted = crate::helpers::accept(&app, &therapist.token, &id).await;
    assert_eq!(accepted["payment"]["status"], "paid", "{accepted}");
    assert_eq!(wallet(&app, &customer).await["balance"], "200.00");
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }

    let done = booking(&app, &customer, &id).await;
    assert_eq!(done["payment"]["status"], "paid");
    assert_eq!(done["payment"]["paid_amount"], "800.00");
    let earned = wallet(&app, &therapist.token).await;
    assert_eq!(earned["balance"], "680.00", "800 less 15 % commission");
    assert_eq!(earned["total_earned"], "680.00");
    let lines = json_body(app.get_as(&customer, "/v1/wallet/transactions").await, 200).await;
    let lines = lines.as_array().unwrap();
    assert_eq!(lines[0]["entry_kind"], "payment");
    assert_eq!(lines[0]["balance_before"], "1000.00");
    assert_eq!(lines[0]["balance_after"], "200.00");
    assert_eq!(lines[1]["entry_kind"], "topup");
    assert_ledger_ok(&app).await;
    let check = json_body(app.get_as(&admin, "/v1/admin/ledger/check").await, 200).await;
    assert_eq!(check["ok"], true, "{check}");
}

#[tokio::test]
async fn a_cash_booking_leaves_the_platform_share_owed_by_the_therapist() {
    let (app, _gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    let accepted = crate::helpers::accept(&app, &therapist.token, &id).await;
    assert_eq!(accepted["payment"]["status"], "due_in_cash");
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    let done = booking(&app, &customer, &id).await;
    assert_eq!(done["payment"]["status"], "paid");
    // The therapist holds 800 in cash and earned 680: they owe the platform its 120.
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "-120.00");
    assert_eq!(wallet(&app, &customer).await["balance"], "0.00");
    assert_ledger_ok(&app).await;
}

#[tokio::test]
async fn a_card_booking_is_paid_through_the_gateway_and_its_webhook() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "card").await;
    // Nothing to pay before a therapist accepts.
    problem(
        app.post_as(&customer, &format!("/v1/bookings/{id}/payment"), &json!({}))
            .await,
        409,
    )
    .await;
    let accepted = crate::helpers::accept(&app, &therapist.token, &id).await;
    assert_eq!(accepted["payment"]["status"], "awaiting_payment");
    // The therapist may set out and arrive, but not start a session nobody has paid for.
    for status in ["en_route", "arrived"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    let unpaid = problem(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/status"),
            &json!({"status": "in_progress"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        unpaid["detail"].as_str().unwrap().contains("not paid"),
        "{unpaid}"
    );

    let payment = json_body(
        app.post_as(&customer, &format!("/v1/bookings/{id}/payment"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["amount"], "800.00");
    let intent = payment["intent_id"].as_str().unwrap().to_owned();
    // Asking again answers the same intent.
    let again = json_body(
        app.post_as(&customer, &format!("/v1/bookings/{id}/payment"), &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(again["intent_id"], intent.as_str());
    let created = gateway.received_on("/v1/payment_intents");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].json()["data"]["attributes"]["amount"],
        80000,
        "centavos"
    );
    // Someone else's booking is not found.
    let (stranger, _) = register(&app, "customer").await;
    problem(
        app.post_as(&stranger, &format!("/v1/bookings/{id}/payment"), &json!({}))
            .await,
        404,
    )
    .await;

    // The dispatch dashboard's panel shows the booking's payment state.
    let panel_payment = |stats: Value| {
        stats["active_bookings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["booking_id"] == id.as_str())
            .map(|b| (b["payment_method"].clone(), b["payment_status"].clone()))
            .unwrap()
    };
    let stats = json_body(app.get_as(&admin, "/v1/dispatch/stats").await, 200).await;
    assert_eq!(
        panel_payment(stats),
        (json!("card"), json!("awaiting_payment"))
    );

    let paid = pay_intent(&app, &gateway, &intent).await;
    assert_eq!(paid["webhook_status"], 200);
    let stats = json_body(app.get_as(&admin, "/v1/dispatch/stats").await, 200).await;
    assert_eq!(panel_payment(stats), (json!("card"), json!("paid")));
    assert_eq!(
        booking(&app, &customer, &id).await["payment"]["status"],
        "paid"
    );

    // The same webhook again is a replay: refused, nothing moves.
    let event = paid["event"].as_str().unwrap().to_owned();
    let signature = paid["signature"].as_str().unwrap().to_owned();
    let send = |body: String, signature: Option<String>| {
        let mut request = app
            .client
            .post(app.url("/v1/payments/webhook"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Paymongo-Signature", signature);
        }
        request.send()
    };
    let replay = problem(
        send(event.clone(), Some(signature.clone())).await.unwrap(),
        409,
    )
    .await;
    assert!(
        replay["detail"].as_str().unwrap().contains("replay"),
        "{replay}"
    );
    // A retry by the gateway (same event, fresh signature) is applied once: no second payment.
    let fresh = fakes::paymongo_signature(
        chrono::Utc::now().timestamp() + 1,
        &event,
        fakes::GATEWAY_WEBHOOK_SECRET,
    );
    let retried = json_body(send(event.clone(), Some(fresh)).await.unwrap(), 200).await;
    assert_eq!(retried["outcome"], "already_applied");
    // Forged, unsigned and stale webhooks are refused.
    let forged =
        fakes::paymongo_signature(chrono::Utc::now().timestamp(), &event, "not the secret");
    let detail = problem(send(event.clone(), Some(forged)).await.unwrap(), 403).await;
    assert!(
        detail["detail"].as_str().unwrap().contains("signature"),
        "{detail}"
    );
    problem(send(event.clone(), None).await.unwrap(), 403).await;
    let stale = fakes::paymongo_signature(
        chrono::Utc::now().timestamp() - 3600,
        &event,
        fakes::GATEWAY_WEBHOOK_SECRET,
    );
    let detail = problem(send(event.clone(), Some(stale)).await.unwrap(), 403).await;
    assert!(
        detail["detail"].as_str().unwrap().contains("tolerance"),
        "{detail}"
    );
    let paid_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transactions WHERE type = 'payment' AND status = 'completed'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(paid_rows, 1);

    for status in ["in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "680.00");
    assert_ledger_ok(&app).await;
}

#[tokio::test]
async fn a_failed_payment_completed_after_a_second_one_is_refunded_not_kept() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "card").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    let pay = || async {
        json_body(
            app.post_as(&customer, &format!("/v1/bookings/{id}/payment"), &json!({}))
                .await,
            200,
        )
        .await
    };
    let first = pay().await["intent_id"].as_str().unwrap().to_owned();
    // The gateway says the first attempt failed (a declined card).
    let failed = json!({"data": {"id": "evt_declined", "type": "event", "attributes": {
        "type": "payment.failed", "livemode": false,
        "data": {"id": "pay_declined", "type": "payment", "attributes": {
            "amount": 80000, "currency": "PHP", "status": "failed", "payment_intent_id": first,
            "failed_message": "card declined"}}}}})
    .to_string();
    let signature = fakes::paymongo_signature(
        chrono::Utc::now().timestamp(),
        &failed,
        fakes::GATEWAY_WEBHOOK_SECRET,
    );
    let applied = json_body(
        app.client
            .post(app.url("/v1/payments/webhook"))
            .header("content-type", "application/json")
            .header("Paymongo-Signature", signature)
            .body(failed)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(applied["outcome"], "applied");
    assert_eq!(
        booking(&app, &customer, &id).await["payment"]["status"],
        "failed"
    );
    // A new attempt gets a new intent, which the customer pays.
    let second = pay().await["intent_id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        pay_intent(&app, &gateway, &second).await["webhook_status"],
        200
    );
    assert_eq!(
        booking(&app, &customer, &id).await["payment"]["status"],
        "paid"
    );
    // Then the first intent is completed after all (the app retried it): the customer paid
    // twice, and the second payment goes back in full.
    assert_eq!(
        pay_intent(&app, &gateway, &first).await["webhook_status"],
        200
    );
    // The booking still reads paid once; the second payment's refund is its own affair.
    let payment = booking(&app, &customer, &id).await["payment"].clone();
    assert_eq!(payment["status"], "paid", "{payment}");
    assert_eq!(payment["paid_amount"], "800.00", "{payment}");
    assert_eq!(payment["refunded_amount"], "0.00", "{payment}");
    let refunds = gateway
        .wait_for("/v1/refunds", 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        refunds[0].json()["data"]["attributes"]["amount"],
        80000,
        "centavos"
    );
    // The booking is paid once: it starts, completes, and the therapist earns once.
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "680.00");
    assert_ledger_ok(&app).await;
}

#[tokio::test]
async fn a_late_cancellation_keeps_the_fee_and_refunds_the_rest() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    top_up(&app, &gateway, &customer, "1000.00").await;

    // Wallet: the fee (50 % within the policy's window) is kept, the rest goes back at once.
    let id = book_and_offer(&app, &customer, &mut socket, &service, "wallet").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    assert_eq!(wallet(&app, &customer).await["balance"], "200.00");
    let cancelled = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["cancellation_fee"], "400.00");
    assert_eq!(
        cancelled["payment"]["status"], "partially_refunded",
        "{cancelled}"
    );
    assert_eq!(cancelled["payment"]["refunded_amount"], "400.00");
    assert_eq!(wallet(&app, &customer).await["balance"], "600.00");
    // The therapist is compensated with the fee less the platform's 15 %.
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "340.00");
    assert_ledger_ok(&app).await;

    // Card: paid, then cancelled; the refund goes back through the gateway (via the outbox).
    socket
        .send_json(&ping(2, MAKATI.0 + 0.0045, MAKATI.1))
        .await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "card").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    let payment = json_body(
        app.post_as(&customer, &format!("/v1/bookings/{id}/payment"), &json!({}))
            .await,
        200,
    )
    .await;
    pay_intent(&app, &gateway, payment["intent_id"].as_str().unwrap()).await;
    let cancelled = json_body(
        app.post_as(
            &therapist.token,
            &format!("/v1/bookings/{id}/cancel"),
            &json!({"reason": "flat tyre"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        cancelled["cancellation_fee"], "0.00",
        "a therapist's cancellation costs the customer nothing"
    );
    let refunds = gateway
        .wait_for("/v1/refunds", 1, Duration::from_secs(20))
        .await;
    let refund = refunds[0].json();
    assert_eq!(refund["data"]["attributes"]["amount"], 80000);
    assert!(refund["data"]["attributes"]["payment_id"]
        .as_str()
        .unwrap()
        .starts_with("pay_"));
    let mut state = Value::Null;
    for _ in 0..100 {
        state = booking(&app, &customer, &id).await["payment"].clone();
        if state["status"] == "refunded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state["status"], "refunded", "{state}");
    assert_ledger_ok(&app).await;
}

#[tokio::test]
async fn a_fee_the_wallet_cannot_cover_is_owed_not_paid_out_and_blocks_the_next_booking() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    top_up(&app, &gateway, &customer, "100.00").await;

    // Cash, accepted, then cancelled late by the customer: a fee of 400 against a wallet of 100.
    let id = book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    crate::helpers::accept(&app, &therapist.token, &id).await;
    let cancelled = json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(cancelled["cancellation_fee"], "400.00");
    assert_eq!(wallet(&app, &customer).await["balance"], "-300.00");
    // The therapist is compensated from the 100 collected (less the platform's 15 %), not from
    // the 300 the customer owes: a payout never sends money that never came in.
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "85.00");
    assert_ledger_ok(&app).await;

    // Owing, the customer cannot book again, by any method, until the debt is paid.
    let refused = problem(
        app.client
            .post(app.url("/v1/bookings"))
            .bearer_auth(&customer)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&json!({
                "service_id": service,
                "booking_type": "now",
                "location": {"lat": MAKATI.0, "lng": MAKATI.1, "address": "6750 Ayala Ave, Makati"},
                "payment_method": "cash",
            }))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("owe 300.00"),
        "{refused}"
    );
    top_up(&app, &gateway, &customer, "300.00").await;
    assert_eq!(wallet(&app, &customer).await["balance"], "0.00");
    book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    assert_ledger_ok(&app).await;
}

#[tokio::test]
async fn tips_go_to_the_therapist_in_full_and_bad_tips_move_nothing() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    top_up(&app, &gateway, &customer, "500.00").await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "cash").await;
    let path = format!("/v1/bookings/{id}/tip");
    crate::helpers::accept(&app, &therapist.token, &id).await;
    // Before completion: refused.
    problem(
        app.post_as(&customer, &path, &json!({"amount": "50.00"}))
            .await,
        409,
    )
    .await;
    for status in ["en_route", "arrived", "in_progress", "completed"] {
        set_status(&app, &therapist.token, &id, status).await;
    }
    let before = wallet(&app, &therapist.token).await["balance"].clone();
    for (amount, field) in [
        (json!("0"), "amount"),
        (json!("-5.00"), "amount"),
        (json!("10000.01"), "amount"),
        (json!("600.00"), "payment_method"),
    ] {
        let refused = problem(
            app.post_as(&customer, &path, &json!({"amount": amount}))
                .await,
            422,
        )
        .await;
        assert_eq!(crate::helpers::error_fields(&refused), [field], "{refused}");
    }
    problem(
        app.post_as(&customer, &path, &json!({"amount": "1.001"}))
            .await,
        422,
    )
    .await;
    let (stranger, _) = register(&app, "customer").await;
    problem(
        app.post_as(&stranger, &path, &json!({"amount": "50.00"}))
            .await,
        404,
    )
    .await;
    problem(
        app.post_as(&therapist.token, &path, &json!({"amount": "50.00"}))
            .await,
        404,
    )
    .await;
    assert_eq!(wallet(&app, &therapist.token).await["balance"], before);
    assert_eq!(wallet(&app, &customer).await["balance"], "500.00");

    let tip = json_body(
        app.post_as(&customer, &path, &json!({"amount": "150.00"}))
            .await,
        201,
    )
    .await;
    assert_eq!(tip["status"], "completed");
    assert_eq!(tip["type"], "tip");
    // Once or more; a retried request with the same key tips once.
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url(&path))
            .bearer_auth(&customer)
            .header("Idempotency-Key", "second-tip")
            .json(&json!({"amount": "50.00"}))
            .send()
            .await
            .unwrap();
        json_body(response, 201).await;
    }
    assert_eq!(wallet(&app, &customer).await["balance"], "300.00");
    // -120 (cash owed) + 150 + 50
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "80.00");
    assert_eq!(
        booking(&app, &customer, &id).await["payment"]["tip_amount"],
        "200.00"
    );
    assert_ledger_ok(&app).await;
}

#[tokio::test]
async fn a_payout_run_twice_pays_once() {
    let (app, gateway) = money_app().await;
    let admin = make_admin(&app).await;
    let (therapist, mut socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    top_up(&app, &gateway, &customer, "1200.00").await;
    let id = book_and_offer(&app, &customer, &mut socket, &service, "wallet").await;
    complete(&app, &therapist, &id).await;
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{id}/tip"),
            &json!({"amount": "100.00"}),
        )
        .await,
        201,
    )
    .await;

    let today = chrono::Utc::now().date_naive();
    let period = json!({"period_start": today - chrono::Duration::days(7), "period_end": today});
    problem(
        app.post_as(&customer, "/v1/admin/payouts/run", &period)
            .await,
        403,
    )
    .await;
    let bad = json!({"period_start": today, "period_end": today - chrono::Duration::days(1)});
    problem(
        app.post_as(&admin, "/v1/admin/payouts/run", &bad).await,
        422,
    )
    .await;

    let first = json_body(
        app.post_as(&admin, "/v1/admin/payouts/run", &period).await,
        200,
    )
    .await;
    let created = first["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{first}");
    assert_eq!(created[0]["provider_id"], therapist.provider_id.as_str());
    assert_eq!(
        created[0]["gross_earnings"], "900.00",
        "800 service + 100 tip"
    );
    assert_eq!(created[0]["commission_amount"], "120.00");
    assert_eq!(created[0]["net_payout"], "780.00", "680 earnings + 100 tip");
    assert_eq!(created[0]["status"], "pending");
    assert_eq!(wallet(&app, &therapist.token).await["balance"], "0.00");

    let second = json_body(
        app.post_as(&admin, "/v1/admin/payouts/run", &period).await,
        200,
    )
    .await;
    assert!(second["created"].as_array().unwrap().is_empty(), "{second}");
    let listed = json_body(app.get_as(&admin, "/v1/admin/payouts").await, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let payout = created[0]["id"].as_str().unwrap();
    let done = json_body(
        app.post_as(
            &admin,
            &format!("/v1/admin/payouts/{payout}/status"),
            &json!({"status": "completed", "reference_number": "BDO-123"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["reference_number"], "BDO-123");
    problem(
        app.post_as(
            &admin,
            &format!("/v1/admin/payouts/{payout}/status"),
            &json!({"status": "failed"}),
        )
        .await,
        409,
    )
    .await;
    let notified = json_body(app.get_as(&therapist.token, "/v1/notifications").await, 200).await;
    assert!(
        notified
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "payout"),
        "{notified}"
    );
    assert_ledger_ok(&app).await;
}
