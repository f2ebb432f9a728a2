//! The hub: one task that knows which sockets on this node belong to which user, and fans
//! frames out to them. Driven through a cloneable [`Hub`] handle.
//!
//! Each socket has a bounded mailbox; a frame for a socket whose mailbox is full is dropped and
//! counted, so one slow client never holds up the hub or anyone else.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

/// Frames waiting for one socket before new ones are dropped.
pub const MAILBOX_CAPACITY: usize = 256;
/// Commands waiting for the hub task.
const HUB_QUEUE: usize = 65_536;

/// A frame ready to send: serialised once, shared by every recipient.
pub type Frame = Arc<str>;

enum Command {
    Register {
        user_id: i64,
        session: u64,
        mailbox: mpsc::Sender<Frame>,
    },
    Unregister {
        user_id: i64,
        session: u64,
    },
    Deliver {
        user_id: i64,
        frame: Frame,
    },
}

#[derive(Clone)]
pub struct Hub {
    commands: mpsc::Sender<Command>,
}

impl Hub {
    /// Starts the hub task; it ends when every handle is dropped.
    pub fn start() -> Self {
        let (commands, queue) = mpsc::channel(HUB_QUEUE);
        tokio::spawn(run(queue));
        Self { commands }
    }

    /// Adds a socket; frames for `user_id` reach `mailbox` until [`Hub::unregister`].
    pub async fn register(&self, user_id: i64, session: u64, mailbox: mpsc::Sender<Frame>) {
        let _ = self
            .commands
            .send(Command::Register {
                user_id,
                session,
                mailbox,
            })
            .await;
    }

    pub async fn unregister(&self, user_id: i64, session: u64) {
        let _ = self
            .commands
            .send(Command::Unregister { user_id, session })
            .await;
    }

    /// Sends a frame to every socket of `user_id` on this node.
    pub async fn deliver(&self, user_id: i64, frame: Frame) {
        let _ = self
            .commands
            .send(Command::Deliver { user_id, frame })
            .await;
    }
}

async fn run(mut queue: mpsc::Receiver<Command>) {
    let mut sockets: HashMap<i64, Vec<(u64, mpsc::Sender<Frame>)>> = HashMap::new();
    while let Some(command) = queue.recv().await {
        match command {
            Command::Register {
                user_id,
                session,
                mailbox,
            } => {
                sockets.entry(user_id).or_default().push((session, mailbox));
            }
            Command::Unregister { user_id, session } => {
                if let Some(list) = sockets.get_mut(&user_id) {
                    list.retain(|(s, _)| *s != session);
                    if list.is_empty() {
                        sockets.remove(&user_id);
                    }
                }
            }
            Command::Deliver { user_id, frame } => {
                if let Some(list) = sockets.get(&user_id) {
                    for (_, mailbox) in list {
                        if mailbox.try_send(frame.clone()).is_err() {
                            metrics::counter!("hilot_hub_frames_dropped_total").increment(1);
                        }
                    }
                }
            }
        }
    }
}
