//! End-to-end tests: the real server, real PostGIS, real Redis.

mod cli;
mod health;
mod helpers;
mod schema;
