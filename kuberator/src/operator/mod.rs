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
//! # Namespaces
//!
//! | `namespaces` | watched | `Strict` | `Adhoc` | `Extendable` |
//! | --- | --- | --- | --- | --- |
//! | none | every namespace | compile error: list them | a fresh `Api` per lookup | each namespace cached on first use |
//! | one | that namespace | cached | cached | cached |
//! | several | every namespace; objects elsewhere are ignored | cached | cached | cached |
//!
//! `--namespaces` replaces the attribute's list when the operator starts.
//!
//! With no `caching`, listed namespaces mean `Strict` and none means `Extendable`. Watching
//! several namespaces lists and watches cluster-wide, so the operator needs cluster-wide
//! `list` and `watch` on its resource.
//!
//! # Lower-level pieces
//!
//! [`Operator::into_reconciler`] gives the [`Reconcile`](crate::Reconcile) implementation
//! (start it yourself, with your own client or shutdown future), and
//! [`OperatorReconciler::context`] the [`Context`](crate::Context).

mod context;
pub mod manifests;
mod run;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::CustomResourceExt;
use kube::runtime::controller::Action;

pub use self::context::Ctx;
pub use self::context::OperatorContext;
pub use self::context::OperatorReconciler;
pub use self::run::Program;
pub use self::run::run;
use crate::Finalize;
use crate::NamespacedResource;
use crate::cache::CachingStrategy;
use crate::cache::StaticApiProvider;
use crate::error::Result;

/// What `#[kuberator(...)]` said, beyond the types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    /// The finalizer put on every object.
    pub finalizer: &'static str,
    /// The namespaces to watch; empty means every namespace.
    pub namespaces: &'static [&'static str],
    /// What the API provider does with other namespaces.
    pub caching: CachingStrategy,
    /// Reconciles at a time; `None` means no limit.
    pub concurrency: Option<usize>,
    /// The longest a failed reconcile waits before it is retried.
    pub requeue_after_error: Duration,
    /// The wait before the first retry; doubled per failure in a row, up to
    /// `requeue_after_error`.
    pub error_backoff_base: Duration,
    /// A label selector that limits the watch.
    pub labels: Option<&'static str>,
    /// The name Events are reported under.
    pub controller_name: &'static str,
}

impl OperatorConfig {
    /// The attribute's namespaces, owned, as the runtime takes them.
    pub fn watched_namespaces(&self) -> Vec<String> {
        self.namespaces.iter().map(|ns| (*ns).to_owned()).collect()
    }
}

/// A whole operator; implemented by `#[derive(Operator)]`.
pub trait Operator: Sized + Send + Sync + 'static {
    /// The custom resource it reconciles.
    type Resource: NamespacedResource<DynamicType = ()> + CustomResourceExt;

    /// The repository that finalizes and writes status: [`K8sRepository`](crate::k8s::K8sRepository)
    /// unless `repository = ...` names another.
    type Repository: Finalize<Self::Resource, StaticApiProvider<Self::Resource>>
        + From<StaticApiProvider<Self::Resource>>
        + 'static;

    /// The attribute's settings.
    fn config() -> OperatorConfig;

    /// Calls your `handle_apply`.
    fn apply(
        &self,
        object: Arc<Self::Resource>,
        ctx: &Ctx<Self>,
    ) -> impl Future<Output = Result<Action>> + Send;

    /// Calls your `handle_cleanup`.
    fn cleanup(
        &self,
        object: Arc<Self::Resource>,
        ctx: &Ctx<Self>,
    ) -> impl Future<Output = Result<Action>> + Send;

    /// The [`Reconcile`](crate::Reconcile) implementation of this operator, on `client`.
    fn into_reconciler(self, client: Client) -> OperatorReconciler<Self> {
        OperatorReconciler::new(self, client, Self::config().watched_namespaces())
    }

    /// Like [`into_reconciler`](Operator::into_reconciler), but watching `namespaces`
    /// instead of the attribute's (empty: every namespace); what `--namespaces` does.
    fn into_reconciler_in(self, client: Client, namespaces: Vec<String>) -> OperatorReconciler<Self> {
        OperatorReconciler::new(self, client, namespaces)
    }
}
