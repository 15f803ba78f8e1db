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

mod support;

use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::ApiResource;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::PostParams;
use kube::config::Kubeconfig;
use kuberator_test::ControlPlane;
use support::baton::LEASE;
use support::baton::OPERATOR;
use support::baton::Replica;
use support::baton::Test;
use support::baton::setup;

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
    // A warm standby: its cache lists and follows the objects it does not reconcile.
    b.wait_cached(1.0).await;
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
    let (text, documents) = printed_rbac(&["--namespace", namespace, "--namespaces", namespace], &[]);
    let kinds: Vec<_> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Role", "RoleBinding", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ClusterRole"],
        "{text}"
    );
    apply(&test, &text).await;
    let bindings: Api<RoleBinding> = Api::namespaced(test.client.clone(), namespace);

    // A kubeconfig that acts as that ServiceAccount and nothing more.
    let (restricted, _dir) = as_operator_account(namespace).await;

    // With /metrics served as by default: over HTTPS, checked with the API server, which
    // takes the printed tokenreviews and subjectaccessreviews rules.
    let replica = Replica::spawn_secure(&test, "least-privilege", &restricted, &[]);
    test.create("first").await;
    assert_eq!(test.reconciled_by("first", Duration::from_secs(30)).await, "least-privilege");
    let scraper = reader_token(&test, "scraper").await;
    let (status, body) =
        kuberator_test::https_get(replica.metrics, "/metrics", Some(&scraper)).await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", replica.log());
    assert!(body.contains("kuberator_reconciles_total"), "{body}");
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

/// Issue 22, item 1: two derived operators in one process (`BATON_RELAY`: Baton and Relay).
/// `crd` prints both CRDs; `rbac` prints one Role whose rules are the two controllers' merged
/// (the same verbs on `batons` and `relays` in one rule), and a process with exactly those
/// rules, as the ServiceAccount they bind, reconciles both kinds (the Relay's child
/// included); one Lease, named after the program, for both; `/readyz` and `kuberator_ready`
/// for each controller; SIGTERM stops both and releases the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_in_one_process_share_the_lease_the_servers_and_least_privilege_rbac() {
    let test = setup("pair").await;
    let namespace = test.namespace.as_str();
    let relay_env = [("BATON_RELAY", "1")];
    let printed = Command::new(OPERATOR).arg("crd").envs(relay_env).output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let text = String::from_utf8(printed.stdout).unwrap();
    let crds: Vec<CustomResourceDefinition> =
        text.split("\n---\n").map(|document| serde_yaml_ng::from_str(document).unwrap()).collect();
    let names: Vec<_> = crds.iter().map(|crd| crd.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["batons.test.kuberator.dev", "relays.test.kuberator.dev"]);
    for crd in &crds {
        kuberator_test::install_crd_object(&test.client, crd).await.unwrap();
    }

    let (text, documents) = printed_rbac(
        &["--namespace", namespace, "--namespaces", namespace, "--metrics-insecure"],
        &relay_env,
    );
    let kinds: Vec<_> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Role", "RoleBinding", "Role", "RoleBinding"], "{text}");
    let rules: Vec<(String, Vec<String>, Vec<String>)> = serde_json::from_value::<Role>(documents[0].clone())
        .unwrap()
        .rules
        .unwrap()
        .into_iter()
        .map(|rule| (rule.api_groups.unwrap().join(","), rule.resources.unwrap(), rule.verbs))
        .collect();
    let strings = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        rules,
        [
            (
                "test.kuberator.dev".into(),
                strings(&["batons", "relays"]),
                strings(&["list", "watch", "patch"])
            ),
            ("test.kuberator.dev".into(), strings(&["batons/status", "relays/status"]), strings(&["patch"])),
            ("events.k8s.io".into(), strings(&["events"]), strings(&["create", "patch"])),
            (
                String::new(),
                strings(&["configmaps"]),
                strings(&["get", "list", "watch", "create", "patch", "delete"])
            ),
        ],
        "{text}"
    );
    apply(&test, &text).await;

    // A kubeconfig that acts as that ServiceAccount and nothing more.
    let (restricted, _dir) = as_operator_account(namespace).await;

    let mut pair = Replica::spawn_env(&test, "pair", &restricted, &[], &relay_env);
    pair.wait_ready().await;
    test.create("first").await;
    assert_eq!(test.reconciled_by("first", Duration::from_secs(30)).await, "pair");
    let relays = create_relay(&test, "first").await;
    let relayed =
        kuberator_test::wait_for(&relays, "first", Duration::from_secs(30), "status.relayedBy", |relay| {
            relay.is_some_and(|relay| relay.data["status"]["relayedBy"] == "pair")
        })
        .await
        .unwrap()
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(test.client.clone(), namespace);
    let child = maps.get("first-relay").await.unwrap();
    assert_eq!(child.metadata.owner_references.unwrap()[0].uid, relayed.metadata.uid.unwrap());

    // One Lease for the process, named after it; both controllers ready, each in its series.
    let leases = test.leases.list(&Default::default()).await.unwrap().items;
    let leases: Vec<_> = leases.iter().map(|lease| lease.metadata.name.as_deref().unwrap()).collect();
    assert_eq!(leases, [LEASE], "one Lease for the process");
    assert_eq!(test.holder().await.as_deref(), Some("pair"));
    for controller in ["baton-operator", "relay-operator"] {
        let ready = pair.metric(&format!("kuberator_ready{{controller=\"{controller}\"}}")).await;
        assert_eq!(ready, Some(1.0), "{controller}\n{}", pair.log());
    }

    relays.delete("first", &Default::default()).await.unwrap();
    kuberator_test::wait_for(&relays, "first", Duration::from_secs(30), "the relay to go", |relay| {
        relay.is_none()
    })
    .await
    .unwrap();

    pair.signal("TERM");
    let status = pair.exited(Duration::from_secs(30)).await;
    assert!(status.success(), "a SIGTERM stops both controllers: {status}\n{}", pair.log());
    assert_eq!(test.holder().await, None, "the lease is released\n{}", pair.log());
    test.cleanup().await;
}

/// Issue 25, item 6: `run --dry-run` over a populated namespace, as the operator's
/// ServiceAccount with exactly the printed RBAC (two controllers: Batons, and Relays with a
/// child ConfigMap). It prints, per object, what it would change (the finalizer, the status,
/// the child it would create), ends by itself, and changes nothing: every object keeps its
/// resourceVersion, no child, Event or Lease appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_what_it_would_change_and_changes_nothing() {
    let test = setup("dry-run").await;
    let namespace = test.namespace.as_str();
    let relay_env = [("BATON_RELAY", "1")];
    let printed = Command::new(OPERATOR).arg("crd").envs(relay_env).output().unwrap();
    let text = String::from_utf8(printed.stdout).unwrap();
    for document in text.split("\n---\n") {
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(document).unwrap();
        kuberator_test::install_crd_object(&test.client, &crd).await.unwrap();
    }
    let (text, _) = printed_rbac(
        &["--namespace", namespace, "--namespaces", namespace, "--metrics-insecure"],
        &relay_env,
    );
    apply(&test, &text).await;
    let (restricted, _dir) = as_operator_account(namespace).await;

    // The namespace as a new version of the operator would find it: objects never reconciled.
    test.create("first").await;
    test.create("second").await;
    let relays = create_relay(&test, "first").await;
    let maps: Api<ConfigMap> = Api::namespaced(test.client.clone(), namespace);
    let versions = |objects: Vec<DynamicObject>| -> Vec<(String, String)> {
        objects
            .into_iter()
            .map(|object| (object.metadata.name.unwrap(), object.metadata.resource_version.unwrap()))
            .collect()
    };
    let batons_before = versions(test.batons.list(&Default::default()).await.unwrap().items);
    let relays_before = versions(relays.list(&Default::default()).await.unwrap().items);
    let maps_before = maps.list(&Default::default()).await.unwrap().items.len();

    let mut child = Command::new(OPERATOR)
        .args(["run", "--dry-run", "--namespaces", namespace, "--log", "info"])
        .env("KUBECONFIG", &restricted)
        .env("KUBERATOR_IDENTITY", "dry-run")
        .envs(relay_env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("the dry run did not end in 90 s:\n{}", String::from_utf8_lossy(&output.stdout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let log = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(status.success(), "{status}\n{log}");

    // What it would do, per object.
    for expected in [
        format!("dry run: Baton {namespace}/first would change (PATCH):"),
        format!("dry run: Baton {namespace}/second would change (PATCH):"),
        "+ metadata.finalizers[0]: \"batons.test.kuberator.dev/finalizer\"".to_owned(),
        format!("dry run: Baton {namespace}/first would change (PATCH status):"),
        "+ status.reconciledBy: \"dry-run\"".to_owned(),
        format!("dry run: ConfigMap {namespace}/first-relay would be created (PATCH):"),
        "+ data.note: \"hello\"".to_owned(),
        format!("dry run: Relay {namespace}/first would change (PATCH status):"),
        "nothing was changed".to_owned(),
    ] {
        assert!(stdout.contains(&expected), "no `{expected}` in:\n{log}");
    }
    assert!(stdout.contains("writes to 4 objects"), "two Batons, a Relay and its child:\n{log}");

    // And nothing changed.
    assert_eq!(versions(test.batons.list(&Default::default()).await.unwrap().items), batons_before, "{log}");
    assert_eq!(versions(relays.list(&Default::default()).await.unwrap().items), relays_before, "{log}");
    assert_eq!(
        maps.list(&Default::default()).await.unwrap().items.len(),
        maps_before,
        "a child was made:\n{log}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(test.client.clone(), namespace);
    assert!(events.list(&Default::default()).await.unwrap().items.is_empty(), "an Event was sent:\n{log}");
    assert!(
        test.leases.list(&Default::default()).await.unwrap().items.is_empty(),
        "a Lease was taken:\n{log}"
    );
    test.cleanup().await;
}

/// SIGTERM while a handler hangs: `/readyz` turns 503 at once, the hung reconcile is cancelled
/// at the drain deadline, the process exits 1 naming it, and the Lease is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_is_cancelled_at_the_drain_deadline() {
    let test = setup("drain").await;
    let mut a = leading_with_a_hung_handler(&test, "3s").await;

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
    let mut a = leading_with_a_hung_handler(&test, "60s").await;

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
    let note = test.event_note("slow", "ReconcileTimedOut", &a).await;
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

/// Replica A, leading with `--drain-deadline drain`, in the middle of a handler that hangs
/// for ten minutes on the Baton `hung`.
async fn leading_with_a_hung_handler(test: &Test, drain: &str) -> Replica {
    let a = Replica::start_with(test, "replica-a", &["--drain-deadline", drain]);
    a.wait_ready().await;
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    test.create_slow("hung", 600).await;
    wait_in_flight(test, &a, "hung").await;
    a
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

/// What the operator's `rbac` subcommand prints with `args` and `env`: the text, and each
/// document in it.
fn printed_rbac(args: &[&str], env: &[(&str, &str)]) -> (String, Vec<serde_json::Value>) {
    let printed = Command::new(OPERATOR).arg("rbac").args(args).envs(env.iter().copied()).output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let text = String::from_utf8(printed.stdout).unwrap();
    let documents =
        text.split("\n---\n").map(|document| serde_yaml_ng::from_str(document).unwrap()).collect();
    (text, documents)
}

/// Creates the Relay `name` (note `hello`) in the test's namespace; the Relays there.
async fn create_relay(test: &Test, name: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kuberator.dev", "v1", "Relay"),
        "relays",
    );
    let relays: Api<DynamicObject> = Api::namespaced_with(test.client.clone(), &test.namespace, &resource);
    let relay = DynamicObject::new(name, &resource).data(serde_json::json!({"spec": {"note": "hello"}}));
    relays.create(&PostParams::default(), &relay).await.unwrap();
    relays
}

/// A kubeconfig (in a directory that goes when the second value drops) that acts as the
/// operator's ServiceAccount in `namespace` and nothing more.
async fn as_operator_account(namespace: &str) -> (std::path::PathBuf, tempfile::TempDir) {
    let control_plane = ControlPlane::shared().await.unwrap();
    let mut kubeconfig = Kubeconfig::read_from(control_plane.kubeconfig_path()).unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info.as_mut().unwrap().impersonate =
            Some(format!("system:serviceaccount:{namespace}:{LEASE}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let restricted = dir.path().join("kubeconfig");
    std::fs::write(&restricted, serde_yaml_ng::to_string(&kubeconfig).unwrap()).unwrap();
    (restricted, dir)
}

/// Applies `yaml` with the real kubectl, server-side.
async fn apply(test: &Test, yaml: &str) {
    let control_plane = ControlPlane::shared().await.unwrap();
    let file = test.dir().join(format!("apply-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    control_plane
        .run_kubectl(&[
            "apply",
            "--server-side",
            "--field-manager",
            "replicas-test",
            "-f",
            &file.to_string_lossy(),
        ])
        .await
        .unwrap();
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Applies the ClusterRole `baton-operator-metrics-reader` as `rbac` prints it.
async fn apply_reader_role(test: &Test) {
    let printed = Command::new(OPERATOR).args(["rbac", "--namespace", &test.namespace]).output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    let text = String::from_utf8(printed.stdout).unwrap();
    let reader =
        text.split("\n---\n").find(|document| document.contains("name: baton-operator-metrics-reader"));
    apply(test, reader.expect("the reader ClusterRole")).await;
}

/// A token of ServiceAccount `name` in the test's namespace, bound to the ClusterRole
/// `baton-operator-metrics-reader` (which `rbac` prints) when `name` is `scraper`.
async fn reader_token(test: &Test, name: &str) -> String {
    let token = kuberator_test::service_account_token(&test.client, &test.namespace, name).await.unwrap();
    if name == "scraper" {
        let binding = format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {namespace}-{name}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {LEASE}-metrics-reader
subjects:
- kind: ServiceAccount
  name: {name}
  namespace: {namespace}
",
            namespace = test.namespace
        );
        apply(test, &binding).await;
    }
    token
}

/// `/metrics` over HTTPS by default: 401 without a token or with one the API server does not
/// accept, 403 for a ServiceAccount without the reader role, 200 with it; plain HTTP gets
/// nothing; the probes stay plain HTTP on their own port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_metrics_answer_only_callers_the_api_server_authorizes() {
    let test = setup("secure-metrics").await;
    apply_reader_role(&test).await;

    let replica = Replica::spawn_secure(&test, "secure", &test.kubeconfig, &[]);
    replica.wait_ready().await;
    let scraper = reader_token(&test, "scraper").await;
    let stranger = reader_token(&test, "stranger").await;

    let get = |token: Option<String>| async move {
        kuberator_test::https_get(replica.metrics, "/metrics", token.as_deref()).await.unwrap()
    };
    let (status, body) = get(None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(get(Some("not-a-token".to_owned())).await.0, 401);
    let (status, body) = get(Some(stranger)).await;
    assert_eq!(status, 403, "{body}");
    let user = format!("system:serviceaccount:{}:stranger", test.namespace);
    assert!(body.contains(&format!("{user} may not get /metrics")), "{body}");
    // The reader role may take a moment to reach the authorizer's cache.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = get(Some(scraper.clone())).await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status}: {body}\n{}", replica.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("kuberator_ready"), "{body}");
    assert_ne!(
        kuberator_test::http_get(replica.metrics, "/metrics").await.ok().map(|(status, _)| status),
        Some(200),
        "plain HTTP gets no metrics"
    );
    assert_eq!(replica.get("/healthz").await.map(|(status, _)| status), Some(200));

    drop(replica);
    test.cleanup().await;
}

/// The operator's resident memory, from `/proc`.
fn rss_kib(replica: &Replica) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", replica.child.id())).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// TokenReviews the API server has answered since it started, from its own metrics.
async fn token_reviews(client: &kube::Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = client.request_text(request).await.unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{") && line.contains("resource=\"tokenreviews\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` over HTTPS with each token, `at_once` at a time; what each got (or 0 when
/// the connection was cut, as it is for a request whose headers are too large).
async fn scrape_with(replica: &Replica, tokens: Vec<String>, at_once: usize) -> Vec<u16> {
    use futures::StreamExt as _;
    let address = replica.metrics;
    futures::stream::iter(tokens)
        .map(|token| async move {
            match kuberator_test::https_get(address, "/metrics", Some(&token)).await {
                Ok((status, _)) => status,
                Err(error) => {
                    if token.len() < 16 * 1024 {
                        eprintln!("a scrape with a {} byte token failed: {error}", token.len());
                    }
                    0
                }
            }
        })
        .buffer_unordered(at_once)
        .collect()
        .await
}

/// A hostile caller on both ports, as issue 21's probe did it: thousands of distinct
/// unauthenticated tokens (256 KiB ones, refused unread; 4 KiB ones, reviewed only within a
/// rate) leave the operator's memory within a few MiB of where it was and the API server's
/// TokenReview count bounded, while an authorized scraper keeps getting its metrics; a
/// thousand connections that never send a byte are closed by the timeout, and `/readyz`
/// answers within 100 ms all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers_neither_grow_memory_nor_flood_the_api_server_nor_starve_the_probes() {
    let test = setup("hostile-metrics").await;
    apply_reader_role(&test).await;
    let replica = Replica::spawn_secure(&test, "hostile", &test.kubeconfig, &[]);
    replica.wait_ready().await;
    let scraper = reader_token(&test, "scraper").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape_with(&replica, vec![scraper.clone()], 1).await != [200] {
        assert!(Instant::now() < deadline, "the scraper never got /metrics:\n{}", replica.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Settled: a few scrapes and probes first, so that buffers and caches exist.
    for _ in 0..20 {
        scrape_with(&replica, vec![scraper.clone(), "warm-up".to_owned()], 2).await;
    }
    let rss_before = rss_kib(&replica);
    let reviews_before = token_reviews(&test.client).await;
    let started = Instant::now();

    let large: Vec<String> = (0..1100).map(|n| format!("{n:06}{}", "x".repeat(256 * 1024))).collect();
    let statuses = scrape_with(&replica, large, 16).await;
    assert!(statuses.iter().all(|status| [0, 401, 431].contains(status)), "{statuses:?}");
    let small: Vec<String> = (0..2000).map(|n| format!("{n:06}{}", "y".repeat(4 * 1024))).collect();
    let statuses = scrape_with(&replica, small, 16).await;
    let busy = statuses.iter().filter(|status| **status == 429).count();
    assert!(statuses.iter().all(|status| [401, 429].contains(status)), "{statuses:?}");
    assert!(busy > 0, "over the strangers' rate, callers are told to wait");
    assert_eq!(
        scrape_with(&replica, vec![scraper.clone()], 1).await,
        [200],
        "the scraper is never locked out"
    );

    let elapsed = started.elapsed().as_secs_f64();
    let reviews = token_reviews(&test.client).await - reviews_before;
    let rss_after = rss_kib(&replica);
    eprintln!(
        "hostile tokens: 1100 × 256 KiB and 2000 × 4 KiB in {elapsed:.1} s; {busy} answered 429; TokenReviews \
         {reviews}; RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    // 20 at once, then 5 a second; the other tests in this binary review a few tokens too.
    assert!(reviews <= 20.0 + 5.0 * (elapsed + 1.0) + 10.0, "{reviews} TokenReviews in {elapsed:.1} s");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB\n{}",
        replica.log()
    );

    // A thousand connections that never send a byte, to the probes' port.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(replica.health).await.unwrap());
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let answer = replica.get("/readyz").await;
        slowest = slowest.max(asked.elapsed());
        assert_eq!(answer.map(|(status, _)| status), Some(200));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(slowest < Duration::from_millis(100), "/readyz took {slowest:?} beside 1000 idle connections");
    // Each is closed: the newest 256 by the 10 s header timeout, the rest as newer ones took
    // their places.
    let closed = futures::future::join_all(idle.iter_mut().map(|stream| async move {
        use tokio::io::AsyncReadExt as _;
        let mut byte = [0_u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(15), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    let open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(open, 0, "{open} of 1000 idle connections still open after 15 s");
    eprintln!("1000 idle connections: /readyz answered in at most {slowest:?}; all closed within 15 s");

    drop(replica);
    test.cleanup().await;
}
