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

/// What a therapist app may send, read and checked.
#[derive(Debug, Clone)]
pub enum TherapistFrame<'a> {
    Location(LocationFrame),
    Availability(AvailabilityFrame),
    Booking(BookingAction, BookingFrame),
    /// `message` and `message.read`: the booking chat (see `realtime::chat`).
    Chat(Envelope<'a>),
}

/// `offer.accept`, `offer.decline` and `status`: the same operations as the HTTP calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingAction {
    Accept,
    Decline,
    Status,
}

/// Reads one text frame from a therapist app; anything wrong is an error frame for the app.
pub fn read_therapist_frame(text: &str) -> Result<TherapistFrame<'_>, ServerFrame> {
    check_size(text)?;
    let envelope = open_envelope(text)?;
    match envelope.kind.as_ref() {
        "location" => read_body(&envelope).map(TherapistFrame::Location),
        "availability" => read_body(&envelope).map(TherapistFrame::Availability),
        "offer.accept" => read_body(&envelope).map(|f| TherapistFrame::Booking(BookingAction::Accept, f)),
        "offer.decline" => {
            read_body(&envelope).map(|f| TherapistFrame::Booking(BookingAction::Decline, f))
        }
        "status" => read_body(&envelope).map(|f| TherapistFrame::Booking(BookingAction::Status, f)),
        "message" | "message.read" => Ok(TherapistFrame::Chat(envelope)),
        other => Err(ServerFrame::error(
            "unknown_type",
            format!(
                "unknown frame type {other:?}; expected location, availability, offer.accept, offer.decline, status, message or message.read"
            ),
            envelope.seq,
        )),
    }
}

/// A text frame longer than the protocol allows gets an error; the socket stays open.
pub fn check_size(text: &str) -> Result<(), ServerFrame> {
    if text.len() > super::MAX_FRAME_BYTES {
        return Err(ServerFrame::error(
            "frame_too_large",
            format!("frames are at most {} bytes", super::MAX_FRAME_BYTES),
            None,
        ));
    }
    Ok(())
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

    /// The error frame of an operation the API refused: its problem type in snake_case, as
    /// every socket error code is (`rate_limited`, `not_found`), and the problem's detail.
    pub fn refusal(error: &crate::error::ApiError, seq: Option<i64>) -> Self {
        let problem = error.problem();
        let code = problem
            .kind
            .trim_start_matches("/problems/")
            .replace('-', "_");
        Self::error(&code, problem.detail, seq)
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// A client frame's type and `seq`, with the text its body is read from.
#[derive(Debug, Clone)]
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
/// Good frames take the plain parser; only a bad one is read again to name the bad field
/// (tracking the path costs more than the parse itself).
pub fn read_body<'a, T: Deserialize<'a>>(envelope: &Envelope<'a>) -> Result<T, ServerFrame> {
    if let Ok(body) = serde_json::from_str(envelope.text) {
        return Ok(body);
    }
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

    mod fuzz {
        //! Every socket's parser against arbitrary text and frame-shaped JSON: never a panic,
        //! always either a frame or an error frame with a documented code.
        use super::super::*;
        use crate::realtime::dashboard::read_subscribe;
        use proptest::prelude::*;

        const CODES: &[&str] = &[
            "invalid_json",
            "invalid_frame",
            "unknown_type",
            "frame_too_large",
            "invalid_bbox",
        ];
        const TYPES: &[&str] = &[
            "location",
            "availability",
            "offer.accept",
            "offer.decline",
            "status",
            "subscribe",
            "ack",
            "",
        ];
        const FIELDS: &[&str] = &[
            "seq",
            "lat",
            "lng",
            "accuracy_m",
            "heading",
            "speed_kmh",
            "battery",
            "recorded_at",
            "online",
            "booking_id",
            "status",
            "bbox",
            "extra",
        ];

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                (-200.0..200.0f64).prop_map(Value::from),
                ".{0,12}".prop_map(Value::from),
                Just(Value::from("2026-11-21T10:00:00Z")),
                Just(Value::from("00000000-0000-0000-0000-000000000001")),
                Just(Value::from("en_route")),
            ];
            leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map(".{0,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// Objects with a known or odd `type` and a handful of the fields frames use.
        fn frame_shaped() -> impl Strategy<Value = String> {
            (
                prop_oneof![
                    prop::sample::select(TYPES).prop_map(Value::from),
                    json_value()
                ],
                prop::collection::btree_map(prop::sample::select(FIELDS), json_value(), 0..8),
                any::<bool>(),
            )
                .prop_map(|(kind, fields, with_type)| {
                    let mut object = serde_json::Map::new();
                    if with_type {
                        object.insert("type".into(), kind);
                    }
                    for (name, value) in fields {
                        object.insert(name.to_owned(), value);
                    }
                    Value::Object(object).to_string()
                })
        }

        fn documented(error: &ServerFrame) -> bool {
            matches!(error, ServerFrame::Error { code, .. } if CODES.contains(&code.as_str()))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,300}") {
                if let Err(error) = read_therapist_frame(&text) {
                    prop_assert!(documented(&error), "{error:?}");
                }
                if let Err(error) = read_subscribe(&text) {
                    prop_assert!(documented(&error), "{error:?}");
                }
            }

            #[test]
            fn frame_shaped_json_is_read_or_named(text in frame_shaped()) {
                match read_therapist_frame(&text) {
                    Ok(_) => {}
                    Err(error) => prop_assert!(documented(&error), "{text}: {error:?}"),
                }
                match read_subscribe(&text) {
                    Ok(bbox) => prop_assert!(bbox.west < bbox.east && bbox.south < bbox.north),
                    Err(error) => prop_assert!(documented(&error), "{text}: {error:?}"),
                }
            }

            #[test]
            fn good_location_frames_are_read_exactly(
                seq in any::<i64>(),
                lat in -90.0..90.0f64,
                lng in -180.0..180.0f64,
                accuracy in 0.1..500.0f64,
            ) {
                let text = format!(
                    r#"{{"type":"location","seq":{seq},"lat":{lat},"lng":{lng},"accuracy_m":{accuracy}}}"#
                );
                match read_therapist_frame(&text) {
                    Ok(TherapistFrame::Location(frame)) => {
                        // serde_json's fast float parsing may land one ulp away.
                        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
                        prop_assert_eq!(frame.seq, seq);
                        prop_assert!(close(frame.lat, lat) && close(frame.lng, lng));
                        prop_assert!(frame.accuracy_m.is_some_and(|a| close(a, accuracy)));
                    }
                    other => prop_assert!(false, "{text}: {other:?}"),
                }
            }

            #[test]
            fn a_wrong_field_names_the_field_and_keeps_the_seq(seq in any::<i64>(), bad in json_value()) {
                prop_assume!(!bad.is_number());
                let text = format!(r#"{{"type":"location","seq":{seq},"lat":{bad},"lng":121.0}}"#);
                match read_therapist_frame(&text) {
                    Err(ServerFrame::Error { code, detail, seq: got }) => {
                        prop_assert_eq!(code, "invalid_frame");
                        prop_assert_eq!(got, Some(seq));
                        prop_assert!(detail.contains("lat"), "{detail}");
                    }
                    other => prop_assert!(false, "{text}: {other:?}"),
                }
            }
        }
    }
}
