//! End-to-end tests: the real server, real PostGIS, real Redis.

mod accounts;
mod admin;
mod binary;
mod bookings;
mod cli;
mod cluster;
mod console;
mod dashboard;
mod delivery;
mod durability;
mod fakes;
mod faults;
mod health;
mod helpers;
mod ledger_property;
mod lifecycle_model;
mod live;
mod money;
mod partitions;
mod ranking_rating;
mod reviews_chat;
mod schema;
mod simulator;
mod sockets;
mod stores;
mod therapist;
