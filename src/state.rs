//! What every request handler, socket and background task shares.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::accounts::tokens::TokenCache;
use crate::catalog::ServiceCatalog;
use crate::cluster::limits::ClusterLimits;
use crate::cluster::link::LinkStatus;
use crate::cluster::replication::Replication;
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::geo::index::LiveIndex;
use crate::geo::EtaModel;
use crate::http::limits::LoginLimiter;
use crate::ingest::Ingest;
use crate::messages::{ChatMessage, Parties, ReadReceipt, Side};
use crate::money::payments::Payments;
use crate::realtime::bus::EventBus;
use crate::realtime::dashboard::Dashboards;
use crate::realtime::{SocketCounter, UpgradeGate};

/// Cheap to clone: everything inside is a handle.
#[derive(Clone)]
pub struct AppState {
    /// Requests' connections: a request waits at most a second for one, then answers 503.
    pub db: PgPool,
    /// The server's own work (dispatch, the ping writer, partition upkeep), never shed.
    pub background_db: PgPool,
    /// Present only when `REDIS_URL` is configured (multi-node mode).
    pub redis: Option<redis::aio::ConnectionManager>,
    pub settings: Arc<Settings>,
    pub started_at: Instant,
    pub login_limiter: Arc<LoginLimiter>,
    pub tokens: Arc<TokenCache>,
    pub catalog: Arc<ServiceCatalog>,
    /// The live H3 index of therapists.
    pub index: Arc<LiveIndex>,
    /// The ping pipeline (validation, storage policy, batched writer queue).
    pub ingest: Arc<Ingest>,
    pub eta: EtaModel,
    pub sockets: SocketCounter,
    /// WebSocket handshakes in progress, bounded.
    pub upgrades: UpgradeGate,
    /// Requests in progress, bounded.
    pub requests: Arc<crate::http::limits::InFlight>,
    /// Book-now dispatch: offers, accepts, the lifecycle, live status.
    pub dispatcher: Dispatcher,
    /// Frames to users, on whichever node their sockets are.
    pub bus: EventBus,
    /// Dispatch dashboards connected to this server, with their viewports.
    pub dashboards: Arc<Dashboards>,
    /// Tells the other nodes what this one learnt about therapists (single node: nobody).
    pub replication: Arc<Replication>,
    /// This node's Redis link, as health and metrics report it.
    pub cluster_link: Arc<LinkStatus>,
    /// Login (and registration) limits counted across the cluster (single node: none).
    pub cluster_limits: Arc<ClusterLimits>,
    /// The dispatch page's base map (tiles, a PMTiles archive, or none), checked at start-up.
    pub base_map: Arc<crate::http::map::BaseMap>,
    /// The payment gateway, when configured.
    pub payments: Payments,
    /// Flips to `true` once at shutdown; sockets and background tasks wind down.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Reloads a therapist into the live index after their profile, services, availability or
    /// verification changed. A failure is logged: the index heals on the next change or restart.
    pub async fn provider_changed(&self, provider_id: i64) {
        if let Err(error) = crate::geo::load::refresh(
            &self.db,
            &self.index,
            provider_id,
            self.settings.match_max_accuracy_m,
        )
        .await
        {
            tracing::error!(
                provider_id,
                error = format!("{error:#}"),
                "refreshing the live index failed"
            );
        }
        self.replication.profile(provider_id);
    }

    /// Sends a chat message to both parties' sockets (the sender's other devices see it too).
    pub async fn deliver_message(&self, message: &ChatMessage, parties: &Parties) {
        let frame: Arc<str> = message.frame().into();
        for user_id in parties.users() {
            self.bus.to_user(user_id, frame.clone()).await;
        }
    }

    /// Tells the other party their messages were read.
    pub async fn deliver_read_receipt(
        &self,
        receipt: &ReadReceipt,
        reader: Side,
        parties: &Parties,
    ) {
        if receipt.message_ids.is_empty() {
            return;
        }
        let frame: Arc<str> = receipt.frame(reader).into();
        for user_id in parties.users() {
            self.bus.to_user(user_id, frame.clone()).await;
        }
    }
}
