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
//! - [`partitions`]: the monthly `provider_locations` partition manager.
//! - [`telemetry`]: logs and Prometheus metrics.
//! - [`cli`]: the `hilot` command line.

pub mod accounts;
pub mod audit;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod partitions;
pub mod providers;
pub mod startup;
pub mod state;
pub mod telemetry;
