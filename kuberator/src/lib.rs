//! Kuberator: a framework for writing production Kubernetes operators on
//! [kube-rs](https://kube.rs).
//!
//! You define a custom resource with kube's `CustomResource` derive and write two idempotent
//! hooks, [`Context::handle_apply`] and [`Context::handle_cleanup`]. Kuberator runs them
//! under a finalizer, writes status with the observed generation ([`Finalize`]), publishes
//! Events ([`events`]), reports failures, retries, and shuts down gracefully ([`Reconcile`]).
//!
//! The pieces:
//!
//! - [`Context`]: your logic, the finalizer name and the repository.
//! - [`Finalize`]: the finalizer flow and status writes, implemented for you by
//!   [`k8s::K8sRepository`].
//! - [`Reconcile`]: starts the controller.
//! - [`cache`]: namespace-keyed `Api` providers with lock-free lookups.
//! - [`events`]: Events that `kubectl describe` shows, and a mock for unit tests.
//! - [`error`]: the error type handlers return.
//! - [`children`]: owned child objects, applied, pruned, cached and watched.
//! - [`status`]: status conditions (`Ready`) and the observed generation.
//! - [`leader`]: leader election on a Lease, so that one of several replicas reconciles.
//! - [`telemetry`]: Prometheus metrics, `/healthz` and `/readyz`.
//!
//! The [`guide`] walks from a first operator to one in production; `examples/` in the
//! repository has runnable ones.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod context;
mod controller;
mod decode;
mod finalize;
mod object;
mod own_writes;
mod queue;
mod reconcile;
mod shared;

#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub mod guide;

pub mod backoff;
pub mod cache;
pub mod children;
pub mod dry_run;
pub mod error;
pub mod events;
pub mod k8s;
pub mod leader;
pub mod operator;
pub mod references;
pub mod shard;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod webhook;

pub use crate::context::Context;
pub use crate::error::Error;
pub use crate::error::Result;
pub use crate::finalize::Finalize;
pub use crate::object::KubeResource;
pub use crate::object::NamespacedResource;
pub use crate::object::ScopeKind;
pub use crate::object::TryResource;
pub use crate::operator::Operator;
#[cfg(feature = "app")]
#[cfg_attr(docsrs, doc(cfg(feature = "app")))]
pub use crate::operator::Operators;
pub use crate::reconcile::REQUEUE_AFTER_ERROR_SECONDS;
pub use crate::reconcile::Reconcile;
pub use crate::shutdown::NoShutdown;
pub use crate::status::AsStatusError;
pub use crate::status::ObserveGeneration;
pub use crate::status::WithStatusError;
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use kuberator_derive::Operator;

/// The [`Program`](crate::operator::Program) of the crate this is written in: its binary's
/// name (or the package's outside a binary), version and description, for `--help` and
/// `--version` of [`Operators::run`].
#[cfg(feature = "app")]
#[cfg_attr(docsrs, doc(cfg(feature = "app")))]
#[macro_export]
macro_rules! program {
    () => {
        $crate::operator::Program {
            name: match ::std::option_env!("CARGO_BIN_NAME") {
                ::std::option::Option::Some(name) => name,
                ::std::option::Option::None => ::std::env!("CARGO_PKG_NAME"),
            },
            version: ::std::env!("CARGO_PKG_VERSION"),
            about: ::std::env!("CARGO_PKG_DESCRIPTION"),
        }
    };
}

/// Hooks for the project's own benchmarks. Not a public API.
#[doc(hidden)]
pub mod __bench {
    /// Decodes one object of a watch or list answer as the controller does: into `R` from
    /// the JSON text, or `None` (reported) when it does not fit.
    pub fn decode_watched<R: serde::de::DeserializeOwned>(json: &[u8]) -> Option<R> {
        match serde_json::from_slice::<crate::decode::Watched<R>>(json).ok()? {
            crate::decode::Watched::Decoded(object) => Some(object),
            crate::decode::Watched::Undecodable(_) => None,
        }
    }
}

/// What the code `#[derive(Operator)]` generates refers to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use anyhow;
    pub use kube;

    pub use crate::operator::handler::HandleApplyMissing;
    pub use crate::operator::handler::HandleCleanupMissing;
    pub use crate::operator::handler::SetDefaultsMissing;
    pub use crate::operator::handler::ValidateMissing;
    pub use crate::operator::handler::backoff_base_within_default_cap;
    pub use crate::operator::handler::call_handler;

    /// Fails to compile (in a `const`) when `P` cannot own `K`: a namespaced parent cannot own
    /// a cluster-scoped child, since the garbage collector would delete it.
    pub const fn legal_child<P, K>()
    where
        P: kube::Resource<Scope: crate::ScopeKind>,
        K: crate::children::Child,
    {
        if <P::Scope as crate::ScopeKind>::NAMESPACED && !<K::Scope as crate::ScopeKind>::NAMESPACED {
            panic!(
                "a namespaced resource cannot own a cluster-scoped kind: the garbage collector deletes \
                 such children at once; remove the kind from `owns`, or make the resource cluster-scoped"
            );
        }
    }

    /// Fails to compile (in a `const`) when `R` is cluster-scoped: `namespaces = [...]` lists
    /// namespaces, and a cluster-scoped object lives in none.
    pub const fn namespaces_need_a_namespaced_resource<R: kube::Resource<Scope: crate::ScopeKind>>() {
        if !<R::Scope as crate::ScopeKind>::NAMESPACED {
            panic!(
                "`namespaces` needs a namespaced resource, but this resource is cluster-scoped: its \
                 objects live in no namespace, so the operator watches them all; remove `namespaces`"
            );
        }
    }

    /// Fails to compile (in a `const`) when `R` is cluster-scoped: `caching = Strict` limits the
    /// operator to listed namespaces.
    pub const fn strict_needs_a_namespaced_resource<R: kube::Resource<Scope: crate::ScopeKind>>() {
        if !<R::Scope as crate::ScopeKind>::NAMESPACED {
            panic!(
                "`caching = Strict` needs a namespaced resource, but this resource is cluster-scoped: \
                 there are no namespaces to limit the operator to; remove `caching`"
            );
        }
    }
}

/// The traits and types nearly every operator uses, for `use kuberator::prelude::*;`.
pub mod prelude {
    pub use std::sync::Arc;

    pub use async_trait::async_trait;
    pub use kube::Api;
    pub use kube::Client;
    pub use kube::CustomResource;
    pub use kube::CustomResourceExt;
    pub use kube::KubeSchema;
    pub use kube::Resource;
    pub use kube::ResourceExt;
    pub use kube::runtime::controller::Action;

    pub use crate::AsStatusError;
    pub use crate::Context;
    pub use crate::Finalize;
    pub use crate::NoShutdown;
    pub use crate::ObserveGeneration;
    #[cfg(feature = "derive")]
    pub use crate::Operator;
    pub use crate::Reconcile;
    pub use crate::TryResource;
    pub use crate::WithStatusError;
    pub use crate::cache::CachedApiProvider;
    pub use crate::cache::CachingStrategy;
    pub use crate::cache::ProvideApi;
    pub use crate::cache::StaticApiProvider;
    pub use crate::events::EmitEvent;
    pub use crate::events::EventData;
    pub use crate::events::EventRecorder;
    pub use crate::events::Reason;
    pub use crate::k8s::K8sRepository;
    pub use crate::operator::Ctx;
    pub use crate::status::Condition;
    pub use crate::status::Conditions;
    pub use crate::webhook::Change;
    pub use crate::webhook::Rejection;
    pub use schemars::JsonSchema;
    pub use serde::Deserialize;
    pub use serde::Serialize;
}
