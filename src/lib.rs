//! Hilot: geospatial on-demand dispatch for home-service therapists.
//!
//! # Layout
//! - [`config`]: settings from flags or the environment; every default is a named constant.
//! - [`startup`]: builds the application (pool, migrations, background tasks, HTTP server) and
//!   drains it on SIGTERM.
//! - [`http`]: routes by area, extractors, middleware and the generated OpenAPI document.
//! - [`error`]: the one error type, rendered as problem+json.
//! - [`db`]: the PostgreSQL pool, migrations and version checks.
//! - [`domain`]: pure rules: validation, money.
//! - [`accounts`]: users, roles, phone numbers, passwords and tokens.
//! - [`providers`]: therapists: ownership lookups, platform limits, going online.
//! - [`audit`]: `audit_logs` rows for every admin decision and role change.
//! - [`catalog`]: the service catalog's ids, cached in memory.
//! - [`schedule`]: weekly schedules, blocked times, slots, and whether a booking fits a
//!   therapist's day (scheduled bookings and book-now feasibility).
//! - [`geo`]: great-circle distance, ETAs, and the live H3 index of therapists.
//! - [`ingest`]: location pings: validation, storage policy, the batched writer.
//! - [`console`]: the dispatch console: booking detail, search, alerts, trip replay.
//! - [`dispatch`]: book now: offers, atomic accept, the booking lifecycle, geofence arrival.
//! - [`fanout`]: delivery below dispatch: the event bus, this node's hub, the dashboard feed.
//! - [`realtime`]: WebSocket sessions (one task per socket).
//! - [`shutdown`]: the signal every task watches.
//! - [`cluster`]: several nodes, one service: the live index replicated through Redis, the
//!   Redis link and its recovery.
//! - [`stores`]: wellness centres: profiles, opening hours, rooms, nearby stores, in-store
//!   bookings.
//! - [`partitions`]: the monthly `provider_locations` partition manager.
//! - [`money`]: the ledger (transactions, wallets, the platform's side), settlement, the
//!   payment gateway (PayMongo), tips and payouts.
//! - [`effects`]: what a booking's status change sets off in its own transaction: money,
//!   notifications, operator webhooks.
//! - [`reviews`]: reviews of both parties and their moderation.
//! - [`messages`]: the in-booking chat between customer and therapist.
//! - [`notifications`]: notification rows, device tokens, push (FCM v1), reminders.
//! - [`webhooks`]: operator webhook endpoints and Standard Webhooks signing.
//! - [`outbox`]: at-least-once delivery of push, webhooks and gateway refunds, drained by a
//!   worker on every node.
//! - [`simulator`]: simulated therapists, customers and dispatchers for `hilot demo` and the
//!   load test, speaking only the public API.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`cli`]: the `hilot` command line.

pub mod accounts;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod db;
pub mod dispatch;
pub mod domain;
pub mod effects;
pub mod error;
pub mod fanout;
pub mod geo;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod messages;
pub mod money;
pub mod notifications;
pub mod outbox;
pub mod partitions;
pub mod providers;
pub mod realtime;
pub mod reviews;
pub mod schedule;
pub mod shutdown;
pub mod simulator;
pub mod startup;
pub mod state;
pub mod stores;
pub mod telemetry;
pub mod webhooks;
