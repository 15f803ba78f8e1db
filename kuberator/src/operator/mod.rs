//! The runtime behind `#[derive(Operator)]`: a whole operator from one annotated struct.
//!
//! # Expected flow
//!
//! The derive implements [`Operator`] for your struct from its `#[kuberator(...)]`
//! attribute and your inherent `handle_apply` / `handle_cleanup` methods, and gives the
//! struct an inherent `run()`. `run()` reads the command line ([`run()`]: `crd`, `rbac` and
//! `manifests` print what the operator needs in a cluster), sets up logging, connects to the
//! cluster in `KUBECONFIG` (or in-cluster), serves metrics and probes
//! ([`crate::telemetry`]), and runs the controller until SIGINT or SIGTERM; with leader
//! election (on unless `--leader-election=false`), only while it holds the Lease
//! ([`crate::leader`]).
//!
//! Handlers get a [`Ctx`]: status writes, Events, the client and the repository are one
//! call away.
//!
//! The attribute, the handler signatures and how namespaces and caching combine are
//! documented once, on the derive: [`Operator`](macro@crate::Operator) (`kuberator-derive/README.md`).
//!
//! # Lower-level pieces
//!
//! [`Operator::into_reconciler`] gives the [`Reconcile`](crate::Reconcile) implementation:
//! start it yourself, with your own client or shutdown future; it runs with the operator's
//! [`Settings`] whichever way it is started. Its [`Context`](crate::Context) is the [`Ctx`]
//! your handlers get.

mod context;
#[cfg(feature = "app")]
mod group;
pub(crate) mod handler;
#[cfg(feature = "app")]
#[cfg_attr(docsrs, doc(cfg(feature = "app")))]
pub mod manifests;
#[cfg(feature = "app")]
mod run;

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;
use kube::CustomResourceExt;
use kube::Resource;
use kube::runtime::controller::Action;

pub use self::context::Ctx;
pub use self::context::OperatorReconciler;
#[cfg(feature = "app")]
#[cfg_attr(docsrs, doc(cfg(feature = "app")))]
pub use self::group::Operators;
#[cfg(feature = "app")]
#[cfg_attr(docsrs, doc(cfg(feature = "app")))]
pub use self::run::Program;
#[cfg(feature = "app")]
#[cfg_attr(docsrs, doc(cfg(feature = "app")))]
pub use self::run::run;
use crate::Finalize;
use crate::KubeResource;
use crate::REQUEUE_AFTER_ERROR_SECONDS;
use crate::cache::CachingStrategy;
use crate::cache::StaticApiProvider;
use crate::children::Owned;
use crate::error::Result;
use crate::reconcile::DEFAULT_CONCURRENCY;

/// What `#[kuberator(...)]` says, beyond the types: `None` (or an empty list) where the
/// attribute is silent. [`OperatorConfig::resolve`] fills in the defaults.
///
/// It is `#[non_exhaustive]`, so that a new attribute key is a new field and no breaking
/// change: start from `OperatorConfig::default()` and set the fields you need (the derive
/// does just that).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperatorConfig {
    /// `finalizer = "..."`.
    pub finalizer: Option<&'static str>,
    /// `namespaces = [...]`; empty means every namespace.
    pub namespaces: &'static [&'static str],
    /// `caching = ...`.
    pub caching: Option<CachingStrategy>,
    /// `concurrency = N`; `Some(0)` means no limit.
    pub concurrency: Option<usize>,
    /// `shards = N`; `Some(0)` means not sharded.
    pub shards: Option<u32>,
    /// `requeue_after_error_seconds = N`.
    pub requeue_after_error: Option<Duration>,
    /// `error_backoff_base_millis = N`.
    pub error_backoff_base: Option<Duration>,
    /// `labels = "..."`.
    pub labels: Option<&'static str>,
    /// `controller_name = "..."`.
    pub controller_name: Option<&'static str>,
    /// `owns = [...]`: the kinds of the children it applies.
    pub owns: &'static [Owned],
    /// `reconcile_timeout_seconds = N`; `Some(Duration::ZERO)` means no limit.
    pub reconcile_timeout: Option<Duration>,
    /// `keep_managed_fields = true`.
    pub keep_managed_fields: bool,
    /// `references(Kind = field, ...)`: the kinds its objects name without owning them.
    pub references: Vec<crate::references::Referenced>,
    /// `webhooks = [...]`: the webhooks it serves.
    pub webhooks: WebhookMethods,
}

/// Which of an operator's methods are served as webhooks (`webhooks = [validate, set_defaults]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookMethods {
    /// `validate`: a validating webhook on create, update and delete.
    pub validate: bool,
    /// `set_defaults`: a mutating webhook on create and update.
    pub set_defaults: bool,
}

impl WebhookMethods {
    /// Whether it serves any.
    pub fn any(&self) -> bool {
        self.validate || self.set_defaults
    }
}

impl OperatorConfig {
    /// The settings an operator of `R` runs with: what the attribute says, and the default
    /// wherever it is silent.
    pub fn resolve<R: Resource<DynamicType = ()>>(&self) -> Settings {
        let namespaces: Vec<String> = self.namespaces.iter().map(|ns| (*ns).to_owned()).collect();
        Settings {
            finalizer: self.finalizer.unwrap_or_else(|| intern(crate::finalize::default_finalizer::<R>())),
            caching: self.caching.unwrap_or_else(|| CachingStrategy::for_namespaces(&namespaces)),
            namespaces,
            concurrency: match self.concurrency {
                None => Some(DEFAULT_CONCURRENCY),
                Some(0) => None,
                Some(limit) => Some(limit),
            },
            shards: self.shards.filter(|shards| *shards > 0),
            requeue_after_error: self
                .requeue_after_error
                .unwrap_or(Duration::from_secs(REQUEUE_AFTER_ERROR_SECONDS)),
            error_backoff_base: self.error_backoff_base.unwrap_or(crate::backoff::DEFAULT_BASE),
            labels: self.labels,
            controller_name: self
                .controller_name
                .unwrap_or_else(|| intern(crate::reconcile::default_controller_name::<R>())),
            owns: self.owns.to_vec(),
            reconcile_timeout: match self.reconcile_timeout {
                None => Some(DEFAULT_RECONCILE_TIMEOUT),
                Some(Duration::ZERO) => None,
                limit => limit,
            },
            keep_managed_fields: self.keep_managed_fields,
            references: self.references.clone(),
            webhooks: self.webhooks,
        }
    }
}

/// What a derived operator runs with: its [`OperatorConfig`] with every default applied,
/// and changed by the command line (`--namespaces`, `--concurrency`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The finalizer put on every object: `<plural>.<group>/finalizer` by default.
    pub finalizer: &'static str,
    /// The namespaces to watch; empty means every namespace.
    pub namespaces: Vec<String>,
    /// What the API provider does with other namespaces: `Strict` for listed namespaces,
    /// `Extendable` for all, by default.
    pub caching: CachingStrategy,
    /// Reconciles at a time; `None` means no limit. One by default.
    pub concurrency: Option<usize>,
    /// How many shards its replicas split the objects into (`--shards`); `None`: not
    /// sharded, one replica reconciles everything.
    pub shards: Option<u32>,
    /// The longest a failed reconcile waits before it is retried: 60 s by default.
    pub requeue_after_error: Duration,
    /// The wait before the first retry, doubled per failure in a row up to
    /// `requeue_after_error`: 1 s by default.
    pub error_backoff_base: Duration,
    /// A label selector that limits the watch.
    pub labels: Option<&'static str>,
    /// The name Events are reported under: `<kind>-operator` by default. Also the field
    /// manager of child applies and the value of their managed-by label.
    pub controller_name: &'static str,
    /// The kinds of the children it owns: watched, cached, and in its RBAC rules.
    pub owns: Vec<Owned>,
    /// The longest one reconcile may run before it is cancelled and retried as an error;
    /// `None` means no limit. Five minutes by default.
    pub reconcile_timeout: Option<Duration>,
    /// Whether the objects the controller keeps, and hands to the handlers, keep
    /// `metadata.managedFields` and the `kubectl.kubernetes.io/last-applied-configuration`
    /// annotation. `false` by default: both are dropped as each object arrives, which makes
    /// the cache about three times smaller for objects written by server-side apply.
    pub keep_managed_fields: bool,
    /// The kinds its objects name without owning them: watched, cached, and read-only in its
    /// RBAC rules.
    pub references: Vec<crate::references::Referenced>,
    /// The webhooks it serves ([`crate::webhook`]).
    pub webhooks: WebhookMethods,
}

/// How long one reconcile of a derived operator may run unless configured otherwise.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);

/// A `'static` copy of `text`, made once per distinct text: the computed default names live
/// as long as the process, as the attribute's literals do.
fn intern(text: String) -> &'static str {
    static INTERNED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut interned = INTERNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = interned.iter().find(|known| **known == text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.into_boxed_str());
    interned.push(leaked);
    leaked
}

/// A whole operator; implemented by `#[derive(Operator)]`, which documents the attribute and
/// the handlers you write.
pub trait Operator: Sized + Send + Sync + 'static {
    /// The custom resource it reconciles.
    type Resource: KubeResource<DynamicType = ()> + CustomResourceExt;

    /// The repository that finalizes and writes status: [`K8sRepository`](crate::k8s::K8sRepository)
    /// unless `repository = ...` names another.
    type Repository: Finalize<Self::Resource, StaticApiProvider<Self::Resource>>
        + From<StaticApiProvider<Self::Resource>>
        + 'static;

    /// What the attribute says.
    fn config() -> OperatorConfig;

    /// The settings it runs with: [`config`](Operator::config) with the defaults applied.
    fn settings() -> Settings {
        Self::config().resolve::<Self::Resource>()
    }

    /// Calls your `handle_apply`. Not part of the API: the derive writes it.
    #[doc(hidden)]
    fn __handle_apply<'a>(
        &'a self,
        object: Arc<Self::Resource>,
        ctx: &'a Ctx<Self>,
    ) -> impl Future<Output = Result<Action>> + Send + 'a;

    /// Calls your `handle_cleanup`. Not part of the API: the derive writes it.
    #[doc(hidden)]
    fn __handle_cleanup<'a>(
        &'a self,
        object: Arc<Self::Resource>,
        ctx: &'a Ctx<Self>,
    ) -> impl Future<Output = Result<Action>> + Send + 'a;

    /// The other versions of its kind it serves, converted through [`Operator::Resource`]
    /// (`versions = [...]`): none unless the derive lists some.
    fn versions() -> Vec<crate::webhook::Version<Self::Resource>> {
        Vec::new()
    }

    /// Calls your `validate`. Not part of the API: the derive writes it when `webhooks = [...]`
    /// names `validate`.
    #[doc(hidden)]
    fn __validate<'a>(
        &'a self,
        change: crate::webhook::Change<'a, Self::Resource>,
        ctx: &'a Ctx<Self>,
    ) -> impl Future<Output = std::result::Result<(), crate::webhook::Rejection>> + Send + 'a {
        let _ = (change, ctx);
        std::future::ready(Ok(()))
    }

    /// Calls your `set_defaults`. Not part of the API: the derive writes it when
    /// `webhooks = [...]` names `set_defaults`.
    #[doc(hidden)]
    fn __set_defaults<'a>(
        &'a self,
        object: &'a mut Self::Resource,
        ctx: &'a Ctx<Self>,
    ) -> impl Future<Output = std::result::Result<(), crate::webhook::Rejection>> + Send + 'a {
        let _ = (object, ctx);
        std::future::ready(Ok(()))
    }

    /// The [`Reconcile`](crate::Reconcile) implementation of this operator on `client`, with
    /// its [`settings`](Operator::settings). Every way of starting it (`start`, `run`, or
    /// under a [`LeaderElection`](crate::leader::LeaderElection)) honours them.
    fn into_reconciler(self, client: Client) -> OperatorReconciler<Self> {
        OperatorReconciler::new(self, client, Self::settings())
    }

    /// Like [`into_reconciler`](Operator::into_reconciler), with settings changed by hand
    /// (start from [`Operator::settings`]); what the command line's `--namespaces` and
    /// `--concurrency` do.
    fn into_reconciler_with(self, client: Client, settings: Settings) -> OperatorReconciler<Self> {
        OperatorReconciler::new(self, client, settings)
    }
}
