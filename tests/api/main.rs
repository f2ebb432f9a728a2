//! End-to-end tests: the real server, real PostGIS, real Redis.

mod accounts;
mod admin;
mod bookings;
mod cli;
mod dashboard;
mod dispatch;
mod durability;
mod health;
mod helpers;
mod layering;
mod live;
mod partitions;
mod schema;
mod simulator;
mod sockets;
mod therapist;
