//! Chat frames on the customer and therapist sockets: `{"type":"message","booking_id","body"}`
//! sends a message (both parties' sockets then get the `message` frame), and
//! `{"type":"message.read","booking_id"}` marks received messages read. The same rules as the
//! REST calls apply; a refusal is an `error` frame and the socket stays open.

use serde::Deserialize;

use super::frames::{read_body, Envelope, ServerFrame};
use crate::messages;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFrame {
    #[serde(rename = "type")]
    _type: String,
    booking_id: uuid::Uuid,
    body: Option<String>,
}

/// Handles a `message` or `message.read` frame from `user_id`; answers an error frame to send
/// back, if any.
pub async fn on_frame(
    state: &AppState,
    user_id: i64,
    envelope: &Envelope<'_>,
) -> Option<ServerFrame> {
    let frame: MessageFrame = match read_body(envelope) {
        Ok(frame) => frame,
        Err(error) => return Some(error),
    };
    let result = if envelope.kind == "message.read" {
        match messages::mark_read(&state.db, frame.booking_id, user_id).await {
            Ok((receipt, side, parties)) => {
                state.deliver_read_receipt(&receipt, side, &parties).await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    } else {
        let body = frame.body.unwrap_or_default();
        match messages::post(&state.db, frame.booking_id, user_id, &body).await {
            Ok((message, parties)) => {
                state.deliver_message(&message, &parties).await;
                Ok(())
            }
            Err(error) => Err(error),
        }
    };
    result
        .err()
        .map(|error| ServerFrame::refusal(&error, envelope.seq))
}
