//! Two replicas of a derived operator, as separate processes with leader election on
//! (client-go's timing, the defaults), against the real control plane: exactly one
//! reconciles; a leader killed with SIGKILL is replaced once its lease runs out; a leader
//! stopped with SIGTERM releases its lease and the standby takes over in under 3 s; and a
//! replica holding exactly the RBAC its `rbac` subcommand prints works, while one without
//! the Lease rules exits with an error that names them. Shutdown always ends: a hung handler
//! is cancelled at the drain deadline or at a second signal (exit 1, naming the object,
//! `/readyz` 503 meanwhile, the Lease released), and a reconcile past its timeout is an
//! error with a Warning Event. Each test has a namespace, and so a
//! Lease, of its own.

#![allow(clippy::print_stderr)] // a failed test prints the replicas' logs

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;
use kube::api::ApiResource;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::PostParams;
use kube::config::Kubeconfig;
use kuberator_test::ControlPlane;

const OPERATOR: &str = env!("CARGO_BIN_EXE_baton-operator");
/// The derived operator's controller name, and so its Lease's.
const LEASE: &str = "baton-operator";

struct Test {
    client: Client,
    namespace: String,
    kubeconfig: PathBuf,
    batons: Api<DynamicObject>,
    leases: Api<Lease>,
}

/// A namespace of the test's own, and the operator's CRD as its `crd` subcommand prints it.
async fn setup(prefix: &str) -> Test {
    let client = kuberator_test::admin_client().await;
    let control_plane = ControlPlane::shared().await.unwrap();
    let printed = Command::new(OPERATOR).arg("crd").output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let crd: CustomResourceDefinition = serde_yaml_ng::from_slice(&printed.stdout).unwrap();
    kuberator_test::install_crd_object(&client, &crd).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, prefix).await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kuberator.dev", "v1", "Baton"),
        "batons",
    );
    Test {
        batons: Api::namespaced_with(client.clone(), &namespace, &resource),
        leases: Api::namespaced(client.clone(), &namespace),
        kubeconfig: control_plane.kubeconfig_path().to_owned(),
        client,
        namespace,
    }
}

impl Test {
    async fn create(&self, name: &str) {
        self.create_slow(name, 0).await;
    }

    /// A Baton whose `handle_apply` sleeps `seconds` first.
    async fn create_slow(&self, name: &str, seconds: u64) {
        let baton: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "test.kuberator.dev/v1",
            "kind": "Baton",
            "metadata": { "name": name, "namespace": self.namespace },
            "spec": { "note": name, "applySeconds": seconds },
        }))
        .unwrap();
        self.batons.create(&PostParams::default(), &baton).await.unwrap();
    }

    /// Waits until `name`'s status says which replica reconciled it, and returns that.
    async fn reconciled_by(&self, name: &str, timeout: Duration) -> String {
        let done = |baton: Option<&DynamicObject>| {
            baton.and_then(|baton| baton.data["status"]["reconciledBy"].as_str().map(str::to_owned))
        };
        let baton = kuberator_test::wait_for(&self.batons, name, timeout, "status.reconciledBy", |baton| {
            done(baton).is_some()
        })
        .await
        .unwrap();
        done(baton.as_ref()).unwrap()
    }

    async fn holder(&self) -> Option<String> {
        let lease = self.leases.get_opt(LEASE).await.unwrap()?;
        lease.spec?.holder_identity
    }

    async fn wait_holder(&self, identity: &str, timeout: Duration) -> Lease {
        kuberator_test::wait_for(
            &self.leases,
            LEASE,
            timeout,
            &format!("{identity} to hold the lease"),
            |lease| lease.and_then(|lease| lease.spec.as_ref()?.holder_identity.as_deref()) == Some(identity),
        )
        .await
        .unwrap()
        .unwrap()
    }

    async fn cleanup(self) {
        kuberator_test::delete_namespace(&self.client, &self.namespace).await.unwrap();
    }
}

/// One operator process; killed when dropped, its log printed if the test failed.
struct Replica {
    identity: &'static str,
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Runs the operator with default leader election timing, watching the test's namespace
    /// and holding its Lease there.
    fn start(test: &Test, identity: &'static str) -> Self {
        Self::start_as(test, identity, &test.kubeconfig)
    }

    /// Like [`Replica::start`], with more command-line arguments.
    fn start_with(test: &Test, identity: &'static str, args: &[&str]) -> Self {
        Self::spawn(test, identity, &test.kubeconfig, args)
    }

    /// Like [`Replica::start`], with the client that `kubeconfig` describes.
    fn start_as(test: &Test, identity: &'static str, kubeconfig: &std::path::Path) -> Self {
        Self::spawn(test, identity, kubeconfig, &[])
    }

    fn spawn(test: &Test, identity: &'static str, kubeconfig: &std::path::Path, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{identity}.log"));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // One file, one offset: stdout (the logs) and stderr (a failure) interleave, not overwrite.
        let output = File::create(&log).unwrap();
        let child = Command::new(OPERATOR)
            .args(["run", "--namespaces", &test.namespace, "--lease-namespace", &test.namespace])
            .args(["--metrics-address", &metrics.to_string()])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBERATOR_IDENTITY", identity)
            .env("KUBERATOR_LOG", "info,kuberator=debug")
            .stdin(Stdio::null())
            .stderr(output.try_clone().unwrap())
            .stdout(output)
            .spawn()
            .unwrap();
        Self { identity, child, metrics, log, _dir: dir }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        kuberator_test::http_get(self.metrics, path).await.ok()
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, metrics) = self.get("/metrics").await?;
        kuberator_test::metric(&metrics, series)
    }

    async fn leading(&self, lease: &str) -> Option<f64> {
        self.metric(&format!("kuberator_leader{{lease=\"{lease}\"}}")).await
    }

    async fn reconciles(&self) -> f64 {
        self.metric("kuberator_reconciles_total{controller=\"baton-operator\",result=\"success\"}")
            .await
            .unwrap_or(0.0)
    }

    /// Waits until `/readyz` answers 200.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/readyz").await.map(|(status, _)| status) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "{} never ready: {:?}\n{}",
                self.identity,
                self.get("/readyz").await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -s {signal} {}", self.child.id());
    }

    /// Waits for the process to exit, and returns its status.
    async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}\n{}",
                self.identity,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        format!(
            "--- log of {} ---\n{}",
            self.identity,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Replica A leads and reconciles; replica B stands by, ready, reconciling nothing.
async fn leader_and_standby(test: &Test) -> (Replica, Replica) {
    let a = Replica::start(test, "replica-a");
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    a.wait_ready().await;
    let b = Replica::start(test, "replica-b");
    b.wait_ready().await;
    let lease = format!("{}/{LEASE}", test.namespace);
    assert_eq!(b.leading(&lease).await, Some(0.0), "{}", b.log());
    assert_eq!(a.leading(&lease).await, Some(1.0), "{}", a.log());

    test.create("first").await;
    assert_eq!(test.reconciled_by("first", Duration::from_secs(30)).await, "replica-a");
    assert!(a.reconciles().await >= 1.0, "{}", a.log());
    assert_eq!(b.reconciles().await, 0.0, "the standby reconciled:\n{}", b.log());
    assert_eq!(test.holder().await.as_deref(), Some("replica-a"));
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_once_its_lease_runs_out() {
    let test = setup("replicas-kill").await;
    let (mut a, b) = leader_and_standby(&test).await;

    a.signal("KILL");
    let killed = Instant::now();
    a.exited(Duration::from_secs(10)).await;
    test.create("second").await;
    assert_eq!(test.reconciled_by("second", Duration::from_secs(40)).await, "replica-b");
    let took = killed.elapsed();
    // The standby waits out the 15 s lease from the last renewal it saw (at most one 2 s retry
    // period before the kill), then looks within one retry period (2 s, up to 20 % later);
    // 2 s more for starting the controller and reconciling on a busy machine.
    assert!(took >= Duration::from_secs(12), "took over before the lease ran out: {took:?}");
    assert!(took <= Duration::from_millis(15_000 + 2_400 + 2_000), "took {took:?}\n{}", b.log());
    let lease = test.wait_holder("replica-b", Duration::from_secs(1)).await;
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
    assert_eq!(b.leading(&format!("{}/{LEASE}", test.namespace)).await, Some(1.0));
    eprintln!("SIGKILL handover: {took:?}");

    drop((a, b));
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_hands_over_in_under_three_seconds() {
    let test = setup("replicas-term").await;
    let (mut a, b) = leader_and_standby(&test).await;
    let lease = format!("{}/{LEASE}", test.namespace);

    a.signal("TERM");
    let terminated = Instant::now();
    // Handed over: the standby holds the lease and its controller has synced, so it
    // reconciles.
    loop {
        let metrics = b.get("/metrics").await.map(|(_, body)| body).unwrap_or_default();
        let leading = kuberator_test::metric(&metrics, &format!("kuberator_leader{{lease=\"{lease}\"}}"));
        let synced = kuberator_test::metric(&metrics, "kuberator_ready{controller=\"baton-operator\"}");
        if leading == Some(1.0) && synced == Some(1.0) {
            break;
        }
        assert!(terminated.elapsed() < Duration::from_secs(30), "no handover\n{}\n{}", a.log(), b.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = terminated.elapsed();
    assert!(took < Duration::from_secs(3), "handover took {took:?}\n{}\n{}", a.log(), b.log());
    eprintln!("SIGTERM handover: {took:?}");

    let status = a.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "a SIGTERM is a graceful stop: {status}\n{}", a.log());
    assert!(a.log().contains("released the lease"), "{}", a.log());
    let held = test.wait_holder("replica-b", Duration::from_secs(1)).await;
    assert_eq!(held.spec.unwrap().lease_transitions, Some(1));
    test.create("second").await;
    assert_eq!(test.reconciled_by("second", Duration::from_secs(30)).await, "replica-b");

    drop((a, b));
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_exactly_the_printed_rbac_works_and_without_the_lease_rules_says_so() {
    let test = setup("replicas-rbac").await;
    let namespace = test.namespace.as_str();
    // What `rbac` prints for this deployment: the operator's ServiceAccount lives in the
    // test's namespace, watches it, and holds its Lease there.
    let printed = Command::new(OPERATOR)
        .args(["rbac", "--namespace", namespace, "--namespaces", namespace])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let text = String::from_utf8(printed.stdout).unwrap();
    let documents: Vec<serde_json::Value> =
        text.split("\n---\n").map(|document| serde_yaml_ng::from_str(document).unwrap()).collect();
    let kinds: Vec<_> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Role", "RoleBinding", "Role", "RoleBinding"], "{text}");
    let roles: Api<Role> = Api::namespaced(test.client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(test.client.clone(), namespace);
    for pair in documents.chunks(2) {
        roles
            .create(&PostParams::default(), &serde_json::from_value(pair[0].clone()).unwrap())
            .await
            .unwrap();
        bindings
            .create(&PostParams::default(), &serde_json::from_value(pair[1].clone()).unwrap())
            .await
            .unwrap();
    }

    // A kubeconfig that acts as that ServiceAccount and nothing more.
    let control_plane = ControlPlane::shared().await.unwrap();
    let mut kubeconfig = Kubeconfig::read_from(control_plane.kubeconfig_path()).unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info.as_mut().unwrap().impersonate =
            Some(format!("system:serviceaccount:{namespace}:{LEASE}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let restricted = dir.path().join("kubeconfig");
    std::fs::write(&restricted, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();

    let replica = Replica::start_as(&test, "least-privilege", &restricted);
    test.create("first").await;
    assert_eq!(test.reconciled_by("first", Duration::from_secs(30)).await, "least-privilege");
    drop(replica);

    // Without the Lease rules, the operator exits at once and says what to grant.
    bindings.delete(&format!("{LEASE}-leader-election"), &Default::default()).await.unwrap();
    let mut refused = Replica::start_as(&test, "no-lease-rules", &restricted);
    let status = refused.exited(Duration::from_secs(30)).await;
    assert!(!status.success());
    let log = refused.log();
    assert!(
        log.contains(&format!("not allowed to use Lease {namespace}/{LEASE} for leader election")),
        "{log}"
    );
    assert!(log.contains("the operator's `rbac` subcommand prints the rules"), "{log}");

    test.cleanup().await;
}

/// SIGTERM while a handler hangs: `/readyz` turns 503 at once, the hung reconcile is cancelled
/// at the drain deadline, the process exits 1 naming it, and the Lease is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_is_cancelled_at_the_drain_deadline() {
    let test = setup("drain").await;
    let mut a = Replica::start_with(&test, "replica-a", &["--drain-deadline", "3s"]);
    a.wait_ready().await;
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    test.create_slow("hung", 600).await;
    wait_in_flight(&test, &a, "hung").await;

    a.signal("TERM");
    let terminated = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.get("/readyz").await.map(|(status, _)| status) != Some(503) {
        assert!(Instant::now() < deadline, "/readyz still ready after SIGTERM\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = a.exited(Duration::from_secs(15)).await;
    let took = terminated.elapsed();
    eprintln!("SIGTERM with a hung handler and a 3 s drain deadline: exited after {took:?}");
    assert_eq!(status.code(), Some(1), "{}", a.log());
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "exited after {took:?}");
    let log = a.log();
    assert!(log.contains("the drain deadline of 3s passed"), "{log}");
    assert!(log.contains(&format!("cancelled: Baton {}/hung", test.namespace)), "{log}");
    assert_eq!(test.holder().await, None, "the lease is released\n{log}");

    drop(a);
    test.cleanup().await;
}

/// A second SIGTERM (or SIGINT) ends a drain at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let test = setup("second-signal").await;
    let mut a = Replica::start_with(&test, "replica-a", &["--drain-deadline", "60s"]);
    a.wait_ready().await;
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    test.create_slow("hung", 600).await;
    wait_in_flight(&test, &a, "hung").await;

    a.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("INT");
    let second = Instant::now();
    let status = a.exited(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", a.log());
    assert!(second.elapsed() < Duration::from_secs(3), "took {:?} after the second signal", second.elapsed());
    assert!(a.log().contains("a second signal came"), "{}", a.log());
    assert_eq!(test.holder().await, None, "the lease is released");

    drop(a);
    test.cleanup().await;
}

/// A reconcile past `--reconcile-timeout` is cancelled and becomes an error of its object,
/// with a Warning Event, and is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_past_its_timeout_is_an_error_with_a_warning_event() {
    let test = setup("reconcile-timeout").await;
    let a = Replica::start_with(&test, "replica-a", &["--reconcile-timeout", "1s"]);
    a.wait_ready().await;
    test.create_slow("slow", 600).await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(test.client.clone(), &test.namespace);
    let deadline = Instant::now() + Duration::from_secs(30);
    let note = loop {
        let listed = events.list(&Default::default()).await.unwrap().items;
        let timed_out = listed.into_iter().find(|e| {
            e.reason.as_deref() == Some("ReconcileTimedOut")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("slow")
        });
        if let Some(note) = timed_out.and_then(|e| e.note) {
            break note;
        }
        assert!(Instant::now() < deadline, "no ReconcileTimedOut Event\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        note.contains(&format!(
            "reconciling Baton {}/slow took longer than 1s, so it was cancelled",
            test.namespace
        )),
        "{note}"
    );
    let failed = "kuberator_reconcile_errors_total{controller=\"baton-operator\",kind=\"timeout\"}";
    assert!(a.metric(failed).await.unwrap_or(0.0) >= 1.0, "{}", a.log());

    drop(a);
    test.cleanup().await;
}

/// Waits until the replica runs `name`'s `handle_apply` (the finalizer is on, and a reconcile
/// is in flight).
async fn wait_in_flight(test: &Test, replica: &Replica, name: &str) {
    let finalized = |baton: Option<&DynamicObject>| {
        baton.is_some_and(|baton| !baton.metadata.finalizers.clone().unwrap_or_default().is_empty())
    };
    kuberator_test::wait_for(&test.batons, name, Duration::from_secs(30), "the finalizer", finalized)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.metric("kuberator_reconciles_in_flight{controller=\"baton-operator\"}").await != Some(1.0) {
        assert!(Instant::now() < deadline, "no reconcile in flight\n{}", replica.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
