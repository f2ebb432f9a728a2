//! Admin: `hilot admin create`, provider verification, role changes, and their audit trail.

use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::{
    error_fields, json_body, login, make_admin, next_phone, problem, register, spawn_app,
    therapist_with_profile, verified_therapist, TestApp, PASSWORD,
};

const HILOT: &str = env!("CARGO_BIN_EXE_hilot");
const USER_AGENT: &str = "hilot-admin-tests/1.0";

async fn verify(app: &TestApp, token: &str, provider_id: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/admin/providers/{provider_id}/verify")))
        .bearer_auth(token)
        .header("user-agent", USER_AGENT)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn put_roles(app: &TestApp, token: &str, user_id: &Value, roles: Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!(
            "/v1/admin/users/{}/roles",
            user_id.as_str().unwrap()
        )))
        .bearer_auth(token)
        .header("user-agent", USER_AGENT)
        .json(&json!({ "roles": roles }))
        .send()
        .await
        .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct AuditRow {
    actor: Option<String>,
    action: String,
    auditable_type: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
    old_values: Option<Value>,
    new_values: Option<Value>,
}

async fn audit_rows(app: &TestApp, auditable_type: &str) -> Vec<AuditRow> {
    sqlx::query_as(
        "SELECT u.uuid::text AS actor, a.action, a.auditable_type, host(a.ip_address) AS ip_address, \
                a.user_agent, a.old_values, a.new_values \
         FROM audit_logs a LEFT JOIN users u ON u.id = a.user_id \
         WHERE a.auditable_type = $1 ORDER BY a.id",
    )
    .bind(auditable_type)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn me(app: &TestApp, token: &str) -> Value {
    json_body(app.get_as(token, "/v1/me").await, 200).await
}

// ---------------------------------------------------------------------------------------------
// hilot admin create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hilot_admin_create_makes_an_admin_who_logs_in_and_verifies_a_therapist() {
    let app = spawn_app().await;
    let phone = next_phone();
    let local_form = format!("0{}", &phone[3..]);

    let output = Command::new(HILOT)
        .args([
            "admin",
            "create",
            "--phone",
            &local_form,
            "--password",
            PASSWORD,
        ])
        .env("DATABASE_URL", &app.db_url)
        .env_remove("REDIS_URL")
        .output()
        .expect("hilot runs");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&phone));
    let logged_in = json_body(login(&app, &phone, PASSWORD).await, 200).await;
    assert_eq!(logged_in["user"]["roles"], json!(["admin"]));
    let admin = logged_in["token"].as_str().unwrap();
    let therapist = therapist_with_profile(&app).await;
    let verified = json_body(
        verify(
            &app,
            admin,
            &therapist.provider_id,
            &json!({ "status": "verified" }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(verified["verification_status"], "verified");
    let stored: String = sqlx::query_scalar("SELECT password FROM users WHERE phone = $1")
        .bind(&phone)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    let audit = audit_rows(&app, "user").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "user.roles_changed");
    assert_eq!(audit[0].old_values, Some(json!({ "roles": [] })));
    assert_eq!(audit[0].new_values, Some(json!({ "roles": ["admin"] })));
    assert_eq!(audit[0].user_agent.as_deref(), Some("hilot admin create"));
    app.shutdown().await;
}

#[tokio::test]
async fn hilot_admin_create_promotes_an_existing_user_and_refuses_a_weak_password() {
    let app = spawn_app().await;
    let (customer, user) = register(&app, "customer").await;
    let phone = user["phone"].as_str().unwrap();
    let new_password = "a brand new passphrase";

    let promoted = Command::new(HILOT)
        .args([
            "admin",
            "create",
            "--phone",
            phone,
            "--password",
            new_password,
        ])
        .env("DATABASE_URL", &app.db_url)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let weak = Command::new(HILOT)
        .args([
            "admin",
            "create",
            "--phone",
            &next_phone(),
            "--password",
            "short",
        ])
        .env("DATABASE_URL", &app.db_url)
        .env_remove("REDIS_URL")
        .output()
        .unwrap();

    assert!(
        promoted.status.success(),
        "{}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    assert!(String::from_utf8_lossy(&promoted.stdout).contains("now an admin"));
    assert_eq!(
        me(&app, &customer).await["roles"],
        json!(["customer", "admin"])
    );
    assert_eq!(
        login(&app, phone, new_password).await.status().as_u16(),
        200
    );
    let audit = audit_rows(&app, "user").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].old_values, Some(json!({ "roles": ["customer"] })));
    assert_eq!(
        audit[0].new_values,
        Some(json!({ "roles": ["customer", "admin"] }))
    );

    assert!(!weak.status.success());
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert!(stderr.contains("--password"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Provider verification
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_admin_lists_pending_providers_and_verifies_one() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let first = therapist_with_profile(&app).await;
    let second = therapist_with_profile(&app).await;

    let pending = json_body(app.get_as(&admin, "/v1/admin/providers").await, 200).await;
    let ids: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.provider_id.as_str(), second.provider_id.as_str()]
    );
    assert_eq!(pending[0]["verification_status"], "pending");
    assert_eq!(pending[0]["user_id"], first.user["id"]);
    assert_eq!(pending[0]["phone"], first.user["phone"]);
    assert_eq!(pending[0]["license_number"], "TESDA-12345");
    assert_eq!(pending[0]["service_radius_km"], 10);

    let verified = json_body(
        verify(
            &app,
            &admin,
            &first.provider_id,
            &json!({ "status": "verified" }),
        )
        .await,
        200,
    )
    .await;

    assert_eq!(verified["provider_id"], first.provider_id.as_str());
    assert_eq!(verified["verification_status"], "verified");
    assert!(verified["verified_at"].is_string());
    let pending = json_body(app.get_as(&admin, "/v1/admin/providers").await, 200).await;
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["provider_id"], second.provider_id.as_str());
    let verified_list = json_body(
        app.get_as(&admin, "/v1/admin/providers?verification_status=verified")
            .await,
        200,
    )
    .await;
    assert_eq!(verified_list[0]["provider_id"], first.provider_id.as_str());
    let profile = json_body(app.get_as(&first.token, "/v1/therapist/profile").await, 200).await;
    assert_eq!(profile["verification_status"], "verified");
    app.shutdown().await;
}

#[tokio::test]
async fn a_rejection_needs_a_reason_shows_it_to_the_therapist_and_takes_them_offline() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let therapist = verified_therapist(&app, &admin).await;
    json_body(
        app.put_as(
            &therapist.token,
            "/v1/therapist/availability",
            &json!({ "online": true }),
        )
        .await,
        200,
    )
    .await;

    let without_reason = verify(
        &app,
        &admin,
        &therapist.provider_id,
        &json!({ "status": "rejected" }),
    )
    .await;
    let blank_reason = verify(
        &app,
        &admin,
        &therapist.provider_id,
        &json!({ "status": "rejected", "reason": "  " }),
    )
    .await;
    let rejected = verify(
        &app,
        &admin,
        &therapist.provider_id,
        &json!({ "status": "rejected", "reason": "License number does not match TESDA records" }),
    )
    .await;

    assert_eq!(
        error_fields(&problem(without_reason, 422).await),
        ["reason"]
    );
    assert_eq!(error_fields(&problem(blank_reason, 422).await), ["reason"]);
    let rejected = json_body(rejected, 200).await;
    assert_eq!(rejected["verification_status"], "rejected");
    assert!(rejected["verified_at"].is_null());
    let profile = json_body(
        app.get_as(&therapist.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(profile["verification_status"], "rejected");
    assert_eq!(
        profile["rejection_reason"],
        "License number does not match TESDA records"
    );
    assert_eq!(
        profile["online"], false,
        "a rejected therapist goes offline"
    );
    let again = problem(
        app.put_as(
            &therapist.token,
            "/v1/therapist/availability",
            &json!({ "online": true }),
        )
        .await,
        409,
    )
    .await;
    assert!(
        again["detail"].as_str().unwrap().contains("rejected"),
        "{again}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_verification_decision_is_audited_with_actor_address_agent_and_values() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let admin_id = me(&app, &admin).await["id"].clone();
    let therapist = therapist_with_profile(&app).await;

    json_body(
        verify(
            &app,
            &admin,
            &therapist.provider_id,
            &json!({ "status": "verified" }),
        )
        .await,
        200,
    )
    .await;
    json_body(
        verify(
            &app,
            &admin,
            &therapist.provider_id,
            &json!({ "status": "rejected", "reason": "expired license" }),
        )
        .await,
        200,
    )
    .await;

    let audit = audit_rows(&app, "provider").await;
    assert_eq!(audit.len(), 2);
    let (verified, rejected) = (&audit[0], &audit[1]);
    for row in &audit {
        assert_eq!(row.actor.as_deref(), admin_id.as_str());
        assert_eq!(row.ip_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(row.user_agent.as_deref(), Some(USER_AGENT));
        assert_eq!(row.auditable_type, "provider");
    }
    assert_eq!(verified.action, "provider.verified");
    assert_eq!(
        verified.old_values.as_ref().unwrap()["verification_status"],
        "pending"
    );
    assert_eq!(
        verified.new_values.as_ref().unwrap()["verification_status"],
        "verified"
    );
    assert_eq!(rejected.action, "provider.rejected");
    assert_eq!(
        rejected.old_values.as_ref().unwrap()["verification_status"],
        "verified"
    );
    assert_eq!(
        rejected.new_values.as_ref().unwrap()["verification_status"],
        "rejected"
    );
    assert_eq!(
        rejected.new_values.as_ref().unwrap()["rejection_reason"],
        "expired license"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_verifications_answer_4xx_naming_the_problem() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let therapist = therapist_with_profile(&app).await;

    let unknown = verify(
        &app,
        &admin,
        &uuid::Uuid::new_v4().to_string(),
        &json!({ "status": "verified" }),
    )
    .await;
    let malformed_id = verify(&app, &admin, "7", &json!({ "status": "verified" })).await;
    problem(unknown, 404).await;
    problem(malformed_id, 404).await;
    for (case, body, field) in [
        (
            "pending is not a decision",
            json!({ "status": "pending" }),
            "status",
        ),
        ("unknown status", json!({ "status": "approved" }), "status"),
        ("missing status", json!({ "reason": "fine" }), "status"),
        (
            "over-long reason",
            json!({ "status": "rejected", "reason": "x".repeat(1001) }),
            "reason",
        ),
    ] {
        let response = verify(&app, &admin, &therapist.provider_id, &body).await;
        let problem = problem(response, 422).await;
        assert_eq!(error_fields(&problem), [field], "{case}: {problem}");
    }
    for query in [
        "limit=0",
        "limit=201",
        "offset=-1",
        "limit=ten",
        "verification_status=approved",
    ] {
        let response = app
            .get_as(&admin, &format!("/v1/admin/providers?{query}"))
            .await;
        let field = query.split('=').next().unwrap();
        assert_eq!(
            error_fields(&problem(response, 422).await),
            [field],
            "{query}"
        );
    }
    assert!(audit_rows(&app, "provider").await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn admin_calls_need_an_admin_token() {
    let app = spawn_app().await;
    let (customer, customer_user) = register(&app, "customer").await;
    let therapist = therapist_with_profile(&app).await;
    let decision = json!({ "status": "verified" });
    let verify_path = format!("/v1/admin/providers/{}/verify", therapist.provider_id);
    let roles_path = format!(
        "/v1/admin/users/{}/roles",
        customer_user["id"].as_str().unwrap()
    );
    let roles = json!({ "roles": ["customer", "therapist"] });

    problem(app.get("/v1/admin/providers").await, 401).await;
    problem(app.post_as("", &verify_path, &decision).await, 401).await;
    problem(app.put_as("", &roles_path, &roles).await, 401).await;
    for token in [&customer, &therapist.token] {
        problem(app.get_as(token, "/v1/admin/providers").await, 403).await;
        problem(app.post_as(token, &verify_path, &decision).await, 403).await;
        problem(app.put_as(token, &roles_path, &roles).await, 403).await;
        // Without the role, nothing about the route's body or path is checked, so nothing of
        // its schema leaks: a malformed body and a malformed id answer 403 like a valid one.
        let nonsense = json!({ "status": 17, "unexpected": true });
        problem(app.post_as(token, &verify_path, &nonsense).await, 403).await;
        let bad_id = "/v1/admin/providers/not-an-id/verify";
        problem(app.post_as(token, bad_id, &decision).await, 403).await;
    }
    problem(app.post_as("", &verify_path, &json!({})).await, 401).await;
    // The same holds for a therapist's own routes, asked by a customer.
    let bad_service = json!({ "price": "not money" });
    problem(
        app.put_as(&customer, "/v1/therapist/services/nope", &bad_service)
            .await,
        403,
    )
    .await;
    // A therapist cannot verify themselves.
    let profile = json_body(
        app.get_as(&therapist.token, "/v1/therapist/profile").await,
        200,
    )
    .await;
    assert_eq!(profile["verification_status"], "pending");
    assert_eq!(me(&app, &customer).await["roles"], json!(["customer"]));
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Role changes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_admin_changes_a_users_roles_and_the_change_is_audited() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let admin_id = me(&app, &admin).await["id"].clone();
    let (customer, user) = register(&app, "customer").await;
    assert_eq!(me(&app, &customer).await["roles"], json!(["customer"]));

    let response = put_roles(&app, &admin, &user["id"], json!(["therapist", "customer"])).await;

    let changed = json_body(response, 200).await;
    assert_eq!(changed["id"], user["id"]);
    assert_eq!(changed["roles"], json!(["customer", "therapist"]));
    // The customer's token, already in use, carries the new roles at once.
    assert_eq!(
        me(&app, &customer).await["roles"],
        json!(["customer", "therapist"])
    );
    let audit = audit_rows(&app, "user").await;
    let row = audit.last().unwrap();
    assert_eq!(row.action, "user.roles_changed");
    assert_eq!(row.actor.as_deref(), admin_id.as_str());
    assert_eq!(row.ip_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.user_agent.as_deref(), Some(USER_AGENT));
    assert_eq!(row.old_values, Some(json!({ "roles": ["customer"] })));
    assert_eq!(
        row.new_values,
        Some(json!({ "roles": ["customer", "therapist"] }))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn only_a_super_admin_grants_admin_and_nobody_changes_their_own_roles() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let admin_id = me(&app, &admin).await["id"].clone();
    let (_, user) = register(&app, "customer").await;
    let (super_admin, super_user) = register(&app, "customer").await;
    sqlx::query(
        "INSERT INTO model_has_roles (role_id, model_type, model_id) \
         SELECT r.id, 'App\\Models\\User', u.id FROM roles r, users u \
         WHERE r.name = 'super_admin' AND u.uuid = $1::uuid",
    )
    .bind(super_user["id"].as_str().unwrap())
    .execute(&app.db)
    .await
    .unwrap();
    let audited_before = audit_rows(&app, "user").await.len();

    let by_admin = put_roles(&app, &admin, &user["id"], json!(["customer", "admin"])).await;
    let own = put_roles(&app, &admin, &admin_id, json!(["admin", "customer"])).await;
    let demote_admin = put_roles(&app, &admin, &super_user["id"], json!(["customer"])).await;

    problem(by_admin, 403).await;
    problem(own, 403).await;
    problem(demote_admin, 403).await;
    // Nor does an admin log a super admin out.
    problem(
        app.post_as(
            &admin,
            &format!(
                "/v1/admin/users/{}/revoke-tokens",
                super_user["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .await,
        403,
    )
    .await;
    json_body(app.get_as(&super_admin, "/v1/me").await, 200).await;
    assert_eq!(
        audit_rows(&app, "user").await.len(),
        audited_before,
        "refusals change nothing"
    );
    let by_super = put_roles(
        &app,
        &super_admin,
        &user["id"],
        json!(["customer", "admin"]),
    )
    .await;
    assert_eq!(
        json_body(by_super, 200).await["roles"],
        json!(["customer", "admin"])
    );
    let removed = put_roles(&app, &super_admin, &admin_id, json!(["customer"])).await;
    assert_eq!(json_body(removed, 200).await["roles"], json!(["customer"]));
    problem(app.get_as(&admin, "/v1/admin/providers").await, 403).await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_role_changes_answer_4xx_naming_the_field() {
    let app = spawn_app().await;
    let admin = make_admin(&app).await;
    let (_, user) = register(&app, "customer").await;

    let unknown_user = put_roles(
        &app,
        &admin,
        &json!(uuid::Uuid::new_v4().to_string()),
        json!(["customer"]),
    )
    .await;
    let empty = put_roles(&app, &admin, &user["id"], json!([])).await;
    let unknown_role = put_roles(&app, &admin, &user["id"], json!(["customer", "wizard"])).await;
    let not_a_list = put_roles(&app, &admin, &user["id"], json!("customer")).await;

    problem(unknown_user, 404).await;
    assert_eq!(error_fields(&problem(empty, 422).await), ["roles"]);
    assert_eq!(
        error_fields(&problem(unknown_role, 422).await),
        ["roles[1]"]
    );
    assert_eq!(error_fields(&problem(not_a_list, 422).await), ["roles"]);
    app.shutdown().await;
}

#[tokio::test]
async fn login_shows_the_admin_role_from_model_has_roles() {
    let app = spawn_app().await;
    let phone = next_phone();
    hilot::accounts::create_admin(&app.db, &phone, PASSWORD)
        .await
        .unwrap();

    let body = json_body(login(&app, &phone, PASSWORD).await, 200).await;

    assert_eq!(body["user"]["roles"], json!(["admin"]));
    assert_eq!(body["user"]["phone"], phone.as_str());
    app.shutdown().await;
}
