//! Live connections: one task per WebSocket that owns its state.

pub mod chat;
pub mod customer;
pub mod dashboard;
pub mod frames;
pub mod guard;
pub mod therapist;

/// The server pings every socket this often.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// A socket that sends nothing (not even a pong) for this long is closed.
pub const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Largest WebSocket frame the protocol layer accepts; beyond it the socket is closed (1009).
pub const MAX_WIRE_FRAME_BYTES: usize = 64 * 1024;
/// Largest text frame the application handles; beyond it the frame gets an error, the socket
/// stays open.
pub const MAX_FRAME_BYTES: usize = 4 * 1024;
/// At shutdown, how long a socket waits for the acks of pings it already queued.
pub const ACK_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Rate-limited frames a socket may send before it is closed as a flood (1008). They refill
/// at a tenth of the socket's frame rate ([`REFUSAL_REFILL_SHARE`]), so a client that paces
/// its flood to slip an admitted frame in every so often is closed all the same (a count of
/// consecutive refusals let it flood on), and so is one that keeps sending more than 10 %
/// above its limit (refilling at the full rate let a client at up to twice its limit draw
/// `rate_limited` errors forever). A burst now and then is forgiven.
pub const REFUSAL_BURST: u32 = 200;
/// The refusal budget refills at the frame rate divided by this.
pub const REFUSAL_REFILL_SHARE: u32 = 10;

/// Longest a socket waits to hand one frame to a client that does not read; the socket is then
/// closed, so a stalled client never holds up its own heartbeat, shutdown or anyone else.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The storage queue this full (0 to 1) means the server is behind: apps are asked to ping less.
pub const OVERLOAD_QUEUE_FILL: f64 = 0.5;

/// The client is gone, or stopped reading for longer than [`SEND_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Sends a text frame within [`SEND_TIMEOUT`].
pub async fn send_text(session: &mut actix_ws::Session, text: String) -> Result<(), Gone> {
    within(session.text(text)).await
}

/// Sends a protocol ping within [`SEND_TIMEOUT`].
pub async fn send_ping(session: &mut actix_ws::Session) -> Result<(), Gone> {
    within(session.ping(b"")).await
}

/// Answers a protocol ping within [`SEND_TIMEOUT`].
pub async fn send_pong(session: &mut actix_ws::Session, bytes: &[u8]) -> Result<(), Gone> {
    within(session.pong(bytes)).await
}

/// Sends the close frame within [`SEND_TIMEOUT`] (the connection ends either way).
pub async fn close(session: actix_ws::Session, reason: Option<actix_ws::CloseReason>) {
    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(reason)).await;
}

async fn within(
    send: impl std::future::Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), Gone> {
    match tokio::time::timeout(SEND_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Gone),
        Err(_) => {
            metrics::counter!("hilot_socket_send_timeouts_total").increment(1);
            Err(Gone)
        }
    }
}

/// Whether the server is behind: the ping queue is filling, or handshakes are being refused.
pub fn overloaded(state: &crate::state::AppState) -> bool {
    state.ingest.queue_fill() >= OVERLOAD_QUEUE_FILL || state.upgrades.saturated()
}
