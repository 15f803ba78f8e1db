//! The control plane itself: the version it reports, RBAC, garbage collection, namespace
//! deletion, and that it leaves nothing behind.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::Resource as _;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kuberator_test::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_pinned_version_and_enforces_rbac() {
    let client = kuberator_test::admin_client().await;
    let control_plane = ControlPlane::shared().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    if control_plane.is_local() {
        assert_eq!(version.git_version, "v1.36.3");
        assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "36"));
    }

    // A user with no role binding is refused: authorization is RBAC, not always-allow.
    let mut config = control_plane.config().await.unwrap();
    config.auth_info.impersonate = Some("nobody".into());
    let nobody = kube::Client::try_from(config).unwrap();
    let error = Api::<Namespace>::all(nobody).list(&Default::default()).await.unwrap_err();
    match error {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_control_plane_stops_its_processes_and_removes_its_files() {
    kuberator_test::init_tracing();
    if std::env::var_os(kuberator_test::KUBECONFIG_ENV).is_some() {
        return; // an existing cluster is not ours to stop
    }
    let control_plane = ControlPlane::start().await.unwrap();
    let dir = control_plane.kubeconfig_path().parent().unwrap().to_owned();
    let address = control_plane.server().trim_start_matches("https://").to_owned();
    assert!(dir.exists());
    assert!(std::net::TcpStream::connect(&address).is_ok());

    let running = |dir: &std::path::Path| {
        let found = std::process::Command::new("pgrep").arg("-f").arg(dir).output().unwrap();
        String::from_utf8_lossy(&found.stdout).lines().count()
    };
    // etcd, kube-apiserver and kube-controller-manager, each under its supervisor.
    assert!(running(&dir) >= 3, "expected the three processes under {}", dir.display());

    drop(control_plane);

    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert_eq!(running(&dir), 0, "processes of {} are still running", dir.display());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_ok() {
        assert!(std::time::Instant::now() < deadline, "kube-apiserver still listens on {address}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config_map(name: &str, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garbage_collector_deletes_children_of_a_deleted_owner() {
    let (client, namespace) = kuberator_test::test_env("gc").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let owner = maps.create(&PostParams::default(), &config_map("owner", &namespace)).await.unwrap();
    let mut child = config_map("child", &namespace);
    child.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    maps.create(&PostParams::default(), &child).await.unwrap();

    maps.delete("owner", &DeleteParams::background()).await.unwrap();

    kuberator_test::wait_for(
        &maps,
        "child",
        Duration::from_secs(60),
        "the garbage collector to delete child",
        |child| child.is_none(),
    )
    .await
    .unwrap();
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_is_emptied_and_removed() {
    let (client, namespace) = kuberator_test::test_env("ns-delete").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    maps.create(&PostParams::default(), &config_map("content", &namespace)).await.unwrap();

    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();

    let namespaces: Api<Namespace> = Api::all(client);
    let what = format!("namespace {namespace} to be removed");
    kuberator_test::wait_for(&namespaces, &namespace, Duration::from_secs(60), &what, |ns| ns.is_none())
        .await
        .unwrap();
}
