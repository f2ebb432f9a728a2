//! The shutdown signal every task watches.

/// Resolves once shutdown has begun (a `Send` future: no watch guard lives across an await).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
