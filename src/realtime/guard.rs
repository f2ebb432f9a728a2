//! What every socket kind shares at the socket end: the credentials' ending (from the
//! [`SocketRegistry`] in `fanout::sockets`, which state and the bus reach without depending on
//! sockets), and a token bucket over every frame a client sends.

use std::num::NonZeroU32;
use std::pin::Pin;
use std::time::Duration;

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::frames::ServerFrame;
use super::{REFUSAL_BURST, REFUSAL_REFILL_SHARE};
pub use crate::fanout::sockets::{
    CredentialEvent, Credentials, Ending, SocketKind, SocketLease, SocketRegistry,
    CLOSE_CREDENTIALS_ENDED, CLOSE_REPLACED,
};
/// A token bucket over every frame a client sends (text, binary, ping, pong, close).
pub struct FrameLimiter {
    bucket: DefaultDirectRateLimiter,
    per_second: u32,
    burst: u32,
    /// Refused frames left before the socket is closed ([`REFUSAL_BURST`], refilling at a
    /// [`REFUSAL_REFILL_SHARE`]th of the frame rate).
    refusals: DefaultDirectRateLimiter,
}

/// What to do with a client frame.
#[derive(Debug)]
pub enum Admission {
    Admit,
    /// Drop the frame and send this error frame (none for a refused pong: it answers our own
    /// heartbeat, and an error the client cannot tie to anything it sent only confuses it).
    Refuse(Option<ServerFrame>),
    /// The client keeps sending above its limit: close (1008).
    Close(CloseReason),
}

impl FrameLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = per_second.max(1);
        let burst = burst.max(1);
        Self {
            bucket: RateLimiter::direct(
                Quota::per_second(NonZeroU32::new(per_second).expect("max(1)"))
                    .allow_burst(NonZeroU32::new(burst).expect("max(1)")),
            ),
            per_second,
            burst,
            refusals: RateLimiter::direct(
                Quota::with_period(Duration::from_secs_f64(
                    f64::from(REFUSAL_REFILL_SHARE) / f64::from(per_second),
                ))
                .expect("a period above zero")
                .allow_burst(NonZeroU32::new(REFUSAL_BURST).expect("a constant above zero")),
            ),
        }
    }

    /// Takes a token for one frame.
    pub fn admit(&mut self, what: &str) -> Admission {
        if self.bucket.check().is_ok() {
            return Admission::Admit;
        }
        metrics::counter!("hilot_socket_frames_refused_total", "reason" => "rate_limited")
            .increment(1);
        if self.refusals.check().is_err() {
            return Admission::Close(CloseReason::from((CloseCode::Policy, "too many frames")));
        }
        Admission::Refuse(Some(ServerFrame::error(
            "rate_limited",
            format!(
                "more than {} {what} per second (burst {}); frame dropped",
                self.per_second, self.burst
            ),
            None,
        )))
    }
}

/// The socket-side half of the guard: credentials that can end, and the frame bucket.
pub struct SocketGuard {
    lease: SocketLease,
    expiry: Pin<Box<tokio::time::Sleep>>,
    pub frames: FrameLimiter,
}

/// A deadline far enough away to mean "never" without overflowing an `Instant`.
const NEVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl SocketGuard {
    pub fn new(lease: SocketLease, credentials: Credentials, frames: FrameLimiter) -> Self {
        let until_expiry = credentials
            .expires_at
            .map_or(NEVER, |at| (at - Utc::now()).to_std().unwrap_or_default());
        Self {
            lease,
            expiry: Box::pin(tokio::time::sleep(until_expiry.min(NEVER))),
            frames,
        }
    }

    /// Whether the same user has another socket of this kind open, on any node.
    pub async fn another_open_in_cluster(&self) -> bool {
        self.lease.another_open_in_cluster().await
    }

    /// Resolves when the socket must close because its credentials ended or it was replaced.
    /// Cancel-safe: use it as a branch of the socket's `select!`.
    pub async fn ended(&mut self) -> Ending {
        tokio::select! {
            Some(ending) = self.lease.next_ending() => ending,
            _ = &mut self.expiry => Ending::Expired,
        }
    }

    /// Admits or refuses one client frame (every kind counts).
    pub fn admit(&mut self, message: &AggregatedMessage) -> Admission {
        match (self.frames.admit("frames"), message) {
            (Admission::Refuse(_), AggregatedMessage::Pong(_)) => Admission::Refuse(None),
            (admission, _) => admission,
        }
    }
}

/// How to close after a protocol error: 1009 for a frame over the size limit, else 1002.
pub fn protocol_close(error: &ProtocolError) -> CloseReason {
    let too_large = match error {
        ProtocolError::Overflow => true,
        // actix-ws reports a message whose continuation frames add up past the limit this way.
        ProtocolError::Io(io) => io.to_string().contains("maximum continuation size"),
        _ => false,
    };
    if too_large {
        CloseReason::from((CloseCode::Size, "frame too large"))
    } else {
        CloseReason::from((CloseCode::Protocol, "protocol error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers frames at `times` the limit of 1,000 a second (burst 50) for up to `for_how_long`; answers
    /// how many were refused and whether the socket was closed.
    fn flood(times: f64, for_how_long: Duration) -> (u32, bool) {
        // A burst of 50 absorbs the catch-up after an oversleep.
        let mut limiter = FrameLimiter::new(1_000, 50);
        let start = std::time::Instant::now();
        let (mut sent, mut refused) = (0u64, 0u32);
        while start.elapsed() < for_how_long {
            // Exactly `times` × 1,000 a second on average, however the sleeps fall.
            let due = (start.elapsed().as_secs_f64() * 1_000.0 * times) as u64;
            while sent < due {
                sent += 1;
                match limiter.admit("frames") {
                    Admission::Admit => {}
                    Admission::Refuse(_) => refused += 1,
                    Admission::Close(_) => return (refused, true),
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (refused, false)
    }

    #[test]
    fn a_client_half_again_over_its_limit_is_closed_and_one_under_it_is_not() {
        // 500 refusals a second against a refill of 100: the 200 are gone in about half a
        // second (before this limit, refilling at 1,000 a second, never).
        let (refused, closed) = flood(1.5, Duration::from_secs(5));
        assert!(closed, "still open after {refused} refusals");
        assert!(refused >= REFUSAL_BURST, "{refused}");
        // Under the limit: never closed (a stall of the test's thread on a busy machine may
        // bunch frames past the burst, so a few refusals are no failure).
        let (refused, closed) = flood(0.8, Duration::from_millis(1_500));
        assert!(!closed, "closed after {refused} refusals");
    }
}
