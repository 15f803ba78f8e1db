//! Prometheus metrics, `/healthz` and `/readyz`.
//!
//! # Expected flow
//!
//! Every controller Kuberator runs records into one process-wide registry, as
//! controller-runtime's do; recording costs a few atomic operations. [`serve`] answers on an
//! address of your choice:
//!
//! - `/metrics`: the metrics below, in the Prometheus text format;
//! - `/healthz`: `200 ok` while the process serves;
//! - `/readyz`: `200 ok` once every controller in the process has listed its objects once
//!   (its watch's initial sync), `503` naming the ones that have not before that.
//!
//! The derived operator's `run()` serves them on `--metrics-address` (default
//! `0.0.0.0:8080`).
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
//!
//! # Caveats
//!
//! kube's controller does not expose its queue, so there is no queue-depth metric.

mod metrics;
mod server;

pub(crate) use self::metrics::ControllerMetrics;
pub use self::metrics::encode;
pub use self::metrics::readiness;
pub use self::server::Telemetry;
pub use self::server::serve;
