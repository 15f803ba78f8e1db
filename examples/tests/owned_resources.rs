//! Owned children, conditions and pruning end to end, with the `owned_resources` example's
//! operator against the real control plane (garbage collector included): what a user sees on
//! the children, the parent's conditions, its Events, `kubectl wait`, and the reconcile count.
#![allow(missing_docs)]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::Client;
use kube::Resource as _;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kuberator::Reconcile as _;
use kuberator::operator::Operator as _;
use kuberator_test::Background;
use kuberator_test::wait_for;

#[allow(dead_code, unreachable_pub)]
#[path = "../owned_resources.rs"]
mod owned_resources;

use owned_resources::SiteOperator;
use owned_resources::StaticSite;

const MINUTE: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);

/// The example's operator, watching only `namespace`, under a controller name of its own (so
/// its metrics are its own).
fn operator(client: &Client, namespace: &str) -> (Background, &'static str) {
    let mut settings = SiteOperator::settings();
    settings.namespaces = vec![namespace.to_owned()];
    settings.controller_name = Box::leak(format!("site-{namespace}").into_boxed_str());
    let name = settings.controller_name;
    let reconciler = SiteOperator.into_reconciler_with(client.clone(), settings);
    (Background::spawn(move |shutdown| reconciler.start(Some(shutdown))), name)
}

async fn setup(prefix: &str) -> (Client, String, Api<StaticSite>, Api<ConfigMap>) {
    let (client, namespace) = kuberator_test::test_env(prefix).await;
    kuberator_test::install_crd::<StaticSite>(&client).await.unwrap();
    let sites = Api::namespaced(client.clone(), &namespace);
    let maps = Api::namespaced(client.clone(), &namespace);
    (client, namespace, sites, maps)
}

fn reconciles(controller: &str) -> f64 {
    let series = format!("kuberator_reconciles_total{{controller=\"{controller}\",result=\"success\"}}");
    kuberator_test::metric(&kuberator::telemetry::encode(), &series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_children_come_back_are_pruned_and_go_with_the_parent() {
    let (client, namespace, _, _) = setup("site-demo").await;
    let (operator, _) = operator(&client, &namespace);
    owned_resources::demo(client.clone(), &namespace).await.unwrap();
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_carry_the_controller_reference_and_label_and_hand_edits_are_undone() {
    let (client, namespace, sites, maps) = setup("site-edit").await;
    let (operator, controller) = operator(&client, &namespace);
    sites.create(&PostParams::default(), &owned_resources::sample("edit", &namespace, false)).await.unwrap();
    let site =
        wait_for(&sites, "edit", MINUTE, "edit to be Ready", |s| s.is_some_and(owned_resources::ready))
            .await
            .unwrap()
            .unwrap();

    let page = maps.get("edit-page").await.unwrap();
    assert_eq!(
        page.owner_references(),
        [OwnerReference {
            api_version: "kuberator.dev/v1".into(),
            kind: "StaticSite".into(),
            name: "edit".into(),
            uid: site.uid().unwrap(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    );
    assert_eq!(page.labels().get("app.kubernetes.io/managed-by").map(String::as_str), Some(controller));
    assert_eq!(page.labels().get("kuberator.dev/site").map(String::as_str), Some("edit"));
    let managers: Vec<_> = page.managed_fields().iter().filter_map(|entry| entry.manager.clone()).collect();
    assert_eq!(managers, [controller.to_owned()], "one field manager, the operator's");

    // Someone edits the page by hand: the operator notices the child and puts it back.
    let edit = serde_json::json!({ "data": { "index.html": "defaced" } });
    maps.patch("edit-page", &PatchParams::apply("someone").force(), &Patch::Apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "edit-page" }, "data": edit["data"],
    })))
    .await
    .unwrap();
    wait_for(&maps, "edit-page", MINUTE, "the hand edit to be undone", |page| {
        page.and_then(|page| page.data.as_ref()?.get("index.html").cloned()).as_deref()
            == Some("<h1>Hello from Kuberator</h1>")
    })
    .await
    .unwrap();

    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_own_writes_do_not_reconcile_again() {
    let (client, namespace, sites, _) = setup("site-loop").await;
    let (operator, controller) = operator(&client, &namespace);
    sites.create(&PostParams::default(), &owned_resources::sample("quiet", &namespace, true)).await.unwrap();
    wait_for(&sites, "quiet", MINUTE, "quiet to be Ready", |s| s.is_some_and(owned_resources::ready))
        .await
        .unwrap();

    // Settled: applying three children and writing status caused no further reconcile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = reconciles(controller);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(reconciles(controller), settled, "a settled site was reconciled again");
    // One reconcile adds the finalizer and applies. The children's watch events are the
    // operator's own writes, even those that outrun the apply's answer.
    assert_eq!(settled, 1.0, "reconciles to settle a new site");

    // One change of the spec: one reconcile (the children it rewrites do not add any).
    let patch = serde_json::json!({ "spec": { "content": "<h1>changed</h1>" } });
    sites.patch("quiet", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(&sites, "quiet", MINUTE, "quiet to be Ready again", |s| s.is_some_and(owned_resources::ready))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(reconciles(controller) - settled, 1.0, "reconciles for one change of the spec");

    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_controlled_by_another_object_is_a_clear_error_and_a_warning_event() {
    let (client, namespace, sites, maps) = setup("site-conflict").await;
    // A ConfigMap named like the site's page, already controlled by another object.
    let intruder = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta { name: Some("intruder".into()), ..ObjectMeta::default() },
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let taken = ConfigMap {
        metadata: ObjectMeta {
            name: Some("taken-page".into()),
            owner_references: Some(vec![intruder.controller_owner_ref(&()).unwrap()]),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &taken).await.unwrap();

    let (operator, _) = operator(&client, &namespace);
    sites.create(&PostParams::default(), &owned_resources::sample("taken", &namespace, false)).await.unwrap();
    let site = wait_for(&sites, "taken", MINUTE, "taken to be Ready=False", |site| {
        site.and_then(|site| site.status.as_ref()?.conditions.get("Ready").cloned())
            .is_some_and(|ready| !ready.is_true())
    })
    .await
    .unwrap()
    .unwrap();
    let ready = site.status.as_ref().unwrap().conditions.get("Ready").unwrap().clone();
    assert_eq!(ready.reason, "ChildConflict");
    let expected = format!(
        "ConfigMap {namespace}/taken-page is controlled by ConfigMap intruder (uid {}), so StaticSite \
         {namespace}/taken cannot own it",
        intruder.uid().unwrap()
    );
    assert!(ready.message.contains(&expected), "{}", ready.message);
    assert_eq!(ready.observed_generation, site.metadata.generation);

    let deadline = std::time::Instant::now() + MINUTE;
    let note = loop {
        let events = kuberator_test::events_for(&client, &site).await.unwrap();
        let warning = events.into_iter().find(|event| event.type_.as_deref() == Some("Warning"));
        if let Some(note) = warning.and_then(|event| event.note) {
            break note;
        }
        assert!(std::time::Instant::now() < deadline, "no Warning Event on the site");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(note.contains(&expected), "{note}");
    // The other controller's object is left as it was.
    assert_eq!(maps.get("taken-page").await.unwrap().owner_references()[0].uid, intruder.uid().unwrap());

    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_for_condition_ready_succeeds() {
    let (client, namespace, sites, _) = setup("site-wait").await;
    let cluster = kuberator_test::TestCluster::shared().await.unwrap();
    let (operator, _) = operator(&client, &namespace);
    sites
        .create(&PostParams::default(), &owned_resources::sample("waited", &namespace, false))
        .await
        .unwrap();

    let wait = ["wait", "--for=condition=Ready", "staticsite/waited", "--timeout=60s", "-n", &namespace];
    let said = cluster.run_kubectl(&wait).await.unwrap();
    assert_eq!(said.trim(), "staticsite.kuberator.dev/waited condition met");

    let site = sites.get("waited").await.unwrap();
    let conditions = &site.status.as_ref().unwrap().conditions;
    let ready = conditions.get("Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Reconciled"));
    // No Deployment controller runs here, so no web server is available: the user's own
    // condition says so beside Ready.
    let available = conditions.get("Available").unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_str()), ("False", "WebServersStarting"));
    assert_eq!(available.message, "0 of 1 web servers available");

    sites.delete("waited", &DeleteParams::default()).await.unwrap();
    operator.stop(STOP).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
