//! The RBAC that a derived operator's `rbac` subcommand prints is enough, leader election and
//! an owned child kind included, and a missing rule fails with a message that names it: run
//! against the real control plane as a ServiceAccount that holds exactly those rules. This
//! binary uses a fixed namespace (the derive's namespaces are literals).

mod support;

use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kuberator::leader::ElectionError;
use kuberator::leader::LeaderElection;
use kuberator::operator::Operator as _;
use kuberator::operator::manifests;
use kuberator::prelude::*;
use kuberator_test::Background;
use kuberator_test::ControlPlane;
use kuberator_test::events_for;
use kuberator_test::wait_for;
use support::Probe;
use support::ProbeSpec;
use support::ProbeStatus;

const NAMESPACE: &str = "rbac-probe";

#[derive(Operator)]
#[kuberator(
    resource = Probe,
    finalizer = "probes.test.kuberator.dev/finalizer",
    namespaces = ["rbac-probe"],
    owns = [ConfigMap]
)]
struct LeaseholdingPrivilege;

impl LeaseholdingPrivilege {
    async fn handle_apply(&self, probe: Arc<Probe>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        // A child: applied (get, patch), watched (list, watch), the others pruned (delete).
        let name = format!("{}-child", probe.try_name()?);
        let child = ConfigMap {
            metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
            data: Some(BTreeMap::from([("message".to_owned(), probe.spec.message.clone())])),
            ..ConfigMap::default()
        };
        ctx.apply(&*probe, child).await?;
        ctx.prune::<ConfigMap>(&probe, [name]).await?;
        let status = ProbeStatus { message: Some(probe.spec.message.clone()), ..ProbeStatus::default() };
        ctx.update_status(&probe, status).await?;
        ctx.emit(&probe, EventData::normal("Applied", "applied")).await;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _probe: Arc<Probe>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_rbac_is_enough_and_a_missing_rule_is_named() {
    let admin = kuberator_test::admin_client().await;
    let control_plane = ControlPlane::shared().await.unwrap();
    kuberator_test::install_crd::<Probe>(&admin).await.unwrap();
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(NAMESPACE.into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &namespace).await.unwrap();

    // What `rbac --namespace rbac-probe --metrics-insecure` prints: a Role and a RoleBinding
    // to the ServiceAccount `probe-operator`, and the same for its Lease. (This operator runs
    // in the test's process and serves no metrics; replicas.rs runs one with secure metrics
    // and the review rules.)
    let config = LeaseholdingPrivilege::settings();
    let placement =
        manifests::Placement { metrics_auth: false, ..manifests::Placement::new(&config, NAMESPACE) };
    let objects = manifests::rbac::<Probe>(&config, &placement);
    let kinds: Vec<_> = objects.iter().map(|object| object["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Role", "RoleBinding", "Role", "RoleBinding"]);
    let roles: Api<Role> = Api::namespaced(admin.clone(), NAMESPACE);
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), NAMESPACE);
    for pair in objects.chunks(2) {
        let role: Role = serde_json::from_value(pair[0].clone()).unwrap();
        roles.create(&PostParams::default(), &role).await.unwrap();
        let binding: RoleBinding = serde_json::from_value(pair[1].clone()).unwrap();
        bindings.create(&PostParams::default(), &binding).await.unwrap();
    }
    let role: Role = serde_json::from_value(objects[0].clone()).unwrap();

    // The operator's client is that ServiceAccount and nothing more, and it elects a leader.
    let mut operator_config = control_plane.config().await.unwrap();
    operator_config.auth_info.impersonate =
        Some(format!("system:serviceaccount:{NAMESPACE}:{}", config.controller_name));
    let operator_client = kube::Client::try_from(operator_config).unwrap();
    let election = LeaderElection::new("probe-operator", NAMESPACE);
    let operator = Background::spawn({
        let (client, election) = (operator_client.clone(), election.clone());
        let reconciler = LeaseholdingPrivilege.into_reconciler(operator_client.clone());
        move |shutdown| async move {
            election.run(client, shutdown, move |stop| reconciler.clone().start(Some(stop))).await.unwrap();
        }
    });

    let probes: Api<Probe> = Api::namespaced(admin.clone(), NAMESPACE);
    let create = |name: &str| {
        Probe::new(name, ProbeSpec { message: "least privilege".into(), ..ProbeSpec::default() })
    };
    probes.create(&PostParams::default(), &create("allowed")).await.unwrap();
    let allowed = support::wait_observed(&probes, "allowed").await;
    assert_eq!(allowed.finalizers(), [support::FINALIZER]);
    // The child was applied; deleted by hand, it is noticed through the watch and made again.
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let child = maps.get("allowed-child").await.unwrap();
    assert_eq!(child.owner_references()[0].uid, allowed.uid().unwrap());
    maps.delete("allowed-child", &DeleteParams::default()).await.unwrap();
    wait_for(&maps, "allowed-child", Duration::from_secs(30), "allowed-child to be made again", |made| {
        made.is_some_and(|made| made.uid() != child.uid())
    })
    .await
    .unwrap();
    let events = events_for(&admin, &allowed).await.unwrap();
    assert!(events.iter().any(|e| e.reason.as_deref() == Some("Applied")), "{events:#?}");
    probes.delete("allowed", &DeleteParams::default()).await.unwrap();
    wait_for(&probes, "allowed", Duration::from_secs(30), "allowed to be deleted", |p| p.is_none())
        .await
        .unwrap();

    // Without the status rule, the failure says which permission is missing.
    let mut reduced = roles.get(&role.name_any()).await.unwrap();
    reduced.rules.as_mut().unwrap().retain(|rule| rule.resources != Some(vec!["probes/status".into()]));
    roles.replace(&role.name_any(), &PostParams::default(), &reduced).await.unwrap();
    probes.create(&PostParams::default(), &create("refused")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let note = loop {
        let refused = probes.get("refused").await.unwrap();
        let events = events_for(&admin, &refused).await.unwrap();
        if let Some(note) =
            events.into_iter().find(|e| e.reason.as_deref() == Some("ApplyFailed")).and_then(|e| e.note)
        {
            break note;
        }
        assert!(std::time::Instant::now() < deadline, "no ApplyFailed event");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(note.contains(&format!("could not update the status of Probe {NAMESPACE}/refused")), "{note}");
    assert!(note.contains("cannot patch resource \"probes/status\""), "{note}");

    operator.stop(Duration::from_secs(30)).await;
    let lease = Api::<Lease>::namespaced(admin.clone(), NAMESPACE).get("probe-operator").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity, None, "released on shutdown: {spec:?}");
    assert_eq!(spec.lease_transitions, Some(0));

    // Without the Lease rules, leader election fails at once and names what to grant.
    bindings.delete("probe-operator-leader-election", &DeleteParams::default()).await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        election.run(operator_client, std::future::pending(), |_| async {}),
    )
    .await
    .expect("a refused Lease ends the election");
    let error = refused.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&format!("not allowed to use Lease {NAMESPACE}/probe-operator")), "{message}");
    assert!(message.contains("on `leases` in group `coordination.k8s.io`"), "{message}");
    assert!(matches!(error, ElectionError::Forbidden { .. }), "{error:?}");
}
