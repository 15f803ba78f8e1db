//! Every flow of the seed README, end to end against a real kube-apiserver and etcd: what a
//! user sees on the object (finalizers, status, Events) and what the handlers did.

mod support;

use std::time::Duration;

use kube::Api;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::runtime::watcher::Config;
use kuberator::Reconcile;
use kuberator_test::Background;
use kuberator_test::events_for;
use kuberator_test::wait_for;
use serde_json::json;
use support::FINALIZER;
use support::Probe;
use support::ProbeSpec;
use support::setup;
use support::wait_observed;

const STOP: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);

fn spec(message: &str) -> ProbeSpec {
    ProbeSpec { message: message.into(), ..ProbeSpec::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_adds_the_finalizer_first_and_applies_once_per_generation() {
    let test = setup("create").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    test.create("first", spec("hello")).await;
    let probe = wait_observed(&test.api, "first").await;
    assert_eq!(probe.finalizers(), [FINALIZER]);
    assert_eq!(probe.status.as_ref().unwrap().message.as_deref(), Some("hello"));
    assert_eq!(probe.status.as_ref().unwrap().observed_generation, Some(1));

    // The status write comes back through the watch; it must not apply again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(journal.lock().unwrap().applies["first"], [1], "one apply for generation 1");

    // A spec change bumps the generation and applies again.
    let patch = json!({ "spec": { "message": "hello again" } });
    test.api.patch("first", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let probe = wait_observed(&test.api, "first").await;
    assert_eq!(probe.metadata.generation, Some(2));
    assert_eq!(probe.status.as_ref().unwrap().message.as_deref(), Some("hello again"));

    // A status-only change, and a label change, do not.
    let patch = json!({ "status": { "message": "written by someone else" } });
    test.api.patch_status("first", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let patch = json!({ "metadata": { "labels": { "touched": "yes" } } });
    test.api.patch("first", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    {
        let journal = journal.lock().unwrap();
        assert_eq!(journal.applies["first"], [1, 2], "exactly one apply per generation");
        assert!(journal.applies_without_finalizer.is_empty(), "{:?}", journal.applies_without_finalizer);
    }
    operator.stop(STOP).await;
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_apply_writes_the_error_into_status_and_publishes_a_warning() {
    let test = setup("apply-error").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    let spec = ProbeSpec { fail_apply: Some("quota of 10 exceeded".into()), ..spec("too big") };
    test.create("broken", spec).await;
    let probe = wait_observed(&test.api, "broken").await;
    let status = probe.status.clone().unwrap();
    assert_eq!(status.error.unwrap().message, "apply refused: quota of 10 exceeded");
    assert_eq!(status.message, None);

    let events = wait_for_events(&test, &probe, |events| {
        events.iter().any(|e| e.reason.as_deref() == Some("ApplyFailed"))
    })
    .await;
    let warning = events.iter().find(|e| e.reason.as_deref() == Some("ApplyFailed")).unwrap();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.as_deref().unwrap();
    assert!(note.starts_with(&format!("handle_apply failed for Probe {}/broken", test.namespace)), "{note}");
    assert!(note.ends_with("apply refused: quota of 10 exceeded"), "{note}");
    assert_eq!(warning.reporting_controller.as_deref(), Some("probe-operator"));

    // It is retried (requeue after 1 s in this operator).
    wait_until("a retry of the failed apply", || journal.lock().unwrap().applies["broken"].len() >= 2).await;
    operator.stop(STOP).await;
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_runs_cleanup_then_removes_the_finalizer_and_a_failing_cleanup_is_retried() {
    let test = setup("delete").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(4), Some(shutdown)));

    test.create("easy", spec("bye")).await;
    test.create("stubborn", ProbeSpec { fail_cleanup_times: 2, ..spec("not yet") }).await;
    wait_observed(&test.api, "easy").await;
    wait_observed(&test.api, "stubborn").await;

    test.api.delete("easy", &DeleteParams::default()).await.unwrap();
    test.api.delete("stubborn", &DeleteParams::default()).await.unwrap();

    wait_for(&test.api, "easy", WAIT, "easy to be deleted", |probe| probe.is_none()).await.unwrap();
    assert_eq!(journal.lock().unwrap().cleanups["easy"], 1);

    // While cleanup fails, the object stays, marked for deletion, with the finalizer.
    wait_until("the first failed cleanup", || {
        journal.lock().unwrap().cleanups.get("stubborn").copied() >= Some(1)
    })
    .await;
    let held = test.api.get("stubborn").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), [FINALIZER]);

    wait_for(&test.api, "stubborn", WAIT, "stubborn to be deleted after retries", |probe| probe.is_none())
        .await
        .unwrap();
    {
        let journal = journal.lock().unwrap();
        assert_eq!(journal.cleanups["stubborn"], 3, "two failures, then success");
        assert!(journal.errors.iter().any(|e| e.contains("cleanup attempt 2 of stubborn failed on purpose")));
    }
    operator.stop(STOP).await;
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_an_unlisted_namespace_is_reported_retried_and_not_lost() {
    let test = setup("strict").await;
    let other = kuberator_test::test_namespace(&test.client, "strict-other").await.unwrap();
    // The operator watches every namespace (for this test's label) but its Strict provider
    // only knows the test's own namespace.
    let label = format!("test={}", test.namespace);
    let (reconciler, journal) = test.operator_with(
        Api::all(test.client.clone()),
        Config::default().labels(&label),
        &[&test.namespace],
    );
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    let outside: Api<Probe> = Api::namespaced(test.client.clone(), &other);
    let mut probe = Probe::new("outside", spec("lost?"));
    probe.metadata.labels = Some([("test".to_owned(), test.namespace.clone())].into());
    let probe = outside.create(&Default::default(), &probe).await.unwrap();

    let events = wait_for_events_in(&test, &probe, |events| {
        events.iter().any(|e| e.reason.as_deref() == Some("ReconcileFailed"))
    })
    .await;
    let warning = events.iter().find(|e| e.reason.as_deref() == Some("ReconcileFailed")).unwrap();
    let note = warning.note.as_deref().unwrap();
    assert!(note.contains(&format!("namespace `{other}` is not cached")), "{note}");
    assert!(note.contains(&test.namespace), "the note lists the cached namespaces: {note}");

    wait_until("a retry", || journal.lock().unwrap().errors.len() >= 2).await;
    let still_there = outside.get("outside").await.unwrap();
    assert!(still_there.metadata.deletion_timestamp.is_none(), "the object is not lost");
    assert!(journal.lock().unwrap().applies.is_empty(), "nothing ran for it");
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&test.client, &other).await.unwrap();
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_the_event_recorder_appear_on_the_object() {
    let test = setup("events").await;
    let (reconciler, _journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    test.create("noisy", spec("look at me")).await;
    let probe = wait_observed(&test.api, "noisy").await;
    let events = wait_for_events(&test, &probe, |events| {
        events.iter().any(|e| e.reason.as_deref() == Some("Applied"))
    })
    .await;
    let applied = events.iter().find(|e| e.reason.as_deref() == Some("Applied")).unwrap();
    assert_eq!(applied.type_.as_deref(), Some("Normal"));
    assert_eq!(applied.note.as_deref(), Some("applied \"look at me\""));
    assert_eq!(applied.action.as_deref(), Some("Applied"));
    assert_eq!(applied.reporting_controller.as_deref(), Some("probe-operator"));
    let regarding = applied.regarding.as_ref().unwrap();
    assert_eq!(regarding.uid, probe.metadata.uid, "regarding this very object");
    operator.stop(STOP).await;
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_concurrent_runs_objects_in_parallel_but_never_one_object_twice() {
    let test = setup("concurrent").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(3), Some(shutdown)));

    let slow = ProbeSpec { apply_millis: 1500, ..spec("slow") };
    for name in ["a", "b", "c", "d"] {
        test.create(name, slow.clone()).await;
    }
    // Changes to "a" while it is being applied must queue, not run beside it.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let patch = json!({ "spec": { "message": format!("slow {round}") } });
        test.api.patch("a", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    for name in ["a", "b", "c", "d"] {
        wait_observed(&test.api, name).await;
    }

    {
        let journal = journal.lock().unwrap();
        assert!(journal.most_at_once >= 2, "different objects ran in parallel: {}", journal.most_at_once);
        assert!(journal.most_at_once <= 3, "the limit holds: {}", journal.most_at_once);
        for (name, most) in &journal.most_at_once_per_object {
            assert_eq!(*most, 1, "{name} was reconciled twice at once");
        }
    }
    operator.stop(STOP).await;
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_runs_one_reconcile_at_a_time() {
    let test = setup("serial").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    let slow = ProbeSpec { apply_millis: 500, ..spec("slow") };
    for name in ["a", "b", "c"] {
        test.create(name, slow.clone()).await;
    }
    for name in ["a", "b", "c"] {
        wait_observed(&test.api, name).await;
    }
    assert_eq!(journal.lock().unwrap().most_at_once, 1);
    operator.stop(STOP).await;
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_the_reconcile_in_flight_finish_and_starts_no_other() {
    let test = setup("shutdown").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(2), Some(shutdown)));

    test.create("in-flight", ProbeSpec { apply_millis: 3000, ..spec("slow") }).await;
    wait_until("the apply to start", || journal.lock().unwrap().running_total == 1).await;

    let asked = std::time::Instant::now();
    operator.stop(STOP).await;
    let stopped = std::time::Instant::now();
    {
        let journal = journal.lock().unwrap();
        let (_, _, finished) = journal
            .apply_windows
            .iter()
            .find(|(name, ..)| name == "in-flight")
            .expect("the in-flight apply finished before start() returned");
        assert!(*finished <= stopped);
        assert!(stopped.duration_since(asked) >= Duration::from_secs(1), "shutdown waited for the apply");
    }

    test.create("too-late", spec("nobody listens")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!journal.lock().unwrap().applies.contains_key("too-late"), "no reconcile after shutdown");
    let probe = test.api.get("too-late").await.unwrap();
    assert!(probe.finalizers().is_empty(), "nothing touched it");
    test.cleanup().await;
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_events(
    test: &support::Setup,
    probe: &Probe,
    done: impl Fn(&[k8s_openapi::api::events::v1::Event]) -> bool,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    wait_for_events_in(test, probe, done).await
}

async fn wait_for_events_in(
    test: &support::Setup,
    probe: &Probe,
    done: impl Fn(&[k8s_openapi::api::events::v1::Event]) -> bool,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = events_for(&test.client, probe).await.unwrap();
        if done(&events) {
            return events;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for Events; saw {events:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_fold_into_a_series_and_long_notes_are_cut() {
    use kuberator::events::EmitEvent;
    use kuberator::events::EventData;
    use kuberator::events::EventRecorder;

    let test = setup("event-series").await;
    let probe = test.create("subject", spec("quiet")).await;
    let recorder = EventRecorder::new(test.client.clone(), "series-test");
    for _ in 0..3 {
        recorder.try_emit(&probe, EventData::warning("Throttled", "too many requests")).await.unwrap();
    }
    let long_note = "é".repeat(3000); // 6000 bytes, over the API's 1024-byte limit
    recorder.try_emit(&probe, EventData::normal("Verbose", long_note)).await.unwrap();

    let events = events_for(&test.client, &probe).await.unwrap();
    let throttled: Vec<_> = events.iter().filter(|e| e.reason.as_deref() == Some("Throttled")).collect();
    assert_eq!(throttled.len(), 1, "three repeats are one Event: {throttled:#?}");
    assert_eq!(throttled[0].series.as_ref().map(|series| series.count), Some(3));
    let verbose = events.iter().find(|e| e.reason.as_deref() == Some("Verbose")).unwrap();
    let note = verbose.note.as_deref().unwrap();
    assert!(note.len() <= 1024 && note.len() > 1000, "{} bytes", note.len());
    assert!(note.ends_with('…'));
    test.cleanup().await;
}

/// Cleanup that succeeded is not run again when only the finalizer's removal fails. A
/// ValidatingAdmissionPolicy refuses to drop the finalizer of a Probe labelled `hold`, which
/// is what a cut connection does to that patch, until the test removes the label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_runs_once_when_only_the_finalizer_removal_fails() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
    use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;

    let test = setup("cleanup-once").await;
    let cluster = kuberator_test::TestCluster::shared().await.unwrap();
    // The in-memory server has no admission policies: its faults refuse the removal instead.
    let in_memory = cluster.in_memory_server();
    let name = format!("hold-finalizer-{}", test.namespace);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": ["test.kuberator.dev"], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["probes"],
            }]},
            "validations": [{
                "expression": "!(has(object.metadata.labels) && 'hold' in object.metadata.labels \
                    && has(oldObject.metadata.finalizers) && (!has(object.metadata.finalizers) \
                    || size(object.metadata.finalizers) < size(oldObject.metadata.finalizers)))",
                "message": "the test holds this finalizer",
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": { "matchLabels": {
                "kubernetes.io/metadata.name": test.namespace,
            }}},
        },
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(test.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(test.client.clone());
    if in_memory.is_none() {
        policies.create(&Default::default(), &policy).await.unwrap();
        bindings.create(&Default::default(), &binding).await.unwrap();
    }

    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));
    let labels = json!({ "metadata": { "labels": { "hold": "true" } } });
    test.create("held", spec("keep me")).await;
    test.api.patch("held", &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();
    wait_observed(&test.api, "held").await;

    // The policy is in force once a dry run of the removal is refused.
    let removal = json!({ "metadata": { "finalizers": null } });
    let dry_run = PatchParams { dry_run: true, ..PatchParams::default() };
    let deadline = std::time::Instant::now() + WAIT;
    if let Some(server) = in_memory {
        let denied = "admission denied the request: the test holds this finalizer";
        server.fail_next_with(usize::MAX, kuberator_test::memory::Verb::Patch, "probes", 422, denied);
    }
    while test.api.patch("held", &dry_run, &Patch::Merge(&removal)).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the admission policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    test.api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = test.api.get("held").await.unwrap();
    let events = wait_for_events(&test, &held, |events| {
        events.iter().any(|e| e.reason.as_deref() == Some("FinalizerRemovalFailed"))
    })
    .await;
    let note = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("FinalizerRemovalFailed"))
        .and_then(|e| e.note.clone())
        .unwrap();
    assert!(
        note.contains(&format!(
            "could not remove finalizer `{FINALIZER}` from Probe {}/held; its cleanup already ran and will not \
             run again",
            test.namespace
        )),
        "{note}"
    );
    assert!(note.contains("the test holds this finalizer"), "{note}");
    // Retried with backoff; cleanup stays at one run.
    wait_until("two failed removals", || {
        journal.lock().unwrap().errors.iter().filter(|e| e.contains("could not remove finalizer")).count()
            >= 2
    })
    .await;
    assert_eq!(journal.lock().unwrap().cleanups["held"], 1);

    if let Some(server) = in_memory {
        server.clear_faults();
    }
    let release = json!({ "metadata": { "labels": { "hold": null } } });
    test.api.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    wait_for(&test.api, "held", WAIT, "held to be deleted", |probe| probe.is_none()).await.unwrap();
    assert_eq!(journal.lock().unwrap().cleanups["held"], 1, "cleanup ran once for this deletion");

    operator.stop(STOP).await;
    if in_memory.is_none() {
        bindings.delete(&name, &DeleteParams::default()).await.unwrap();
        policies.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    test.cleanup().await;
}
