//! What every request handler, socket and background task shares.

use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::accounts::password::HashPool;
use crate::accounts::tokens::TokenCache;
use crate::catalog::ServiceCatalog;
use crate::cluster::limits::ClusterLimits;
use crate::cluster::link::LinkStatus;
use crate::cluster::replication::Replication;
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::fanout::bus::EventBus;
use crate::fanout::dashboard::Dashboards;
use crate::fanout::sockets::{CredentialEvent, SocketRegistry};
use crate::fanout::{SocketCounter, UpgradeGate};
use crate::geo::index::LiveIndex;
use crate::geo::EtaModel;
use crate::ingest::Ingest;
use crate::limits::{Limits, LoginLimiter};
use crate::messages::{ChatMessage, Parties, ReadReceipt, Side};
use crate::money::payments::Payments;
use crate::schedule::diary::Diary;

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
    /// Registration and nearby-search limits.
    pub limits: Arc<Limits>,
    /// Argon2id on a few threads of its own with a short queue.
    pub hashes: Arc<HashPool>,
    /// The sockets open on this node, so ended credentials can close them.
    pub socket_registry: Arc<SocketRegistry>,
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
    pub requests: Arc<crate::limits::InFlight>,
    /// Book-now dispatch: offers, accepts, the lifecycle, live status.
    pub dispatcher: Dispatcher,
    /// Frames to users, on whichever node their sockets are.
    pub bus: EventBus,
    /// Dispatch dashboards connected to this server, with their viewports.
    pub dashboards: Arc<Dashboards>,
    /// Every therapist's calendar, in memory (slots near a place, the matcher's eligibility).
    pub diary: Arc<Diary>,
    /// Tells the other nodes what this one learnt about therapists (single node: nobody).
    pub replication: Arc<Replication>,
    /// This node's Redis link, as health and metrics report it.
    pub cluster_link: Arc<LinkStatus>,
    /// Login (and registration) limits counted across the cluster (single node: none).
    pub cluster_limits: Arc<ClusterLimits>,
    /// The dispatch page's base map (tiles, a PMTiles archive, or none), checked at start-up.
    pub base_map: Arc<crate::console::basemap::BaseMap>,
    /// The payment gateway, when configured.
    pub payments: Payments,
    /// Flips to `true` once at shutdown; sockets and background tasks wind down.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Credentials ended (logout, revocation, a role removed, an account deactivated, a
    /// therapist suspended or rejected): applied on this node at once and published to the
    /// others, each of which evicts its token cache, closes the affected sockets and drops the
    /// therapist from its live index.
    pub async fn credentials_ended(&self, event: CredentialEvent) {
        let payload = serde_json::to_string(&event).expect("credential events serialise");
        self.bus.control(payload).await;
    }

    /// What a node does with a [`CredentialEvent`] (installed as the bus's control handler).
    pub fn apply_credential_event(&self, payload: &str) {
        let event: CredentialEvent = match serde_json::from_str(payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed credential event");
                return;
            }
        };
        match &event {
            CredentialEvent::TokenEnded { token_id, .. } => self.tokens.evict_token(*token_id),
            _ => self.tokens.evict_user(event.user_id()),
        }
        let closed = self.socket_registry.apply(&event);
        if closed > 0 {
            tracing::info!(
                user_id = event.user_id(),
                closed,
                "sockets closed: credentials ended"
            );
        }
        if !matches!(event, CredentialEvent::TokenEnded { .. }) {
            // The live index on this node must stop matching the therapist now too.
            let state = self.clone();
            tokio::spawn(async move { state.user_changed(event.user_id()).await });
        }
    }

    /// The safety net under the credential events: every `HILOT_CREDENTIAL_SWEEP_S`, one
    /// query checks the tokens of every socket on this node, and sockets whose token ended or
    /// whose user lost the role close. It catches what an event could not say: a publish lost
    /// while Redis was away, or a change made in the database by hand.
    pub async fn sweep_credentials(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        use crate::fanout::sockets::Ending;
        let interval = std::time::Duration::from_secs(self.settings.credential_sweep_s.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let sockets = self.socket_registry.snapshot();
            if sockets.is_empty() {
                continue;
            }
            let mut tokens: Vec<i64> = sockets.iter().map(|(_, token, _)| *token).collect();
            tokens.sort_unstable();
            tokens.dedup();
            let valid = match crate::accounts::tokens::still_valid(&self.db, &tokens).await {
                Ok(valid) => valid,
                Err(error) => {
                    tracing::warn!(%error, "checking the credentials of open sockets failed");
                    continue;
                }
            };
            for (id, token, kind) in sockets {
                match valid.get(&token) {
                    None => self.socket_registry.end_socket(id, Ending::Revoked),
                    Some(roles) if !kind.allowed(roles) => {
                        self.socket_registry.end_socket(id, Ending::RoleRemoved)
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Reloads the user's therapist (if any) into the live index.
    pub async fn user_changed(&self, user_id: i64) {
        let provider: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT id FROM providers WHERE user_id = $1 AND type = 'therapist' AND deleted_at IS NULL",
        )
        .bind(user_id)
        .fetch_optional(&self.db)
        .await;
        match provider {
            Ok(Some(provider_id)) => self.provider_changed(provider_id).await,
            Ok(None) => {}
            Err(error) => tracing::warn!(user_id, %error, "finding a user's therapist failed"),
        }
    }

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
        self.diary.changed(&self.db, provider_id).await;
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
