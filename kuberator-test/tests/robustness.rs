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
