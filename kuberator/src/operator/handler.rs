//! How the code `#[derive(Operator)]` generates calls your handlers, and the compile errors it
//! gives when one is missing or has another signature. Reached through `__private` only.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;

use futures::TryFutureExt as _;
use kube::runtime::controller::Action;

use super::Ctx;
use super::Operator;
use crate::error::Error;
use crate::error::Result;

/// Implemented by nothing: the derive's stand-in for a missing `handle_apply` requires it, so
/// a struct without one gets this message, with the signature to write.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `handle_apply` method, which #[derive(Operator)] calls for every object it applies",
    label = "no `handle_apply` in any `impl {Self}` (check its spelling)",
    note = "add to `impl {Self}`:\n    async fn handle_apply(&self, object: Arc<{R}>, ctx: &Ctx<Self>) -> kuberator::Result<Action>\n(the error may be any std::error::Error or anyhow::Error: `Result<Action, E>` or `anyhow::Result<Action>`)"
)]
pub trait HandleApplyMissing<R> {}

/// Like [`HandleApplyMissing`], for `handle_cleanup`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `handle_cleanup` method, which #[derive(Operator)] calls when an object is deleted",
    label = "no `handle_cleanup` in any `impl {Self}` (check its spelling)",
    note = "add to `impl {Self}`:\n    async fn handle_cleanup(&self, object: Arc<{R}>, ctx: &Ctx<Self>) -> kuberator::Result<Action>\n(the error may be any std::error::Error or anyhow::Error: `Result<Action, E>` or `anyhow::Result<Action>`)"
)]
pub trait HandleCleanupMissing<R> {}

/// Like [`HandleApplyMissing`], for `validate` when `webhooks = [...]` names it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `validate` method, which `webhooks = [validate]` serves as its validating webhook",
    label = "no `validate` in any `impl {Self}` (check its spelling)",
    note = "add to `impl {Self}`:\n    async fn validate(&self, change: Change<'_, {R}>, ctx: &Ctx<Self>) -> Result<(), Rejection>\n(`Change` and `Rejection` are in kuberator::webhook)"
)]
pub trait ValidateMissing<R> {}

/// Like [`HandleApplyMissing`], for `set_defaults` when `webhooks = [...]` names it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `set_defaults` method, which `webhooks = [set_defaults]` serves as its defaulting webhook",
    label = "no `set_defaults` in any `impl {Self}` (check its spelling)",
    note = "add to `impl {Self}`:\n    async fn set_defaults(&self, object: &mut {R}, ctx: &Ctx<Self>) -> Result<(), Rejection>\n(`Rejection` is in kuberator::webhook)"
)]
pub trait SetDefaultsMissing<R> {}

/// A handler of the operator `O`: `async fn(&self, Arc<O::Resource>, &Ctx<O>) -> Result<Action, E>`.
#[diagnostic::on_unimplemented(
    message = "this handler of `{O}` does not have the signature #[derive(Operator)] calls",
    label = "expected `async fn(&self, object: Arc<{R}>, ctx: &Ctx<Self>) -> kuberator::Result<Action>`",
    note = "a handler is an inherent method written like this (`handle_cleanup` the same way):\n    async fn handle_apply(&self, object: Arc<{R}>, ctx: &Ctx<Self>) -> kuberator::Result<Action>\n(the error may be any std::error::Error or anyhow::Error: `Result<Action, E>` or `anyhow::Result<Action>`)"
)]
pub trait Handler<'a, O, R> {
    /// What the handler returns.
    type Future: Future<Output = std::result::Result<Action, Self::Error>> + 'a;
    /// Its error.
    type Error;

    /// Calls it.
    fn call(&self, operator: &'a O, object: Arc<R>, ctx: &'a Ctx<O>) -> Self::Future
    where
        O: Operator<Resource = R>;
}

impl<'a, O, R, F, Fut, E> Handler<'a, O, R> for F
where
    O: Operator<Resource = R>,
    F: Fn(&'a O, Arc<R>, &'a Ctx<O>) -> Fut,
    Fut: Future<Output = std::result::Result<Action, E>> + 'a,
{
    type Future = Fut;
    type Error = E;

    fn call(&self, operator: &'a O, object: Arc<R>, ctx: &'a Ctx<O>) -> Fut {
        self(operator, object, ctx)
    }
}

/// An error a handler may return: anything [`Error::other`] takes.
#[diagnostic::on_unimplemented(
    message = "a handler cannot return `{Self}` as its error",
    label = "not a std::error::Error",
    note = "return kuberator::Result<Action>, anyhow::Result<Action>, or Result<Action, E> where E: std::error::Error + Send + Sync + 'static"
)]
pub trait HandlerError {
    /// As a Kuberator error.
    fn into_error(self) -> Error;
}

impl<E: Into<Box<dyn StdError + Send + Sync + 'static>> + 'static> HandlerError for E {
    fn into_error(self) -> Error {
        Error::other(self)
    }
}

/// Calls `handler` (your `handle_apply` or `handle_cleanup`) and turns its error into a
/// Kuberator error.
#[allow(clippy::needless_pass_by_value, reason = "a handler is a zero-sized fn item")]
pub fn call_handler<'a, O, H>(
    handler: H,
    operator: &'a O,
    object: Arc<O::Resource>,
    ctx: &'a Ctx<O>,
) -> impl Future<Output = Result<Action>> + Send + 'a
where
    O: Operator,
    H: Handler<'a, O, O::Resource> + 'a,
    H::Future: Send,
    H::Error: HandlerError,
{
    handler.call(operator, object, ctx).map_err(HandlerError::into_error)
}

/// Fails to compile (at the attribute's value) when `error_backoff_base_millis` is longer than
/// the default longest retry delay, which applies when `requeue_after_error_seconds` is not
/// written.
pub const fn backoff_base_within_default_cap(base_millis: u64) {
    assert!(
        base_millis <= crate::REQUEUE_AFTER_ERROR_SECONDS * 1000,
        "`error_backoff_base_millis` is longer than the default longest retry delay (60 s, \
         `requeue_after_error_seconds`): lower it, or raise `requeue_after_error_seconds`"
    );
}
