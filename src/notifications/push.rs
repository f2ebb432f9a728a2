//! Push delivery: the [`PushSender`] trait and its HTTP implementation, [`FcmSender`], which
//! speaks Firebase Cloud Messaging's HTTP v1 API (`POST /v1/projects/{project}/messages:send`
//! with a `message` of `token`, `notification` and string-valued `data`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::outbox::{Courier, Failure, Job};

/// One push to one device.
#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    pub token: String,
    pub title: String,
    pub body: String,
    /// Flat string pairs, as FCM's `data` requires.
    pub data: Vec<(String, String)>,
}

/// Why a push failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The device token is no longer valid: stop sending to it.
    Unregistered(String),
    /// The sender or the network failed: try again later.
    Unavailable { status: Option<u16>, detail: String },
    /// The request itself was refused; trying again will not help.
    Rejected { status: Option<u16>, detail: String },
}

/// Sends one push notification.
pub trait PushSender: Send + Sync {
    fn send<'a>(&'a self, message: &'a PushMessage) -> BoxFuture<'a, Result<u16, PushError>>;
}

/// FCM HTTP v1.
pub struct FcmSender {
    client: reqwest::Client,
    endpoint: String,
    access_token_file: Option<String>,
}

impl FcmSender {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        project_id: &str,
        access_token_file: Option<String>,
    ) -> Self {
        Self {
            client,
            endpoint: format!(
                "{}/v1/projects/{}/messages:send",
                base_url.trim_end_matches('/'),
                project_id
            ),
            access_token_file,
        }
    }

    /// The request body FCM v1 expects.
    pub fn body(message: &PushMessage) -> Value {
        let data: serde_json::Map<String, Value> = message
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "message": {
                "token": message.token,
                "notification": {"title": message.title, "body": message.body},
                "data": data,
                "android": {"priority": "HIGH"},
                "apns": {"headers": {"apns-priority": "10"}},
            }
        })
    }
}

impl PushSender for FcmSender {
    fn send<'a>(&'a self, message: &'a PushMessage) -> BoxFuture<'a, Result<u16, PushError>> {
        Box::pin(async move {
            let mut request = self.client.post(&self.endpoint).json(&Self::body(message));
            if let Some(file) = &self.access_token_file {
                let token =
                    tokio::fs::read_to_string(file)
                        .await
                        .map_err(|e| PushError::Unavailable {
                            status: None,
                            detail: format!("reading the FCM access token: {e}"),
                        })?;
                request = request.bearer_auth(token.trim());
            }
            let response = request.send().await.map_err(|e| PushError::Unavailable {
                status: None,
                detail: format!("FCM unreachable: {}", e.without_url()),
            })?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                return Ok(status);
            }
            let text = response.text().await.unwrap_or_default();
            let detail: String = format!("FCM answered {status}: {text}")
                .chars()
                .take(500)
                .collect();
            Err(match status {
                404 => PushError::Unregistered(detail),
                400 if text.contains("UNREGISTERED") => PushError::Unregistered(detail),
                429 | 500..=599 => PushError::Unavailable {
                    status: Some(status),
                    detail,
                },
                401 | 403 => PushError::Unavailable {
                    status: Some(status),
                    detail,
                },
                _ => PushError::Rejected {
                    status: Some(status),
                    detail,
                },
            })
        })
    }
}

/// The outbox courier of the push channel.
pub struct PushCourier {
    pub db: PgPool,
    pub sender: Arc<dyn PushSender>,
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Courier for PushCourier {
    fn deliver<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<Option<u16>, Failure>> {
        Box::pin(async move {
            let p = &job.payload;
            let mut data = vec![
                ("type".to_owned(), text(p, "type")),
                ("notification_id".to_owned(), text(p, "notification_id")),
            ];
            if let Some(action) = p.get("action_type").and_then(Value::as_str) {
                data.push(("action_type".to_owned(), action.to_owned()));
            }
            if let Some(Value::Object(fields)) = p.get("action_data") {
                for (key, value) in fields {
                    let value = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    data.push((key.clone(), value));
                }
            }
            let message = PushMessage {
                token: text(p, "token"),
                title: text(p, "title"),
                body: text(p, "body"),
                data,
            };
            let device_id = p.get("device_token_id").and_then(Value::as_i64);
            // The device may have been retired, or its token taken by another account (the
            // phone changed hands), since the push was queued: it no longer gets this user's.
            if let Some(id) = device_id {
                let active: Option<bool> = sqlx::query_scalar(
                    "SELECT is_active IS NOT FALSE FROM device_tokens WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.db)
                .await
                .map_err(|e| Failure::retry(format!("reading the device: {e}"), None))?;
                if active != Some(true) {
                    return Err(Failure::permanent(
                        "the device is no longer this user's",
                        None,
                    ));
                }
            }
            match self.sender.send(&message).await {
                Ok(status) => {
                    let _ = sqlx::query(
                        "UPDATE notifications SET sent_via = CASE WHEN COALESCE(sent_via, '[]'::jsonb) ? 'push' \
                             THEN sent_via ELSE COALESCE(sent_via, '[]'::jsonb) || '[\"push\"]'::jsonb END \
                         WHERE uuid = $1::uuid",
                    )
                    .bind(text(p, "notification_id"))
                    .execute(&self.db)
                    .await;
                    Ok(Some(status))
                }
                Err(PushError::Unregistered(detail)) => {
                    if let Some(id) = device_id {
                        let _ =
                            sqlx::query("UPDATE device_tokens SET is_active = false WHERE id = $1")
                                .bind(id)
                                .execute(&self.db)
                                .await;
                    }
                    Err(Failure::permanent(detail, Some(404)))
                }
                Err(PushError::Unavailable { status, detail }) => {
                    Err(Failure::retry(detail, status))
                }
                Err(PushError::Rejected { status, detail }) => {
                    Err(Failure::permanent(detail, status))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_fcm_v1_shape() {
        let body = FcmSender::body(&PushMessage {
            token: "device-1".into(),
            title: "Accepted".into(),
            body: "Maria is on her way".into(),
            data: vec![("booking_id".into(), "b-1".into())],
        });
        assert_eq!(body["message"]["token"], "device-1");
        assert_eq!(body["message"]["notification"]["title"], "Accepted");
        assert_eq!(body["message"]["data"]["booking_id"], "b-1");
    }
}
