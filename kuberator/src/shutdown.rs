//! Shutdown signals for [`Reconcile::start`](crate::Reconcile::start).
//!
//! `start(None)` cannot infer the type of a shutdown future that is never given. Write
//! `start(None::<NoShutdown>)`, or pass [`signal()`] to stop on SIGINT or SIGTERM, which is
//! what [`Reconcile::run`](crate::Reconcile::run) does.

/// The type to name when there is no shutdown future: `reconciler.start(None::<NoShutdown>)`.
pub type NoShutdown = std::future::Pending<()>;

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM, and logs which one arrived.
///
/// # Panics
///
/// When the signal handlers cannot be installed, which happens only outside a Tokio runtime
/// with signal support.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler needs a Tokio runtime");
        tokio::select! {
            _ = interrupt => tracing::info!("received SIGINT, shutting down"),
            _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("received Ctrl-C, shutting down");
    }
}
