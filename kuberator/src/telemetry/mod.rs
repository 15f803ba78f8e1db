//! Prometheus metrics, `/healthz` and `/readyz`.
//!
//! # Expected flow
//!
//! Every controller Kuberator runs records into one process-wide registry, as
//! controller-runtime's do; recording costs a few atomic operations. [`serve`] answers on an
//! address of your choice, in plain HTTP to anyone (for a local run; in a cluster, serve the
//! probes with [`serve_health`] and the metrics with [`serve_metrics`] and
//! [`MetricsAccess::Secure`], which only authenticated and authorized callers may read):
//!
//! - `/metrics`: the metrics below, in the Prometheus text format;
//! - `/healthz`: `200 ok` while the process serves;
//! - `/readyz`: `200 ok` once every controller running in the process has listed its objects
//!   once (its watch's initial sync), and while a [leader election](crate::leader) stands by
//!   with no controller running (a standby is ready to take over: were it not ready, a
//!   rolling update would wait on it forever); `503` with the reason otherwise, also before
//!   anything runs.
//!
//! The derived operator's `run()` serves the probes on `--health-address` (default
//! `0.0.0.0:8081`, plain HTTP) and `/metrics` on `--metrics-address` (default `0.0.0.0:8443`)
//! over HTTPS to callers the API server authenticates and authorizes, or in plain HTTP to
//! anyone with `--metrics-insecure`.
//!
//! # Who may scrape, and what a hostile caller can do
//!
//! Over HTTPS, a caller needs a bearer token the API server authenticates (TokenReview) and
//! `get` on the non-resource URL `/metrics` (SubjectAccessReview). What a caller can make the
//! operator hold or send is bounded, whoever it is: see [`SecureMetrics`] for the numbers.
//!
//! By default any token the API server accepts for itself will do: that is what a Prometheus
//! in the cluster sends (`authorization.credentials_file:
//! /var/run/secrets/kubernetes.io/serviceaccount/token`). Such a token, sent to `/metrics`,
//! could be replayed against the API server by whoever terminates TLS for it. To rule that
//! out, run the operator with `--metrics-audience kuberator-metrics` (or
//! [`SecureMetrics::audiences`]) and give the scraper a projected ServiceAccount token meant
//! for that audience only:
//!
//! ```yaml
//! # In the Prometheus Pod's spec:
//! volumes:
//!   - name: metrics-token
//!     projected:
//!       sources:
//!         - serviceAccountToken:
//!             audience: kuberator-metrics
//!             expirationSeconds: 3600
//!             path: token
//! # and in its scrape config: authorization.credentials_file: /var/run/metrics-token/token
//! ```
//!
//! The kubelet renews the projected token before it expires; the operator checks each new
//! one once (answers are remembered for a minute).
//!
//! # Metrics
//!
//! Every metric has a `controller` label (the name Events are reported under).
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `kuberator_reconciles_total` | counter | `result`: `success`, `error` | reconciles finished |
//! | `kuberator_reconcile_errors_total` | counter | `kind`: `apply`, `cleanup`, `panic`, `finalizer`, `status`, `namespace`, `api`, `other` | failed reconciles by cause |
//! | `kuberator_reconcile_duration_seconds` | histogram | | time per reconcile |
//! | `kuberator_reconciles_in_flight` | gauge | | reconciles running now |
//! | `kuberator_undecodable_objects_total` | counter | | object versions that did not decode |
//! | `kuberator_ready` | gauge | | 1 once the initial sync is done |
//! | `kuberator_queue_depth` | gauge | `priority`: `change`, `resync` | objects waiting for their reconcile to start |
//! | `kuberator_queue_wait_seconds` | histogram | `priority`: `change`, `resync` | time from an object's trigger to the start of its reconcile |
//! | `kuberator_remembered_objects` | gauge | `map`: `echoes`, `cleanups`, `statuses`, `backoff`, `conditions`, `children`, `undecodable`, `seen`, `requeues` | entries kept per object; each leaves when its object (or the reason for it) goes |
//! | `kuberator_leader` | gauge | `lease` (`namespace/name`) instead of `controller` | 1 while this process holds the lease, 0 while it stands by |
//! | `kuberator_shards_held` | gauge | `group` (`namespace/name`) instead of `controller` | shards this replica holds and reconciles (`--shards`) |
//! | `kuberator_shard_fraction` | gauge | `group` | the share of the hash space this replica reconciles, 0 to 1 |
//! | `kuberator_shard_moves_total` | counter | `group`, `how` (`took`, `released`, `lost`) | shards that moved to or from this replica |
//!
//! A controller's series leave `kuberator_ready` and `kuberator_queue_depth` when it stops
//! (on shutdown, or when leadership is lost); counters stay.
//!
//! # Caveats
//!
//! `kuberator_queue_depth` and `kuberator_queue_wait_seconds` count the objects in
//! Kuberator's own queue (see the engine's order: changes first, the initial list and periodic
//! requeues as `resync`, aged so that they cannot starve) and the few it has handed to kube's
//! controller that have not started yet (held back by the concurrency limit, or by a reconcile
//! of the same object still running). A retry after a failure is in them, as a `change`, once
//! its backoff has ended.

mod metrics;
#[cfg(feature = "server")]
pub(crate) mod server;

pub(crate) use self::metrics::ControllerMetrics;
pub(crate) use self::metrics::LeaderStatus;
pub(crate) use self::metrics::Remembered;
pub(crate) use self::metrics::ShardStatus;
pub(crate) use self::metrics::cached_objects;
pub use self::metrics::encode;
#[cfg(feature = "app")]
pub(crate) use self::metrics::expect_controllers;
pub use self::metrics::readiness;
pub use self::metrics::shutting_down;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use self::server::Telemetry;
#[cfg(feature = "server")]
pub(crate) use self::server::crypto_provider;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use self::server::{
    MetricsAccess, SecureMetrics, TlsError, TlsIdentity, serve, serve_health, serve_metrics,
};
