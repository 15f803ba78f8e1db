//! [`Context`]: your operator's logic for one resource type.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::Event;

use crate::Finalize;
use crate::KubeResource;
use crate::cache::ProvideApi;
use crate::error::Error;
use crate::error::Result;
use crate::object::describe;

/// The logic of an operator for objects of type `R`, with the repository `F` it finalizes
/// and writes status through.
///
///
/// # Expected flow
///
/// Implement [`Context::handle_apply`] and [`Context::handle_cleanup`], and name your
/// finalizer and repository. [`Context::handle_reconciliation`] wires them to the finalizer
/// flow of [`Finalize::finalize`](crate::Finalize::finalize): the finalizer is added before
/// the first `handle_apply`, `handle_cleanup` runs when the object is deleted, and the
/// finalizer is removed only after cleanup succeeded.
///
/// # Assumptions
///
/// Both handlers are idempotent: they run again after a restart, after an error, and after
/// any change of the spec, and must converge on the same result.
#[async_trait]
pub trait Context<R, F, P>: Send + Sync
where
    R: KubeResource,
    F: Finalize<R, P>,
    P: ProvideApi<R>,
{
    /// The repository that adds and removes the finalizer and writes status.
    fn k8s_repository(&self) -> Arc<F>;

    /// The finalizer this operator puts on every object it applies, such as
    /// `mycrds.example.com/finalizer`. It must be unique to this operator.
    fn finalizer(&self) -> &'static str;

    /// Brings the world in line with `object`: runs on creation, on every spec change, and
    /// after errors. Must be idempotent.
    ///
    /// # Errors
    ///
    /// Any error; the controller reports it and retries as the error policy says.
    async fn handle_apply(&self, object: Arc<R>) -> Result<Action>;

    /// Removes what `handle_apply` made, once the object is being deleted. The object stays
    /// (held by the finalizer) until this returns `Ok`. Must be idempotent.
    ///
    /// # Errors
    ///
    /// Any error; the finalizer stays, and cleanup is retried.
    async fn handle_cleanup(&self, object: Arc<R>) -> Result<Action>;

    /// Runs the finalizer flow around the two handlers; see the [trait docs](Context).
    ///
    /// # Errors
    ///
    /// What [`Finalize::finalize`](crate::Finalize::finalize) returns.
    async fn handle_reconciliation(&self, object: Arc<R>) -> Result<Action> {
        finalize_with_handlers(self, object).await
    }

    /// Decides what happens after a failed reconcile: logs the error with the object, and
    /// requeues after `requeue` (or waits for the next change when it is `None`).
    fn handle_error(&self, object: Arc<R>, error: &Error, requeue: Option<Duration>) -> Action {
        tracing::error!(
            object = %describe(&*object),
            error = %error.report(),
            retry_in = ?requeue,
            "reconcile failed"
        );
        requeue.map_or_else(Action::await_change, Action::requeue)
    }
}

/// The finalizer flow of `context` around its two handlers: what
/// [`Context::handle_reconciliation`] does unless overridden, for overrides that add to it.
pub(crate) async fn finalize_with_handlers<R, F, P, C>(context: &C, object: Arc<R>) -> Result<Action>
where
    R: KubeResource,
    F: Finalize<R, P>,
    P: ProvideApi<R>,
    C: Context<R, F, P> + ?Sized,
{
    let repository = context.k8s_repository();
    repository
        .finalize(context.finalizer(), object, |event| async move {
            match event {
                Event::Apply(object) => context.handle_apply(object).await,
                Event::Cleanup(object) => context.handle_cleanup(object).await,
            }
        })
        .await
}
