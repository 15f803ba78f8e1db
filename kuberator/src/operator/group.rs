//! Several controllers in one process: [`Operators`].

use std::marker::PhantomData;
use std::sync::Arc;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use futures::future::Shared;
use kube::Client;
use kube::CustomResourceExt;
use kube::Resource;

use super::Operator;
use super::OperatorReconciler;
use super::Program;
use super::Settings;
use super::manifests::Part;
use crate::Context;
use crate::Finalize;
use crate::KubeResource;
use crate::Reconcile;
use crate::cache::ProvideApi;
use crate::shared::Caches;
use crate::shutdown::Shutdown;

/// The types a trait-level reconciler is generic over, as a marker.
type Kinds<R, C, F, P> = PhantomData<fn() -> (R, C, F, P)>;

/// The stop signal every controller of a process shares.
pub(crate) type Stop = Shared<BoxFuture<'static, ()>>;

/// One controller of a process, before it has a client: what the command line, the printed
/// manifests and the start need of it, its types erased.
pub(crate) trait Unit: Send {
    /// What it runs with unless the command line says otherwise.
    fn settings(&self) -> &Settings;
    /// The kind it reconciles, for messages.
    fn kind(&self) -> String;
    /// Whether that kind lives in namespaces.
    fn namespaced(&self) -> bool;
    /// Its share of the manifests when it watches `watched`.
    fn part(&self, settings: &Settings) -> Part;
    /// The controller on `client` with `settings`, ready to start (and to start again after
    /// leadership came back).
    fn build(self: Box<Self>, client: Client, settings: Settings) -> Arc<dyn Runnable>;
    /// Moves its objects to the storage version ([`crate::webhook::migrate_storage`]) when it
    /// serves other versions; `None` when it does not.
    fn migrate(&self, _client: Client) -> Option<BoxFuture<'static, Result<usize, kube::Error>>> {
        None
    }
}

/// A controller that can be started, any number of times, one run at a time.
pub(crate) trait Runnable: Send + Sync {
    /// Runs it until `stop` completes and what is in flight finished, its watches from
    /// `caches`.
    fn start(&self, stop: Stop, caches: &Caches) -> BoxFuture<'static, ()>;
    /// Starts the watches it needs in `caches` without running it (warm standby).
    fn warm(&self, caches: &Caches);
    /// Its webhooks, if it serves any.
    fn admission(&self) -> Option<Arc<dyn crate::webhook::Admit>> {
        None
    }
}

/// A derived operator.
struct Derived<O: Operator> {
    operator: O,
    settings: Settings,
}

impl<O: Operator> Unit for Derived<O> {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn kind(&self) -> String {
        O::Resource::kind(&()).into_owned()
    }

    fn namespaced(&self) -> bool {
        crate::object::is_namespaced::<O::Resource>()
    }

    fn part(&self, settings: &Settings) -> Part {
        Part::of::<O::Resource>(settings, settings.namespaces.clone())
            .with_crd::<O::Resource>()
            .with_webhooks::<O::Resource>(settings, &O::versions())
    }

    fn build(self: Box<Self>, client: Client, settings: Settings) -> Arc<dyn Runnable> {
        Arc::new(self.operator.into_reconciler_with(client, settings))
    }

    fn migrate(&self, client: Client) -> Option<BoxFuture<'static, Result<usize, kube::Error>>> {
        if O::versions().is_empty() {
            return None;
        }
        Some(async move { crate::webhook::migrate_storage::<O::Resource>(&client).await }.boxed())
    }
}

impl<O: Operator> Runnable for OperatorReconciler<O> {
    fn start(&self, stop: Stop, caches: &Caches) -> BoxFuture<'static, ()> {
        caches.scope(Reconcile::start(self.clone(), Some(stop))).boxed()
    }

    fn warm(&self, caches: &Caches) {
        crate::reconcile::warm(self.clone(), caches);
    }

    fn admission(&self) -> Option<Arc<dyn crate::webhook::Admit>> {
        OperatorReconciler::admission(self)
    }
}

/// A trait-level reconciler: it brings its own client and `Api`; the process gives it its
/// concurrency.
struct TraitLevel<R, C, F, P, Rec> {
    reconciler: Rec,
    settings: Settings,
    kinds: Kinds<R, C, F, P>,
}

impl<R, C, F, P, Rec> Unit for TraitLevel<R, C, F, P, Rec>
where
    R: KubeResource + Resource<DynamicType = ()> + CustomResourceExt,
    C: Context<R, F, P> + 'static,
    F: Finalize<R, P> + 'static,
    P: ProvideApi<R> + 'static,
    Rec: Reconcile<R, C, F, P> + Clone + Sync,
{
    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn kind(&self) -> String {
        R::kind(&()).into_owned()
    }

    fn namespaced(&self) -> bool {
        crate::object::is_namespaced::<R>()
    }

    fn part(&self, settings: &Settings) -> Part {
        Part::of::<R>(settings, settings.namespaces.clone()).with_crd::<R>()
    }

    fn build(self: Box<Self>, _client: Client, settings: Settings) -> Arc<dyn Runnable> {
        Arc::new(TraitRunning {
            reconciler: self.reconciler,
            limit: settings.concurrency,
            kinds: PhantomData,
        })
    }
}

struct TraitRunning<R, C, F, P, Rec> {
    reconciler: Rec,
    limit: Option<usize>,
    kinds: Kinds<R, C, F, P>,
}

impl<R, C, F, P, Rec> Runnable for TraitRunning<R, C, F, P, Rec>
where
    R: KubeResource,
    C: Context<R, F, P> + 'static,
    F: Finalize<R, P> + 'static,
    P: ProvideApi<R> + 'static,
    Rec: Reconcile<R, C, F, P> + Clone + Sync,
{
    fn start(&self, stop: Stop, caches: &Caches) -> BoxFuture<'static, ()> {
        caches.scope(self.reconciler.clone().start_concurrent(self.limit, Some(stop))).boxed()
    }

    fn warm(&self, caches: &Caches) {
        crate::reconcile::warm(self.reconciler.clone(), caches);
    }
}

/// Several controllers run as one operator process: derived operators
/// ([`with`](Operators::with)) and trait-level reconcilers
/// ([`with_reconciler`](Operators::with_reconciler)).
///
/// ```no_run
/// # use kuberator::prelude::*;
/// # #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
/// # #[kube(group = "example.com", version = "v1", kind = "Database", namespaced)]
/// # struct DatabaseSpec { engine: String }
/// # #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
/// # #[kube(group = "example.com", version = "v1", kind = "Backup", namespaced)]
/// # struct BackupSpec { database: String }
/// # #[derive(Operator)]
/// # #[kuberator(resource = Database)]
/// # struct DatabaseOperator;
/// # impl DatabaseOperator {
/// #     async fn handle_apply(&self, _: Arc<Database>, _: &Ctx<Self>) -> kuberator::Result<Action> { Ok(Action::await_change()) }
/// #     async fn handle_cleanup(&self, _: Arc<Database>, _: &Ctx<Self>) -> kuberator::Result<Action> { Ok(Action::await_change()) }
/// # }
/// # #[derive(Operator)]
/// # #[kuberator(resource = Backup)]
/// # struct BackupOperator;
/// # impl BackupOperator {
/// #     async fn handle_apply(&self, _: Arc<Backup>, _: &Ctx<Self>) -> kuberator::Result<Action> { Ok(Action::await_change()) }
/// #     async fn handle_cleanup(&self, _: Arc<Backup>, _: &Ctx<Self>) -> kuberator::Result<Action> { Ok(Action::await_change()) }
/// # }
/// #[tokio::main]
/// async fn main() -> anyhow::Result<()> {
///     kuberator::Operators::new()
///         .with(DatabaseOperator)
///         .with(BackupOperator)
///         .run(kuberator::program!())
///         .await
/// }
/// ```
///
/// # What the process shares
///
/// [`run`](Operators::run) gives the controllers what a single derived operator's `run()`
/// has, once for all of them:
///
/// - one command line: the shared flags once; `--concurrency` and `--reconcile-timeout` take
///   `NAME=VALUE` for one controller (its `controller_name`), a bare value for all;
///   `--namespaces` applies to every namespaced controller;
/// - one Lease (named after the program unless `--lease-name`), under which all of them
///   run: they start together when it is won, and stop together when it is lost;
/// - one metrics server and one health server; `/readyz` answers only when every
///   controller's initial sync is done, and every metric has its `controller` label;
/// - one watch and one cache per kind (per namespace scope and label selector), shared by
///   every controller that needs it: the primary kind of one controller, the children of
///   another and the kind a third [references](crate::references) are one watch when they
///   ask for the same thing, and the children of all the process's controllers are one
///   watch per kind (selected by `app.kubernetes.io/managed-by in (<their names>)`). A
///   controller reads a cache only once it has synced. The caches live as long as the
///   process: with leader election they list and watch while it stands by
///   (`--warm-standby`), so that a new leader reconciles at once;
/// - one drain deadline on shutdown: the signal stops them all, and the reconciles in flight
///   in any of them have `--drain-deadline` to finish;
/// - `crd` prints every CRD; `rbac` and `manifests` print one ServiceAccount, Deployment
///   and set of roles named after the program, with the rules of every controller merged to
///   the least privilege that allows each call ([`manifests::merge_rules`](super::manifests::merge_rules)):
///   a Role in the namespace of the controllers that watch exactly one, a ClusterRole for
///   those that watch several or all.
///
/// Controller names must differ: they label the metrics, the Events and the child applies.
pub struct Operators {
    units: Vec<Box<dyn Unit>>,
    name: Option<&'static str>,
}

impl Default for Operators {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operators").field("controllers", &self.controller_names()).finish_non_exhaustive()
    }
}

impl Operators {
    /// No controller yet.
    pub fn new() -> Self {
        Self { units: Vec::new(), name: None }
    }

    /// With the derived operator `operator`, and its attribute's settings.
    #[must_use]
    pub fn with<O: Operator>(mut self, operator: O) -> Self {
        self.units.push(Box::new(Derived { settings: O::settings(), operator }));
        self
    }

    /// With the trait-level reconciler `reconciler`, which watches what its
    /// [`destruct`](Reconcile::destruct) says. Its settings come from the trait's functions
    /// (`controller_name()`, and its [`children`](Reconcile::children) and
    /// [`references`](Reconcile::references) for the RBAC);
    /// it runs with the process's `--concurrency` ([`Reconcile::start_concurrent`]). Its
    /// rules are printed cluster-wide unless its `Api` is in one namespace.
    #[must_use]
    pub fn with_reconciler<R, C, F, P, Rec>(mut self, reconciler: Rec) -> Self
    where
        R: KubeResource + Resource<DynamicType = ()> + CustomResourceExt,
        C: Context<R, F, P> + 'static,
        F: Finalize<R, P> + 'static,
        P: ProvideApi<R> + 'static,
        Rec: Reconcile<R, C, F, P> + Clone + Sync,
    {
        let namespace = {
            let (api, _, _) = reconciler.clone().destruct();
            api.namespace().map(str::to_owned)
        };
        let config = super::OperatorConfig {
            controller_name: Some(super::intern(Rec::controller_name())),
            ..super::OperatorConfig::default()
        };
        let mut settings = config.resolve::<R>();
        settings.namespaces = namespace.into_iter().collect();
        settings.owns = reconciler.children().map(|children| children.owned().to_vec()).unwrap_or_default();
        settings.references =
            reconciler.references().map(|references| references.referenced().to_vec()).unwrap_or_default();
        settings.reconcile_timeout = Rec::reconcile_timeout();
        settings.keep_managed_fields = Rec::keep_managed_fields();
        self.units.push(Box::new(TraitLevel { reconciler, settings, kinds: PhantomData }));
        self
    }

    /// Names the process: its Lease, ServiceAccount, Deployment and roles. By default the
    /// program's name ([`Program::name`]), or, for a single controller, its controller name
    /// (as a derived operator's `run()` has it).
    #[must_use]
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    /// The controllers' names, in the order they were added.
    pub fn controller_names(&self) -> Vec<&'static str> {
        self.units.iter().map(|unit| unit.settings().controller_name).collect()
    }

    /// The process's name: as [`name`](Operators::name) says; the program's name made a
    /// valid object name (`database_operator` becomes `database-operator`).
    pub(crate) fn process_name(&self, program: &'static str) -> &'static str {
        match (self.name, self.units.as_slice()) {
            (Some(name), _) => name,
            (None, [only]) => only.settings().controller_name,
            (None, _) => super::intern(object_name(program)),
        }
    }

    /// Runs every controller on `client` with its own settings until `shutdown` completes:
    /// no command line, no Lease, no servers (for tests, and for applications that set those
    /// up themselves). `/readyz` ([`telemetry::readiness`](crate::telemetry::readiness))
    /// waits for all of them from the start.
    ///
    /// # Panics
    ///
    /// When two controllers have the same name.
    pub async fn start<G>(self, client: Client, shutdown: Option<G>)
    where
        G: Future<Output = ()> + Send + 'static,
    {
        if let Err(duplicate) = self.check_names() {
            panic!("{duplicate}");
        }
        let running: Vec<(&'static str, Arc<dyn Runnable>)> = self
            .units
            .into_iter()
            .map(|unit| {
                let settings = unit.settings().clone();
                (settings.controller_name, unit.build(client.clone(), settings))
            })
            .collect();
        let stop = match shutdown {
            Some(shutdown) => Shutdown::new(shutdown),
            None => Shutdown::new(std::future::pending()),
        };
        let caches = Caches::new(running.iter().map(|(name, _)| *name));
        start_all(&running, stop, &caches).await;
    }

    /// Runs the process: [`run`](super::run) for all of them, with one command line, Lease,
    /// metrics and health server and drain (see [what the process shares](Operators#what-the-process-shares)).
    /// `program` names it: [`program!`](crate::program) fills it in from your crate.
    ///
    /// # Errors
    ///
    /// As [`run`](super::run), and when no controller was added or two have the same name.
    pub async fn run(self, program: Program) -> anyhow::Result<()> {
        anyhow::ensure!(!self.units.is_empty(), "no controller to run: add one with Operators::with");
        self.check_names().map_err(anyhow::Error::msg)?;
        let name = self.process_name(program.name);
        super::run::run_units(self.units, name, program).await
    }

    fn check_names(&self) -> Result<(), String> {
        let names = self.controller_names();
        match names.iter().enumerate().find(|(index, name)| names[..*index].contains(name)) {
            Some((_, name)) => Err(format!(
                "two controllers are named `{name}`: give one another `controller_name` in #[kuberator(...)] \
                 (names label the metrics, the Events and the child applies)"
            )),
            None => Ok(()),
        }
    }
}

/// Starts every controller in `running` with one shared stop, and waits for all of them.
/// Each is expected in `/readyz` from now on, so that the process is not ready while one
/// has yet to begin its sync.
pub(crate) fn start_all(
    running: &[(&'static str, Arc<dyn Runnable>)],
    stop: Shutdown,
    caches: &Caches,
) -> BoxFuture<'static, ()> {
    crate::telemetry::expect_controllers(running.iter().map(|(name, _)| *name));
    let stop: Stop = stop.boxed().shared();
    let started: Vec<_> =
        running.iter().map(|(_, controller)| controller.start(stop.clone(), caches)).collect();
    futures::future::join_all(started).map(drop).boxed()
}

/// `name` as a Kubernetes object name (a DNS label): lower case, `-` for anything else.
fn object_name(name: &str) -> String {
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let name = name.trim_matches('-');
    if name.is_empty() { "operator".to_owned() } else { name.chars().take(63).collect() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_program_name_becomes_an_object_name() {
        assert_eq!(super::object_name("database_operator"), "database-operator");
        assert_eq!(super::object_name("My.Operator"), "my-operator");
        assert_eq!(super::object_name("__"), "operator");
    }
}
