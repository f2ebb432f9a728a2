//! Builds the application (pool, migrations, background tasks, HTTP server) and runs it until a
//! signal or a programmatic stop, then drains.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing_actix_web::TracingLogger;

use crate::accounts::password::HashPool;
use crate::accounts::tokens::TokenCache;
use crate::catalog::ServiceCatalog;
use crate::cluster::limits::ClusterLimits;
use crate::cluster::link::LinkStatus;
use crate::cluster::replication::{Appliers, Replication};
use crate::config::Settings;
use crate::dispatch::{Dispatcher, Geofence};
use crate::fanout::bus::EventBus;
use crate::fanout::dashboard::Dashboards;
use crate::fanout::hub::Hub;
use crate::fanout::sockets::SocketRegistry;
use crate::fanout::{SocketCounter, UpgradeGate};
use crate::geo::index::{LiveFix, LiveIndex, Moved};
use crate::geo::EtaModel;
use crate::http::extract::BodyLimit;
use crate::ingest::validate::PingLimits;
use crate::ingest::writer::{PingRecord, WriterConfig};
use crate::ingest::{settings as ingest_settings, Ingest};
use crate::limits::{KeyedLimiter, LimitRule, Limits, LoginLimiter};
use crate::schedule::diary::Diary;
use crate::state::AppState;
use crate::{db, geo, http, ingest, partitions, telemetry};

/// Connections the outbox worker (booking events, push, webhooks, refunds) may hold, apart from
/// the request pool.
pub const OUTBOX_DB_CONNECTIONS: u32 = 6;
/// Connections of the ping writer's own (it commits one batch at a time).
pub const WRITER_CONNECTIONS: u32 = 2;
/// How long to wait for Redis at start-up before giving up with a clear error.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Once running, a Redis command (or a reconnection attempt) gives up after this long.
pub const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    shutdown: watch::Sender<bool>,
    ping_queue: mpsc::Receiver<PingRecord>,
}

/// Stops a running application from outside (tests; the signal handler does the same).
#[derive(Clone)]
pub struct StopHandle {
    shutdown: watch::Sender<bool>,
}

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let _ = telemetry::metrics_handle();
        let base_map = Arc::new(crate::console::basemap::BaseMap::from_settings(&settings)?);
        let pool = db::connect_and_migrate(&settings).await?;
        let background = db::background_pool(&settings)?;
        partitions::ensure(&pool, Utc::now().date_naive(), settings.partitions_ahead)
            .await
            .context("creating location partitions at start-up")?;
        let redis = match settings.redis_url() {
            None => None,
            Some(url) => Some(connect_redis(url).await?),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let hub = Hub::start();
        let cluster_link = Arc::new(LinkStatus::default());
        // Channels are named after the database, so deployments (and test runs) sharing a
        // Redis do not hear each other.
        let channel_prefix = match &redis {
            None => None,
            Some(_) => Some(format!(
                "hilot:{}",
                sqlx::query_scalar::<_, String>("SELECT current_database()")
                    .fetch_one(&pool)
                    .await
                    .context("reading the database name")?
            )),
        };
        let bus = match (&redis, &channel_prefix) {
            (Some((client, manager)), Some(prefix)) => EventBus::redis(
                hub,
                client.clone(),
                manager.clone(),
                format!("{prefix}:events"),
                cluster_link.clone(),
                pool.clone(),
                shutdown_rx.clone(),
            ),
            _ => EventBus::local(hub),
        };

        let index = Arc::new(LiveIndex::new(Duration::from_secs(settings.presence_ttl_s)));
        let loaded = geo::load::rebuild(&pool, &index, settings.match_max_accuracy_m)
            .await
            .context("rebuilding the live index")?;
        tracing::info!(therapists = loaded, "live index rebuilt from the database");
        let (ping_tx, ping_queue) = mpsc::channel(settings.ping_queue_capacity.max(1));
        let policy = ingest_settings::storage_policy(&pool).await?;
        let ingest = Arc::new(Ingest::new(
            index.clone(),
            ping_tx,
            PingLimits {
                max_speed_kmh: settings.max_speed_kmh,
                match_max_accuracy_m: settings.match_max_accuracy_m,
            },
            policy,
        ));

        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("cannot listen on {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let dashboards = Arc::new(Dashboards::default());
        let diary = Arc::new(Diary::new());
        let calendars = diary
            .reload_all(&pool)
            .await
            .context("loading therapists' calendars")?;
        tracing::info!(therapists = calendars, "calendars loaded");
        let dispatcher = Dispatcher::new(
            background.clone(),
            index.clone(),
            bus.clone(),
            dashboards.clone(),
            EtaModel {
                road_circuity: settings.road_circuity,
                speed_kmh: settings.travel_speed_kmh,
            },
            Geofence {
                radius_m: settings.arrival_radius_m,
                dwell: Duration::from_secs(settings.arrival_dwell_s),
            },
            diary.clone(),
            shutdown_rx.clone(),
        );
        // What a fix sets off, whichever node received it: the booking's trip (wherever it is
        // tracked) and the dashboards.
        let moved: Arc<dyn Fn(i64, LiveFix, Moved) + Send + Sync> = {
            let dispatcher = dispatcher.clone();
            let dashboards = dashboards.clone();
            Arc::new(move |provider_id, fix, moved| {
                dispatcher.on_fix(provider_id, fix, &moved);
                if !dashboards.is_empty() {
                    dashboards.moved(provider_id, moved.uuid, fix, moved.state);
                }
            })
        };
        let replication = Arc::new(match (&redis, &channel_prefix) {
            (Some((client, manager)), Some(prefix)) => Replication::redis(
                client.clone(),
                manager.clone(),
                format!("{prefix}:index"),
                cluster_link.clone(),
                Appliers {
                    index: index.clone(),
                    db: background.clone(),
                    match_max_accuracy_m: settings.match_max_accuracy_m,
                    moved: moved.clone(),
                    booking: {
                        let dashboards = dashboards.clone();
                        Arc::new(move |at, frame| dashboards.booking_changed_here(at, frame))
                    },
                },
                shutdown_rx.clone(),
            ),
            _ => Replication::local(),
        });
        let redis = redis.map(|(_, manager)| manager);
        let cluster_limits = Arc::new(match (&redis, &channel_prefix) {
            (Some(manager), Some(prefix)) => ClusterLimits::redis(manager.clone(), prefix.clone()),
            _ => ClusterLimits::local(),
        });
        {
            let observer = dashboards.clone();
            let matcher = dispatcher.clone();
            index.observe(Arc::new(move |change| {
                observer.state_changed(change);
                matcher.therapist_state_changed(change);
            }));
            let to_others = replication.clone();
            index.observe_dispatch(Arc::new(move |provider_id, change| {
                to_others.dispatch_state(provider_id, change)
            }));
            let to_others = replication.clone();
            dashboards.observe_bookings(Arc::new(move |at, frame| to_others.booking(at, frame)));
            let to_others = replication.clone();
            ingest.on_moved(Arc::new(move |provider_id, fix, moved_to| {
                to_others.fix(provider_id, fix, Utc::now());
                moved(provider_id, fix, moved_to);
            }));
        }
        let active = dispatcher.resume().await.context("resuming dispatch")?;
        tracing::info!(active, "active bookings resumed");
        let payments = payments(&settings);
        let upgrades = UpgradeGate::new(settings.max_pending_upgrades);
        let requests = Arc::new(crate::limits::InFlight::new(settings.max_inflight_requests));
        let state = AppState {
            payments,
            db: pool,
            background_db: background,
            redis,
            login_limiter: Arc::new(login_limiter(&settings)),
            limits: Arc::new(request_limits(&settings)),
            hashes: Arc::new(HashPool::new(settings.hash_threads(), settings.hash_queue)),
            socket_registry: Arc::new(if settings.redis_url().is_some() {
                SocketRegistry::clustered(settings.sockets_per_user, bus.clone())
            } else {
                SocketRegistry::new(settings.sockets_per_user)
            }),
            eta: EtaModel {
                road_circuity: settings.road_circuity,
                speed_kmh: settings.travel_speed_kmh,
            },
            settings: Arc::new(settings),
            started_at: Instant::now(),
            tokens: Arc::new(TokenCache::default()),
            catalog: Arc::new(ServiceCatalog::default()),
            index,
            ingest,
            sockets: SocketCounter::default(),
            upgrades,
            requests,
            shutdown: shutdown_rx,
            dispatcher,
            bus,
            dashboards,
            diary,
            replication,
            cluster_link,
            cluster_limits,
            base_map,
        };
        {
            let handler_state = state.clone();
            state.bus.on_control(Arc::new(move |payload| {
                handler_state.apply_credential_event(&payload)
            }));
        }
        tokio::spawn(
            state
                .socket_registry
                .clone()
                .keep_alive(state.shutdown.clone()),
        );
        let server = http_server(state.clone(), listener)?;
        Ok(Self {
            port,
            server,
            state,
            shutdown,
            ping_queue,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shutdown: self.shutdown.clone(),
        }
    }

    /// Serves until SIGTERM/SIGINT or [`StopHandle::stop`], then drains: stop accepting, close
    /// sockets once their queued pings are acknowledged, write every queued ping, let in-flight
    /// requests finish (up to the grace period), stop background tasks.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            port,
            server,
            state,
            shutdown,
            ping_queue,
        } = self;
        let server_handle = server.handle();
        let mut server_task = tokio::spawn(server);
        let grace = Duration::from_secs(state.settings.shutdown_grace_s);
        // The writer's own connections: an ack waits for its batch's commit, and on the shared
        // pool a batch queued behind other work.
        let writer = tokio::spawn(ingest::writer::run(
            db::dedicated_pool(&state.background_db, WRITER_CONNECTIONS),
            ping_queue,
            WriterConfig {
                batch_max: state.settings.ping_batch_max.max(1),
                flush_interval: Duration::from_millis(state.settings.ping_flush_interval_ms.max(1)),
                drain_deadline: grace + Duration::from_secs(5),
            },
            state.sockets.shared(),
            shutdown.subscribe(),
        ));
        let maintenance = tokio::spawn(partitions::run_maintenance(
            state.background_db.clone(),
            state.settings.partitions_ahead,
            shutdown.subscribe(),
        ));
        let settings_refresh = tokio::spawn(ingest_settings::keep_policy_fresh(
            state.background_db.clone(),
            state.ingest.clone(),
            shutdown.subscribe(),
        ));
        // Pending bookings are the matcher's: it reloads them once this node holds the lease.
        let matcher = state.dispatcher.start_matching();
        let diary = tokio::spawn(crate::schedule::diary::run(
            state.diary.clone(),
            state.db.clone(),
            shutdown.subscribe(),
        ));
        let scheduled = tokio::spawn(crate::dispatch::scheduled::run(
            state.dispatcher.clone(),
            shutdown.subscribe(),
        ));
        let sweep = {
            let state = state.clone();
            let shutdown = shutdown.subscribe();
            tokio::spawn(async move { state.sweep_credentials(shutdown).await })
        };
        let visits = {
            let dispatcher = state.dispatcher.clone();
            tokio::spawn(crate::stores::visits::run_sweeper(
                state.background_db.clone(),
                Duration::from_secs(state.settings.watch_interval_s.max(1)),
                move |booking_id| {
                    let dispatcher = dispatcher.clone();
                    async move { dispatcher.announce(booking_id).await }
                },
                shutdown.subscribe(),
            ))
        };
        let alerts = {
            let listening = state.dashboards.clone();
            let audience = state.dashboards.clone();
            tokio::spawn(crate::console::alerts::watch(
                state.background_db.clone(),
                Duration::from_secs(state.settings.watch_interval_s.max(1)),
                move || !listening.is_empty(),
                move |frame| audience.broadcast(&frame),
                shutdown.subscribe(),
            ))
        };
        // The outbox has its own few connections, so deliveries never starve requests.
        let outbox_db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(OUTBOX_DB_CONNECTIONS)
            .acquire_timeout(crate::config::DB_ACQUIRE_TIMEOUT)
            .connect_lazy_with((*state.db.connect_options()).clone());
        let outbox = tokio::spawn(crate::outbox::worker::run(
            outbox_db.clone(),
            couriers(&state, &outbox_db)?,
            outbox_config(&state.settings),
            shutdown.subscribe(),
        ));
        let gauges = tokio::spawn(telemetry::export_gauges(
            state.clone(),
            shutdown.subscribe(),
        ));
        tracing::info!(port, "hilot serving");

        let mut stop_requested = shutdown.subscribe();
        tokio::select! {
            signal = shutdown_signal() => tracing::info!(signal, "signal received, draining"),
            _ = stop_requested.wait_for(|stop| *stop) => tracing::info!("stop requested, draining"),
            result = &mut server_task => {
                result.context("HTTP server task")?.context("HTTP server")?;
            }
        }
        let _ = shutdown.send(true);
        drain(server_handle, server_task).await;
        let _ = writer.await;
        let _ = tokio::join!(
            maintenance,
            settings_refresh,
            gauges,
            sweep,
            outbox,
            matcher,
            diary,
            scheduled,
            visits,
            alerts
        );
        outbox_db.close().await;
        state.db.close().await;
        state.background_db.close().await;
        tracing::info!("hilot stopped");
        Ok(())
    }
}

async fn drain(handle: ServerHandle, task: tokio::task::JoinHandle<std::io::Result<()>>) {
    handle.stop(true).await;
    if !task.is_finished() {
        let _ = task.await;
    }
}

fn http_server(state: AppState, listener: TcpListener) -> anyhow::Result<Server> {
    let max_body = state.settings.max_body_bytes;
    let body_limits = http::body::BodyLimits {
        max_bytes: max_body,
        deadline: Duration::from_secs(state.settings.body_timeout_s.max(1)),
    };
    let grace = state.settings.shutdown_grace_s;
    let workers = state.settings.workers;
    let data = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(BodyLimit(max_body))
            .app_data(body_limits)
            .app_data(web::PathConfig::default().error_handler(http::path_error))
            .configure(http::configure)
            .default_service(web::to(http::not_found))
            .wrap(from_fn(http::auth::gate_roles))
            .wrap(from_fn(http::body::limit_bodies))
            .wrap(from_fn(http::observe))
            .wrap(http::security_headers())
            .wrap(TracingLogger::<http::AccessSpan>::new())
    })
    .listen(listener)?
    // Signals are ours to handle: draining must also stop sockets and flush queues.
    .disable_signals()
    .shutdown_timeout(grace);
    if let Some(workers) = workers {
        server = server.workers(workers);
    }
    Ok(server.run())
}

fn request_limits(settings: &Settings) -> Limits {
    Limits {
        register_per_address: KeyedLimiter::new(LimitRule {
            burst: settings.register_burst_per_address,
            replenish: Duration::from_secs(settings.register_replenish_per_address_s),
        }),
        nearby_per_user: KeyedLimiter::new(LimitRule {
            burst: settings.nearby_burst_per_user,
            replenish: Duration::from_secs(settings.nearby_replenish_per_user_s),
        }),
    }
}

/// The HTTP client of outside calls (gateway, push, webhooks); each call is also bounded by the
/// outbox's attempt timeout.
fn outside_client(settings: &Settings) -> reqwest::Client {
    outside_client_builder(settings).build().unwrap_or_default()
}

/// The client of operator webhooks: [`outside_client`], connecting only to public addresses
/// unless the operator allows internal ones. An error rather than a default client: a default
/// one would resolve internal addresses.
fn webhook_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    let builder = outside_client_builder(settings);
    let builder = if settings.integrations.webhook_private_addresses {
        builder
    } else {
        builder.dns_resolver(Arc::new(crate::webhooks::address::PublicAddressesOnly))
    };
    builder.build().context("building the webhook client")
}

fn outside_client_builder(settings: &Settings) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(
            settings.integrations.outbox_timeout_s.max(1),
        ))
        .connect_timeout(Duration::from_secs(5))
        // A receiver's redirect is a failed delivery, not a hop: a webhook endpoint must not
        // steer Hilot's requests to another (internal) address.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hilot/", env!("CARGO_PKG_VERSION")))
}

fn payments(settings: &Settings) -> crate::money::payments::Payments {
    let i = &settings.integrations;
    let gateway = i
        .gateway_secret_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(|key| {
            Arc::new(crate::money::gateway::paymongo::PayMongo::new(
                outside_client(settings),
                &i.gateway_url,
                key,
                i.gateway_webhook_secret.clone().filter(|s| !s.is_empty()),
                i.gateway_webhook_tolerance_s,
            )) as Arc<dyn crate::money::gateway::Gateway>
        });
    crate::money::payments::Payments { gateway }
}

/// Who delivers each outbox channel: booking events and webhooks always; push when FCM is configured; refunds when
/// the gateway is. Jobs of a channel without a courier wait until one is configured.
fn couriers(state: &AppState, db: &sqlx::PgPool) -> anyhow::Result<crate::outbox::Couriers> {
    use crate::outbox::Channel;
    let settings = &state.settings;
    let client = outside_client(settings);
    let mut couriers: crate::outbox::Couriers = vec![
        (
            Channel::Event,
            Arc::new(crate::effects::EventCourier { db: db.clone() }),
        ),
        (
            Channel::Webhook,
            Arc::new(crate::webhooks::WebhookCourier {
                db: db.clone(),
                client: webhook_client(settings)?,
                private_addresses_allowed: settings.integrations.webhook_private_addresses,
            }),
        ),
    ];
    if let Some(project) = settings
        .integrations
        .fcm_project_id
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        let sender = crate::notifications::push::FcmSender::new(
            client,
            &settings.integrations.fcm_url,
            project,
            settings.integrations.fcm_access_token_file.clone(),
        );
        couriers.push((
            Channel::Push,
            Arc::new(crate::notifications::push::PushCourier {
                db: db.clone(),
                sender: Arc::new(sender),
            }),
        ));
    }
    if let Some(gateway) = &state.payments.gateway {
        couriers.push((
            Channel::Gateway,
            Arc::new(crate::money::payments::RefundCourier {
                db: db.clone(),
                gateway: gateway.clone(),
            }),
        ));
    }
    Ok(couriers)
}

fn outbox_config(settings: &Settings) -> crate::outbox::worker::WorkerConfig {
    let i = &settings.integrations;
    crate::outbox::worker::WorkerConfig {
        poll: Duration::from_millis(i.outbox_poll_ms.max(10)),
        backoff_base: Duration::from_millis(i.outbox_backoff_base_ms.max(1)),
        backoff_max: Duration::from_secs(i.outbox_backoff_max_s.max(1)),
        max_attempts: i.outbox_max_attempts.max(1),
        attempt_timeout: Duration::from_secs(i.outbox_timeout_s.max(1)),
        concurrency: i.outbox_concurrency.max(1),
    }
}

fn login_limiter(settings: &Settings) -> LoginLimiter {
    LoginLimiter::new(
        LimitRule {
            burst: settings.login_burst_per_phone,
            replenish: Duration::from_secs(settings.login_replenish_per_phone_s),
        },
        LimitRule {
            burst: settings.login_burst_per_address,
            replenish: Duration::from_secs(settings.login_replenish_per_address_s),
        },
    )
}

async fn connect_redis(
    url: &str,
) -> anyhow::Result<(redis::Client, redis::aio::ConnectionManager)> {
    let client = redis::Client::open(url)
        .with_context(|| format!("REDIS_URL is not a valid Redis URL: {}", db::redact(url)))?;
    // A Redis that goes away must not hold up a request: commands fail fast and the manager
    // reconnects in the background (callers fall back to this node's own view meanwhile).
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_COMMAND_TIMEOUT)
        .set_response_timeout(REDIS_COMMAND_TIMEOUT)
        .set_number_of_retries(1);
    tokio::time::timeout(
        REDIS_CONNECT_TIMEOUT,
        redis::aio::ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "no answer from Redis at {} within {REDIS_CONNECT_TIMEOUT:?}",
            db::redact(url)
        )
    })?
    .with_context(|| format!("cannot connect to Redis at {}", db::redact(url)))
    .map(|manager| (client, manager))
}

/// Resolves on SIGTERM or Ctrl-C, naming which.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = ctrl_c => "SIGINT",
            },
            Err(_) => {
                ctrl_c.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "SIGINT"
    }
}
