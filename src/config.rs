//! Settings: flags or environment, with every default a named constant.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

/// Where `hilot serve` listens when neither `--bind` nor `HILOT_BIND` is given.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Connections the server keeps to PostgreSQL for requests.
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 20;
/// How long a request waits for a free database connection before answering 503 with
/// `Retry-After`: long enough to ride out a burst, short enough that an overloaded server
/// refuses quickly instead of queueing work whose client has given up.
pub const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the server's own work (dispatch, the ping writer) waits for one of its connections.
pub const BACKGROUND_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept for the server's own work, besides the requests' pool.
pub const DEFAULT_DB_BACKGROUND_CONNECTIONS: u32 = 8;
/// How long SIGTERM waits for in-flight requests before closing them.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;
/// The largest JSON body any endpoint accepts.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Months of `provider_locations` partitions created ahead of the current one.
pub const DEFAULT_PARTITIONS_AHEAD: u32 = 2;
/// How long a login token stays valid.
pub const DEFAULT_TOKEN_TTL_DAYS: u32 = 30;
/// Login attempts per phone number: a burst, then one more per interval.
pub const DEFAULT_LOGIN_BURST_PER_PHONE: u32 = 5;
pub const DEFAULT_LOGIN_REPLENISH_PER_PHONE_S: u64 = 60;
/// Login attempts per client address (several people may share one address).
pub const DEFAULT_LOGIN_BURST_PER_ADDRESS: u32 = 30;
pub const DEFAULT_LOGIN_REPLENISH_PER_ADDRESS_S: u64 = 2;
/// Pings waiting to be written to provider_locations; when full, sockets wait (backpressure).
pub const DEFAULT_PING_QUEUE_CAPACITY: usize = 20_000;
/// Most rows in one batch insert.
pub const DEFAULT_PING_BATCH_MAX: usize = 2_000;
/// A partial batch is flushed after this long, bounding ack latency.
pub const DEFAULT_PING_FLUSH_INTERVAL_MS: u64 = 20;
/// A fix implying a faster move than this from the previous one is rejected as a GPS jump.
pub const DEFAULT_MAX_SPEED_KMH: f64 = 250.0;
/// Fixes less accurate than this are stored but not used for matching.
pub const DEFAULT_MATCH_MAX_ACCURACY_M: f64 = 100.0;
/// A therapist with no fix for this long is not matched.
pub const DEFAULT_PRESENCE_TTL_S: u64 = 60;
/// Location frames per second a socket may send, and the burst it may save up.
pub const DEFAULT_SOCKET_FRAMES_PER_S: u32 = 5;
pub const DEFAULT_SOCKET_FRAME_BURST: u32 = 10;
/// A therapist en route within this distance of the customer for the dwell time has arrived.
pub const DEFAULT_ARRIVAL_RADIUS_M: f64 = 100.0;
pub const DEFAULT_ARRIVAL_DWELL_S: u64 = 20;
/// Most times a second a dashboard is sent the updates collected for it.
pub const DEFAULT_DASHBOARD_FLUSHES_PER_S: f64 = 20.0;
/// Dashboard `subscribe` frames (each reads the database) per second, and the burst allowed.
pub const DEFAULT_DASHBOARD_SUBSCRIBES_PER_S: u32 = 2;
pub const DEFAULT_DASHBOARD_SUBSCRIBE_BURST: u32 = 5;
/// Open sockets per user and kind (therapist, customer, dashboard); a new one replaces the oldest.
pub const DEFAULT_SOCKETS_PER_USER: usize = 3;
/// Passwords hashed or verified while this many more wait; beyond, 503 with `Retry-After`.
pub const DEFAULT_HASH_QUEUE: usize = 16;
/// Registrations per client address: a burst, then one more per interval.
pub const DEFAULT_REGISTER_BURST_PER_ADDRESS: u32 = 10;
pub const DEFAULT_REGISTER_REPLENISH_PER_ADDRESS_S: u64 = 10;
/// `GET /v1/therapists/nearby` calls per user (admins excepted): a burst, then one per interval.
pub const DEFAULT_NEARBY_BURST_PER_USER: u32 = 20;
pub const DEFAULT_NEARBY_REPLENISH_PER_USER_S: u64 = 3;
/// Seconds between the checks of every open socket's credentials (events close sockets at
/// once; this catches what no event said, such as a change made by hand in the database).
pub const DEFAULT_CREDENTIAL_SWEEP_S: u64 = 30;
/// A request body must have arrived this long after the request began, or the answer is 408.
pub const DEFAULT_BODY_TIMEOUT_S: u64 = 10;
/// WebSocket handshakes (token check, profile, upgrade) in progress at once; one more answers
/// 503 with `Retry-After`, so a reconnect storm cannot starve the requests already admitted.
pub const DEFAULT_MAX_PENDING_UPGRADES: usize = 64;
/// Requests answered at once; one more gets 503 with `Retry-After` straight away.
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 256;
/// How often the server looks for dispatch alerts and for in-store visits whose grace ran out.
pub const DEFAULT_WATCH_INTERVAL_S: u64 = 5;

/// Folder (at the repository root) where `scripts/dev-env` keeps the local PostgreSQL and Redis.
pub const LOCAL_ENV_DIR: &str = ".hilot-local";

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL URL. Without it the server uses the project-local cluster of `scripts/dev-env`.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis URL. Without it the server runs single-node on an in-process event bus.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Address to listen on (`host:port`; port 0 picks a free one).
    #[arg(long, global = true, env = "HILOT_BIND", default_value = DEFAULT_BIND)]
    pub bind: String,

    /// Maximum PostgreSQL connections in the pool.
    #[arg(long, global = true, env = "HILOT_DB_MAX_CONNECTIONS", default_value_t = DEFAULT_DB_MAX_CONNECTIONS)]
    pub db_max_connections: u32,

    /// PostgreSQL connections for dispatch, the ping writer and partition upkeep.
    #[arg(long, global = true, env = "HILOT_DB_BACKGROUND_CONNECTIONS", default_value_t = DEFAULT_DB_BACKGROUND_CONNECTIONS)]
    pub db_background_connections: u32,

    /// HTTP worker threads (default: one per core).
    #[arg(long, global = true, env = "HILOT_WORKERS")]
    pub workers: Option<usize>,

    /// Seconds SIGTERM waits for in-flight requests.
    #[arg(long, global = true, env = "HILOT_SHUTDOWN_GRACE_S", default_value_t = DEFAULT_SHUTDOWN_GRACE_S)]
    pub shutdown_grace_s: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, global = true, env = "HILOT_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Months of location partitions kept ready ahead of the current month.
    #[arg(long, global = true, env = "HILOT_PARTITIONS_AHEAD", default_value_t = DEFAULT_PARTITIONS_AHEAD)]
    pub partitions_ahead: u32,

    /// Days a login token stays valid.
    #[arg(long, global = true, env = "HILOT_TOKEN_TTL_DAYS", default_value_t = DEFAULT_TOKEN_TTL_DAYS)]
    pub token_ttl_days: u32,

    /// Login attempts allowed at once per phone number.
    #[arg(long, global = true, env = "HILOT_LOGIN_BURST_PER_PHONE", default_value_t = DEFAULT_LOGIN_BURST_PER_PHONE)]
    pub login_burst_per_phone: u32,

    /// Seconds until one more login attempt is allowed per phone number.
    #[arg(long, global = true, env = "HILOT_LOGIN_REPLENISH_PER_PHONE_S", default_value_t = DEFAULT_LOGIN_REPLENISH_PER_PHONE_S)]
    pub login_replenish_per_phone_s: u64,

    /// Login attempts allowed at once per client address.
    #[arg(long, global = true, env = "HILOT_LOGIN_BURST_PER_ADDRESS", default_value_t = DEFAULT_LOGIN_BURST_PER_ADDRESS)]
    pub login_burst_per_address: u32,

    /// Seconds until one more login attempt is allowed per client address.
    #[arg(long, global = true, env = "HILOT_LOGIN_REPLENISH_PER_ADDRESS_S", default_value_t = DEFAULT_LOGIN_REPLENISH_PER_ADDRESS_S)]
    pub login_replenish_per_address_s: u64,

    /// Addresses of load balancers in front of the server (comma-separated): for a request from
    /// one of them, the client's address (for limits and the audit log) is the last address in
    /// `X-Forwarded-For` that is not itself a trusted proxy. Empty: the peer address is the client.
    #[arg(
        long,
        global = true,
        env = "HILOT_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Pings that may wait for the database before sockets are slowed down.
    #[arg(long, global = true, env = "HILOT_PING_QUEUE_CAPACITY", default_value_t = DEFAULT_PING_QUEUE_CAPACITY)]
    pub ping_queue_capacity: usize,

    /// Most rows per batch insert into provider_locations.
    #[arg(long, global = true, env = "HILOT_PING_BATCH_MAX", default_value_t = DEFAULT_PING_BATCH_MAX)]
    pub ping_batch_max: usize,

    /// Milliseconds after which a partial batch is written.
    #[arg(long, global = true, env = "HILOT_PING_FLUSH_INTERVAL_MS", default_value_t = DEFAULT_PING_FLUSH_INTERVAL_MS)]
    pub ping_flush_interval_ms: u64,

    /// Implied speed (km/h) above which a fix is rejected as a jump.
    #[arg(long, global = true, env = "HILOT_MAX_SPEED_KMH", default_value_t = DEFAULT_MAX_SPEED_KMH)]
    pub max_speed_kmh: f64,

    /// Worst accuracy (m) a fix may have and still be used for matching.
    #[arg(long, global = true, env = "HILOT_MATCH_MAX_ACCURACY_M", default_value_t = DEFAULT_MATCH_MAX_ACCURACY_M)]
    pub match_max_accuracy_m: f64,

    /// Seconds without a fix after which a therapist is not matched.
    #[arg(long, global = true, env = "HILOT_PRESENCE_TTL_S", default_value_t = DEFAULT_PRESENCE_TTL_S)]
    pub presence_ttl_s: u64,

    /// Road distance ÷ straight-line distance, for ETAs.
    #[arg(long, global = true, env = "HILOT_ROAD_CIRCUITY", default_value_t = crate::geo::DEFAULT_ROAD_CIRCUITY)]
    pub road_circuity: f64,

    /// Average travel speed (km/h), for ETAs.
    #[arg(long, global = true, env = "HILOT_TRAVEL_SPEED_KMH", default_value_t = crate::geo::DEFAULT_TRAVEL_SPEED_KMH)]
    pub travel_speed_kmh: f64,

    /// Frames per second each socket (therapist, customer, dashboard) may send, of any kind.
    #[arg(long, global = true, env = "HILOT_SOCKET_FRAMES_PER_S", default_value_t = DEFAULT_SOCKET_FRAMES_PER_S)]
    pub socket_frames_per_s: u32,

    /// Frames a socket may send in a burst.
    #[arg(long, global = true, env = "HILOT_SOCKET_FRAME_BURST", default_value_t = DEFAULT_SOCKET_FRAME_BURST)]
    pub socket_frame_burst: u32,

    /// Metres from the customer within which an en-route therapist counts as arriving.
    #[arg(long, global = true, env = "HILOT_ARRIVAL_RADIUS_M", default_value_t = DEFAULT_ARRIVAL_RADIUS_M)]
    pub arrival_radius_m: f64,

    /// Seconds the therapist must stay within the arrival radius.
    #[arg(long, global = true, env = "HILOT_ARRIVAL_DWELL_S", default_value_t = DEFAULT_ARRIVAL_DWELL_S)]
    pub arrival_dwell_s: u64,

    /// Most flushes per second to each dashboard (updates in between are coalesced).
    #[arg(long, global = true, env = "HILOT_DASHBOARD_FLUSHES_PER_S", default_value_t = DEFAULT_DASHBOARD_FLUSHES_PER_S)]
    pub dashboard_flushes_per_s: f64,

    /// Dashboard `subscribe` frames allowed per second.
    #[arg(long, global = true, env = "HILOT_DASHBOARD_SUBSCRIBES_PER_S", default_value_t = DEFAULT_DASHBOARD_SUBSCRIBES_PER_S)]
    pub dashboard_subscribes_per_s: u32,

    /// Dashboard `subscribe` frames allowed in a burst.
    #[arg(long, global = true, env = "HILOT_DASHBOARD_SUBSCRIBE_BURST", default_value_t = DEFAULT_DASHBOARD_SUBSCRIBE_BURST)]
    pub dashboard_subscribe_burst: u32,

    /// Open sockets per user and kind; a new one closes the oldest (4000 `replaced`).
    #[arg(long, global = true, env = "HILOT_SOCKETS_PER_USER", default_value_t = DEFAULT_SOCKETS_PER_USER)]
    pub sockets_per_user: usize,

    /// Passwords hashed at once (default: one per core).
    #[arg(long, global = true, env = "HILOT_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Passwords waiting to be hashed before new ones are refused with 503.
    #[arg(long, global = true, env = "HILOT_HASH_QUEUE", default_value_t = DEFAULT_HASH_QUEUE)]
    pub hash_queue: usize,

    /// Registrations allowed at once per client address.
    #[arg(long, global = true, env = "HILOT_REGISTER_BURST_PER_ADDRESS", default_value_t = DEFAULT_REGISTER_BURST_PER_ADDRESS)]
    pub register_burst_per_address: u32,

    /// Seconds until one more registration is allowed per client address.
    #[arg(long, global = true, env = "HILOT_REGISTER_REPLENISH_PER_ADDRESS_S", default_value_t = DEFAULT_REGISTER_REPLENISH_PER_ADDRESS_S)]
    pub register_replenish_per_address_s: u64,

    /// Nearby searches allowed at once per user (admins are not limited).
    #[arg(long, global = true, env = "HILOT_NEARBY_BURST_PER_USER", default_value_t = DEFAULT_NEARBY_BURST_PER_USER)]
    pub nearby_burst_per_user: u32,

    /// Seconds until one more nearby search is allowed per user.
    #[arg(long, global = true, env = "HILOT_NEARBY_REPLENISH_PER_USER_S", default_value_t = DEFAULT_NEARBY_REPLENISH_PER_USER_S)]
    pub nearby_replenish_per_user_s: u64,

    /// Seconds between checks of every open socket's credentials in one query.
    #[arg(long, global = true, env = "HILOT_CREDENTIAL_SWEEP_S", default_value_t = DEFAULT_CREDENTIAL_SWEEP_S)]
    pub credential_sweep_s: u64,

    /// Seconds a request body may take to arrive (then 408).
    #[arg(long, global = true, env = "HILOT_BODY_TIMEOUT_S", default_value_t = DEFAULT_BODY_TIMEOUT_S)]
    pub body_timeout_s: u64,

    /// The payment gateway, push notifications and the delivery outbox.
    #[command(flatten)]
    pub integrations: IntegrationSettings,

    /// Seconds between pings the server asks of an idle therapist app.
    #[arg(long, global = true, env = "HILOT_PING_INTERVAL_IDLE_S", default_value_t = crate::ingest::cadence::DEFAULT_IDLE_S)]
    pub ping_interval_idle_s: u32,

    /// Seconds between pings while offered or on a booking.
    #[arg(long, global = true, env = "HILOT_PING_INTERVAL_ACTIVE_S", default_value_t = crate::ingest::cadence::DEFAULT_ACTIVE_S)]
    pub ping_interval_active_s: u32,

    /// Seconds between pings while close to the customer's door.
    #[arg(long, global = true, env = "HILOT_PING_INTERVAL_ARRIVING_S", default_value_t = crate::ingest::cadence::DEFAULT_ARRIVING_S)]
    pub ping_interval_arriving_s: u32,

    /// Requests answered at once before new ones get 503 (health and metrics are never refused).
    #[arg(long, global = true, env = "HILOT_MAX_INFLIGHT_REQUESTS", default_value_t = DEFAULT_MAX_INFLIGHT_REQUESTS)]
    pub max_inflight_requests: usize,

    /// WebSocket handshakes in progress at once before new ones get 503.
    #[arg(long, global = true, env = "HILOT_MAX_PENDING_UPGRADES", default_value_t = DEFAULT_MAX_PENDING_UPGRADES)]
    pub max_pending_upgrades: usize,

    /// Seconds between looks for dispatch alerts and for in-store visits past their grace.
    #[arg(long, global = true, env = "HILOT_WATCH_INTERVAL_S", default_value_t = DEFAULT_WATCH_INTERVAL_S)]
    pub watch_interval_s: u64,

    /// Base map tiles for the dispatch page: a URL template with `{z}`, `{x}`, `{y}` (raster
    /// images, or vector tiles when it ends in `.pbf` or `.mvt`).
    #[arg(long, global = true, env = "HILOT_MAP_TILES")]
    pub map_tiles: Option<String>,

    /// Attribution shown under the base map (required by most tile providers).
    #[arg(long, global = true, env = "HILOT_MAP_ATTRIBUTION")]
    pub map_attribution: Option<String>,

    /// A local PMTiles archive Hilot serves as the base map (no tile server, no internet).
    #[arg(long, global = true, env = "HILOT_MAP_PMTILES")]
    pub map_pmtiles: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            bind: DEFAULT_BIND.to_owned(),
            db_max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            db_background_connections: DEFAULT_DB_BACKGROUND_CONNECTIONS,
            workers: None,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            partitions_ahead: DEFAULT_PARTITIONS_AHEAD,
            token_ttl_days: DEFAULT_TOKEN_TTL_DAYS,
            login_burst_per_phone: DEFAULT_LOGIN_BURST_PER_PHONE,
            login_replenish_per_phone_s: DEFAULT_LOGIN_REPLENISH_PER_PHONE_S,
            login_burst_per_address: DEFAULT_LOGIN_BURST_PER_ADDRESS,
            login_replenish_per_address_s: DEFAULT_LOGIN_REPLENISH_PER_ADDRESS_S,
            trusted_proxies: Vec::new(),
            ping_queue_capacity: DEFAULT_PING_QUEUE_CAPACITY,
            ping_batch_max: DEFAULT_PING_BATCH_MAX,
            ping_flush_interval_ms: DEFAULT_PING_FLUSH_INTERVAL_MS,
            max_speed_kmh: DEFAULT_MAX_SPEED_KMH,
            match_max_accuracy_m: DEFAULT_MATCH_MAX_ACCURACY_M,
            presence_ttl_s: DEFAULT_PRESENCE_TTL_S,
            road_circuity: crate::geo::DEFAULT_ROAD_CIRCUITY,
            travel_speed_kmh: crate::geo::DEFAULT_TRAVEL_SPEED_KMH,
            socket_frames_per_s: DEFAULT_SOCKET_FRAMES_PER_S,
            socket_frame_burst: DEFAULT_SOCKET_FRAME_BURST,
            arrival_radius_m: DEFAULT_ARRIVAL_RADIUS_M,
            arrival_dwell_s: DEFAULT_ARRIVAL_DWELL_S,
            dashboard_flushes_per_s: DEFAULT_DASHBOARD_FLUSHES_PER_S,
            dashboard_subscribes_per_s: DEFAULT_DASHBOARD_SUBSCRIBES_PER_S,
            dashboard_subscribe_burst: DEFAULT_DASHBOARD_SUBSCRIBE_BURST,
            sockets_per_user: DEFAULT_SOCKETS_PER_USER,
            hash_concurrency: None,
            hash_queue: DEFAULT_HASH_QUEUE,
            register_burst_per_address: DEFAULT_REGISTER_BURST_PER_ADDRESS,
            register_replenish_per_address_s: DEFAULT_REGISTER_REPLENISH_PER_ADDRESS_S,
            nearby_burst_per_user: DEFAULT_NEARBY_BURST_PER_USER,
            nearby_replenish_per_user_s: DEFAULT_NEARBY_REPLENISH_PER_USER_S,
            body_timeout_s: DEFAULT_BODY_TIMEOUT_S,
            credential_sweep_s: DEFAULT_CREDENTIAL_SWEEP_S,
            ping_interval_idle_s: crate::ingest::cadence::DEFAULT_IDLE_S,
            ping_interval_active_s: crate::ingest::cadence::DEFAULT_ACTIVE_S,
            ping_interval_arriving_s: crate::ingest::cadence::DEFAULT_ARRIVING_S,
            max_pending_upgrades: DEFAULT_MAX_PENDING_UPGRADES,
            max_inflight_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
            watch_interval_s: DEFAULT_WATCH_INTERVAL_S,
            map_tiles: None,
            map_attribution: None,
            map_pmtiles: None,
            integrations: IntegrationSettings::default(),
        }
    }
}

/// PayMongo's API (the gateway's default base URL).
pub const DEFAULT_GATEWAY_URL: &str = "https://api.paymongo.com";
/// A gateway webhook signed longer ago than this (either way) is refused.
pub const DEFAULT_GATEWAY_WEBHOOK_TOLERANCE_S: u64 = 300;
/// Firebase Cloud Messaging's HTTP v1 API.
pub const DEFAULT_FCM_URL: &str = "https://fcm.googleapis.com";
/// How often an idle outbox worker looks for due deliveries.
pub const DEFAULT_OUTBOX_POLL_MS: u64 = 500;
/// The first retry waits this long; each next one twice as long, up to the maximum.
pub const DEFAULT_OUTBOX_BACKOFF_BASE_MS: u64 = 5_000;
pub const DEFAULT_OUTBOX_BACKOFF_MAX_S: u64 = 3_600;
/// Attempts before a delivery is dead-lettered.
pub const DEFAULT_OUTBOX_MAX_ATTEMPTS: u32 = 12;
/// One delivery attempt (an HTTP call) may take this long.
pub const DEFAULT_OUTBOX_TIMEOUT_S: u64 = 10;
/// Deliveries in flight at once on one node.
pub const DEFAULT_OUTBOX_CONCURRENCY: usize = 16;

/// Outside services: the payment gateway (PayMongo's API), push (FCM HTTP v1) and the outbox
/// that delivers push notifications, operator webhooks and gateway refunds.
#[derive(Debug, Clone, Args)]
pub struct IntegrationSettings {
    /// Base URL of the payment gateway (PayMongo's API shape).
    #[arg(long, global = true, env = "HILOT_GATEWAY_URL", default_value = DEFAULT_GATEWAY_URL)]
    pub gateway_url: String,

    /// The gateway's secret API key. Without it, card, GCash and Maya payments are refused.
    #[arg(
        long,
        global = true,
        env = "HILOT_GATEWAY_SECRET_KEY",
        hide_env_values = true
    )]
    pub gateway_secret_key: Option<String>,

    /// The secret the gateway signs its webhooks with.
    #[arg(
        long,
        global = true,
        env = "HILOT_GATEWAY_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub gateway_webhook_secret: Option<String>,

    /// Seconds a gateway webhook's signature time may differ from ours.
    #[arg(long, global = true, env = "HILOT_GATEWAY_WEBHOOK_TOLERANCE_S", default_value_t = DEFAULT_GATEWAY_WEBHOOK_TOLERANCE_S)]
    pub gateway_webhook_tolerance_s: u64,

    /// Base URL of Firebase Cloud Messaging (HTTP v1).
    #[arg(long, global = true, env = "HILOT_FCM_URL", default_value = DEFAULT_FCM_URL)]
    pub fcm_url: String,

    /// The Firebase project push notifications are sent through. Without it, push is off.
    #[arg(long, global = true, env = "HILOT_FCM_PROJECT_ID")]
    pub fcm_project_id: Option<String>,

    /// A file holding a current OAuth 2 access token for FCM, re-read before each send (a
    /// sidecar or workload identity keeps it fresh).
    #[arg(long, global = true, env = "HILOT_FCM_ACCESS_TOKEN_FILE")]
    pub fcm_access_token_file: Option<String>,

    /// Milliseconds an idle outbox worker waits before looking for due deliveries again.
    #[arg(long, global = true, env = "HILOT_OUTBOX_POLL_MS", default_value_t = DEFAULT_OUTBOX_POLL_MS)]
    pub outbox_poll_ms: u64,

    /// Milliseconds before the first retry of a failed delivery (doubling each time).
    #[arg(long, global = true, env = "HILOT_OUTBOX_BACKOFF_BASE_MS", default_value_t = DEFAULT_OUTBOX_BACKOFF_BASE_MS)]
    pub outbox_backoff_base_ms: u64,

    /// Longest wait between two attempts, in seconds.
    #[arg(long, global = true, env = "HILOT_OUTBOX_BACKOFF_MAX_S", default_value_t = DEFAULT_OUTBOX_BACKOFF_MAX_S)]
    pub outbox_backoff_max_s: u64,

    /// Attempts before a delivery is dead-lettered.
    #[arg(long, global = true, env = "HILOT_OUTBOX_MAX_ATTEMPTS", default_value_t = DEFAULT_OUTBOX_MAX_ATTEMPTS)]
    pub outbox_max_attempts: u32,

    /// Seconds one delivery attempt may take.
    #[arg(long, global = true, env = "HILOT_OUTBOX_TIMEOUT_S", default_value_t = DEFAULT_OUTBOX_TIMEOUT_S)]
    pub outbox_timeout_s: u64,

    /// Deliveries in flight at once on this node.
    #[arg(long, global = true, env = "HILOT_OUTBOX_CONCURRENCY", default_value_t = DEFAULT_OUTBOX_CONCURRENCY)]
    pub outbox_concurrency: usize,

    /// Let operator webhooks reach loopback, private and link-local addresses (`true` for
    /// receivers on the operator's own network). Off by default, so that an admin's token
    /// cannot aim Hilot at the metadata service, the database, Redis or another internal
    /// service.
    #[arg(long, global = true, env = "HILOT_WEBHOOK_PRIVATE_ADDRESSES", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_private_addresses: bool,
}

impl Default for IntegrationSettings {
    fn default() -> Self {
        Self {
            gateway_url: DEFAULT_GATEWAY_URL.to_owned(),
            gateway_secret_key: None,
            gateway_webhook_secret: None,
            gateway_webhook_tolerance_s: DEFAULT_GATEWAY_WEBHOOK_TOLERANCE_S,
            fcm_url: DEFAULT_FCM_URL.to_owned(),
            fcm_project_id: None,
            fcm_access_token_file: None,
            outbox_poll_ms: DEFAULT_OUTBOX_POLL_MS,
            outbox_backoff_base_ms: DEFAULT_OUTBOX_BACKOFF_BASE_MS,
            outbox_backoff_max_s: DEFAULT_OUTBOX_BACKOFF_MAX_S,
            outbox_max_attempts: DEFAULT_OUTBOX_MAX_ATTEMPTS,
            outbox_timeout_s: DEFAULT_OUTBOX_TIMEOUT_S,
            outbox_concurrency: DEFAULT_OUTBOX_CONCURRENCY,
            webhook_private_addresses: false,
        }
    }
}

impl Settings {
    /// The database URL to use: the configured one, else the local cluster's.
    pub fn resolved_database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(url.to_owned());
        }
        local_env_value("HILOT_LOCAL_DATABASE_URL").ok_or_else(|| {
            anyhow::anyhow!(
                "no DATABASE_URL given and no local cluster found: run `scripts/dev-env up` \
                 or set DATABASE_URL"
            )
        })
    }

    /// Passwords hashed at once: the setting, else one per core.
    pub fn hash_threads(&self) -> usize {
        self.hash_concurrency
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
    }

    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.is_empty())
    }

    /// The ping intervals the server asks of therapist apps.
    pub fn cadence(&self) -> crate::ingest::cadence::Cadence {
        crate::ingest::cadence::Cadence {
            idle_s: self.ping_interval_idle_s,
            active_s: self.ping_interval_active_s,
            arriving_s: self.ping_interval_arriving_s,
            presence_ttl: Duration::from_secs(self.presence_ttl_s),
        }
    }
}

/// Reads `NAME` from the `.hilot-local/env` file that `scripts/dev-env` writes, looking in the
/// current directory and its parents, so the binary works from anywhere inside the checkout.
pub fn local_env_value(name: &str) -> Option<String> {
    let file = find_local_env_file(&std::env::current_dir().ok()?)?;
    parse_env_file(&std::fs::read_to_string(file).ok()?, name)
}

fn find_local_env_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(LOCAL_ENV_DIR).join("env"))
        .find(|candidate| candidate.is_file())
}

/// Finds `NAME=value` (optionally prefixed by `export`, optionally quoted) in shell-style text.
fn parse_env_file(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches(['"', '\'']).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_values_are_found_with_or_without_export_and_quotes() {
        let text =
            "# local services\nexport HILOT_LOCAL_DATABASE_URL='postgres://a@b/c'\nOTHER=1\n";
        assert_eq!(
            parse_env_file(text, "HILOT_LOCAL_DATABASE_URL").as_deref(),
            Some("postgres://a@b/c")
        );
        assert_eq!(parse_env_file(text, "OTHER").as_deref(), Some("1"));
        assert_eq!(parse_env_file(text, "MISSING"), None);
    }
}
