//! Shutdown futures for [`Reconcile::start`](crate::Reconcile::start): any
//! `Future<Output = ()>`, a [`Shutdown`] where a named type is needed, [`signal()`] for
//! SIGINT or SIGTERM (what [`Reconcile::run`](crate::Reconcile::run) passes), or none.
//!
//! `start(None)` cannot infer the type of a shutdown future that is never given. Write
//! `start(None::<NoShutdown>)`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::future::BoxFuture;

/// The type to name when there is no shutdown future: `reconciler.start(None::<NoShutdown>)`.
pub type NoShutdown = std::future::Pending<()>;

/// A future that completes when a controller should stop gracefully: let the reconciles in
/// flight finish, start no new ones. [`LeaderElection::run`](crate::leader::LeaderElection::run)
/// hands one to its work for each term of leadership; `kuberator_test::Background` hands one to
/// the operator it runs.
pub struct Shutdown(BoxFuture<'static, ()>);

impl Shutdown {
    /// Completes when `future` does.
    pub fn new(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Box::pin(future))
    }
}

impl Future for Shutdown {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown").finish_non_exhaustive()
    }
}

/// A task that is aborted when this is dropped: the leader election's work and Lease watch,
/// and the controller's shutdown bridge, end with the scope that started them.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
