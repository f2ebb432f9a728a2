//! Ranking uses the ratings reviews produce: at equal distance, the better-rated therapist is
//! offered the booking first.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{json_body, make_admin, register, spawn_app};
use crate::live::{online_therapist, ping};
use crate::money::{book_and_offer, complete, next_of, therapist_near, MAKATI};
use crate::sockets::connect;

#[tokio::test]
async fn a_better_review_wins_the_next_offer_at_equal_distance() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    // A registers first, so on equal ETA and rating A would win the tie by id; A stays offline
    // while B works a booking and is reviewed.
    let (a, _) = online_therapist(&app, &admin).await;
    json_body(
        app.put_as(
            &a.token,
            "/v1/therapist/availability",
            &json!({"online": false}),
        )
        .await,
        200,
    )
    .await;
    let (b, mut b_socket, service) = therapist_near(&app, &admin).await;
    let (customer, _) = register(&app, "customer").await;
    let first = book_and_offer(&app, &customer, &mut b_socket, &service, "cash").await;
    complete(&app, &b, &first).await;
    json_body(
        app.post_as(
            &customer,
            &format!("/v1/bookings/{first}/review"),
            &json!({"overall_rating": 5}),
        )
        .await,
        201,
    )
    .await;

    // A comes online at exactly B's spot.
    json_body(
        app.put_as(
            &a.token,
            "/v1/therapist/availability",
            &json!({"online": true}),
        )
        .await,
        200,
    )
    .await;
    let mut a_socket = connect(&app, "/v1/ws/therapist", &a.token).await;
    a_socket
        .send_json(&ping(1, MAKATI.0 + 0.0045, MAKATI.1))
        .await;
    assert_eq!(a_socket.next_json().await["type"], "ack");
    b_socket
        .send_json(&ping(2, MAKATI.0 + 0.0045, MAKATI.1))
        .await;
    let nearby = json_body(
        app.get_as(
            &customer,
            &format!(
                "/v1/therapists/nearby?lat={}&lng={}&service_id={service}",
                MAKATI.0, MAKATI.1
            ),
        )
        .await,
        200,
    )
    .await;
    let rated = nearby["therapists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["provider_id"] == b.provider_id.as_str())
        .unwrap_or_else(|| panic!("{nearby}"))
        .clone();
    assert_eq!(rated["average_rating"], "5.00");

    // The next booking is offered to B first (an offer to A would hold it for 20 s).
    let (second_customer, _) = register(&app, "customer").await;
    let response = app
        .client
        .post(app.url("/v1/bookings"))
        .bearer_auth(&second_customer)
        .header("Idempotency-Key", "second")
        .json(&json!({"service_id": service, "booking_type": "now",
                      "location": {"lat": MAKATI.0, "lng": MAKATI.1, "address": "Ayala"}}))
        .send()
        .await
        .unwrap();
    let booking = json_body(response, 201).await;
    let offer = tokio::time::timeout(Duration::from_secs(10), next_of(&mut b_socket, "offer"))
        .await
        .expect("the better-rated therapist is offered first");
    assert_eq!(offer["booking_id"], booking["id"]);
}
