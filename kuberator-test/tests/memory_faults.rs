//! The in-memory server's faults, one call each, as an operator author's own tests use them;
//! and an operator that rides them out.

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::api::WatchEvent;
use kube::api::WatchParams;
use kuberator::Reconcile;
use kuberator_test::Background;
use kuberator_test::memory::MemoryServer;
use kuberator_test::memory::Verb;
use kuberator_test::wait_for;
use serde_json::json;
use support::Probe;
use support::ProbeSpec;

fn map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn api_code(error: &kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn the_next_requests_fail_with_the_status_the_real_server_sends() {
    let server = MemoryServer::new();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    maps.create(&PostParams::default(), &map("m")).await.unwrap();
    server.fail_next(2, Verb::Patch, "configmaps", 503);
    let patch = Patch::Merge(json!({"data": {"k": "w"}}));
    for _ in 0..2 {
        let error = maps.patch("m", &PatchParams::default(), &patch).await.unwrap_err();
        assert_eq!(api_code(&error), (503, "ServiceUnavailable".into()));
    }
    assert_eq!(maps.patch("m", &PatchParams::default(), &patch).await.unwrap().data.unwrap()["k"], "w");
    // Other verbs and resources were never touched.
    server.fail_next(1, Verb::Any, "*", 500);
    assert_eq!(api_code(&maps.get("m").await.unwrap_err()), (500, "InternalError".into()));
    maps.get("m").await.unwrap();
}

#[tokio::test]
async fn refused_verbs_are_forbidden_and_the_rest_allowed() {
    let server = MemoryServer::new();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    maps.create(&PostParams::default(), &map("m")).await.unwrap();
    server.refuse(Verb::List, "configmaps");
    let error = maps.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(api_code(&error), (403, "Forbidden".into()));
    let kube::Error::Api(status) = error else { unreachable!() };
    assert!(
        status.message.contains("cannot list resource \"configmaps\" in the namespace \"default\""),
        "{}",
        status.message
    );
    maps.get("m").await.unwrap();
    server.clear_faults();
    assert_eq!(maps.list(&ListParams::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn latency_delays_requests_and_pause_holds_them_until_resume() {
    let server = MemoryServer::new();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    server.set_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    maps.get_opt("m").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "answered after {:?}", started.elapsed());
    server.set_latency(Duration::ZERO);

    server.pause();
    let held = tokio::spawn({
        let maps = maps.clone();
        async move { maps.create(&PostParams::default(), &map("late")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a request went through a paused server");
    server.resume();
    held.await.unwrap().unwrap();
    maps.get("late").await.unwrap();
}

#[tokio::test]
async fn dropped_watches_end_and_expired_versions_are_gone() {
    let server = MemoryServer::new();
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let created = maps.create(&PostParams::default(), &map("m")).await.unwrap();
    let version = created.metadata.resource_version.unwrap();
    let mut watch = maps.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    server.drop_watches();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.try_next()).await.expect("the watch ends");
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    server.expire_resource_versions();
    let mut watch = maps.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    match watch.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rides_out_failures_dropped_watches_and_expired_versions() {
    kuberator_test::init_tracing();
    let server = MemoryServer::new();
    let client = server.client();
    kuberator_test::install_crd::<Probe>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "faults").await.unwrap();
    let test = support::Setup {
        client: client.clone(),
        namespace: namespace.clone(),
        api: Api::namespaced(client, &namespace),
    };
    let (reconciler, journal) = test.operator();
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    // The finalizer patch and two status writes fail first.
    server.fail_next(1, Verb::Patch, "probes", 500);
    server.fail_next(2, Verb::Patch, "probes/status", 503);
    test.create("first", ProbeSpec { message: "one".into(), ..ProbeSpec::default() }).await;
    let first = support::wait_observed(&test.api, "first").await;
    assert_eq!(first.status.unwrap().message.as_deref(), Some("one"));

    // The watch is cut and its version expired: the operator lists again and goes on.
    server.drop_watches();
    server.expire_resource_versions();
    test.create("second", ProbeSpec { message: "two".into(), ..ProbeSpec::default() }).await;
    let second = support::wait_observed(&test.api, "second").await;
    assert_eq!(second.status.unwrap().message.as_deref(), Some("two"));

    test.api.delete("first", &Default::default()).await.unwrap();
    wait_for(&test.api, "first", Duration::from_secs(30), "first to go", |probe| probe.is_none())
        .await
        .unwrap();
    assert_eq!(journal.lock().unwrap().cleanups["first"], 1);
    operator.stop(Duration::from_secs(30)).await;
}
