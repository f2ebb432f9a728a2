//! PayMongo: payment intents (`POST /v1/payment_intents`), refunds (`POST /v1/refunds`), basic
//! auth with the secret key, amounts in centavos; webhooks signed in `Paymongo-Signature:
//! t=<unix>,te=<hex>,li=<hex>` with HMAC-SHA256 over `"<t>.<body>"` (`te` in test mode, `li` live).

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{
    centavos, from_centavos, Gateway, GatewayError, GatewayEvent, GatewayEventKind, Intent,
    IntentRequest, RefundRequest, RefundResult, WebhookError,
};

pub struct PayMongo {
    client: reqwest::Client,
    base_url: String,
    secret_key: String,
    webhook_secret: Option<String>,
    tolerance_s: i64,
}

impl PayMongo {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        secret_key: &str,
        webhook_secret: Option<String>,
        tolerance_s: u64,
    ) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
            webhook_secret,
            tolerance_s: tolerance_s as i64,
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, GatewayError> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .basic_auth(&self.secret_key, Some(""))
            .json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| GatewayError::Unavailable(e.without_url().to_string()))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(GatewayError::Unavailable(format!(
                "{status}: {}",
                cut(&text)
            )));
        }
        if !status.is_success() {
            return Err(GatewayError::Rejected(format!("{status}: {}", cut(&text))));
        }
        serde_json::from_str(&text)
            .map_err(|e| GatewayError::Unavailable(format!("unreadable answer: {e}")))
    }

    /// The expected signature of `body` signed at `t`, in hex.
    pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

impl Gateway for PayMongo {
    fn name(&self) -> &'static str {
        "paymongo"
    }

    fn signature_header(&self) -> &'static str {
        "Paymongo-Signature"
    }

    fn create_intent<'a>(
        &'a self,
        request: &'a IntentRequest,
    ) -> BoxFuture<'a, Result<Intent, GatewayError>> {
        Box::pin(async move {
            let body = json!({"data": {"attributes": {
                "amount": centavos(request.amount),
                "currency": request.currency,
                "payment_method_allowed": [request.method],
                "capture_type": "automatic",
                "description": request.description,
                "metadata": request.metadata,
            }}});
            let answer = self.post("/v1/payment_intents", body, None).await?;
            let id = str_at(&answer, "/data/id")
                .ok_or_else(|| GatewayError::Unavailable("the intent has no id".into()))?;
            Ok(Intent {
                id: id.to_owned(),
                client_key: str_at(&answer, "/data/attributes/client_key")
                    .unwrap_or_default()
                    .to_owned(),
                status: str_at(&answer, "/data/attributes/status")
                    .unwrap_or("awaiting_payment_method")
                    .to_owned(),
                raw: answer.clone(),
            })
        })
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, GatewayError>> {
        Box::pin(async move {
            let body = json!({"data": {"attributes": {
                "amount": centavos(request.amount),
                "payment_id": request.payment_id,
                "reason": "requested_by_customer",
                "notes": request.reason,
            }}});
            let answer = self
                .post("/v1/refunds", body, Some(&request.idempotency_key))
                .await?;
            Ok(RefundResult {
                id: str_at(&answer, "/data/id").unwrap_or_default().to_owned(),
                status: str_at(&answer, "/data/attributes/status")
                    .unwrap_or("pending")
                    .to_owned(),
            })
        })
    }

    fn verify_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<GatewayEvent, WebhookError> {
        let header = signature.ok_or(WebhookError::MissingSignature)?;
        let secret = self
            .webhook_secret
            .as_deref()
            .ok_or(WebhookError::BadSignature)?;
        let mut t = None;
        let mut candidates = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.trim().parse::<i64>().ok(),
                Some(("te" | "li", v)) if !v.trim().is_empty() => {
                    candidates.push(v.trim().to_owned())
                }
                _ => {}
            }
        }
        let t = t.ok_or(WebhookError::BadSignature)?;
        let mut matched = false;
        for candidate in &candidates {
            let Ok(bytes) = hex::decode(candidate) else {
                continue;
            };
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
            mac.update(t.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(&bytes).is_ok() {
                matched = true;
            }
        }
        if !matched {
            return Err(WebhookError::BadSignature);
        }
        let age = now - t;
        if age.abs() > self.tolerance_s {
            return Err(WebhookError::Stale {
                age_s: age,
                tolerance_s: self.tolerance_s,
            });
        }
        let event: Value =
            serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let event_id = str_at(&event, "/data/id")
            .ok_or_else(|| WebhookError::Malformed("data.id is missing".into()))?
            .to_owned();
        let kind_name = str_at(&event, "/data/attributes/type")
            .ok_or_else(|| WebhookError::Malformed("data.attributes.type is missing".into()))?;
        let resource = event
            .pointer("/data/attributes/data")
            .cloned()
            .unwrap_or(Value::Null);
        let intent_id = str_at(&resource, "/attributes/payment_intent_id").map(str::to_owned);
        let kind = match (kind_name, intent_id) {
            ("payment.paid", Some(intent_id)) => GatewayEventKind::PaymentPaid {
                intent_id,
                payment_id: str_at(&resource, "/id").unwrap_or_default().to_owned(),
                amount: from_centavos(
                    resource
                        .pointer("/attributes/amount")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                ),
                raw: resource.clone(),
            },
            ("payment.failed", Some(intent_id)) => GatewayEventKind::PaymentFailed {
                intent_id,
                reason: str_at(&resource, "/attributes/last_payment_error/message")
                    .or_else(|| str_at(&resource, "/attributes/failed_message"))
                    .unwrap_or("the payment failed")
                    .to_owned(),
            },
            ("payment.paid" | "payment.failed", None) => {
                return Err(WebhookError::Malformed(
                    "the payment has no payment_intent_id".into(),
                ))
            }
            (other, _) => GatewayEventKind::Other(other.to_owned()),
        };
        Ok(GatewayEvent {
            event_id,
            signed_at: t,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> PayMongo {
        PayMongo::new(
            reqwest::Client::new(),
            "http://localhost",
            "sk_test",
            Some("whsk_secret".into()),
            300,
        )
    }

    fn paid_event() -> Vec<u8> {
        json!({"data": {"id": "evt_1", "type": "event", "attributes": {"type": "payment.paid", "livemode": false,
            "data": {"id": "pay_1", "type": "payment", "attributes": {"amount": 115000, "payment_intent_id": "pi_1"}}}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_signed_event_is_read_and_a_forged_or_stale_one_refused() {
        let body = paid_event();
        let sig = PayMongo::signature("whsk_secret", 1_000, &body);
        let event = gateway()
            .verify_webhook(Some(&format!("t=1000,te={sig},li=")), &body, 1_010)
            .unwrap();
        assert_eq!(event.event_id, "evt_1");
        assert!(
            matches!(event.kind, GatewayEventKind::PaymentPaid { ref intent_id, amount, .. }
            if intent_id == "pi_1" && amount == rust_decimal::Decimal::new(115000, 2))
        );
        let forged = PayMongo::signature("another", 1_000, &body);
        assert_eq!(
            gateway().verify_webhook(Some(&format!("t=1000,te={forged}")), &body, 1_010),
            Err(WebhookError::BadSignature)
        );
        assert!(matches!(
            gateway().verify_webhook(Some(&format!("t=1000,te={sig}")), &body, 2_000),
            Err(WebhookError::Stale { .. })
        ));
        assert_eq!(
            gateway().verify_webhook(None, &body, 1_000),
            Err(WebhookError::MissingSignature)
        );
    }
}
