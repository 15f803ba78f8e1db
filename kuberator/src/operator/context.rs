//! [`Ctx`], what handlers get and the derive's [`Context`], and [`OperatorReconciler`], the
//! derive's [`Reconcile`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::Api;
use kube::Client;
use kube::CustomResourceExt as _;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use serde::Serialize;

use super::Operator;
use super::Settings;
use crate::AsStatusError;
use crate::Context;
use crate::Finalize;
use crate::ObserveGeneration;
use crate::Reconcile;
use crate::WithStatusError;
use crate::cache::ApiRef;
use crate::cache::ProvideApi;
use crate::cache::StaticApiProvider;
use crate::children::Child;
use crate::children::Children;
use crate::error::Error;
use crate::error::Result;
use crate::events::EmitEvent;
use crate::events::EventData;
use crate::events::EventRecorder;
use crate::events::Reason;
use crate::references::References;
use crate::status::Condition;
use crate::status::conditions::ReadyWriter;

/// What a handler of a derived operator can reach: status writes and conditions, Events,
/// owned children, the client, the repository and the `Api` of any namespace.
///
/// It is also the operator's [`Context`]: `finalizer()` names the finalizer it uses.
///
/// # Conditions
///
/// When the CRD's status schema has `conditions` (a [`Conditions`](crate::status::Conditions) field), the operator keeps
/// a `Ready` condition there: after each `handle_apply` it writes `Ready=True` (reason
/// `Reconciled`) or, when the handler failed, `Ready=False` with the error's reason (such as
/// `ApplyFailed` or `ChildConflict`) and message, together with the conditions the handler set
/// with [`set_condition`](Ctx::set_condition), all observed at the object's generation. Nothing
/// is written when nothing changed. The conditions are the runtime's to write:
/// [`update_status`](Ctx::update_status) leaves `status.conditions` alone, whatever the status
/// value holds there.
///
/// With conditions, the status `handle_apply` writes goes out with them, in the one status
/// write of the reconcile, when the handler returns (see
/// [one status write per reconcile](crate::status#one-status-write-per-reconcile)): a change of the spec costs
/// one write, not two.
pub struct Ctx<O: Operator> {
    operator: O,
    client: Client,
    repository: Arc<O::Repository>,
    events: EventRecorder,
    children: Children,
    references: References,
    ready: Arc<ReadyWriter>,
    settings: Settings,
}

impl<O: Operator> Ctx<O> {
    /// The operator whose handlers this context is for.
    #[cfg(feature = "server")]
    pub(crate) fn operator(&self) -> &O {
        &self.operator
    }
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
        self.repository.update_status(object, WithoutConditions(status)).await
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
        let mut status = status;
        if let Some(error) = error {
            WithStatusError::add(&mut status, error.as_status_error());
        }
        self.update_status(object, status).await
    }

    /// Sets a condition of your own on `object`: written with `Ready` when the handler
    /// returns (see [Conditions](Ctx#conditions)), keeping its `lastTransitionTime` when its
    /// status did not change.
    pub fn set_condition(&self, object: &O::Resource, condition: Condition) {
        self.ready.set(object, condition);
    }

    /// Server-side applies `child` as a child of `parent`; see
    /// [`Children::apply`](crate::children::Children::apply).
    ///
    /// # Errors
    ///
    /// When the child cannot be owned or the apply is refused, naming the child and the parent.
    pub async fn apply<K: Child>(&self, parent: &O::Resource, child: K) -> Result<K> {
        self.children.apply(parent, child).await
    }

    /// Deletes the children of kind `K` of `parent` not named in `keep`; see
    /// [`Children::prune`](crate::children::Children::prune).
    ///
    /// # Errors
    ///
    /// When a delete is refused, naming the child and the parent.
    pub async fn prune<K: Child>(
        &self,
        parent: &O::Resource,
        keep: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Vec<String>> {
        self.children.prune::<_, K>(parent, keep).await
    }

    /// Deletes every child of kind `K` of `parent`; see
    /// [`Children::prune_all`](crate::children::Children::prune_all).
    ///
    /// # Errors
    ///
    /// When a delete is refused, naming the child and the parent.
    pub async fn prune_all<K: Child>(&self, parent: &O::Resource) -> Result<Vec<String>> {
        self.children.prune_all::<_, K>(parent).await
    }

    /// The object `name` of kind `K` in `namespace` (`None` for a cluster-scoped kind): from
    /// the cache when `K` is owned and the cache has it, else from the API server.
    ///
    /// # Errors
    ///
    /// When the API server is asked and the read fails.
    pub async fn get<'a, K: Child>(
        &self,
        namespace: impl Into<Option<&'a str>>,
        name: &str,
    ) -> Result<Option<Arc<K>>> {
        self.children.get(namespace, name).await
    }

    /// The children: apply, prune, get, and the owned kinds.
    pub fn children(&self) -> &Children {
        &self.children
    }

    /// The object of kind `K` that `parent` names (`references(K = ...)` in the attribute
    /// says where), from the cache: `None` when no such object exists yet. Its creation,
    /// changes and deletion reconcile `parent` again. See [`crate::references`].
    ///
    /// # Errors
    ///
    /// When `K` is not among the referenced kinds.
    pub async fn referenced<K: Child>(&self, parent: &O::Resource) -> Result<Option<Arc<K>>> {
        self.references.get(parent).await
    }

    /// The referenced kinds, their caches and index.
    pub fn references(&self) -> &References {
        &self.references
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
    ///
    /// Its [`update_status`](Finalize::update_status) writes the status as given, except
    /// `conditions`: an empty list is left out (so a default status never wipes `Ready`),
    /// and inside `handle_apply`, for the object being applied, the conditions go where
    /// [`Ctx::set_condition`] puts them and are written with `Ready` when the handler returns
    /// (so neither write drops the other's conditions). In `handle_cleanup` a list is written
    /// as given. [`Ctx::update_status`] and [`Ctx::set_condition`] say the same more plainly.
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

    /// The settings the operator runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

impl<O: Operator> fmt::Debug for Ctx<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx").field("events", &self.events).finish_non_exhaustive()
    }
}

#[async_trait]
impl<O: Operator> Context<O::Resource, O::Repository, StaticApiProvider<O::Resource>> for Ctx<O> {
    fn k8s_repository(&self) -> Arc<O::Repository> {
        Arc::clone(&self.repository)
    }

    fn finalizer(&self) -> &'static str {
        self.settings.finalizer
    }

    async fn handle_apply(&self, object: Arc<O::Resource>) -> Result<Action> {
        let _reconciling = self.ready.reconciling(&*object);
        let apply = self.operator.__handle_apply(Arc::clone(&object), self);
        let outcome = self.ready.applying(kube::Resource::meta(&*object).uid.clone(), apply).await;
        let written = self.ready.write(&*object, &outcome, self.repository.api_provider()).await;
        match (outcome, written) {
            (Ok(_), Err(error)) => Err(error),
            (outcome, Err(error)) => {
                tracing::warn!(error = %error.report(), "could not write the Ready condition");
                outcome
            }
            (outcome, Ok(())) => outcome,
        }
    }

    async fn handle_cleanup(&self, object: Arc<O::Resource>) -> Result<Action> {
        // A condition set here is not written: the object is on its way out.
        let _reconciling = self.ready.reconciling(&*object);
        self.operator.__handle_cleanup(Arc::clone(&object), self).await
    }
}

/// The [`Reconcile`] of a derived operator: [`start`](Reconcile::start) and
/// [`run`](Reconcile::run) use the operator's [`Settings`] (its concurrency, backoff and
/// namespaces); [`start_concurrent`](Reconcile::start_concurrent) takes its limit from you.
///
/// The settings it runs with are [`settings`](OperatorReconciler::settings): what
/// [`into_reconciler_with`](super::Operator::into_reconciler_with) gave it, which every part
/// reads (the error policy, the timeout, the cache trimming, the Event recorder's name). The
/// trait's associated functions without `self` (`controller_name()`,
/// `reconcile_timeout()`, `requeue_after_error_seconds()`, `error_backoff_base()`,
/// `keep_managed_fields()`) cannot see an instance: they answer what the attribute says
/// ([`Operator::settings`](super::Operator::settings)), and nothing running reads them.
pub struct OperatorReconciler<O: Operator> {
    api: Api<O::Resource>,
    watcher: Config,
    context: Arc<Ctx<O>>,
}

impl<O: Operator> Clone for OperatorReconciler<O> {
    /// Another handle on the same context, to start the controller again (after leadership
    /// came back, say).
    fn clone(&self) -> Self {
        Self { api: self.api.clone(), watcher: self.watcher.clone(), context: Arc::clone(&self.context) }
    }
}

impl<O: Operator> OperatorReconciler<O> {
    /// Its webhooks, when its operator names any in `webhooks = [...]`.
    #[cfg(feature = "server")]
    pub(crate) fn admission(&self) -> Option<std::sync::Arc<dyn crate::webhook::Admit>> {
        let settings = &self.context.settings;
        let versions = O::versions();
        if !settings.webhooks.any() && versions.is_empty() {
            return None;
        }
        let namespaced = crate::object::is_namespaced::<O::Resource>();
        let hooked = crate::webhook::Hooked::of::<O::Resource>(settings, namespaced, !versions.is_empty());
        Some(Arc::new(crate::webhook::Admission { ctx: Arc::clone(&self.context), hooked, versions }))
    }

    pub(super) fn new(operator: O, client: Client, settings: Settings) -> Self {
        let provider =
            StaticApiProvider::new(client.clone(), settings.namespaces.iter().cloned(), settings.caching);
        let api = match settings.namespaces.as_slice() {
            [only] => crate::object::api_of(client.clone(), Some(only)),
            _ => Api::all(client.clone()),
        };
        let watcher = match settings.labels {
            Some(selector) => Config::default().labels(selector),
            None => Config::default(),
        };
        let ctx = Ctx {
            operator,
            repository: Arc::new(O::Repository::from(provider)),
            events: EventRecorder::new(client.clone(), settings.controller_name),
            children: Children::new(client.clone(), settings.controller_name, &settings.owns),
            references: References::new(client.clone(), settings.controller_name, &settings.references),
            ready: Arc::new(ReadyWriter::for_crd::<O::Resource>(
                &O::Resource::crd(),
                settings.controller_name,
            )),
            client,
            settings,
        };
        Self { api, watcher, context: Arc::new(ctx) }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.context.settings
    }
}

#[async_trait]
impl<O: Operator> Reconcile<O::Resource, Ctx<O>, O::Repository, StaticApiProvider<O::Resource>>
    for OperatorReconciler<O>
{
    fn destruct(self) -> (Api<O::Resource>, Config, Arc<Ctx<O>>) {
        (self.api, self.watcher, self.context)
    }

    /// Runs the controller with the operator's concurrency until `shutdown` completes.
    async fn start<G>(self, shutdown: Option<G>)
    where
        G: Future<Output = ()> + Send + 'static,
    {
        let limit = self.context.settings.concurrency;
        self.start_concurrent(limit, shutdown).await;
    }

    async fn start_concurrent<G>(self, limit: Option<usize>, shutdown: Option<G>)
    where
        G: Future<Output = ()> + Send + 'static,
    {
        let settings = &self.context.settings;
        // Several namespaces are watched cluster-wide (the `Api` is `Api::all`); the others are
        // none of our business. One namespace is the `Api`'s own.
        let namespaces = match settings.namespaces.as_slice() {
            [] | [_] => Vec::new(),
            several => several.to_vec(),
        };
        let plan = crate::reconcile::Plan {
            recorder: self.context.events.clone(),
            children: Some(self.context.children.clone()),
            references: Some(self.context.references.clone()),
            timeout: settings.reconcile_timeout,
            keep_managed_fields: settings.keep_managed_fields,
            namespaces,
            api: self.api,
            watcher: self.watcher,
            context: self.context,
        };
        crate::reconcile::run::<_, _, _, _, Self, G>(plan, limit, shutdown).await;
    }

    fn error_policy(object: Arc<O::Resource>, error: &Error, context: Arc<Ctx<O>>) -> Action {
        let settings = &context.settings;
        let (cap, base) = (settings.requeue_after_error, settings.error_backoff_base);
        crate::reconcile::back_off(object, error, &*context, Some(cap), base)
    }

    fn requeue_after_error_seconds() -> Option<Duration> {
        Some(O::settings().requeue_after_error)
    }

    fn error_backoff_base() -> Duration {
        O::settings().error_backoff_base
    }

    fn controller_name() -> String {
        O::settings().controller_name.to_owned()
    }

    fn reconcile_timeout() -> Option<Duration> {
        O::settings().reconcile_timeout
    }

    fn keep_managed_fields() -> bool {
        O::settings().keep_managed_fields
    }
}

/// A status without its `conditions`, which the runtime writes; what [`Ctx::update_status`]
/// patches.
struct WithoutConditions<S>(S);

impl<S: Serialize> Serialize for WithoutConditions<S> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        let mut value = serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?;
        if let Some(fields) = value.as_object_mut() {
            fields.remove("conditions");
        }
        value.serialize(serializer)
    }
}

impl<S: ObserveGeneration> ObserveGeneration for WithoutConditions<S> {
    fn add(&mut self, observed_generation: i64) {
        self.0.add(observed_generation);
    }
}
