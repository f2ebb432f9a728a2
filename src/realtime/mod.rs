//! Live connections: one task per WebSocket that owns its state.

pub mod bus;
pub mod customer;
pub mod dashboard;
pub mod frames;
pub mod guard;
pub mod hub;
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

/// Resolves once shutdown has begun (a `Send` future: no watch guard lives across an await).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts open sockets (the ping writer drains until none is left) and exports them as a gauge.
#[derive(Debug, Clone, Default)]
pub struct SocketCounter {
    open: Arc<AtomicUsize>,
}

/// Decrements the count when the socket task ends, however it ends.
pub struct OpenSocket {
    open: Arc<AtomicUsize>,
    kind: &'static str,
}

impl SocketCounter {
    pub fn open(&self, kind: &'static str) -> OpenSocket {
        self.open.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("hilot_open_sockets", "kind" => kind).increment(1.0);
        OpenSocket {
            open: self.open.clone(),
            kind,
        }
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn shared(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("hilot_open_sockets", "kind" => self.kind).decrement(1.0);
    }
}
