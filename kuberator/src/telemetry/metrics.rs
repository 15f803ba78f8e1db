//! The process-wide registry and what each controller records into it.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::queue::Priority;

type Labels = Vec<(String, String)>;

struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Family<Labels, Gauge>,
    undecodable: Family<Labels, Counter>,
    ready: Family<Labels, Gauge>,
    queue_depth: Family<Labels, Gauge>,
    queue_wait: Family<Labels, Histogram, fn() -> Histogram>,
    leader: Family<Labels, Gauge>,
    shards_held: Family<Labels, Gauge>,
    shard_fraction: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    shard_moves: Family<Labels, Counter>,
    remembered: Family<Labels, Gauge>,
    cached: Family<Labels, Gauge>,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn wait_histogram() -> Histogram {
    // 1 ms to about 9 min: an initial list of many objects waits minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
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
        queue_depth: Family::default(),
        queue_wait: Family::new_with_constructor(wait_histogram),
        leader: Family::default(),
        shards_held: Family::default(),
        shard_fraction: Family::default(),
        shard_moves: Family::default(),
        remembered: Family::default(),
        cached: Family::default(),
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
    registry.register(
        "queue_depth",
        "Objects waiting for their reconcile to start, by priority: change or resync (retries not due yet not counted)",
        metrics.queue_depth.clone(),
    );
    registry.register(
        "queue_wait_seconds",
        "Time from an object's trigger to the start of its reconcile, by priority",
        metrics.queue_wait.clone(),
    );
    registry.register(
        "leader",
        "1 while this process holds the lease, 0 while it stands by",
        metrics.leader.clone(),
    );
    registry.register(
        "shards_held",
        "Shards this replica holds and reconciles, of its shard group",
        metrics.shards_held.clone(),
    );
    registry.register(
        "shard_fraction",
        "The share of the hash space this replica reconciles, from 0 to 1",
        metrics.shard_fraction.clone(),
    );
    registry.register(
        "shard_moves",
        "Shards this replica took, released or lost",
        metrics.shard_moves.clone(),
    );
    registry.register(
        "remembered_objects",
        "Entries a controller keeps per object, by what for; each leaves when its object or its reason goes",
        metrics.remembered.clone(),
    );
    registry.register(
        "cached_objects",
        "Objects in the process's shared caches, by kind (one watch and store per kind, namespace and selector; kept while standing by)",
        metrics.cached.clone(),
    );
    Metrics { registry, ..metrics }
});

/// All metrics in the Prometheus text format.
pub fn encode() -> String {
    let mut out = String::new();
    text::encode(&mut out, &METRICS.registry).expect("writing to a String cannot fail");
    out
}

/// How many entries one per-object map of a controller holds: its series of the
/// `kuberator_remembered_objects` gauge, which a churn of objects must bring back down. The
/// series is looked up once, when the map is made; setting it is one atomic store. The default
/// reports nothing (a map that is no controller's, such as one in a unit test).
#[derive(Debug, Clone, Default)]
pub(crate) struct Remembered(Option<Gauge>);

impl Remembered {
    /// The series of `controller`'s `map`; none for an empty controller name.
    pub(crate) fn new(controller: &str, map: &'static str) -> Self {
        if controller.is_empty() {
            return Self(None);
        }
        let labels =
            vec![("controller".to_owned(), controller.to_owned()), ("map".to_owned(), map.to_owned())];
        Self(Some(METRICS.remembered.get_or_create(&labels).clone()))
    }

    /// The map holds `entries` now.
    pub(crate) fn set(&self, entries: usize) {
        if let Some(gauge) = &self.0 {
            gauge.set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
    }
}

/// The series of `kind` in `kuberator_cached_objects`: each shared cache of that kind adds
/// what it holds.
pub(crate) fn cached_objects(kind: &str) -> Gauge {
    METRICS.cached.get_or_create(&vec![("kind".to_owned(), kind.to_owned())]).clone()
}

/// What `/readyz` answers from: per running controller whether its initial sync is done, and
/// how many leader elections stand by.
#[derive(Default)]
struct Readiness {
    controllers: BTreeMap<String, bool>,
    standing_by: usize,
}

static READINESS: Mutex<Readiness> = Mutex::new(Readiness { controllers: BTreeMap::new(), standing_by: 0 });

fn readiness_state() -> std::sync::MutexGuard<'static, Readiness> {
    // The state stays consistent under a panic: every update is a single assignment.
    READINESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Set once the process starts to shut down: from then on it is not ready.
static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the process as shutting down: [`readiness`] (`/readyz`) fails from now on, so no
/// new traffic is sent its way while it drains.
///
/// A derived operator's `run()` calls it on SIGTERM. It is public for a trait-level operator
/// that serves [`serve_health`](crate::telemetry::serve_health) and handles its own
/// shutdown: call it when the shutdown starts, before the controllers drain.
pub fn shutting_down() {
    SHUTTING_DOWN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `Ok` once every controller running in this process finished its initial sync, or, with
/// none running, while a leader election stands by (a standby is ready to take over), and
/// until [`shutting_down`] is called; else why not.
///
/// # Errors
///
/// Why the process is not ready, as a sentence.
pub fn readiness() -> Result<(), String> {
    if SHUTTING_DOWN.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("shutting down: no new work should come here".into());
    }
    let state = readiness_state();
    let waiting: Vec<&str> =
        state.controllers.iter().filter(|(_, synced)| !**synced).map(|(name, _)| name.as_str()).collect();
    if !waiting.is_empty() {
        return Err(format!("initial sync not done: {}", waiting.join(", ")));
    }
    if state.controllers.is_empty() && state.standing_by == 0 {
        return Err("no controller is running yet".into());
    }
    Ok(())
}

/// Expects the controllers `names` to start: until each has registered itself (and then
/// until its initial sync is done), [`readiness`] says the process is not ready. For a
/// process of several controllers, so that one that is quick to sync does not make it ready
/// before another has begun.
#[cfg(feature = "app")]
pub(crate) fn expect_controllers<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut state = readiness_state();
    for name in names {
        state.controllers.entry(name.to_owned()).or_insert(false);
    }
}

/// Whether something of the process stands by, in [`readiness`]: a standby with no controller
/// running is ready. Counted once while set; uncounted when dropped.
#[derive(Debug, Default)]
struct StandingBy(std::sync::atomic::AtomicBool);

impl StandingBy {
    fn set(&self, standing_by: bool) {
        let was = self.0.swap(standing_by, std::sync::atomic::Ordering::SeqCst);
        let mut state = readiness_state();
        match (was, standing_by) {
            (false, true) => state.standing_by += 1,
            (true, false) => state.standing_by -= 1,
            _ => {}
        }
    }
}

impl Drop for StandingBy {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// A leader election's state in metrics and readiness, for as long as it lives.
#[derive(Debug)]
pub(crate) struct LeaderStatus {
    labels: Labels,
    standing_by: StandingBy,
}

impl LeaderStatus {
    /// A new election for `lease` (`namespace/name`): standing by.
    pub(crate) fn new(lease: &str) -> Self {
        let status =
            Self { labels: vec![("lease".to_owned(), lease.to_owned())], standing_by: StandingBy::default() };
        status.leading(false);
        status
    }

    pub(crate) fn leading(&self, leading: bool) {
        METRICS.leader.get_or_create(&self.labels).set(i64::from(leading));
        self.standing_by.set(!leading);
    }
}

impl Drop for LeaderStatus {
    fn drop(&mut self) {
        METRICS.leader.remove(&self.labels);
    }
}

/// A replica's place in a shard group: `kuberator_shards_held`, `kuberator_shard_fraction`
/// and `kuberator_shard_moves_total`; while it holds no shard it stands by (ready, as a
/// standby of leader election is).
pub(crate) struct ShardStatus {
    labels: Labels,
    standing_by: StandingBy,
}

impl ShardStatus {
    /// A replica of the group `group` (`namespace/name`) that holds nothing yet.
    pub(crate) fn new(group: &str) -> Self {
        let status =
            Self { labels: vec![("group".to_owned(), group.to_owned())], standing_by: StandingBy::default() };
        status.holds(0.0, 0);
        status
    }

    /// The replica reconciles `shards` shards, `fraction` of the hash space.
    pub(crate) fn holds(&self, fraction: f64, shards: usize) {
        METRICS.shards_held.get_or_create(&self.labels).set(i64::try_from(shards).unwrap_or(i64::MAX));
        METRICS.shard_fraction.get_or_create(&self.labels).set(fraction);
        self.standing_by.set(shards == 0);
    }

    /// `count` shards were `how` (`took`, `released` or `lost`).
    pub(crate) fn moved(&self, how: &str, count: usize) {
        let mut labels = self.labels.clone();
        labels.push(("how".to_owned(), how.to_owned()));
        METRICS.shard_moves.get_or_create(&labels).inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }
}

impl Drop for ShardStatus {
    fn drop(&mut self) {
        METRICS.shards_held.remove(&self.labels);
        METRICS.shard_fraction.remove(&self.labels);
    }
}

/// What one controller records.
#[derive(Clone)]
pub(crate) struct ControllerMetrics {
    controller: Labels,
}

/// A running controller in `/readyz`; it leaves when this is dropped, with the controller.
#[derive(Debug)]
pub(crate) struct Registered {
    controller: Labels,
}

impl Drop for Registered {
    fn drop(&mut self) {
        METRICS.ready.remove(&self.controller);
        for priority in [Priority::Change, Priority::Resync] {
            let mut labels = self.controller.clone();
            labels.push(("priority".to_owned(), priority.label().to_owned()));
            METRICS.queue_depth.remove(&labels);
        }
        if let Some((_, name)) = self.controller.first() {
            readiness_state().controllers.remove(name);
        }
    }
}

impl ControllerMetrics {
    /// Registers `controller` as running and not ready yet, until the guard is dropped.
    pub(crate) fn new(controller: &str) -> (Self, Registered) {
        let metrics = Self { controller: vec![("controller".to_owned(), controller.to_owned())] };
        METRICS.ready.get_or_create(&metrics.controller).set(0);
        readiness_state().controllers.insert(controller.to_owned(), false);
        let registered = Registered { controller: metrics.controller.clone() };
        (metrics, registered)
    }

    /// The controller's name.
    pub(crate) fn controller(&self) -> &str {
        self.controller.first().map_or("", |(_, name)| name)
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
        METRICS.errors.get_or_create(&self.with("kind", error.metric_kind())).inc();
    }

    pub(crate) fn undecodable(&self) {
        METRICS.undecodable.get_or_create(&self.controller).inc();
    }

    pub(crate) fn synced(&self) {
        METRICS.ready.get_or_create(&self.controller).set(1);
        if let Some((_, name)) = self.controller.first() {
            readiness_state().controllers.insert(name.clone(), true);
        }
    }

    /// The controller's `kuberator_queue_depth` series for `priority`, looked up once: setting
    /// it is one atomic store.
    pub(crate) fn queue_depth(&self, priority: &str) -> Gauge {
        METRICS.queue_depth.get_or_create(&self.with("priority", priority)).clone()
    }

    pub(crate) fn waited(&self, priority: &str, waited: Duration) {
        METRICS.queue_wait.get_or_create(&self.with("priority", priority)).observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: readiness is process-wide, and tests run in parallel.
    #[test]
    fn records_under_the_controller_label_and_readiness_follows_controllers_and_elections() {
        assert_eq!(readiness().unwrap_err(), "no controller is running yet");
        let (metrics, registered) = ControllerMetrics::new("unit-test-operator");
        assert!(readiness().unwrap_err().contains("unit-test-operator"));
        metrics.started();
        metrics.finished(Duration::from_millis(20), true);
        metrics.failed(&Error::Panicked { object: "x".into(), message: "boom".into() });
        metrics.undecodable();
        metrics.queue_depth("resync").set(3);
        metrics.waited("change", Duration::from_millis(2));
        metrics.synced();
        readiness().unwrap();
        let text = encode();
        for line in [
            "kuberator_reconciles_total{controller=\"unit-test-operator\",result=\"success\"} 1",
            "kuberator_reconcile_errors_total{controller=\"unit-test-operator\",kind=\"panic\"} 1",
            "kuberator_reconciles_in_flight{controller=\"unit-test-operator\"} 0",
            "kuberator_undecodable_objects_total{controller=\"unit-test-operator\"} 1",
            "kuberator_ready{controller=\"unit-test-operator\"} 1",
            "kuberator_queue_depth{controller=\"unit-test-operator\",priority=\"resync\"} 3",
            "kuberator_queue_wait_seconds_count{controller=\"unit-test-operator\",priority=\"change\"} 1",
            "kuberator_reconcile_duration_seconds_count{controller=\"unit-test-operator\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        drop(registered);
        assert!(!encode().contains("kuberator_ready{"), "a stopped controller leaves readiness");
        assert!(!encode().contains("kuberator_queue_depth{"), "and the queue depth");
        assert_eq!(readiness().unwrap_err(), "no controller is running yet");

        // A standby is ready; a leader is ready once its controller is.
        let election = LeaderStatus::new("ops/unit-test-lease");
        readiness().unwrap();
        assert!(encode().contains("kuberator_leader{lease=\"ops/unit-test-lease\"} 0"));
        election.leading(true);
        assert!(encode().contains("kuberator_leader{lease=\"ops/unit-test-lease\"} 1"));
        assert_eq!(readiness().unwrap_err(), "no controller is running yet");
        let (_metrics, registered) = ControllerMetrics::new("unit-test-operator");
        assert!(readiness().is_err());
        drop(registered);
        election.leading(false);
        readiness().unwrap();
        drop(election);
        assert!(!encode().contains("kuberator_leader{"));
        assert_eq!(readiness().unwrap_err(), "no controller is running yet");
    }
}
