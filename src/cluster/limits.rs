//! Abuse limits counted across the cluster: token buckets held in Redis, so an attacker spread
//! over every node behind the load balancer gets the same number of attempts as on one.
//!
//! Each bucket is GCRA (the generic cell rate algorithm: one "theoretical arrival time" per key,
//! the same algorithm `governor` runs in process), evaluated by one Lua script on Redis's own
//! clock, so nodes with skewed clocks agree. Without Redis, or while it is away, the caller
//! falls back to its in-process limiter: limits per node are better than none, and a login must
//! not fail because Redis did.

use std::sync::LazyLock;
use std::time::Duration;

/// Checks every bucket in order and takes a token from each until one is empty; answers 0 when
/// all allowed, else the milliseconds until the empty one allows again.
/// KEYS: the buckets. ARGV: for each bucket, its burst then its replenish period in ms.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  local burst = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat - (burst - 1) * period
  if now < allow_at then return allow_at - now end
  tat = tat + period
  redis.call('SET', key, tat, 'PX', tat - now + 1000)
end
return 0
"#;

/// The script, sent by its SHA-1 (`EVALSHA`): Redis loads it once, and a check sends a few
/// dozen bytes instead of the script's text (re-sent only when Redis answers `NOSCRIPT`).
static GCRA_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// A Redis limit check gives up after this long and the node decides on its own.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// One bucket: `burst` attempts, then one more every `replenish`.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
    pub burst: u32,
    pub replenish: Duration,
}

pub struct ClusterLimits {
    redis: Option<(redis::aio::ConnectionManager, String)>,
}

impl ClusterLimits {
    /// Single node: every check is left to the in-process limiters.
    pub fn local() -> Self {
        Self { redis: None }
    }

    /// Buckets live under `prefix` (one per deployment).
    pub fn redis(connection: redis::aio::ConnectionManager, prefix: String) -> Self {
        Self {
            redis: Some((connection, prefix)),
        }
    }

    /// Takes one token from each bucket, in order. `None`: no cluster-wide answer (single node
    /// or Redis away), decide locally. `Some(Err(wait))`: refused for `wait`.
    pub async fn check(&self, buckets: &[Bucket]) -> Option<Result<(), Duration>> {
        let (connection, prefix) = self.redis.as_ref()?;
        let mut invocation = GCRA_SCRIPT.prepare_invoke();
        for bucket in buckets {
            invocation.key(format!("{prefix}:limit:{}", bucket.key));
        }
        for bucket in buckets {
            invocation
                .arg(bucket.burst.max(1))
                .arg(bucket.replenish.as_millis().max(1) as u64);
        }
        let mut connection = connection.clone();
        match tokio::time::timeout(
            CHECK_TIMEOUT,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await
        {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(wait_ms)) => Some(Err(Duration::from_millis(wait_ms.max(1) as u64))),
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {CHECK_TIMEOUT:?}"),
                };
                tracing::warn!(%error, "cluster-wide limit check failed; this node decides alone");
                metrics::counter!("hilot_cluster_limit_fallbacks_total").increment(1);
                None
            }
        }
    }
}
