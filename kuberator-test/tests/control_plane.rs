//! The control plane itself: the version it reports, RBAC, and that it leaves nothing behind.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
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

    drop(control_plane);

    assert!(!dir.exists(), "{} is left behind", dir.display());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_ok() {
        assert!(std::time::Instant::now() < deadline, "kube-apiserver still listens on {address}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
