//! The process-wide registry and what each controller records into it.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::error::Error;

type Labels = Vec<(String, String)>;

struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Family<Labels, Gauge>,
    undecodable: Family<Labels, Counter>,
    ready: Family<Labels, Gauge>,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("kuberator");
    let metrics = Metrics {
        registry: Registry::default(),
        reconciles: Family::default(),
        errors: Family::default(),
        duration: Family::new_with_constructor(duration_histogram),
        in_flight: Family::default(),
        undecodable: Family::default(),
        ready: Family::default(),
    };
    registry.register("reconciles", "Reconciles finished, by result", metrics.reconciles.clone());
    registry.register("reconcile_errors", "Failed reconciles, by cause", metrics.errors.clone());
    registry.register("reconcile_duration_seconds", "Time per reconcile", metrics.duration.clone());
    registry.register("reconciles_in_flight", "Reconciles running now", metrics.in_flight.clone());
    registry.register(
        "undecodable_objects",
        "Object versions that did not decode",
        metrics.undecodable.clone(),
    );
    registry.register("ready", "1 once the controller's initial sync is done", metrics.ready.clone());
    Metrics { registry, ..metrics }
});

/// All metrics in the Prometheus text format.
pub fn encode() -> String {
    let mut out = String::new();
    text::encode(&mut out, &METRICS.registry).expect("writing to a String cannot fail");
    out
}

/// `Ok` once every controller in this process finished its initial sync, else the names of
/// those that have not (also when no controller runs yet).
///
/// # Errors
///
/// The controllers that are not ready, as a sentence.
pub fn readiness() -> Result<(), String> {
    let state = encode();
    let waiting: Vec<&str> = state
        .lines()
        .filter(|line| line.starts_with("kuberator_ready{") && line.ends_with(" 0"))
        .filter_map(|line| line.split("controller=\"").nth(1)?.split('"').next())
        .collect();
    let any = state.lines().any(|line| line.starts_with("kuberator_ready{"));
    match (any, waiting.is_empty()) {
        (false, _) => Err("no controller is running yet".into()),
        (true, true) => Ok(()),
        (true, false) => Err(format!("initial sync not done: {}", waiting.join(", "))),
    }
}

/// What one controller records.
#[derive(Clone)]
pub(crate) struct ControllerMetrics {
    controller: Labels,
}

impl ControllerMetrics {
    /// Registers `controller` as not ready yet.
    pub(crate) fn new(controller: &str) -> Self {
        let metrics = Self { controller: vec![("controller".to_owned(), controller.to_owned())] };
        METRICS.ready.get_or_create(&metrics.controller).set(0);
        metrics
    }

    fn with(&self, key: &str, value: &str) -> Labels {
        let mut labels = self.controller.clone();
        labels.push((key.to_owned(), value.to_owned()));
        labels
    }

    pub(crate) fn started(&self) {
        METRICS.in_flight.get_or_create(&self.controller).inc();
    }

    pub(crate) fn finished(&self, took: Duration, success: bool) {
        METRICS.in_flight.get_or_create(&self.controller).dec();
        METRICS.duration.get_or_create(&self.controller).observe(took.as_secs_f64());
        let result = if success { "success" } else { "error" };
        METRICS.reconciles.get_or_create(&self.with("result", result)).inc();
    }

    pub(crate) fn failed(&self, error: &Error) {
        METRICS.errors.get_or_create(&self.with("kind", kind(error))).inc();
    }

    pub(crate) fn undecodable(&self) {
        METRICS.undecodable.get_or_create(&self.controller).inc();
    }

    pub(crate) fn synced(&self) {
        METRICS.ready.get_or_create(&self.controller).set(1);
    }
}

fn kind(error: &Error) -> &'static str {
    match error {
        Error::ApplyFailed { .. } => "apply",
        Error::CleanupFailed { .. } => "cleanup",
        Error::Panicked { .. } => "panic",
        Error::AddFinalizer { .. } | Error::RemoveFinalizer { .. } | Error::InvalidFinalizer { .. } => {
            "finalizer"
        }
        Error::UpdateStatus { .. } | Error::SerializeStatus { .. } => "status",
        Error::UncachedNamespace { .. } | Error::MissingNamespace { .. } => "namespace",
        Error::Kube(_) => "api",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_under_the_controller_label() {
        let metrics = ControllerMetrics::new("unit-test-operator");
        assert!(readiness().unwrap_err().contains("unit-test-operator"));
        metrics.started();
        metrics.finished(Duration::from_millis(20), true);
        metrics.failed(&Error::Panicked { object: "x".into(), message: "boom".into() });
        metrics.undecodable();
        metrics.synced();
        let text = encode();
        for line in [
            "kuberator_reconciles_total{controller=\"unit-test-operator\",result=\"success\"} 1",
            "kuberator_reconcile_errors_total{controller=\"unit-test-operator\",kind=\"panic\"} 1",
            "kuberator_reconciles_in_flight{controller=\"unit-test-operator\"} 0",
            "kuberator_undecodable_objects_total{controller=\"unit-test-operator\"} 1",
            "kuberator_ready{controller=\"unit-test-operator\"} 1",
            "kuberator_reconcile_duration_seconds_count{controller=\"unit-test-operator\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
