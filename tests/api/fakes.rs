//! Local fakes of the outside services Hilot calls, each a real HTTP server on a loopback port
//! that the test starts: the payment gateway (PayMongo's API shape), FCM, and a webhook receiver.
//! No network.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;

/// The webhook secret the fake gateway signs with (and the app under test verifies).
pub const GATEWAY_WEBHOOK_SECRET: &str = "whsk_test_fake_gateway";
pub const GATEWAY_SECRET_KEY: &str = "sk_test_fake_gateway";

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the fake received JSON")
    }
}

#[derive(Default)]
pub struct FakeState {
    pub received: Mutex<Vec<Received>>,
    /// Status the webhook receiver answers per path (default 200).
    pub statuses: Mutex<Vec<(String, u16)>>,
    /// Failures left per path before it answers 200.
    pub failures_left: Mutex<Vec<(String, u32)>>,
    /// The app's gateway webhook URL (the fake gateway posts events there).
    pub webhook_target: Mutex<Option<String>>,
    /// Intents the fake gateway created, with their amounts in centavos.
    pub intents: Mutex<Vec<(String, i64)>>,
    next_id: AtomicU32,
    pub last_status: AtomicU16,
}

pub struct FakeServer {
    pub url: String,
    pub state: Arc<FakeState>,
    handle: ServerHandle,
}

impl FakeServer {
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }

    /// Waits (up to `timeout`) until `count` requests reached `path`.
    pub async fn wait_for(&self, path: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received_on(path);
            if got.len() >= count {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} received {} requests, not {count}, within {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type Handler = fn(
    Arc<FakeState>,
    HttpRequest,
    web::Bytes,
) -> futures_util::future::LocalBoxFuture<'static, HttpResponse>;

async fn start(listener: TcpListener, handler: Handler) -> FakeServer {
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(FakeState::default());
    let shared = state.clone();
    let server = HttpServer::new(move || {
        let state = shared.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let state = state.clone();
            async move {
                state.received.lock().push(Received {
                    path: req.path().to_owned(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                handler(state, req, body).await
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    FakeServer {
        url: format!("http://127.0.0.1:{port}"),
        state,
        handle,
    }
}

fn free_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A port nothing listens on yet (a fake can be started on it later).
pub fn reserve_port() -> u16 {
    free_listener().local_addr().unwrap().port()
}

/// Signs a gateway event the way PayMongo does.
pub fn paymongo_signature(t: i64, body: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},te={},li=", hex::encode(mac.finalize().into_bytes()))
}

/// A `payment.paid` event for an intent.
pub fn paid_event(event_id: &str, intent_id: &str, payment_id: &str, centavos: i64) -> String {
    json!({"data": {"id": event_id, "type": "event", "attributes": {
        "type": "payment.paid", "livemode": false,
        "data": {"id": payment_id, "type": "payment", "attributes": {
            "amount": centavos, "currency": "PHP", "status": "paid", "payment_intent_id": intent_id}}}}})
    .to_string()
}

/// The fake PayMongo: intents, attach (which pays and sends the signed `payment.paid` webhook to
/// the app), refunds.
pub async fn gateway() -> FakeServer {
    start(free_listener(), |state, req, body| {
        Box::pin(async move {
            let authorised = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Basic "));
            let path = req.path().to_owned();
            let n = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if path == "/v1/payment_intents" {
                if !authorised {
                    return HttpResponse::Unauthorized().json(json!({"errors": [{"code": "unauthorized"}]}));
                }
                let attributes = &request["data"]["attributes"];
                state
                    .intents
                    .lock()
                    .push((format!("pi_{n}"), attributes["amount"].as_i64().unwrap_or(0)));
                return HttpResponse::Ok().json(json!({"data": {"id": format!("pi_{n}"), "type": "payment_intent",
                    "attributes": {"amount": attributes["amount"], "currency": attributes["currency"],
                        "client_key": format!("pi_{n}_client_{n}"), "status": "awaiting_payment_method",
                        "metadata": attributes["metadata"]}}}));
            }
            if let Some(intent) = path.strip_prefix("/v1/payment_intents/").and_then(|p| p.strip_suffix("/attach")) {
                // The app attached a payment method: the fake pays and tells Hilot.
                let _ = request;
                let amount = state
                    .intents
                    .lock()
                    .iter()
                    .find(|(id, _)| id == intent)
                    .map_or(0, |(_, amount)| *amount);
                let event = paid_event(&format!("evt_{n}"), intent, &format!("pay_{n}"), amount);
                let t = chrono::Utc::now().timestamp();
                let signature = paymongo_signature(t, &event, GATEWAY_WEBHOOK_SECRET);
                let target = state.webhook_target.lock().clone().expect("the test set the webhook target");
                let answer = reqwest::Client::new()
                    .post(target)
                    .header("content-type", "application/json")
                    .header("Paymongo-Signature", &signature)
                    .body(event.clone())
                    .send()
                    .await
                    .expect("the app answers the webhook");
                let status = answer.status().as_u16();
                state.last_status.store(status, Ordering::Relaxed);
                return HttpResponse::Ok().json(json!({"webhook_status": status, "event": event, "signature": signature}));
            }
            if path == "/v1/refunds" {
                if !authorised {
                    return HttpResponse::Unauthorized().finish();
                }
                return HttpResponse::Ok().json(json!({"data": {"id": format!("ref_{n}"), "type": "refund",
                    "attributes": {"amount": request["data"]["attributes"]["amount"], "status": "pending",
                        "payment_id": request["data"]["attributes"]["payment_id"]}}}));
            }
            HttpResponse::NotFound().finish()
        })
    })
    .await
}

/// A fake FCM on `port` (answers 200 with a message name).
pub async fn fcm_on(port: u16) -> FakeServer {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the reserved port is free");
    start(listener, |state, _req, _body| {
        Box::pin(async move {
            let n = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            HttpResponse::Ok().json(json!({"name": format!("projects/hilot-test/messages/{n}")}))
        })
    })
    .await
}

/// A webhook receiver: each path answers 200 unless told otherwise.
pub async fn webhook_receiver() -> FakeServer {
    start(free_listener(), |state, req, _body| {
        Box::pin(async move {
            let path = req.path().to_owned();
            {
                let mut failures = state.failures_left.lock();
                if let Some((_, left)) = failures.iter_mut().find(|(p, n)| *p == path && *n > 0) {
                    *left -= 1;
                    return HttpResponse::ServiceUnavailable().body("not yet");
                }
            }
            let status = state
                .statuses
                .lock()
                .iter()
                .find(|(p, _)| *p == path)
                .map_or(200, |(_, s)| *s);
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body("ok")
        })
    })
    .await
}
