//! The sockets open on this node, by user and kind: credentials checked for as long as a socket
//! is open, and at most a few sockets per user and kind (the frame bucket is
//! `realtime::guard`'s).
//!
//! Sockets are registered in a [`SocketRegistry`] on their node. When credentials end (logout,
//! expiry, revocation, a role removed, an account deactivated, a therapist suspended or
//! rejected) a [`CredentialEvent`] reaches every node over the event bus, and each closes its own
//! matching sockets with 4001 and a reason naming the cause. Expiry needs no event: each socket
//! sleeps until its token's `expires_at`.

use std::collections::HashMap;
use std::sync::Arc;

use actix_ws::{CloseCode, CloseReason};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Close code for a socket whose credentials ended (the reason names why).
pub const CLOSE_CREDENTIALS_ENDED: u16 = 4001;
/// Close code for a socket replaced by a newer one of the same user and kind.
pub const CLOSE_REPLACED: u16 = 4000;

/// The three socket kinds, each needing a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketKind {
    Therapist,
    Customer,
    Dashboard,
}

impl SocketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Therapist => "therapist",
            Self::Customer => "customer",
            Self::Dashboard => "dashboard",
        }
    }

    /// Whether a user with these roles may hold a socket of this kind.
    pub fn allowed(self, roles: &[String]) -> bool {
        let has = |name: &str| roles.iter().any(|r| r == name);
        match self {
            Self::Therapist => has("therapist"),
            Self::Customer => has("customer"),
            Self::Dashboard => has("admin") || has("super_admin"),
        }
    }
}

/// Why the server closes a socket on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    LoggedOut,
    Expired,
    Revoked,
    RoleRemoved,
    Deactivated,
    Suspended,
    /// A newer socket of the same user and kind took this one's place.
    Replaced,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoggedOut => "logged_out",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::RoleRemoved => "role_removed",
            Self::Deactivated => "deactivated",
            Self::Suspended => "suspended",
            Self::Replaced => "replaced",
        }
    }

    /// 4000 `replaced`, or 4001 with the cause.
    pub fn close_reason(self) -> CloseReason {
        let code = match self {
            Self::Replaced => CLOSE_REPLACED,
            _ => CLOSE_CREDENTIALS_ENDED,
        };
        CloseReason {
            code: CloseCode::Other(code),
            description: Some(self.as_str().to_owned()),
        }
    }
}

/// An event that ends credentials; published to every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CredentialEvent {
    /// One token stopped working (logout).
    TokenEnded {
        user_id: i64,
        token_id: i64,
        reason: Ending,
    },
    /// Every token of the user stopped working (revocation, deactivation).
    UserEnded { user_id: i64, reason: Ending },
    /// The user's roles are now these; sockets of kinds they no longer allow close.
    RolesChanged { user_id: i64, roles: Vec<String> },
    /// The user's therapist provider may no longer work (suspended, rejected, deactivated):
    /// their therapist sockets close.
    ProviderEnded { user_id: i64, reason: Ending },
    /// Newer sockets of the user on other nodes pushed this one (on node `node`) out.
    SocketReplaced {
        user_id: i64,
        node: u64,
        socket: u64,
    },
}

impl CredentialEvent {
    pub fn user_id(&self) -> i64 {
        match self {
            Self::TokenEnded { user_id, .. }
            | Self::UserEnded { user_id, .. }
            | Self::RolesChanged { user_id, .. }
            | Self::ProviderEnded { user_id, .. }
            | Self::SocketReplaced { user_id, .. } => *user_id,
        }
    }

    /// Why the socket `id` on node `node`, of `kind`, opened with `token_id`, must close, if it
    /// must.
    fn ends(&self, node: u64, id: u64, kind: SocketKind, token_id: i64) -> Option<Ending> {
        match self {
            Self::SocketReplaced {
                node: on, socket, ..
            } => (*on == node && *socket == id).then_some(Ending::Replaced),
            Self::TokenEnded {
                token_id: ended,
                reason,
                ..
            } => (*ended == token_id).then_some(*reason),
            Self::UserEnded { reason, .. } => Some(*reason),
            Self::RolesChanged { roles, .. } => {
                (!kind.allowed(roles)).then_some(Ending::RoleRemoved)
            }
            Self::ProviderEnded { reason, .. } => {
                (kind == SocketKind::Therapist).then_some(*reason)
            }
        }
    }
}

/// The credentials a socket was opened with.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    pub user_id: i64,
    pub token_id: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

struct Entry {
    user_id: i64,
    token_id: i64,
    kind: SocketKind,
    endings: mpsc::Sender<Ending>,
}

#[derive(Default)]
struct Sockets {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// Socket ids per user and kind, oldest first.
    by_user: HashMap<(i64, SocketKind), Vec<u64>>,
}

impl Sockets {
    fn end(&mut self, id: u64, ending: Ending) {
        if let Some(entry) = self.entries.remove(&id) {
            let _ = entry.endings.try_send(ending);
            self.forget(entry.user_id, entry.kind, id);
            metrics::counter!("hilot_sockets_ended_total", "reason" => ending.as_str())
                .increment(1);
        }
    }

    fn forget(&mut self, user_id: i64, kind: SocketKind, id: u64) {
        if let Some(ids) = self.by_user.get_mut(&(user_id, kind)) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_user.remove(&(user_id, kind));
            }
        }
    }
}

/// A member of a cluster-wide socket set: `node:socket`.
fn parse_member(member: &str) -> Option<(u64, u64)> {
    let (node, socket) = member.split_once(':')?;
    Some((node.parse().ok()?, socket.parse().ok()?))
}

/// The sockets open on this node, by user and kind.
pub struct SocketRegistry {
    sockets: Mutex<Sockets>,
    per_user: usize,
    /// This node, in cluster-wide socket sets.
    node: u64,
    /// Where sockets are counted across nodes (Redis, when configured).
    cluster: Option<super::bus::EventBus>,
}

impl SocketRegistry {
    pub fn new(per_user: usize) -> Self {
        Self {
            sockets: Mutex::new(Sockets::default()),
            per_user: per_user.max(1),
            node: rand::random(),
            cluster: None,
        }
    }

    /// A registry that also counts its sockets across the cluster, through the event bus.
    pub fn clustered(per_user: usize, bus: super::bus::EventBus) -> Self {
        Self {
            cluster: Some(bus),
            ..Self::new(per_user)
        }
    }

    fn slot(user_id: i64, kind: SocketKind) -> String {
        format!("sockets:{user_id}:{}", kind.as_str())
    }

    /// Registers a socket here and in the cluster: the oldest of the user's sockets of this kind
    /// beyond the limit, on any node, are told to close (`replaced`).
    pub async fn register_everywhere(
        self: &Arc<Self>,
        kind: SocketKind,
        credentials: Credentials,
    ) -> (SocketLease, Vec<CredentialEvent>) {
        let lease = self.register(kind, credentials);
        let Some(bus) = &self.cluster else {
            return (lease, Vec::new());
        };
        let member = format!("{}:{}", self.node, lease.id);
        let evicted = bus
            .claim_slot(
                &Self::slot(credentials.user_id, kind),
                &member,
                self.per_user,
            )
            .await;
        let replaced = evicted
            .iter()
            .filter_map(|m| {
                let (node, socket) = parse_member(m)?;
                Some(CredentialEvent::SocketReplaced {
                    user_id: credentials.user_id,
                    node,
                    socket,
                })
            })
            .collect();
        (lease, replaced)
    }

    /// Registers a socket; the oldest of the user's sockets of this kind beyond the limit are
    /// told to close (`replaced`).
    pub fn register(self: &Arc<Self>, kind: SocketKind, credentials: Credentials) -> SocketLease {
        let (endings, receiver) = mpsc::channel(1);
        let mut sockets = self.sockets.lock();
        sockets.next_id += 1;
        let id = sockets.next_id;
        sockets.entries.insert(
            id,
            Entry {
                user_id: credentials.user_id,
                token_id: credentials.token_id,
                kind,
                endings,
            },
        );
        let ids = sockets
            .by_user
            .entry((credentials.user_id, kind))
            .or_default();
        ids.push(id);
        let excess: Vec<u64> = ids
            .iter()
            .take(ids.len().saturating_sub(self.per_user))
            .copied()
            .collect();
        for old in excess {
            sockets.end(old, Ending::Replaced);
        }
        SocketLease {
            id,
            user_id: credentials.user_id,
            kind,
            registry: self.clone(),
            endings: receiver,
        }
    }

    /// Tells every local socket the event ends to close; answers how many.
    pub fn apply(&self, event: &CredentialEvent) -> usize {
        let mut sockets = self.sockets.lock();
        let user_id = event.user_id();
        let candidates: Vec<(u64, Ending)> = [
            SocketKind::Therapist,
            SocketKind::Customer,
            SocketKind::Dashboard,
        ]
        .into_iter()
        .flat_map(|kind| {
            sockets
                .by_user
                .get(&(user_id, kind))
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|id| {
            let entry = sockets.entries.get(&id)?;
            event
                .ends(self.node, id, entry.kind, entry.token_id)
                .map(|e| (id, e))
        })
        .collect();
        for (id, ending) in &candidates {
            sockets.end(*id, *ending);
        }
        candidates.len()
    }

    /// Every open socket's id, token and kind (for the periodic credential check).
    pub fn snapshot(&self) -> Vec<(u64, i64, SocketKind)> {
        self.sockets
            .lock()
            .entries
            .iter()
            .map(|(id, e)| (*id, e.token_id, e.kind))
            .collect()
    }

    /// Tells one socket to close.
    pub fn end_socket(&self, id: u64, ending: Ending) {
        self.sockets.lock().end(id, ending);
    }

    /// Says in the cluster, every [`super::bus::NODE_HEARTBEAT`] until shutdown, that this
    /// node's sockets are alive (a node that dies stops, and its sockets stop counting).
    pub async fn keep_alive(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(bus) = &self.cluster else {
            return;
        };
        loop {
            bus.heartbeat(self.node).await;
            tokio::select! {
                _ = tokio::time::sleep(super::bus::NODE_HEARTBEAT) => {}
                _ = crate::shutdown::stopped(&mut shutdown) => return,
            }
        }
    }

    fn is_open(&self, id: u64) -> bool {
        self.sockets.lock().entries.contains_key(&id)
    }

    /// Open sockets of one user and kind on this node.
    pub fn count(&self, user_id: i64, kind: SocketKind) -> usize {
        self.sockets
            .lock()
            .by_user
            .get(&(user_id, kind))
            .map_or(0, Vec::len)
    }

    fn unregister(&self, id: u64, user_id: i64, kind: SocketKind) {
        {
            let mut sockets = self.sockets.lock();
            if sockets.entries.remove(&id).is_some() {
                sockets.forget(user_id, kind, id);
            }
        }
        if let Some(bus) = &self.cluster {
            bus.release_slot(&Self::slot(user_id, kind), &format!("{}:{id}", self.node));
        }
    }
}

/// A socket's place in the registry; leaving it (dropping) unregisters the socket.
pub struct SocketLease {
    id: u64,
    user_id: i64,
    kind: SocketKind,
    registry: Arc<SocketRegistry>,
    endings: mpsc::Receiver<Ending>,
}

impl Drop for SocketLease {
    fn drop(&mut self) {
        self.registry.unregister(self.id, self.user_id, self.kind);
    }
}

impl SocketLease {
    /// Whether another socket of the same user and kind is open, on any node (the app
    /// reconnected elsewhere while this socket lingered). A node that died without cleaning up
    /// leaves its sockets in the set; they count only while their node is alive (a heartbeat
    /// within 15 s), and this node's own count only if the registry here still holds them.
    pub async fn another_open_in_cluster(&self) -> bool {
        let Some(bus) = &self.registry.cluster else {
            return false;
        };
        let Some(members) = bus
            .slot_members(&SocketRegistry::slot(self.user_id, self.kind))
            .await
        else {
            return false;
        };
        let mut other_nodes = Vec::new();
        for member in &members {
            let Some((node, socket)) = parse_member(member) else {
                continue;
            };
            if node == self.registry.node {
                if socket != self.id && self.registry.is_open(socket) {
                    return true;
                }
            } else if !other_nodes.contains(&node) {
                other_nodes.push(node);
            }
        }
        bus.alive(&other_nodes)
            .await
            .is_some_and(|alive| alive.contains(&true))
    }

    /// The next ending for this socket (its credentials ended, or a newer socket replaced it).
    pub async fn next_ending(&mut self) -> Option<Ending> {
        self.endings.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(user_id: i64, token_id: i64) -> Credentials {
        Credentials {
            user_id,
            token_id,
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn a_fourth_socket_replaces_the_oldest() {
        let registry = Arc::new(SocketRegistry::new(3));
        let mut leases: Vec<SocketLease> = (0..4)
            .map(|_| registry.register(SocketKind::Customer, credentials(1, 1)))
            .collect();
        assert_eq!(leases[0].endings.recv().await, Some(Ending::Replaced));
        assert!(leases[1].endings.try_recv().is_err());
        assert_eq!(registry.count(1, SocketKind::Customer), 3);
        drop(leases);
        assert_eq!(registry.count(1, SocketKind::Customer), 0);
    }

    #[tokio::test]
    async fn events_close_only_what_they_end() {
        let registry = Arc::new(SocketRegistry::new(3));
        let mut therapist = registry.register(SocketKind::Therapist, credentials(1, 10));
        let mut customer = registry.register(SocketKind::Customer, credentials(1, 11));
        let closed = registry.apply(&CredentialEvent::RolesChanged {
            user_id: 1,
            roles: vec!["customer".into()],
        });
        assert_eq!(closed, 1);
        assert_eq!(therapist.endings.recv().await, Some(Ending::RoleRemoved));
        assert!(customer.endings.try_recv().is_err());
        registry.apply(&CredentialEvent::TokenEnded {
            user_id: 1,
            token_id: 99,
            reason: Ending::LoggedOut,
        });
        assert!(customer.endings.try_recv().is_err());
        registry.apply(&CredentialEvent::TokenEnded {
            user_id: 1,
            token_id: 11,
            reason: Ending::LoggedOut,
        });
        assert_eq!(customer.endings.recv().await, Some(Ending::LoggedOut));
    }
}
