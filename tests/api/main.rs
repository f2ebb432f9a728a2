//! End-to-end tests: the real server, real PostGIS, real Redis.

mod accounts;
mod admin;
mod binary;
mod bookings;
mod cli;
mod console;
mod dashboard;
mod durability;
mod faults;
mod health;
mod helpers;
mod lifecycle_model;
mod live;
mod partitions;
mod schema;
mod simulator;
mod sockets;
mod stores;
mod therapist;
