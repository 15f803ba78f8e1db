//! The baton-operator (`src/bin/baton-operator.rs`) run as processes: a namespace of the
//! test's own, replicas started with leader election, and the journal they all append to.
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
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;
use kube::api::ApiResource;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::PostParams;

pub const OPERATOR: &str = env!("CARGO_BIN_EXE_baton-operator");
/// The derived operator's controller name, and so its Lease's.
pub const LEASE: &str = "baton-operator";

pub struct Test {
    pub client: Client,
    pub namespace: String,
    pub kubeconfig: PathBuf,
    pub batons: Api<DynamicObject>,
    pub leases: Api<Lease>,
    /// The file every replica of this test appends its journal to (`BATON_JOURNAL`).
    pub journal: PathBuf,
    dir: tempfile::TempDir,
}

/// A namespace of the test's own, and the operator's CRD as its `crd` subcommand prints it.
pub async fn setup(prefix: &str) -> Test {
    let client = kuberator_test::admin_client().await;
    // The replicas reach the server the test runs on: the in-memory one over HTTPS.
    let kubeconfig = match kuberator_test::TestCluster::shared().await.unwrap() {
        kuberator_test::TestCluster::InMemory(server) => {
            server.https().await.unwrap().kubeconfig_path().to_owned()
        }
        kuberator_test::TestCluster::Real(control_plane) => control_plane.kubeconfig_path().to_owned(),
    };
    let printed = Command::new(OPERATOR).arg("crd").output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let crd: CustomResourceDefinition = serde_yaml_ng::from_slice(&printed.stdout).unwrap();
    kuberator_test::install_crd_object(&client, &crd).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, prefix).await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kuberator.dev", "v1", "Baton"),
        "batons",
    );
    let dir = tempfile::tempdir().unwrap();
    Test {
        journal: dir.path().join("journal"),
        dir,
        batons: Api::namespaced_with(client.clone(), &namespace, &resource),
        leases: Api::namespaced(client.clone(), &namespace),
        kubeconfig,
        client,
        namespace,
    }
}

impl Test {
    pub async fn create(&self, name: &str) {
        self.create_slow(name, 0).await;
    }

    /// A Baton whose `handle_apply` sleeps `seconds` first.
    pub async fn create_slow(&self, name: &str, seconds: u64) {
        self.batons.create(&PostParams::default(), &baton(&self.namespace, name, seconds)).await.unwrap();
    }

    /// Waits until `name`'s status says which replica reconciled it, and returns that.
    pub async fn reconciled_by(&self, name: &str, timeout: Duration) -> String {
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

    pub async fn holder(&self) -> Option<String> {
        let lease = self.leases.get_opt(LEASE).await.unwrap()?;
        lease.spec?.holder_identity
    }

    pub async fn wait_holder(&self, identity: &str, timeout: Duration) -> Lease {
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

    pub async fn cleanup(self) {
        kuberator_test::delete_namespace(&self.client, &self.namespace).await.unwrap();
    }
}

/// A Baton `name` in `namespace` whose `handle_apply` sleeps `seconds` first.
pub fn baton(namespace: &str, name: &str, seconds: u64) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "test.kuberator.dev/v1",
        "kind": "Baton",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "note": name, "applySeconds": seconds },
    }))
    .unwrap()
}

/// One operator process; killed when dropped, its log printed if the test failed.
pub struct Replica {
    pub identity: &'static str,
    pub child: Child,
    /// `/metrics`: plain HTTP, open to anyone, unless started with [`Replica::spawn_secure`].
    pub metrics: SocketAddr,
    /// `/healthz` and `/readyz`.
    pub health: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Runs the operator with default leader election timing, watching the test's namespace
    /// and holding its Lease there.
    pub fn start(test: &Test, identity: &'static str) -> Self {
        Self::start_as(test, identity, &test.kubeconfig)
    }

    /// Like [`Replica::start`], with more command-line arguments.
    pub fn start_with(test: &Test, identity: &'static str, args: &[&str]) -> Self {
        Self::spawn(test, identity, &test.kubeconfig, args)
    }

    /// Like [`Replica::start`], with the client that `kubeconfig` describes.
    pub fn start_as(test: &Test, identity: &'static str, kubeconfig: &std::path::Path) -> Self {
        Self::spawn(test, identity, kubeconfig, &[])
    }

    /// Runs the operator with `kubeconfig` and more `args`, its `/metrics` open to anyone
    /// (`--metrics-insecure`), so that the tests read it without a token.
    pub fn spawn(test: &Test, identity: &'static str, kubeconfig: &std::path::Path, args: &[&str]) -> Self {
        Self::spawn_env(test, identity, kubeconfig, args, &[])
    }

    /// Like [`Replica::spawn`], with more environment variables (`BATON_RELAY`).
    pub fn spawn_env(
        test: &Test,
        identity: &'static str,
        kubeconfig: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(test, identity, kubeconfig, &[&["--metrics-insecure"], args].concat(), env)
    }

    /// Like [`Replica::spawn`], with `/metrics` as a derived operator serves it by default:
    /// over HTTPS, to callers the API server authenticates and authorizes.
    pub fn spawn_secure(
        test: &Test,
        identity: &'static str,
        kubeconfig: &std::path::Path,
        args: &[&str],
    ) -> Self {
        Self::launch(test, identity, kubeconfig, args, &[])
    }

    fn launch(
        test: &Test,
        identity: &'static str,
        kubeconfig: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{identity}.log"));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let health = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // One file, one offset: stdout (the logs) and stderr (a failure) interleave, not overwrite.
        let output = File::create(&log).unwrap();
        let child = Command::new(OPERATOR)
            .args(["run", "--namespaces", &test.namespace, "--lease-namespace", &test.namespace])
            .args(["--metrics-address", &metrics.to_string(), "--health-address", &health.to_string()])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBERATOR_IDENTITY", identity)
            .env("BATON_JOURNAL", &test.journal)
            .env("KUBERATOR_LOG", "info,kuberator=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(output.try_clone().unwrap())
            .stdout(output)
            .spawn()
            .unwrap();
        Self { identity, child, metrics, health, log, _dir: dir }
    }

    /// `GET path` in plain HTTP: `/metrics` from the metrics address, anything else from the
    /// health address.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let address = if path == "/metrics" { self.metrics } else { self.health };
        kuberator_test::http_get(address, path).await.ok()
    }

    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, metrics) = self.get("/metrics").await?;
        kuberator_test::metric(&metrics, series)
    }

    pub async fn leading(&self, lease: &str) -> Option<f64> {
        self.metric(&format!("kuberator_leader{{lease=\"{lease}\"}}")).await
    }

    /// Waits up to 10 s until the standby's cache holds `objects` Batons (warm standby:
    /// `kuberator_cached_objects`).
    pub async fn wait_cached(&self, objects: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let series = "kuberator_cached_objects{kind=\"Baton\"}";
        while self.metric(series).await != Some(objects) {
            assert!(Instant::now() < deadline, "{series} never {objects}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn reconciles(&self) -> f64 {
        self.metric("kuberator_reconciles_total{controller=\"baton-operator\",result=\"success\"}")
            .await
            .unwrap_or(0.0)
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
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

    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -s {signal} {}", self.child.id());
    }

    /// Waits for the process to exit, and returns its status.
    pub async fn exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
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

    pub fn log(&self) -> String {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One line of the journal: what a replica's handler did, and when.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Milliseconds since the Unix epoch, by the replica's clock (the same machine's).
    pub at: u128,
    pub identity: String,
    /// `apply-start`, `apply-end` or `cleanup`.
    pub what: String,
    /// `<namespace>/<name>`.
    pub object: String,
    pub generation: i64,
}

impl Test {
    /// What every replica of this test wrote to the journal so far, in order.
    pub fn journal(&self) -> Vec<Entry> {
        let text = std::fs::read_to_string(&self.journal).unwrap_or_default();
        text.lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                Entry {
                    at: fields[0].parse().unwrap(),
                    identity: fields[1].to_owned(),
                    what: fields[2].to_owned(),
                    object: fields[3].to_owned(),
                    generation: fields[4].parse().unwrap(),
                }
            })
            .collect()
    }

    /// The note of the Event `reason` regarding the Baton `name`, waited for up to 30 s; a
    /// timeout panics with `replica`'s log.
    pub async fn event_note(&self, name: &str, reason: &str, replica: &Replica) -> String {
        kuberator_test::wait_for_event(&self.client, &self.namespace, name, reason, Duration::from_secs(30))
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", replica.log()))
            .note
            .unwrap_or_default()
    }

    /// The directory of this test's files, removed with it.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
