//! The guide: a chapter a module, from a first operator to one running in production. Every
//! Rust block in it compiles as a doctest.
//!
//! 1. [`derive`](mod@derive): a whole operator from one struct, its command line, its RBAC and
//!    Deployment, and the answers to what a first operator makes you ask.
//! 2. [`children`]: owned child objects, conditions, and cluster-scoped resources.
//! 3. [`errors`]: errors, status, status errors and Events.
//! 4. [`running`]: leader election, several controllers in one process, graceful shutdown,
//!    metrics, probes and security.
//! 5. [`trait_level`]: the seed's trait-level API (`Context`, `Reconcile`), for full control,
//!    and the caching strategies.
//! 6. [`evolving`]: an API that changes over the years: CEL validation rules and defaults on
//!    the spec type; validating and defaulting webhooks from two methods; certificates that
//!    renew themselves; a new version of the kind, its conversion, and moving stored objects.
//!
//! Testing an operator (the in-memory API server, a real control plane, faults) is the
//! chapter of [`kuberator-test`](https://docs.rs/kuberator-test), where its code compiles.

#[doc = include_str!("../guide/derive.md")]
pub mod derive {}

#[doc = include_str!("../guide/children.md")]
pub mod children {}

#[doc = include_str!("../guide/errors.md")]
pub mod errors {}

#[doc = include_str!("../guide/running.md")]
pub mod running {}

#[doc = include_str!("../guide/trait_level.md")]
pub mod trait_level {}

#[doc = include_str!("../guide/evolving.md")]
pub mod evolving {}
