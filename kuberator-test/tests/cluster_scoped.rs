//! A cluster-scoped custom resource through the whole flow, against the real control plane:
//! finalizer, status and `Ready`, Events, a namespaced child made again after a hand delete and
//! removed by the garbage collector, cleanup on delete, under leader election, run as a
//! ServiceAccount that holds only the printed RBAC (a ClusterRole).
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kuberator::leader::LeaderElection;
use kuberator::operator::Operator as _;
use kuberator::operator::manifests;
use kuberator::prelude::*;
use kuberator_test::Background;
use kuberator_test::ControlPlane;
use kuberator_test::events_for;
use kuberator_test::wait_for;

const FINALIZER: &str = "zones.test.kuberator.dev/finalizer";
const MINUTE: Duration = Duration::from_secs(60);

/// A cluster-scoped resource: `#[kube(...)]` without `namespaced`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "test.kuberator.dev", version = "v1", kind = "Zone", status = "ZoneStatus")]
#[serde(rename_all = "camelCase")]
pub struct ZoneSpec {
    /// Where the zone's ConfigMap goes.
    pub namespace: String,
    pub note: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ZoneStatus {
    pub observed_generation: Option<i64>,
    pub conditions: Conditions,
}

impl ObserveGeneration for ZoneStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator)]
#[kuberator(resource = Zone, finalizer = "zones.test.kuberator.dev/finalizer", owns = [ConfigMap])]
struct ZoneOperator;

impl ZoneOperator {
    async fn handle_apply(&self, zone: Arc<Zone>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("zone-{}", zone.try_name()?)),
                namespace: Some(zone.spec.namespace.clone()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("note".to_owned(), zone.spec.note.clone())])),
            ..ConfigMap::default()
        };
        ctx.apply(&*zone, map).await?;
        ctx.update_status(&zone, ZoneStatus::default()).await?;
        ctx.emit(&zone, EventData::normal("Applied", "the zone's ConfigMap is written")).await;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, zone: Arc<Zone>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        ctx.emit(&zone, EventData::normal("CleanedUp", "the zone is gone")).await;
        Ok(Action::await_change())
    }
}

fn ready(zone: &Zone) -> bool {
    zone.status.as_ref().is_some_and(|status| status.conditions.is_true("Ready"))
}

async fn wait_for_event(client: &kube::Client, zone: &Zone, reason: &str) {
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let events = events_for(client, zone).await.unwrap();
        if events.iter().any(|event| event.reason.as_deref() == Some(reason)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no {reason} Event on the zone: {events:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_scoped_resource_goes_through_the_whole_flow() {
    let (admin, namespace) = kuberator_test::test_env("zone").await;
    let control_plane = ControlPlane::shared().await.unwrap();
    kuberator_test::install_crd::<Zone>(&admin).await.unwrap();

    // The printed RBAC: a ClusterRole (the zones are cluster-wide), and a Role for the Lease.
    // (This operator runs in the test's process and serves no metrics: no review rules.)
    let settings = ZoneOperator::settings();
    assert!(settings.namespaces.is_empty());
    let placement =
        manifests::Placement { metrics_auth: false, ..manifests::Placement::new(&settings, &namespace) };
    let objects = manifests::rbac::<Zone>(&settings, &placement);
    let kinds: Vec<_> = objects.iter().map(|object| object["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
    let create = PostParams::default();
    let cluster_role: ClusterRole = serde_json::from_value(objects[0].clone()).unwrap();
    Api::<ClusterRole>::all(admin.clone()).create(&create, &cluster_role).await.unwrap();
    let cluster_binding: ClusterRoleBinding = serde_json::from_value(objects[1].clone()).unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&create, &cluster_binding).await.unwrap();
    let role: Role = serde_json::from_value(objects[2].clone()).unwrap();
    Api::<Role>::namespaced(admin.clone(), &namespace).create(&create, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(objects[3].clone()).unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &namespace).create(&create, &binding).await.unwrap();

    // The operator runs as that ServiceAccount, under leader election.
    let mut config = control_plane.config().await.unwrap();
    config.auth_info.impersonate =
        Some(format!("system:serviceaccount:{namespace}:{}", settings.controller_name));
    let operator_client = kube::Client::try_from(config).unwrap();
    let election = LeaderElection::new(settings.controller_name, &namespace);
    let operator = Background::spawn({
        let reconciler = ZoneOperator.into_reconciler(operator_client.clone());
        move |shutdown| async move {
            election
                .run(operator_client, shutdown, move |stop| reconciler.clone().start(Some(stop)))
                .await
                .unwrap();
        }
    });

    let zones: Api<Zone> = Api::all(admin.clone());
    let name = format!("z-{namespace}");
    let spec = ZoneSpec { namespace: namespace.clone(), note: "cluster-wide".into() };
    zones.create(&create, &Zone::new(&name, spec)).await.unwrap();
    let zone = wait_for(&zones, &name, MINUTE, "the zone to be Ready", |zone| zone.is_some_and(ready))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zone.finalizers(), [FINALIZER]);
    let status = zone.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.conditions.get("Ready").unwrap().observed_generation, Some(1));
    wait_for_event(&admin, &zone, "Applied").await;

    // Its namespaced child, owned across scopes; deleted by hand, it is made again.
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let child_name = format!("zone-{name}");
    let child = maps.get(&child_name).await.unwrap();
    assert_eq!(child.owner_references()[0].uid, zone.uid().unwrap());
    assert_eq!(child.owner_references()[0].kind, "Zone");
    maps.delete(&child_name, &DeleteParams::default()).await.unwrap();
    wait_for(&maps, &child_name, MINUTE, "the child to be made again", |made| {
        made.is_some_and(|made| made.uid() != child.uid())
    })
    .await
    .unwrap();

    // Deleted: cleanup runs, the finalizer goes, and the garbage collector takes the child.
    zones.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for(&zones, &name, MINUTE, "the zone to be deleted", |zone| zone.is_none()).await.unwrap();
    wait_for_event(&admin, &zone, "CleanedUp").await;
    wait_for(&maps, &child_name, MINUTE, "the garbage collector to delete the child", |map| map.is_none())
        .await
        .unwrap();

    operator.stop(Duration::from_secs(30)).await;
    let lease =
        Api::<Lease>::namespaced(admin.clone(), &namespace).get(settings.controller_name).await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "released on shutdown");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .delete("zone-operator", &DeleteParams::default())
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone()).delete("zone-operator", &DeleteParams::default()).await.unwrap();
    kuberator_test::delete_namespace(&admin, &namespace).await.unwrap();
}
