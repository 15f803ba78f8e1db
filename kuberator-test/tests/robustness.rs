//! What keeps one bad object from hurting the others, against the real control plane.

mod support;

use std::time::Duration;

use kuberator::Reconcile;
use kuberator_test::Background;
use kuberator_test::events_for;
use support::ProbeSpec;
use support::setup;
use support::wait_observed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_reported_and_retried_while_other_objects_reconcile() {
    let test = setup("panic").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    let panicking = ProbeSpec { panic_apply: Some("index out of bounds".into()), ..ProbeSpec::default() };
    let bad = test.create("bad", panicking).await;
    test.create("good", ProbeSpec { message: "fine".into(), ..ProbeSpec::default() }).await;

    // The other object is reconciled; the operator lives on.
    let good = wait_observed(&test.api, "good").await;
    assert_eq!(good.status.unwrap().message.as_deref(), Some("fine"));
    assert!(!operator.is_finished(), "the operator survived the panic");

    // The panic is a Warning Event on the object that names it, and the object is retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let events = events_for(&test.client, &bad).await.unwrap();
        if let Some(event) = events.into_iter().find(|e| e.reason.as_deref() == Some("ReconcilePanicked")) {
            break event;
        }
        assert!(std::time::Instant::now() < deadline, "no ReconcilePanicked event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let note = warning.note.unwrap();
    assert!(note.contains("a handler panicked while reconciling Probe"), "{note}");
    assert!(note.ends_with("index out of bounds"), "{note}");
    while journal.lock().unwrap().applies.get("bad").map_or(0, Vec::len) < 2 {
        assert!(std::time::Instant::now() < deadline, "the panicking object was not retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    operator.stop(Duration::from_secs(30)).await;
    let patch = serde_json::json!({ "metadata": { "finalizers": null } });
    test.api.patch("bad", &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_objects_back_off_exponentially_and_start_over_after_a_success() {
    use kube::api::Patch;
    use kube::api::PatchParams;

    let test = setup("backoff").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));
    let starts = |journal: &std::sync::Mutex<support::Journal>| {
        journal.lock().unwrap().apply_starts.get("flaky").cloned().unwrap_or_default()
    };
    let wait_for_applies = |count: usize| {
        let journal = std::sync::Arc::clone(&journal);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while starts(&journal).len() < count {
                assert!(std::time::Instant::now() < deadline, "only {} applies", starts(&journal).len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // base 100 ms, doubling, cap 1 s, ±10 %; each retry also takes the handler's own time
    // (a status write) and the scheduler's, so intervals may run up to 400 ms long.
    let failing = ProbeSpec { fail_apply: Some("not yet".into()), ..ProbeSpec::default() };
    test.create("flaky", failing).await;
    wait_for_applies(7).await;
    let times = starts(&journal);
    let intervals: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    let expected_ms = [100, 200, 400, 800, 1000, 1000];
    for (interval, expected) in intervals.iter().zip(expected_ms) {
        let expected = Duration::from_millis(expected);
        assert!(
            *interval >= expected.mul_f64(0.9)
                && *interval <= expected.mul_f64(1.1) + Duration::from_millis(400),
            "interval {interval:?}, expected {expected:?}; all: {intervals:?}"
        );
    }

    // A success starts the backoff over.
    let heal = serde_json::json!({ "spec": { "failApply": null } });
    test.api.patch("flaky", &PatchParams::default(), &Patch::Merge(&heal)).await.unwrap();
    wait_observed(&test.api, "flaky").await;
    let before = starts(&journal).len();
    let break_again = serde_json::json!({ "spec": { "failApply": "broken again" } });
    test.api.patch("flaky", &PatchParams::default(), &Patch::Merge(&break_again)).await.unwrap();
    wait_for_applies(before + 2).await;
    let times = starts(&journal);
    let first_retry = times[before + 1] - times[before];
    assert!(
        first_retry >= Duration::from_millis(90) && first_retry <= Duration::from_millis(510),
        "after a success the first retry waits the base delay again: {first_retry:?}"
    );

    operator.stop(Duration::from_secs(30)).await;
    let patch = serde_json::json!({ "metadata": { "finalizers": null } });
    test.api.patch("flaky", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_error_is_reported_once_and_waits_for_a_change() {
    use kube::api::Patch;
    use kube::api::PatchParams;

    let test = setup("terminal").await;
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));
    let applies = |journal: &std::sync::Mutex<support::Journal>| {
        journal.lock().unwrap().applies.get("hopeless").map_or(0, Vec::len)
    };

    let spec =
        ProbeSpec { terminal: Some("size 500 is over the quota of 100".into()), ..ProbeSpec::default() };
    let probe = test.create("hopeless", spec).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let events = events_for(&test.client, &probe).await.unwrap();
        if let Some(event) = events.into_iter().find(|e| e.reason.as_deref() == Some("ApplyFailed")) {
            break event;
        }
        assert!(std::time::Instant::now() < deadline, "no ApplyFailed event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(warning.note.unwrap().ends_with("size 500 is over the quota of 100"));

    // With a 100 ms backoff base, an ordinary error would have been retried many times by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(applies(&journal), 1, "a terminal error is not retried");

    // A change of the object is tried again.
    let fix = serde_json::json!({ "spec": { "terminal": null, "message": "smaller" } });
    test.api.patch("hopeless", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    let fixed = wait_observed(&test.api, "hopeless").await;
    assert_eq!(fixed.status.unwrap().message.as_deref(), Some("smaller"));
    assert_eq!(applies(&journal), 2);

    operator.stop(Duration::from_secs(30)).await;
    test.cleanup().await;
}
