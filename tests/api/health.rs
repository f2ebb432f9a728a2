//! Health, metrics, OpenAPI, and problem+json for bad requests.

use crate::helpers::{problem, spawn_app, take_database_down};

#[tokio::test]
async fn live_and_ready_answer_200_when_everything_is_up() {
    let app = spawn_app().await;

    let live = app.get("/health/live").await;
    assert_eq!(live.status().as_u16(), 200);
    assert!(live.headers().contains_key("x-request-id"));

    // A node that has just started reports `degraded` (still 200) until its bus subscriptions
    // are up and its first catch-up of the live index from PostgreSQL is done; on a busy
    // machine that can outlast the start-up.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let body = loop {
        let ready = app.get("/health/ready").await;
        assert_eq!(ready.status().as_u16(), 200);
        let body: serde_json::Value = ready.json().await.unwrap();
        if body["status"] != "degraded" || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["postgis"]["ok"], true);
    assert_eq!(body["checks"]["partitions"]["ok"], true);
    assert_eq!(
        body["checks"]["redis"]["ok"], true,
        "Redis is configured in tests"
    );
    assert_eq!(body["checks"]["default_partition_rows"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn ready_answers_503_naming_the_database_when_it_is_down_while_live_stays_200() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/ready").await.status().as_u16(), 200);

    // Take this test's database away from the server: refuse new connections, cut existing ones.
    take_database_down(&app.db_name).await;

    let body = problem(app.get("/health/ready").await, 503).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("database"), "{detail}");
    assert_eq!(body["checks"]["database"]["ok"], false);

    assert_eq!(app.get("/health/live").await.status().as_u16(), 200);
    app.stop.stop();
}

#[tokio::test]
async fn ready_names_a_missing_partition() {
    let app = spawn_app().await;
    let next_month = hilot::partitions::partition_name(hilot::partitions::month_offset(
        chrono::Utc::now().date_naive(),
        1,
    ));
    // The maintenance task ensures partitions once as the server starts, and may do so just
    // after a drop: drop again until readiness reports it (the task then sleeps a day).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        sqlx::query(&format!("DROP TABLE IF EXISTS {next_month}"))
            .execute(&app.db)
            .await
            .unwrap();
        let response = app.get("/health/ready").await;
        if response.status() == 503 {
            break problem(response, 503).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness stayed {} with {next_month} dropped",
            response.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&next_month), "{detail}");
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_answer_problem_json_404() {
    let app = spawn_app().await;
    let body = problem(app.get("/v1/no-such-thing").await, 404).await;
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("/v1/no-such-thing"));
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_requests() {
    let app = spawn_app().await;
    app.get("/health/live").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            "hilot_http_requests_total{method=\"GET\",route=\"/health/live\",status=\"200\"}"
        ),
        "{text}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn openapi_document_lists_the_operations_endpoints() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    app.shutdown().await;
}
