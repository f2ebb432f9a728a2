//! Therapist set-up: profile, services and prices, going online and offline.

use serde_json::{json, Value};

use crate::helpers::{
    error_fields, json_body, make_admin, problem, profile_body, register, service_id, spawn_app,
    therapist_with_profile, verified_therapist, TestApp,
};

async fn set_online(app: &TestApp, token: &str, online: bool) -> reqwest::Response {
    app.put_as(
        token,
        "/v1/therapist/availability",
        &json!({ "online": online }),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Profile
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_first_profile_creates_a_pending_therapist_provider_with_a_postgis_base() {
    let app = spawn_app().await;
    let (token, user) = register(&app, "therapist").await;

    let response = app
        .put_as(&token, "/v1/therapist/profile", &profile_body())
        .await;

    let profile = json_body(response, 200).await;
    assert!(uuid::Uuid::parse_str(profile["provider_id"].as_str().unwrap()).is_ok());
    assert_eq!(profile["verification_status"], "pending");
    assert_eq!(profile["online"], false);
    assert_eq!(profile["is_active"], true);
    assert_eq!(profile["base_lat"], 14.5547);
    assert_eq!(profile["base_lng"], 121.0244);
    assert_eq!(profile["service_radius_km"], 10);
    assert_eq!(
        profile["specializations"],
        json!(["Swedish", "Deep Tissue"])
    );
    assert_eq!(profile["languages_spoken"], json!(["en", "fil"]));
    assert_eq!(profile["license_number"], "TESDA-12345");
    let (kind, owner, x, y): (String, String, f64, f64) = sqlx::query_as(
        "SELECT p.type::text, u.uuid::text, ST_X(tp.base_location::geometry), ST_Y(tp.base_location::geometry) \
         FROM providers p JOIN users u ON u.id = p.user_id \
         JOIN therapist_profiles tp ON tp.provider_id = p.id WHERE p.uuid = $1::uuid",
    )
    .bind(profile["provider_id"].as_str().unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(kind, "therapist");
    assert_eq!(owner, user["id"].as_str().unwrap());
    assert_eq!((x, y), (121.0244, 14.5547));
    app.shutdown().await;
}

#[tokio::test]
async fn a_second_profile_updates_the_same_provider_and_keeps_omitted_fields() {
    let app = spawn_app().await;
    let therapist = therapist_with_profile(&app).await;

    let response = app
        .put_as(
            &therapist.token,
            "/v1/therapist/profile",
            &json!({ "base_lat": 14.6, "base_lng": 121.05, "service_radius_km": 15, "years_of_experience": 7 }),
        )
        .await;

    let profile = json_body(response, 200).await;
    assert_eq!(profile["provider_id"], therapist.provider_id.as_str());
    assert_eq!(profile["service_radius_km"], 15);
    assert_eq!(profile["base_lat"], 14.6);
    assert_eq!(profile["years_of_experience"], 7);
    assert_eq!(
        profile["bio"], "Ten years of Swedish and deep tissue massage",
        "omitted fields keep their value"
    );
    let fetched = json_body(
        app.get_as(&therapist.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(fetched, profile);
    let providers: i64 = sqlx::query_scalar("SELECT count(*) FROM providers")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(providers, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_therapist_without_a_profile_gets_404_naming_the_fix() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "therapist").await;
    let swedish = service_id(&app, "swedish-massage").await;

    let profile = problem(app.get_as(&token, "/v1/therapist/profile").await, 404).await;
    assert!(profile["detail"]
        .as_str()
        .unwrap()
        .contains("PUT /v1/therapist/profile"));
    problem(app.get_as(&token, "/v1/therapist/services").await, 404).await;
    problem(
        app.put_as(
            &token,
            &format!("/v1/therapist/services/{swedish}"),
            &json!({ "price": 900 }),
        )
        .await,
        404,
    )
    .await;
    problem(set_online(&app, &token, true).await, 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_profiles_answer_4xx_problem_json_naming_the_field() {
    let app = spawn_app().await;
    let (token, _) = register(&app, "therapist").await;
    let with = |field: &str, value: Value| {
        let mut body = profile_body();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = profile_body();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        ("lat above 90", with("base_lat", json!(91)), "base_lat"),
        (
            "lat below -90",
            with("base_lat", json!(-90.0001)),
            "base_lat",
        ),
        ("lng above 180", with("base_lng", json!(181)), "base_lng"),
        (
            "lng below -180",
            with("base_lng", json!(-180.5)),
            "base_lng",
        ),
        ("lat as NaN", with("base_lat", json!("NaN")), "base_lat"),
        ("missing lat", without("base_lat"), "base_lat"),
        (
            "missing radius",
            without("service_radius_km"),
            "service_radius_km",
        ),
        (
            "negative radius",
            with("service_radius_km", json!(-5)),
            "service_radius_km",
        ),
        (
            "zero radius",
            with("service_radius_km", json!(0)),
            "service_radius_km",
        ),
        (
            "radius over the platform maximum",
            with("service_radius_km", json!(21)),
            "service_radius_km",
        ),
        (
            "fractional radius",
            with("service_radius_km", json!(2.5)),
            "service_radius_km",
        ),
        (
            "negative experience",
            with("years_of_experience", json!(-1)),
            "years_of_experience",
        ),
        (
            "specializations not a list",
            with("specializations", json!("Swedish")),
            "specializations",
        ),
        (
            "blank specialization",
            with("specializations", json!(["Swedish", " "])),
            "specializations[1]",
        ),
        (
            "schedule not an object",
            with("default_schedule", json!([1, 2])),
            "default_schedule",
        ),
    ];

    for (case, body, field) in cases {
        let response = app.put_as(&token, "/v1/therapist/profile", &body).await;
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), [field], "{case}: {problem}");
    }
    let overflow = app
        .client
        .put(app.url("/v1/therapist/profile"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"base_lat": 14.5, "base_lng": -1e999, "service_radius_km": 5}"#)
        .send()
        .await
        .unwrap();
    let overflow = problem(overflow, 422).await;
    assert_eq!(error_fields(&overflow), ["base_lng"]);
    let providers: i64 = sqlx::query_scalar("SELECT count(*) FROM providers")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(providers, 0, "no bad profile created a provider");
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Services and prices
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_therapist_sets_updates_lists_and_removes_service_terms() {
    let app = spawn_app().await;
    let therapist = therapist_with_profile(&app).await;
    let swedish = service_id(&app, "swedish-massage").await;
    let path = format!("/v1/therapist/services/{swedish}");

    let created = json_body(
        app.put_as(
            &therapist.token,
            &path,
            &json!({ "price": "950.50", "base_distance_km": 3, "per_km_surcharge": 25, "max_travel_distance_km": 12 }),
        )
        .await,
        200,
    )
    .await;

    assert_eq!(created["service_id"], swedish.as_str());
    assert_eq!(created["service_slug"], "swedish-massage");
    assert_eq!(created["price"], "950.50");
    assert_eq!(created["currency"], "PHP");
    assert_eq!(created["home_service_enabled"], true);
    assert_eq!(created["base_distance_km"], 3);
    assert_eq!(created["per_km_surcharge"], "25.00");
    assert_eq!(created["max_travel_distance_km"], 12);
    assert_eq!(created["is_available"], true);

    let updated = json_body(
        app.put_as(
            &therapist.token,
            &path,
            &json!({ "price": 1000, "home_service_enabled": false }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["price"], "1000.00");
    assert_eq!(updated["home_service_enabled"], false);
    let list = json_body(
        app.get_as(&therapist.token, "/v1/therapist/services").await,
        200,
    )
    .await;
    assert_eq!(list, json!([updated]));

    let removed = app.delete_as(&therapist.token, &path).await;
    assert_eq!(removed.status().as_u16(), 204);
    let list = json_body(
        app.get_as(&therapist.token, "/v1/therapist/services").await,
        200,
    )
    .await;
    assert_eq!(list, json!([]));
    problem(app.delete_as(&therapist.token, &path).await, 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_service_id_answers_404_naming_service_id() {
    let app = spawn_app().await;
    let therapist = therapist_with_profile(&app).await;

    let unknown = app
        .put_as(
            &therapist.token,
            &format!("/v1/therapist/services/{}", uuid::Uuid::new_v4()),
            &json!({ "price": 900 }),
        )
        .await;
    let malformed = app
        .put_as(
            &therapist.token,
            "/v1/therapist/services/42",
            &json!({ "price": 900 }),
        )
        .await;

    let unknown = problem(unknown, 404).await;
    assert_eq!(error_fields(&unknown), ["service_id"]);
    problem(malformed, 404).await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_service_terms_answer_422_naming_the_field() {
    let app = spawn_app().await;
    let therapist = therapist_with_profile(&app).await;
    let path = format!(
        "/v1/therapist/services/{}",
        service_id(&app, "swedish-massage").await
    );
    let cases = [
        ("negative price", json!({ "price": -1 }), "price"),
        ("zero price", json!({ "price": "0.00" }), "price"),
        ("absurd price", json!({ "price": 100_000_000 }), "price"),
        (
            "price with centavo fractions",
            json!({ "price": "900.005" }),
            "price",
        ),
        ("price not a number", json!({ "price": "cheap" }), "price"),
        ("missing price", json!({ "base_distance_km": 2 }), "price"),
        (
            "negative base distance",
            json!({ "price": 900, "base_distance_km": -1 }),
            "base_distance_km",
        ),
        (
            "base beyond max travel",
            json!({ "price": 900, "base_distance_km": 15, "max_travel_distance_km": 10 }),
            "base_distance_km",
        ),
        (
            "negative max travel",
            json!({ "price": 900, "max_travel_distance_km": -3, "base_distance_km": 0 }),
            "max_travel_distance_km",
        ),
        (
            "max travel over the platform maximum",
            json!({ "price": 900, "max_travel_distance_km": 500 }),
            "max_travel_distance_km",
        ),
        (
            "negative surcharge",
            json!({ "price": 900, "per_km_surcharge": "-5" }),
            "per_km_surcharge",
        ),
        (
            "unknown field",
            json!({ "price": 900, "discount": 10 }),
            "discount",
        ),
    ];

    for (case, body, field) in cases {
        let response = app.put_as(&therapist.token, &path, &body).await;
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), [field], "{case}: {problem}");
    }
    let list = json_body(
        app.get_as(&therapist.token, "/v1/therapist/services").await,
        200,
    )
    .await;
    assert_eq!(list, json!([]));
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_pending_therapist_cannot_go_online_and_is_told_why() {
    let app = spawn_app().await;
    let therapist = therapist_with_profile(&app).await;

    let body = problem(set_online(&app, &therapist.token, true).await, 409).await;

    assert!(
        body["detail"].as_str().unwrap().contains("verified"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("pending"),
        "{body}"
    );
    let offline = json_body(set_online(&app, &therapist.token, false).await, 200).await;
    assert_eq!(offline["online"], false, "going offline is always allowed");
    app.shutdown().await;
}

#[tokio::test]
async fn a_verified_therapist_goes_online_and_offline() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let therapist = verified_therapist(&app, &admin).await;

    let online = json_body(set_online(&app, &therapist.token, true).await, 200).await;

    assert_eq!(online["provider_id"], therapist.provider_id.as_str());
    assert_eq!(online["online"], true);
    assert_eq!(online["verification_status"], "verified");
    let profile = json_body(
        app.get_as(&therapist.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(profile["online"], true);

    let offline = json_body(set_online(&app, &therapist.token, false).await, 200).await;
    assert_eq!(offline["online"], false);
    let profile = json_body(
        app.get_as(&therapist.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(profile["online"], false);
    app.shutdown().await;
}

#[tokio::test]
async fn a_deactivated_verified_therapist_cannot_go_online() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let therapist = verified_therapist(&app, &admin).await;
    sqlx::query("UPDATE providers SET is_active = FALSE WHERE uuid = $1::uuid")
        .bind(&therapist.provider_id)
        .execute(&app.db)
        .await
        .unwrap();

    let body = problem(set_online(&app, &therapist.token, true).await, 409).await;

    assert!(
        body["detail"].as_str().unwrap().contains("deactivated"),
        "{body}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_availability_answers_422_naming_online() {
    let app = spawn_app().await;
    let therapist = therapist_with_profile(&app).await;

    for body in [
        json!({}),
        json!({ "online": "yes" }),
        json!({ "online": null }),
    ] {
        let response = app
            .put_as(&therapist.token, "/v1/therapist/availability", &body)
            .await;
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), ["online"], "{body}");
    }
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn therapist_calls_need_a_therapist_token() {
    let app = spawn_app().await;
    let (customer, _) = register(&app, "customer").await;
    let admin = make_admin(&app).await;
    let swedish = service_id(&app, "swedish-massage").await;
    let service_path = format!("/v1/therapist/services/{swedish}");
    let price = json!({ "price": 900 });
    let online = json!({ "online": true });

    problem(
        app.put_as("", "/v1/therapist/profile", &profile_body())
            .await,
        401,
    )
    .await;
    problem(app.get("/v1/therapist/profile").await, 401).await;
    problem(app.put_as("", &service_path, &price).await, 401).await;
    problem(app.get("/v1/therapist/services").await, 401).await;
    problem(app.delete_as("", &service_path).await, 401).await;
    problem(
        app.put_as("", "/v1/therapist/availability", &online).await,
        401,
    )
    .await;
    for token in [&customer, &admin] {
        problem(
            app.put_as(token, "/v1/therapist/profile", &profile_body())
                .await,
            403,
        )
        .await;
        problem(app.get_as(token, "/v1/therapist/profile").await, 403).await;
        problem(app.put_as(token, &service_path, &price).await, 403).await;
        problem(app.get_as(token, "/v1/therapist/services").await, 403).await;
        problem(app.delete_as(token, &service_path).await, 403).await;
        problem(
            app.put_as(token, "/v1/therapist/availability", &online)
                .await,
            403,
        )
        .await;
    }
    let providers: i64 = sqlx::query_scalar("SELECT count(*) FROM providers")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(providers, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_therapist_only_ever_sees_and_changes_their_own_provider() {
    let app = spawn_app().await;
    let first = therapist_with_profile(&app).await;
    let second = therapist_with_profile(&app).await;
    let swedish = service_id(&app, "swedish-massage").await;
    let path = format!("/v1/therapist/services/{swedish}");
    json_body(
        app.put_as(&first.token, &path, &json!({ "price": 900 }))
            .await,
        200,
    )
    .await;

    // The second therapist removing "their" Swedish massage does not touch the first's.
    problem(app.delete_as(&second.token, &path).await, 404).await;

    let first_list = json_body(
        app.get_as(&first.token, "/v1/therapist/services").await,
        200,
    )
    .await;
    assert_eq!(first_list.as_array().unwrap().len(), 1);
    let second_profile = json_body(
        app.get_as(&second.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(second_profile["provider_id"], second.provider_id.as_str());
    assert_ne!(first.provider_id, second.provider_id);
    app.shutdown().await;
}
