//! [`Ctx`], [`OperatorContext`] and [`OperatorReconciler`]: the derive's `Context` and
//! `Reconcile`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::Api;
use kube::Client;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use serde::Serialize;

use super::Operator;
use super::OperatorConfig;
use crate::AsStatusError;
use crate::Context;
use crate::Finalize;
use crate::ObserveGeneration;
use crate::Reconcile;
use crate::WithStatusError;
use crate::cache::ApiRef;
use crate::cache::ProvideApi;
use crate::cache::StaticApiProvider;
use crate::error::Result;
use crate::events::EmitEvent;
use crate::events::EventData;
use crate::events::EventRecorder;
use crate::events::Reason;

/// What a handler of a derived operator can reach: status writes, Events, the client, the
/// repository and the `Api` of any namespace.
pub struct Ctx<O: Operator> {
    client: Client,
    repository: Arc<O::Repository>,
    events: EventRecorder,
}

impl<O: Operator> Ctx<O> {
    /// Writes `status` to the object's `/status`, with the observed generation set; see
    /// [`Finalize::update_status`].
    ///
    /// # Errors
    ///
    /// When the write is refused, naming the object.
    pub async fn update_status<S>(&self, object: &O::Resource, status: S) -> Result<()>
    where
        S: Serialize + ObserveGeneration + Send,
    {
        self.repository.update_status(object, status).await
    }

    /// Writes `status` with `error` in it; see [`Finalize::update_status_with_error`].
    ///
    /// # Errors
    ///
    /// When the write is refused, naming the object.
    pub async fn update_status_with_error<S, A, E>(
        &self,
        object: &O::Resource,
        status: S,
        error: Option<&A>,
    ) -> Result<()>
    where
        S: Serialize + ObserveGeneration + WithStatusError<A, E> + Send,
        A: AsStatusError<E> + Sync,
        E: Send,
    {
        self.repository.update_status_with_error(object, status, error).await
    }

    /// Publishes an Event about `object` and logs it; never fails (see [`EmitEvent::emit`]).
    pub async fn emit<R: Reason>(&self, object: &O::Resource, event: EventData<R>) {
        self.events.emit(object, event).await;
    }

    /// Publishes an Event about `object`, returning the error if it is refused.
    ///
    /// # Errors
    ///
    /// When the API server refuses the Event.
    pub async fn try_emit<R: Reason>(&self, object: &O::Resource, event: EventData<R>) -> Result<()> {
        self.events.try_emit(object, event).await
    }

    /// The client, to reach other resources.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The repository (a [`K8sRepository`](crate::k8s::K8sRepository) unless the attribute
    /// names another).
    pub fn repository(&self) -> &O::Repository {
        &self.repository
    }

    /// The `Api` of the operator's resource in `namespace`, from its provider.
    ///
    /// # Errors
    ///
    /// When the provider refuses the namespace (`Strict` and not listed).
    pub fn api(&self, namespace: &str) -> Result<ApiRef<'_, O::Resource>> {
        self.repository.api_provider().get(namespace)
    }

    /// The Event recorder.
    pub fn events(&self) -> &EventRecorder {
        &self.events
    }
}

impl<O: Operator> fmt::Debug for Ctx<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("events", &self.events).finish_non_exhaustive()
    }
}

/// The [`Context`] of a derived operator: your struct and its [`Ctx`].
pub struct OperatorContext<O: Operator> {
    operator: O,
    ctx: Ctx<O>,
    config: OperatorConfig,
    /// The namespaces watched: the attribute's, unless overridden at start.
    namespaces: Vec<String>,
}

impl<O: Operator> OperatorContext<O> {
    /// Your operator struct.
    pub fn operator(&self) -> &O {
        &self.operator
    }

    /// What its handlers get.
    pub fn ctx(&self) -> &Ctx<O> {
        &self.ctx
    }

    /// The namespaces it watches; empty means every namespace.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    fn watches(&self, namespace: Option<&str>) -> bool {
        self.namespaces.is_empty()
            || namespace.is_some_and(|ns| self.namespaces.iter().any(|listed| listed == ns))
    }
}

#[async_trait]
impl<O: Operator> Context<O::Resource, O::Repository, StaticApiProvider<O::Resource>> for OperatorContext<O> {
    fn k8s_repository(&self) -> Arc<O::Repository> {
        Arc::clone(&self.ctx.repository)
    }

    fn finalizer(&self) -> &'static str {
        self.config.finalizer
    }

    async fn handle_apply(&self, object: Arc<O::Resource>) -> Result<Action> {
        self.operator.apply(object, &self.ctx).await
    }

    async fn handle_cleanup(&self, object: Arc<O::Resource>) -> Result<Action> {
        self.operator.cleanup(object, &self.ctx).await
    }

    async fn handle_reconciliation(&self, object: Arc<O::Resource>) -> Result<Action> {
        // Several namespaces are watched cluster-wide; the others are none of our business.
        if !self.watches(object.namespace().as_deref()) {
            tracing::debug!(object = %crate::object::describe(&*object), "not in a watched namespace; ignored");
            return Ok(Action::await_change());
        }
        crate::context::finalize_with_handlers(self, object).await
    }
}

/// The [`Reconcile`] of a derived operator.
pub struct OperatorReconciler<O: Operator> {
    api: Api<O::Resource>,
    watcher: Config,
    context: Arc<OperatorContext<O>>,
}

impl<O: Operator> Clone for OperatorReconciler<O> {
    /// Another handle on the same context, to start the controller again (after leadership
    /// came back, say).
    fn clone(&self) -> Self {
        Self { api: self.api.clone(), watcher: self.watcher.clone(), context: Arc::clone(&self.context) }
    }
}

impl<O: Operator> OperatorReconciler<O> {
    /// Watches `namespaces` (empty: every namespace) instead of the attribute's.
    pub(super) fn new(operator: O, client: Client, namespaces: Vec<String>) -> Self {
        let config = O::config();
        let provider = StaticApiProvider::new(client.clone(), namespaces.iter().cloned(), config.caching);
        let ctx = Ctx {
            client: client.clone(),
            repository: Arc::new(O::Repository::from(provider)),
            events: EventRecorder::new(client.clone(), config.controller_name),
        };
        let api = match namespaces.as_slice() {
            [only] => Api::namespaced(client, only),
            _ => Api::all(client),
        };
        let watcher = match config.labels {
            Some(selector) => Config::default().labels(selector),
            None => Config::default(),
        };
        Self { api, watcher, context: Arc::new(OperatorContext { operator, ctx, config, namespaces }) }
    }

    /// The context the controller runs with.
    pub fn context(&self) -> &Arc<OperatorContext<O>> {
        &self.context
    }

    /// Runs the controller with the attribute's concurrency until `shutdown` completes.
    pub async fn start_configured<G>(self, shutdown: Option<G>)
    where
        G: std::future::Future<Output = ()> + Send + 'static,
    {
        self.start_with(O::config().concurrency, shutdown).await;
    }

    /// Runs the controller with up to `concurrency` reconciles at a time (`None`: no limit)
    /// until `shutdown` completes.
    pub async fn start_with<G>(self, concurrency: Option<usize>, shutdown: Option<G>)
    where
        G: std::future::Future<Output = ()> + Send + 'static,
    {
        self.start_concurrent(concurrency, shutdown).await;
    }
}

impl<O: Operator> Reconcile<O::Resource, OperatorContext<O>, O::Repository, StaticApiProvider<O::Resource>>
    for OperatorReconciler<O>
{
    fn destruct(self) -> (Api<O::Resource>, Config, Arc<OperatorContext<O>>) {
        (self.api, self.watcher, self.context)
    }

    fn requeue_after_error_seconds() -> Option<Duration> {
        Some(O::config().requeue_after_error)
    }

    fn error_backoff_base() -> Duration {
        O::config().error_backoff_base
    }

    fn controller_name() -> String {
        O::config().controller_name.to_owned()
    }
}
