//! `/metrics`, `/healthz` and `/readyz` of a running operator, against the real control
//! plane. Metrics are process-wide, so this binary runs one operator.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kuberator::Reconcile;
use kuberator_test::Background;
use support::ProbeSpec;
use support::setup;
use support::wait_observed;

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    kuberator_test::http_get(address, path).await.unwrap()
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    kuberator_test::metric(metrics, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reconciles_and_readiness_waits_for_the_initial_sync() {
    let test = setup("telemetry").await;
    let telemetry = kuberator::telemetry::serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = telemetry.address();

    assert_eq!(get(address, "/healthz").await, (200, "ok".to_owned()));
    let (status, reason) = get(address, "/readyz").await;
    assert_eq!(status, 503, "not ready before any controller synced: {reason}");

    let (reconciler, _journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(2), Some(shutdown)));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get(address, "/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready: {:?}", get(address, "/readyz").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Three objects: each reconciles once (adds the finalizer, then applies).
    for name in ["one", "two", "three"] {
        test.create(name, ProbeSpec { message: name.into(), ..ProbeSpec::default() }).await;
    }
    for name in ["one", "two", "three"] {
        wait_observed(&test.api, name).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, metrics) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    let controller = "controller=\"probe-operator\"";
    assert_eq!(
        value(&metrics, &format!("kuberator_reconciles_total{{{controller},result=\"success\"}}")),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value(&metrics, &format!("kuberator_reconcile_duration_seconds_count{{{controller}}}")),
        Some(3.0)
    );
    assert_eq!(value(&metrics, &format!("kuberator_reconciles_in_flight{{{controller}}}")), Some(0.0));
    assert_eq!(value(&metrics, &format!("kuberator_ready{{{controller}}}")), Some(1.0));
    let queue = format!("kuberator_queue_depth{{{controller},priority=\"change\"}}");
    assert_eq!(value(&metrics, &queue), Some(0.0));
    let waits = format!("kuberator_queue_wait_seconds_count{{{controller},priority=\"change\"}}");
    assert!(value(&metrics, &waits).is_some_and(|waits| waits >= 3.0), "{metrics}");

    // Five slow objects at once, two reconciles at a time: the rest wait, and the queue
    // depth shows them; once all are done it is back to zero.
    let watching = Arc::new(AtomicBool::new(true));
    let deepest = tokio::spawn({
        let (watching, queue) = (Arc::clone(&watching), queue.clone());
        async move {
            let mut deepest = 0.0_f64;
            while watching.load(Ordering::SeqCst) {
                deepest = deepest.max(value(&get(address, "/metrics").await.1, &queue).unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            deepest
        }
    });
    let slow = ["slow-1", "slow-2", "slow-3", "slow-4", "slow-5"];
    for name in slow {
        test.create(name, ProbeSpec { message: name.into(), apply_millis: 1000, ..ProbeSpec::default() })
            .await;
    }
    for name in slow {
        wait_observed(&test.api, name).await;
    }
    watching.store(false, Ordering::SeqCst);
    let deepest = deepest.await.unwrap();
    assert!(deepest >= 2.0, "at most 2 of 5 run at once, so some wait: deepest queue {deepest}");
    assert_eq!(value(&get(address, "/metrics").await.1, &queue), Some(0.0));

    // A failing object shows up by cause.
    test.create("failing", ProbeSpec { fail_apply: Some("no".into()), ..ProbeSpec::default() }).await;
    let series = format!("kuberator_reconcile_errors_total{{{controller},kind=\"apply\"}}");
    while value(&get(address, "/metrics").await.1, &series).is_none() {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(30), "no apply error counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    operator.stop(Duration::from_secs(30)).await;
    let patch = serde_json::json!({ "metadata": { "finalizers": null } });
    test.api.patch("failing", &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    test.cleanup().await;
}
