//! Fan-out: delivering frames to users (the event bus and this node's hub) and map updates to
//! dashboards. Delivery only; the decisions are made above, in dispatch.

pub mod bus;
pub mod dashboard;
pub mod hub;
pub mod sockets;

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

/// Bounds the WebSocket handshakes in progress: beyond the limit a new one is refused at once
/// (503 with `Retry-After`) instead of queueing behind the rest.
#[derive(Debug, Clone)]
pub struct UpgradeGate {
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl UpgradeGate {
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(limit.max(1))),
            limit: limit.max(1),
        }
    }

    /// A place for one handshake, held until it is done; `None` when all are taken.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Every place is taken.
    pub fn saturated(&self) -> bool {
        self.permits.available_permits() == 0 && self.limit > 0
    }
}
