//! Per-object exponential backoff for failed reconciles.
//!
//! # Expected flow
//!
//! When a reconcile of an object fails, [`Reconcile::error_policy`](crate::Reconcile::error_policy)
//! asks [`next_delay`] how long to wait: the first retry waits the base delay
//! ([`Reconcile::error_backoff_base`](crate::Reconcile::error_backoff_base), 1 s unless
//! overridden), each further one twice as long, up to the cap
//! ([`Reconcile::requeue_after_error_seconds`](crate::Reconcile::requeue_after_error_seconds),
//! 60 s unless overridden). Every delay is spread by ±10 % so that objects that failed
//! together do not retry together. A successful reconcile of the object starts it over.
//!
//! # Guarantees
//!
//! - Each object backs off on its own: a failing object does not slow down the others.
//! - The count lives with the running controller: a restarted operator starts every object
//!   at the base delay again.
//! - A count leaves when its object reconciles, when the object is deleted, or when a relist
//!   no longer shows it (deleted while the watch was down); an object made again under the
//!   same name starts at the base delay.

use std::hash::BuildHasher as _;
use std::hash::BuildHasherDefault;
use std::hash::DefaultHasher;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

thread_local! {
    /// Set by a deterministic simulation on its thread ([`seed_jitter`]).
    static JITTER_SEED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Makes the watches started on this thread jitter their retries from `seed` (`None`: from a
/// random one again): what kuberator-test's simulator sets, so that a run replayed from its
/// seed waits the same.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub fn seed_jitter(seed: Option<u64>) {
    JITTER_SEED.with(|cell| cell.set(seed));
}

/// The backoff of a watch of `what` after an error: kube's default (0.8 s doubling to 30 s,
/// jittered, started over after 2 minutes without an error), its jitter drawn from a seed of
/// the watch's own rather than from the thread's generator, so that watches do not share one
/// sequence in the order they happen to start.
pub(crate) fn watch_backoff(
    what: &str,
) -> kube::runtime::utils::ResetTimerBackoff<kube::runtime::watcher::ExponentialBackoff> {
    let salt = JITTER_SEED
        .with(std::cell::Cell::get)
        .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(what));
    let seed = BuildHasherDefault::<DefaultHasher>::default().hash_one((salt, what));
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .without_max_times()
        .with_jitter()
        .with_jitter_seed(seed);
    kube::runtime::utils::ResetTimerBackoff::new(builder.into(), Duration::from_secs(120))
}

/// The wait before the first retry of a failed reconcile, unless configured otherwise.
pub const DEFAULT_BASE: Duration = Duration::from_secs(1);

tokio::task_local! {
    static FAILURES: Arc<Failures>;
}

/// How many times in a row each object's reconcile failed, for one running controller.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    counts: DashMap<String, u32>,
    size: crate::telemetry::Remembered,
}

impl Failures {
    pub(crate) fn new(controller: &str) -> Self {
        Self { counts: DashMap::new(), size: crate::telemetry::Remembered::new(controller, "backoff") }
    }

    fn report(&self) {
        self.size.set(self.counts.len());
    }

    /// Forgets the failures of `object`, which is gone.
    pub(crate) fn forget(&self, object: &str) {
        if self.counts.remove(object).is_some() {
            self.report();
        }
    }

    /// Keeps only the counts of the objects in `live`, after a relist.
    pub(crate) fn retain(&self, live: &std::collections::HashSet<String>) {
        self.counts.retain(|object, _| live.contains(object));
        self.report();
    }

    /// Runs `future` (a controller) with this count available to its error policy.
    pub(crate) async fn scope<F: std::future::Future>(self: Arc<Self>, future: F) -> F::Output {
        FAILURES.scope(self, future).await
    }

    /// Forgets the failures of `object` after it reconciled.
    pub(crate) fn succeeded(&self, object: &str) {
        self.forget(object);
    }

    fn failed(&self, object: &str) -> u32 {
        let count = {
            let mut count = self.counts.entry(object.to_owned()).or_default();
            *count = count.saturating_add(1);
            *count
        };
        self.report();
        count
    }
}

/// The delay before retrying `object` (named `Kind namespace/name`), which just failed:
/// `base` doubled per failure in a row, at most `cap`, ±10 %. Outside a running controller
/// (in a unit test, say) it is `cap`.
///
/// Public for an [`error_policy`](crate::Reconcile::error_policy) of your own that tells
/// errors apart but still wants the object's exponential backoff for the ones it retries;
/// the default `error_policy` calls it.
pub fn next_delay(object: &str, base: Duration, cap: Duration) -> Duration {
    let Ok(failures) = FAILURES.try_with(|failures| failures.failed(object)) else {
        return cap;
    };
    let exponent = failures.saturating_sub(1).min(31);
    let delay = base.saturating_mul(1_u32 << exponent).min(cap);
    jitter(delay, object, failures)
}

/// `delay` spread over ±10 % by a hash of the object and its failure count: objects that
/// failed together retry apart, and the same failures wait the same in every run (which a
/// simulated run, replayed from its seed, needs).
fn jitter(delay: Duration, object: &str, failures: u32) -> Duration {
    let random = BuildHasherDefault::<DefaultHasher>::default().hash_one((object, failures));
    // A factor in [0.9, 1.1).
    let factor = 0.9 + (random % 2000) as f64 / 10_000.0;
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_double_up_to_the_cap_and_start_over_after_a_success() {
        let failures = Arc::new(Failures::new("test"));
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(10);
        let delays = Arc::clone(&failures)
            .scope(async {
                let mut delays: Vec<Duration> = (0..6).map(|_| next_delay("Probe ns/a", base, cap)).collect();
                // Another object has its own count.
                delays.push(next_delay("Probe ns/b", base, cap));
                failures.succeeded("Probe ns/a");
                delays.push(next_delay("Probe ns/a", base, cap));
                // Gone while failing: the next object of that name starts over.
                next_delay("Probe ns/c", base, cap);
                failures.forget("Probe ns/c");
                delays.push(next_delay("Probe ns/c", base, cap));
                failures.retain(&["Probe ns/a".to_owned()].into());
                assert_eq!(failures.counts.len(), 1, "a relist no longer shows b and c");
                delays
            })
            .await;
        let expected = [1, 2, 4, 8, 10, 10, 1, 1, 1];
        for (delay, expected) in delays.iter().zip(expected) {
            let expected = Duration::from_secs(expected);
            assert!(
                *delay >= expected.mul_f64(0.9) && *delay < expected.mul_f64(1.1),
                "{delay:?} is not {expected:?} ±10 %: {delays:?}"
            );
        }
    }

    #[test]
    fn outside_a_controller_the_delay_is_the_cap() {
        assert_eq!(next_delay("x", Duration::from_secs(1), Duration::from_secs(7)), Duration::from_secs(7));
    }

    #[test]
    fn jitter_spreads_delays() {
        let spread: std::collections::HashSet<Duration> =
            (0..50).map(|i| jitter(Duration::from_secs(10), "x", i)).collect();
        assert!(spread.len() > 40, "jitter varies: {}", spread.len());
        assert!(spread.iter().all(|d| *d >= Duration::from_secs(9) && *d < Duration::from_secs(11)));
    }
}
