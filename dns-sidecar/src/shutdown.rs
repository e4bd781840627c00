//! Shutdown signalling: one `watch` channel, `true` meaning "stop".

use tokio::sync::watch;

/// Resolves once shutdown has been requested (or the sender is gone).
/// Returns `()` so no guard is held across an await.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
