//! [`Reconcile`]: starts the controller and drives the reconcile loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::Api;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;

use crate::Context;
use crate::Finalize;
use crate::KubeResource;
use crate::cache::ProvideApi;
use crate::controller;
use crate::error::Error;
use crate::error::Result;
use crate::events::EventRecorder;
use crate::object::describe;

/// The longest a failed reconcile waits before it is retried, unless overridden.
pub const REQUEUE_AFTER_ERROR_SECONDS: u64 = 60;

/// Reconciles at a time when nothing else is said: one, as [`Reconcile::start`] runs.
pub(crate) const DEFAULT_CONCURRENCY: usize = 1;

/// The name Events are reported under unless configured otherwise: `<kind>-operator`, in
/// lower case.
pub(crate) fn default_controller_name<R: kube::Resource>() -> String
where
    R::DynamicType: Default,
{
    format!("{}-operator", R::kind(&R::DynamicType::default()).to_lowercase())
}

/// Starts the controller for objects of type `R` with the context `C`.
///
///
/// # Expected flow
///
/// Implement [`Reconcile::destruct`] to hand over the `Api` to watch, the watcher
/// configuration and your [`Context`]; then call [`Reconcile::run`] (stops on SIGINT or
/// SIGTERM), [`Reconcile::start`] or [`Reconcile::start_concurrent`].
///
/// # Guarantees
///
/// - `handle_apply` runs when an object is first seen, when its spec changes (its
///   `metadata.generation`), when its finalizers change, when it is being deleted, and when a
///   requeue comes due. Status-only and label or annotation changes do not run it.
/// - A new object is reconciled once: the reconcile that adds the finalizer runs
///   `handle_apply` on the object as the finalizer patch returned it, and that version's own
///   watch event (same uid and resourceVersion) does not reconcile it again.
/// - One object is never reconciled twice at the same time; different objects run in
///   parallel up to the limit given to `start_concurrent` (`start` runs one at a time).
/// - When the shutdown future completes, no new reconcile starts, the ones in flight finish,
///   and then `start` returns.
/// - A failed reconcile is logged with the object and the error chain, published as a
///   `Warning` Event on the object, and retried with that object's own exponential backoff
///   (see [`error_policy`](Reconcile::error_policy)); a [terminal](Error::terminal) error
///   waits for the object's next change. A panicking handler is such a failure too.
///
/// # Caveats
///
/// Every object backs off the same way, whatever the error. Override
/// [`Reconcile::error_policy`] or [`Context::handle_error`] to tell errors apart. For
/// several replicas, run the controller under [`crate::leader::LeaderElection`].
#[async_trait]
pub trait Reconcile<R, C, F, P>: Sized + Send + 'static
where
    R: KubeResource,
    C: Context<R, F, P> + 'static,
    F: Finalize<R, P> + 'static,
    P: ProvideApi<R> + 'static,
{
    /// Hands over what the controller needs: the `Api` to watch (namespaced or
    /// [`Api::all`]), the watcher configuration (label selectors, for example) and the
    /// context.
    fn destruct(self) -> (Api<R>, Config, Arc<C>);

    /// Runs the controller, one reconcile at a time, until `shutdown` completes (or forever
    /// when it is `None`; write `None::<NoShutdown>` for that, see
    /// [`NoShutdown`](crate::NoShutdown)).
    async fn start<G>(self, shutdown: Option<G>)
    where
        G: Future<Output = ()> + Send + 'static,
    {
        self.start_concurrent(Some(DEFAULT_CONCURRENCY), shutdown).await;
    }

    /// Runs the controller with up to `limit` reconciles at a time (`None` or `Some(0)`: no
    /// limit) until `shutdown` completes.
    async fn start_concurrent<G>(self, limit: Option<usize>, shutdown: Option<G>)
    where
        G: Future<Output = ()> + Send + 'static,
    {
        let children = self.children();
        let references = self.references();
        let (api, watcher, context) = self.destruct();
        let recorder = EventRecorder::new(api.clone().into_client(), Self::controller_name());
        let plan = Plan {
            api,
            watcher,
            context,
            // The `Api` from `destruct` is the whole scope: one namespace, or all.
            namespaces: Vec::new(),
            children,
            references,
            recorder,
            timeout: Self::reconcile_timeout(),
            keep_managed_fields: Self::keep_managed_fields(),
        };
        run::<R, C, F, P, Self, G>(plan, limit, shutdown).await;
    }

    /// The children your context applies, when it owns any: their kinds are watched (in the
    /// namespace of the `Api` from [`destruct`](Reconcile::destruct), or everywhere), and a
    /// change or deletion of a child by anyone but the operator reconciles its parent. Hold
    /// the same [`Children`](crate::children::Children) in your context to
    /// [`apply`](crate::children::Children::apply) and
    /// [`prune`](crate::children::Children::prune) through it. `None` unless overridden.
    fn children(&self) -> Option<crate::children::Children> {
        None
    }

    /// The objects your objects name without owning them, when they name any: their kinds
    /// are watched (where the `Api` from [`destruct`](Reconcile::destruct) looks), and a
    /// change of one reconciles the objects that name it (see [`crate::references`]). Hold
    /// the same [`References`](crate::references::References) in your context to
    /// [`get`](crate::references::References::get) them from the cache. `None` unless
    /// overridden.
    fn references(&self) -> Option<crate::references::References> {
        None
    }

    /// Runs the controller as [`start`](Reconcile::start) does, until SIGINT or SIGTERM.
    async fn run(self) {
        self.start(Some(crate::shutdown::signal())).await;
    }

    /// Reconciles one object: [`Context::handle_reconciliation`].
    ///
    /// # Errors
    ///
    /// What the context returns.
    async fn reconcile(object: Arc<R>, context: Arc<C>) -> Result<Action> {
        context.handle_reconciliation(object).await
    }

    /// What to do after a failed reconcile: [`Context::handle_error`] with the object's
    /// next backoff delay ([`crate::backoff`]): [`error_backoff_base`](Reconcile::error_backoff_base)
    /// doubled per failure in a row, at most
    /// [`requeue_after_error_seconds`](Reconcile::requeue_after_error_seconds), ±10 %.
    /// A [terminal](Error::terminal) error is not retried: the object waits for its next
    /// change.
    fn error_policy(object: Arc<R>, error: &Error, context: Arc<C>) -> Action {
        back_off(object, error, &*context, Self::requeue_after_error_seconds(), Self::error_backoff_base())
    }

    /// The longest wait before retrying a failed reconcile (retries back off exponentially
    /// up to it); `None` does not retry, and waits for the next change of the object.
    /// 60 seconds unless overridden.
    fn requeue_after_error_seconds() -> Option<Duration> {
        Some(Duration::from_secs(REQUEUE_AFTER_ERROR_SECONDS))
    }

    /// The wait before the first retry of a failed reconcile; each further failure in a row
    /// doubles it. 1 second unless overridden.
    fn error_backoff_base() -> Duration {
        crate::backoff::DEFAULT_BASE
    }

    /// The longest one reconcile may run: past it, the reconcile is cancelled and becomes a
    /// [`ReconcileTimedOut`](Error::ReconcileTimedOut) error of that object, reported and
    /// retried like any other. `None` (no limit) unless overridden.
    fn reconcile_timeout() -> Option<Duration> {
        None
    }

    /// Whether the objects the controller keeps in its cache, and hands to `handle_apply` and
    /// `handle_cleanup`, keep `metadata.managedFields` and the
    /// `kubectl.kubernetes.io/last-applied-configuration` annotation. `false` unless
    /// overridden: both are dropped as each object arrives (they are most of a small
    /// object's size, and an operator rarely reads them). Read the object from the API server
    /// when you need them once; override this when you need them always.
    fn keep_managed_fields() -> bool {
        false
    }

    /// The name Events are reported under (`reportingController`): `<kind>-operator` in
    /// lower case unless overridden.
    fn controller_name() -> String {
        default_controller_name::<R>()
    }
}

/// What a controller runs with, whichever way it was put together: the trait's defaults
/// ([`Reconcile::start_concurrent`]) or a derived operator's settings
/// ([`OperatorReconciler`](crate::operator::OperatorReconciler)). [`run`] is the one place that
/// turns it into a running controller.
pub(crate) struct Plan<R: KubeResource, C> {
    pub(crate) api: Api<R>,
    pub(crate) watcher: Config,
    pub(crate) context: Arc<C>,
    /// Only objects in these namespaces are reconciled; empty: every namespace `api` sees.
    pub(crate) namespaces: Vec<String>,
    /// The owned children, watched in `api`'s namespace (or everywhere).
    pub(crate) children: Option<crate::children::Children>,
    /// The referenced kinds, watched in `api`'s namespace (or everywhere).
    pub(crate) references: Option<crate::references::References>,
    /// Publishes Events; its controller name labels the metrics.
    pub(crate) recorder: EventRecorder,
    pub(crate) timeout: Option<Duration>,
    pub(crate) keep_managed_fields: bool,
}

/// Runs the controller that `plan` describes with `Rec`'s reconcile and error policy, up to
/// `limit` reconciles at a time, until `shutdown` completes.
pub(crate) async fn run<R, C, F, P, Rec, G>(plan: Plan<R, C>, limit: Option<usize>, shutdown: Option<G>)
where
    R: KubeResource,
    C: Context<R, F, P> + 'static,
    F: Finalize<R, P> + 'static,
    P: ProvideApi<R> + 'static,
    Rec: Reconcile<R, C, F, P>,
    G: Future<Output = ()> + Send + 'static,
{
    let Plan {
        api,
        watcher,
        context,
        namespaces,
        children,
        references,
        recorder,
        timeout,
        keep_managed_fields,
    } = plan;
    let caches = crate::shared::Caches::current();
    let owners = children
        .filter(|children| !children.owned().is_empty())
        .map(|children| crate::children::parents::<R>(children.watch(&caches, api.namespace())));
    let references = references.filter(|references| !references.referenced().is_empty());
    let namers = references
        .as_ref()
        .map(|references| crate::references::parents::<R>(references.watch(&caches, api.namespace())));
    let parents = match (owners, namers) {
        (Some(owners), Some(namers)) => {
            Some(futures::StreamExt::boxed(futures::stream::select(owners, namers)))
        }
        (owners, namers) => owners.or(namers),
    };
    controller::drive(controller::Setup {
        api,
        watcher,
        namespaces,
        parents,
        references,
        context,
        limit,
        timeout,
        shutdown,
        recorder,
        reconcile: Rec::reconcile,
        error_policy: Rec::error_policy,
        keep_managed_fields,
        caches,
    })
    .await;
}

/// Starts in `caches` every watch `reconciler` runs on (its kind's, its children's, its
/// referenced kinds'), without running it: they list and stay synced, so that a later start
/// (a replica that wins the Lease) finds them ready.
#[cfg(feature = "app")]
pub(crate) fn warm<R, C, F, P, Rec>(reconciler: Rec, caches: &crate::shared::Caches)
where
    R: KubeResource,
    C: Context<R, F, P> + 'static,
    F: Finalize<R, P> + 'static,
    P: ProvideApi<R> + 'static,
    Rec: Reconcile<R, C, F, P>,
{
    let (children, references) = (reconciler.children(), reconciler.references());
    let (api, watcher, _) = reconciler.destruct();
    drop(caches.subscribe(&api, watcher, Rec::keep_managed_fields(), crate::shared::Sharded::Primary));
    if let Some(children) = children {
        drop(children.watch(caches, api.namespace()));
    }
    if let Some(references) = references {
        drop(references.watch(caches, api.namespace()));
    }
}

/// [`Reconcile::error_policy`] with a given cap (`None`: no retry) and base.
pub(crate) fn back_off<R, C, F, P>(
    object: Arc<R>,
    error: &Error,
    context: &C,
    cap: Option<Duration>,
    base: Duration,
) -> Action
where
    R: KubeResource,
    C: Context<R, F, P> + ?Sized,
    F: Finalize<R, P>,
    P: ProvideApi<R>,
{
    if error.is_terminal() {
        return context.handle_error(object, error, None);
    }
    let requeue = cap.map(|cap| crate::backoff::next_delay(&describe(&*object), base, cap));
    context.handle_error(object, error, requeue)
}
