//! End-to-end tests: the real server, real PostGIS, real Redis.

mod abuse;
mod accounts;
mod admin;
mod binary;
mod bookings;
mod cli;
mod credentials;
mod dashboard;
mod durability;
mod faults;
mod health;
mod helpers;
mod lifecycle_model;
mod live;
mod logs;
mod money;
mod partitions;
mod schema;
mod simulator;
mod sockets;
mod therapist;
