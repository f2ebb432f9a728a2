//! WebSocket frames: one JSON object per text frame, always with a `"type"`.
//!
//! A frame is read straight into its typed struct: first its `type` and `seq` (borrowed from the
//! text, the rest skipped), then the body. No `serde_json::Value` tree is built unless the frame
//! is malformed, where the slow path finds the words for the error frame.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A location frame from a therapist app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationFrame {
    #[serde(rename = "type")]
    pub _type: IgnoredAny,
    pub seq: i64,
    pub lat: f64,
    pub lng: f64,
    pub accuracy_m: Option<f64>,
    pub heading: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub battery: Option<i64>,
    pub recorded_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityFrame {
    #[serde(rename = "type")]
    pub _type: IgnoredAny,
    pub online: bool,
}

/// `offer.accept`, `offer.decline` (booking_id) and `status` (booking_id, status).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingFrame {
    #[serde(rename = "type")]
    pub _type: IgnoredAny,
    pub booking_id: uuid::Uuid,
    pub status: Option<crate::dispatch::lifecycle::BookingStatus>,
}

/// What the server sends.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// `reason` only when the ping will never be stored (`refused_by_database`).
    #[serde(rename = "ack")]
    Ack {
        seq: i64,
        stored: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    /// How often the app should send its position, from now on.
    #[serde(rename = "config")]
    Config { ping_interval_s: u32 },
    #[serde(rename = "availability")]
    Availability {
        online: bool,
        verification_status: String,
    },
    #[serde(rename = "error")]
    Error {
        code: String,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<i64>,
    },
}

impl ServerFrame {
    pub fn error(code: &str, detail: impl Into<String>, seq: Option<i64>) -> Self {
        Self::Error {
            code: code.to_owned(),
            detail: detail.into(),
            seq,
        }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// A client frame's type and `seq`, with the text its body is read from.
pub struct Envelope<'a> {
    pub kind: Cow<'a, str>,
    pub seq: Option<i64>,
    text: &'a str,
}

/// What the fast path reads first: unknown fields are skipped, not built.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    seq: Option<i64>,
}

/// Reads the frame's `type` and `seq`; the error is ready for an error frame.
pub fn open_envelope(text: &str) -> Result<Envelope<'_>, ServerFrame> {
    if text.trim_start().starts_with('{') {
        if let Ok(Head {
            kind: Some(kind),
            seq,
        }) = serde_json::from_str::<Head>(text)
        {
            return Ok(Envelope { kind, seq, text });
        }
    }
    open_envelope_slowly(text)
}

/// The slow path, for frames the fast one could not read: says precisely what is wrong, or
/// opens frames it was merely too strict for (a `seq` that is not an integer, a repeated key).
fn open_envelope_slowly(text: &str) -> Result<Envelope<'_>, ServerFrame> {
    let body: Value = serde_json::from_str(text)
        .map_err(|e| ServerFrame::error("invalid_json", format!("frame is not JSON: {e}"), None))?;
    let seq = body.get("seq").and_then(Value::as_i64);
    let kind = match body.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => {
            return Err(ServerFrame::error(
                "invalid_frame",
                "type must be a string",
                seq,
            ))
        }
        None if body.is_object() => {
            return Err(ServerFrame::error("invalid_frame", "type is required", seq))
        }
        None => {
            return Err(ServerFrame::error(
                "invalid_frame",
                "a frame is a JSON object",
                None,
            ))
        }
    };
    Ok(Envelope {
        kind: Cow::Owned(kind),
        seq,
        text,
    })
}

/// Reads an envelope's body as a frame of a known type; wrong fields become an error frame.
pub fn read_body<'a, T: Deserialize<'a>>(envelope: &Envelope<'a>) -> Result<T, ServerFrame> {
    let mut deserializer = serde_json::Deserializer::from_str(envelope.text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let detail = if path == "." {
            message
        } else {
            format!("{path}: {message}")
        };
        ServerFrame::error("invalid_frame", detail, envelope.seq)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_seq_when_the_rest_is_wrong() {
        let envelope = open_envelope(r#"{"type":"location","seq":7,"lat":"x","lng":1}"#).unwrap();
        let error = read_body::<LocationFrame>(&envelope).unwrap_err();
        match error {
            ServerFrame::Error { code, detail, seq } => {
                assert_eq!(code, "invalid_frame");
                assert_eq!(seq, Some(7));
                assert!(detail.contains("lat"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(open_envelope("not json").is_err());
        assert!(open_envelope("[1,2]").is_err());
        assert!(open_envelope(r#"{"seq":1}"#).is_err());
    }

    #[test]
    fn acks_serialise_as_the_contract_says() {
        assert_eq!(
            ServerFrame::Ack {
                seq: 3,
                stored: true,
                reason: None
            }
            .to_text(),
            r#"{"type":"ack","seq":3,"stored":true}"#
        );
        assert_eq!(
            ServerFrame::Config {
                ping_interval_s: 10
            }
            .to_text(),
            r#"{"type":"config","ping_interval_s":10}"#
        );
    }
}
