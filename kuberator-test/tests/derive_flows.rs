//! `#[derive(Operator)]` end to end against the real control plane: the derived operator
//! shows a user what the hand-written one does (`seed_flows.rs`): the finalizer, status
//! with the observed generation, a status error and its Warning Event, cleanup that holds
//! the object until it succeeds, Events, and graceful shutdown.
//!
//! The derived operator watches every namespace (its attribute names none), so this binary
//! runs one operator and one test, in steps.

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kuberator::prelude::*;
use kuberator_test::Background;
use kuberator_test::wait_for;
use serde_json::json;
use support::FINALIZER;
use support::Journal;
use support::Probe;
use support::ProbeSpec;
use support::ProbeStatus;
use support::setup;
use support::wait_observed;

#[derive(Operator)]
#[kuberator(
    resource = Probe,
    finalizer = "probes.test.kuberator.dev/finalizer",
    caching = Extendable,
    concurrency = 4,
    requeue_after_error_seconds = 1,
    error_backoff_base_millis = 200,
    controller_name = "derived-probe-operator"
)]
struct DerivedProbe {
    journal: Arc<Mutex<Journal>>,
}

impl DerivedProbe {
    async fn handle_apply(&self, probe: Arc<Probe>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let name = probe.name_any();
        {
            let mut journal = self.journal.lock().unwrap();
            journal.apply_starts.entry(name.clone()).or_default().push(std::time::Instant::now());
            journal.applies.entry(name.clone()).or_default().push(probe.metadata.generation.unwrap_or(-1));
            if !probe.finalizers().iter().any(|f| f == FINALIZER) {
                journal.applies_without_finalizer.push(name.clone());
            }
            if probe.metadata.managed_fields.is_some()
                || probe.annotations().contains_key("kubectl.kubernetes.io/last-applied-configuration")
            {
                journal.applies_with_managed_fields.push(name.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(probe.spec.apply_millis)).await;
        if let Some(reason) = &probe.spec.fail_apply {
            let error = support::probe_error(reason);
            ctx.update_status_with_error(&probe, ProbeStatus::default(), Some(&error)).await?;
            return Err(kuberator::Error::Anyhow(anyhow::anyhow!(error)));
        }
        let status = ProbeStatus { message: Some(probe.spec.message.clone()), ..ProbeStatus::default() };
        ctx.update_status(&probe, status).await?;
        ctx.emit(&probe, EventData::normal("Applied", format!("applied {:?}", probe.spec.message))).await;
        self.journal.lock().unwrap().apply_windows.push((
            name,
            std::time::Instant::now(),
            std::time::Instant::now(),
        ));
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, probe: Arc<Probe>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        support::cleanup(&self.journal, &probe)
    }
}

const WAIT: Duration = Duration::from_secs(30);

fn spec(message: &str) -> ProbeSpec {
    ProbeSpec { message: message.into(), ..ProbeSpec::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_derived_operator_behaves_like_the_hand_written_one() {
    let test = setup("derived").await;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let operator = DerivedProbe { journal: Arc::clone(&journal) };
    let reconciler = operator.into_reconciler(test.client.clone());
    let running = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    // Finalizer first, status with the observed generation, one apply per generation, and
    // one reconcile per change: adding the finalizer is not a second one.
    let reconciles = || {
        let series = "kuberator_reconciles_total{controller=\"derived-probe-operator\",result=\"success\"}";
        kuberator_test::metric(&kuberator::telemetry::encode(), series).unwrap_or(0.0)
    };
    test.create("plain", spec("hello")).await;
    let probe = wait_observed(&test.api, "plain").await;
    assert_eq!(probe.finalizers(), [FINALIZER]);
    assert_eq!(probe.status.as_ref().unwrap().message.as_deref(), Some("hello"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reconciles(), 1.0, "a new object is reconciled once");
    let patch = json!({ "spec": { "message": "again" } });
    test.api.patch("plain", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let probe = wait_observed(&test.api, "plain").await;
    assert_eq!(probe.status.as_ref().unwrap().observed_generation, Some(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(journal.lock().unwrap().applies["plain"], [1, 2]);
    assert_eq!(reconciles(), 2.0, "a spec change is reconciled once");
    assert!(journal.lock().unwrap().applies_without_finalizer.is_empty());
    // The API server keeps managedFields on every object; the handlers never see them.
    assert!(test.api.get("plain").await.unwrap().metadata.managed_fields.is_some());
    assert!(journal.lock().unwrap().applies_with_managed_fields.is_empty());

    // Events from ctx.emit, under the attribute's controller name.
    let events = kuberator_test::events_for(&test.client, &probe).await.unwrap();
    let applied = events.iter().find(|e| e.reason.as_deref() == Some("Applied")).expect("an Applied event");
    assert_eq!(applied.reporting_controller.as_deref(), Some("derived-probe-operator"));

    // A status error, and the Warning Event of the failed reconcile.
    test.create("broken", ProbeSpec { fail_apply: Some("quota of 10 exceeded".into()), ..spec("x") }).await;
    let broken = wait_observed(&test.api, "broken").await;
    assert_eq!(broken.status.unwrap().error.unwrap().message, "apply refused: quota of 10 exceeded");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events =
            kuberator_test::events_for(&test.client, &test.api.get("broken").await.unwrap()).await.unwrap();
        if let Some(warning) = events.iter().find(|e| e.reason.as_deref() == Some("ApplyFailed")) {
            assert_eq!(warning.type_.as_deref(), Some("Warning"));
            assert!(warning.note.as_deref().unwrap().ends_with("apply refused: quota of 10 exceeded"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no ApplyFailed event: {events:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its retries back off from the attribute's 200 ms, doubling (±10 %; each retry also takes
    // the handler's own status write and the scheduler's time).
    let starts = || journal.lock().unwrap().apply_starts.get("broken").cloned().unwrap_or_default();
    while starts().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "only {} applies of broken", starts().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let times = starts();
    let intervals: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for (interval, expected) in intervals.iter().zip([200, 400, 800].map(Duration::from_millis)) {
        assert!(
            *interval >= expected.mul_f64(0.9)
                && *interval <= expected.mul_f64(1.1) + Duration::from_millis(400),
            "interval {interval:?}, expected {expected:?}; all: {intervals:?}"
        );
    }

    // Cleanup holds the object until it succeeds.
    test.create("stubborn", ProbeSpec { fail_cleanup_times: 2, ..spec("not yet") }).await;
    wait_observed(&test.api, "stubborn").await;
    test.api.delete("stubborn", &DeleteParams::default()).await.unwrap();
    wait_for(&test.api, "stubborn", WAIT, "stubborn to be deleted", |probe| probe.is_none()).await.unwrap();
    assert_eq!(journal.lock().unwrap().cleanups["stubborn"], 3);

    // Graceful shutdown: the apply in flight finishes, nothing starts after.
    test.create("slow", ProbeSpec { apply_millis: 2000, ..spec("slow") }).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !journal.lock().unwrap().applies.contains_key("slow") {
        assert!(std::time::Instant::now() < deadline, "the slow apply never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop(WAIT).await;
    assert!(
        journal.lock().unwrap().apply_windows.iter().any(|(name, ..)| name == "slow"),
        "the apply in flight finished before the operator stopped"
    );
    test.create("too-late", spec("nobody listens")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!journal.lock().unwrap().applies.contains_key("too-late"));
    assert!(test.api.get("too-late").await.unwrap().finalizers().is_empty());

    // Objects still holding the finalizer would block the namespace's deletion forever.
    for name in ["plain", "broken"] {
        let patch = json!({ "metadata": { "finalizers": null } });
        test.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    test.cleanup().await;
}

/// Issue 22, item 4, on whichever server `KUBERATOR_TEST_CLUSTER` picks: of two replicas of
/// a derived operator (processes, leader election on), the standby lists and follows the
/// objects it does not reconcile (warm standby: its `kuberator_cached_objects`), writes
/// nothing, and takes over when the leader stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_keeps_its_cache_warm_and_takes_over() {
    use support::baton::Replica;
    let test = support::baton::setup("warm").await;
    let mut a = Replica::start(&test, "replica-a");
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    a.wait_ready().await;
    let b = Replica::start(&test, "replica-b");
    b.wait_ready().await;
    test.create("first").await;
    assert_eq!(test.reconciled_by("first", Duration::from_secs(30)).await, "replica-a");
    b.wait_cached(1.0).await;
    assert_eq!(b.reconciles().await, 0.0, "the standby reconciled:\n{}", b.log());

    a.signal("TERM");
    a.exited(Duration::from_secs(30)).await;
    test.create("second").await;
    assert_eq!(test.reconciled_by("second", Duration::from_secs(30)).await, "replica-b");
    b.wait_cached(2.0).await;
    drop((a, b));
    test.cleanup().await;
}
