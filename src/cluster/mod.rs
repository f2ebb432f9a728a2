//! Several nodes, one service: how each node keeps its live view of every therapist current
//! through Redis, and how it carries on when Redis goes away.
//!
//! - [`link`]: the state of this node's Redis link (what `/health/ready` and `/metrics` report),
//!   and subscriptions that come back by themselves, with backoff, after any drop.
//! - [`replication`]: fixes, dispatch states, profile changes and dashboard booking frames
//!   published by the node that saw them and applied by every other node's live index and
//!   dashboards; after any gap in the subscription a node catches up from PostgreSQL.
//! - [`limits`]: login (and registration) limits counted in Redis, across every node.
//!
//! Sits beside the fan-out: it knows the live index (geo) and Redis, and is told what to do
//! with what it hears through callbacks installed at start-up.

pub mod limits;
pub mod link;
pub mod replication;
