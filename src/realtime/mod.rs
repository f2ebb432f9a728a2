//! Live connections: one task per WebSocket that owns its state.

pub mod customer;
pub mod dashboard;
pub mod frames;
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
/// Consecutive rate-limited frames after which a flooding socket is closed (1008).
pub const MAX_CONSECUTIVE_REFUSALS: u32 = 200;
