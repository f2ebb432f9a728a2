//! Exactly one active matcher per region across nodes: a PostgreSQL session advisory lock, held
//! on a connection of its own.
//!
//! A node that dies drops its connection and PostgreSQL releases the lock at once; a node whose
//! machine vanishes is cut by TCP keepalives within about three seconds (set on the lease
//! session). Candidates try again every [`LEASE_RETRY`], so another node takes over within the
//! 5 s the issue allows. The holder checks its connection every [`LEASE_HEARTBEAT`] and stops
//! matching the moment it fails, before anyone else could have taken the lock.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

/// A candidate asks for the lock this often.
pub const LEASE_RETRY: Duration = Duration::from_secs(1);
/// The holder checks its lease connection this often.
pub const LEASE_HEARTBEAT: Duration = Duration::from_secs(1);
/// A heartbeat that takes longer than this counts as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// Server-side keepalives on the lease session: a silent peer is dropped after about
/// idle + interval × count seconds, which releases its lock.
const KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 1; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 2";

/// The advisory-lock key of a region's matcher.
pub fn lock_key(region: &str) -> i64 {
    // FNV-1a over a namespaced name: stable across builds and nodes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "hilot.matcher.".bytes().chain(region.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// A connection that may hold a region's lease.
pub struct Lease {
    conn: PgConnection,
    key: i64,
    held: bool,
}

impl Lease {
    pub async fn connect(options: &PgConnectOptions, region: &str) -> sqlx::Result<Self> {
        let mut conn = PgConnection::connect_with(options).await?;
        // Keepalives only apply over TCP; on a Unix socket PostgreSQL ignores them.
        let _ = conn.execute(KEEPALIVES).await;
        Ok(Self {
            conn,
            key: lock_key(region),
            held: false,
        })
    }

    /// Takes the lease if nobody holds it; `true` when this connection holds it.
    pub async fn try_acquire(&mut self) -> sqlx::Result<bool> {
        if !self.held {
            self.held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.key)
                .fetch_one(&mut self.conn)
                .await?;
        }
        Ok(self.held)
    }

    /// Whether the lease is still ours (its connection answers).
    pub async fn alive(&mut self) -> bool {
        matches!(
            tokio::time::timeout(HEARTBEAT_TIMEOUT, self.conn.ping()).await,
            Ok(Ok(()))
        )
    }

    /// Gives the lease up (also what dropping the connection does).
    pub async fn release(mut self) {
        if self.held {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut self.conn)
                .await;
        }
        let _ = self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_get_distinct_stable_keys() {
        assert_eq!(lock_key("default"), lock_key("default"));
        assert_ne!(lock_key("default"), lock_key("cebu"));
    }
}
