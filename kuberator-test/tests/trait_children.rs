//! Owned children through the trait-level API: a hand-written `Context` that holds a
//! `Children`, and a `Reconcile` that returns it, so the child kind is watched and a child
//! deleted by hand is made again, also when it is deleted while the operator's watches are
//! down.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kube::api::WatchEvent;
use kube::api::WatchParams;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kuberator::Context;
use kuberator::Reconcile;
use kuberator::TryResource as _;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::children::Children;
use kuberator::children::Owned;
use kuberator::error::Result;
use kuberator::k8s::K8sRepository;
use kuberator_test::Background;
use kuberator_test::memory::Verb;
use kuberator_test::wait_for;
use support::Probe;
use support::ProbeSpec;

type Repository = K8sRepository<Probe, StaticApiProvider<Probe>>;

struct ChildContext {
    repository: std::sync::Arc<Repository>,
    children: Children,
}

#[async_trait]
impl Context<Probe, Repository, StaticApiProvider<Probe>> for ChildContext {
    fn k8s_repository(&self) -> std::sync::Arc<Repository> {
        std::sync::Arc::clone(&self.repository)
    }

    fn finalizer(&self) -> &'static str {
        support::FINALIZER
    }

    async fn handle_apply(&self, probe: std::sync::Arc<Probe>) -> Result<Action> {
        let child = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-child", probe.try_name()?)),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("message".to_owned(), probe.spec.message.clone())])),
            ..ConfigMap::default()
        };
        self.children.apply(&*probe, child).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _probe: std::sync::Arc<Probe>) -> Result<Action> {
        Ok(Action::await_change())
    }
}

#[derive(Clone)]
struct ChildReconciler {
    api: Api<Probe>,
    context: std::sync::Arc<ChildContext>,
}

impl Reconcile<Probe, ChildContext, Repository, StaticApiProvider<Probe>> for ChildReconciler {
    fn destruct(self) -> (Api<Probe>, Config, std::sync::Arc<ChildContext>) {
        (self.api, Config::default(), self.context)
    }

    fn children(&self) -> Option<Children> {
        Some(self.context.children.clone())
    }
}

impl ChildReconciler {
    /// The operator on `client`, in `namespace`, applying its children as `manager`.
    fn new(client: kube::Client, namespace: &str, manager: &str) -> Self {
        let provider = StaticApiProvider::new(client.clone(), [namespace], CachingStrategy::Strict);
        let children = Children::new(client.clone(), manager, &[Owned::of::<ConfigMap>()]);
        let context =
            ChildContext { repository: std::sync::Arc::new(K8sRepository::new(provider)), children };
        Self { api: Api::namespaced(client, namespace), context: std::sync::Arc::new(context) }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_context_owns_children_too() {
    let (client, namespace) = kuberator_test::test_env("trait-children").await;
    kuberator_test::install_crd::<Probe>(&client).await.unwrap();
    let reconciler = ChildReconciler::new(client.clone(), &namespace, "trait-children");
    let operator = Background::spawn(move |shutdown| reconciler.start(Some(shutdown)));

    let probes: Api<Probe> = Api::namespaced(client.clone(), &namespace);
    let spec = ProbeSpec { message: "from a trait".into(), ..ProbeSpec::default() };
    probes.create(&PostParams::default(), &Probe::new("owner", spec)).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let minute = Duration::from_secs(60);
    let child =
        wait_for(&maps, "owner-child", minute, "the child", |map| map.is_some()).await.unwrap().unwrap();
    assert_eq!(
        child.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("trait-children")
    );

    maps.delete("owner-child", &DeleteParams::default()).await.unwrap();
    wait_for(&maps, "owner-child", minute, "the child to be made again", |made| {
        made.is_some_and(|made| made.uid() != child.uid())
    })
    .await
    .unwrap();

    probes.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for(&maps, "owner-child", minute, "the garbage collector to delete the child", |map| map.is_none())
        .await
        .unwrap();
    operator.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

/// Issue 21, item 10, on whichever server `KUBERATOR_TEST_CLUSTER` picks: a child deleted by
/// hand while the operator's watches are down comes back once they are up again, though the
/// parent waits for changes (`await_change`). Both servers force the path where the watch
/// cannot resume and must list again (a list shows no Delete, so only the relist's diff can
/// notice the child went):
/// - on the real control plane, one of this test's own, without a watch cache and compacting
///   etcd every 2 s, the operator talks through a proxy that is blocked while the child is
///   deleted and until etcd compacted past the operator's last version (a watch from it
///   gets `410 Gone`, checked); kube-apiserver's own request counter shows the relist;
/// - on the in-memory server (one of this test's own, since its faults are server-wide) its
///   watches are cut, their versions expired and ConfigMaps refused to it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_deleted_while_the_watch_is_down_comes_back() {
    kuberator_test::init_tracing();
    let cluster = kuberator_test::TestCluster::shared().await.expect("a cluster (tests never skip)");
    // The real server's history, its watch cache, outlives a short outage: a control plane of
    // this test's own keeps none, and compacts etcd often.
    let compacting = match &cluster {
        kuberator_test::TestCluster::Real(_) => Some(
            kuberator_test::ControlPlane::start_with_apiserver_flags(&[
                "--watch-cache=false",
                "--etcd-compaction-interval=2s",
            ])
            .await
            .expect("a control plane of this test's own"),
        ),
        kuberator_test::TestCluster::InMemory(_) => None,
    };
    // The in-memory faults below are server-wide: a server of this test's own keeps them
    // from the other tests of this binary.
    let own_server = compacting.is_none().then(kuberator_test::memory::MemoryServer::new);
    let admin = match (&compacting, &own_server) {
        (Some(control_plane), _) => control_plane.client().await.unwrap(),
        (None, Some(server)) => server.client(),
        (None, None) => unreachable!("one or the other"),
    };
    kuberator_test::install_crd::<Probe>(&admin).await.unwrap();
    let namespace = kuberator_test::test_namespace(&admin, "child-outage").await.unwrap();
    // The operator's client: through a proxy to the real server, or the in-memory one's own.
    let (proxy, client) = match &compacting {
        Some(control_plane) => {
            let proxy = kuberator_test::Proxy::in_front_of(control_plane).await.unwrap();
            let client = proxy.client(control_plane).await.unwrap();
            (Some(proxy), client)
        }
        None => (None, admin.clone()),
    };
    let reconciler = ChildReconciler::new(client, &namespace, "child-outage");
    let operator = Background::spawn(move |shutdown| reconciler.start(Some(shutdown)));

    let probes: Api<Probe> = Api::namespaced(admin.clone(), &namespace);
    let spec = ProbeSpec { message: "kept".into(), ..ProbeSpec::default() };
    probes.create(&PostParams::default(), &Probe::new("owner", spec)).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
    let minute = Duration::from_secs(60);
    let child =
        wait_for(&maps, "owner-child", minute, "the child", |map| map.is_some()).await.unwrap().unwrap();

    match (&proxy, own_server.as_ref()) {
        (Some(proxy), _) => proxy.block(),
        (None, Some(server)) => {
            server.refuse(Verb::Watch, "configmaps");
            server.refuse(Verb::List, "configmaps");
            server.expire_resource_versions();
        }
        (None, None) => unreachable!("a real cluster has a proxy"),
    }
    maps.delete("owner-child", &DeleteParams::default()).await.unwrap();
    let lists_before = match &compacting {
        Some(_) => {
            // Until etcd has compacted past the child's last version: a watch from it is gone.
            let version = child.resource_version().unwrap();
            let gone = tokio::time::timeout(minute, async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let mut watch = maps.watch(&WatchParams::default(), &version).await.unwrap().boxed();
                    if let Ok(Some(Ok(WatchEvent::Error(status)))) =
                        tokio::time::timeout(Duration::from_secs(2), watch.next()).await
                        && status.code == 410
                    {
                        return;
                    }
                }
            })
            .await;
            assert!(gone.is_ok(), "etcd never compacted past version {version}");
            configmap_lists(&admin).await
        }
        None => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            0.0
        }
    };
    match (&proxy, own_server.as_ref()) {
        (Some(proxy), _) => proxy.unblock(),
        (None, Some(server)) => server.clear_faults(),
        (None, None) => unreachable!("a real cluster has a proxy"),
    }
    wait_for(&maps, "owner-child", minute, "the child to be made again after the outage", |made| {
        made.is_some_and(|made| made.uid() != child.uid())
    })
    .await
    .unwrap();
    if compacting.is_some() {
        let lists_after = configmap_lists(&admin).await;
        assert!(
            lists_after > lists_before,
            "the operator did not list ConfigMaps again ({lists_before} before)"
        );
    }
    operator.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&admin, &namespace).await.unwrap();
}

/// How many LISTs of ConfigMaps kube-apiserver has answered, from its own metrics.
async fn configmap_lists(admin: &kube::Client) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = admin.request_text(request).await.unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{")
                && line.contains("resource=\"configmaps\"")
                && line.contains("verb=\"LIST\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A derived operator for the process-of-several test: each `Tally` gets its note copied into
/// its status.
mod tally {
    use kuberator::prelude::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "test.kuberator.dev", version = "v1", kind = "Tally", namespaced, status = "TallyStatus")]
    pub(crate) struct TallySpec {
        pub(crate) note: String,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct TallyStatus {
        pub(crate) note: Option<String>,
        pub(crate) observed_generation: Option<i64>,
    }

    impl ObserveGeneration for TallyStatus {
        fn add(&mut self, generation: i64) {
            self.observed_generation = Some(generation);
        }
    }

    #[derive(Operator)]
    #[kuberator(resource = Tally, controller_name = "tally-operator")]
    pub(crate) struct TallyOperator;

    impl TallyOperator {
        async fn handle_apply(&self, tally: Arc<Tally>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            let status = TallyStatus { note: Some(tally.spec.note.clone()), ..TallyStatus::default() };
            ctx.update_status(&tally, status).await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, _tally: Arc<Tally>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }
}

/// Issue 22, item 1, on whichever server `KUBERATOR_TEST_CLUSTER` picks: a derived operator
/// and a trait-level reconciler (with its children) run as one process of two controllers
/// (`Operators::start`); each reconciles its kind, and each is in `kuberator_ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_operator_and_a_trait_level_reconciler_run_in_one_process() {
    let (client, namespace) = kuberator_test::test_env("operators").await;
    kuberator_test::install_crd::<Probe>(&client).await.unwrap();
    kuberator_test::install_crd::<tally::Tally>(&client).await.unwrap();
    let operators = kuberator::Operators::new()
        .with(tally::TallyOperator)
        .with_reconciler(ChildReconciler::new(client.clone(), &namespace, "operators"));
    assert_eq!(operators.controller_names(), ["tally-operator", "probe-operator"]);
    let operator = Background::spawn({
        let client = client.clone();
        move |shutdown| operators.start(client, Some(shutdown))
    });

    let tallies: Api<tally::Tally> = Api::namespaced(client.clone(), &namespace);
    let created = tally::Tally::new("counted", tally::TallySpec { note: "one".into() });
    tallies.create(&PostParams::default(), &created).await.unwrap();
    let probes: Api<Probe> = Api::namespaced(client.clone(), &namespace);
    let spec = ProbeSpec { message: "beside a tally".into(), ..ProbeSpec::default() };
    probes.create(&PostParams::default(), &Probe::new("owner", spec)).await.unwrap();

    let minute = Duration::from_secs(60);
    wait_for(&tallies, "counted", minute, "the tally's status", |tally| {
        tally.and_then(|tally| tally.status.as_ref()?.note.as_deref()) == Some("one")
    })
    .await
    .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    wait_for(&maps, "owner-child", minute, "the probe's child", |map| map.is_some()).await.unwrap();
    let metrics = kuberator::telemetry::encode();
    for controller in ["tally-operator", "probe-operator"] {
        let series = format!("kuberator_ready{{controller=\"{controller}\"}}");
        assert_eq!(kuberator_test::metric(&metrics, &series), Some(1.0), "{series} in\n{metrics}");
    }

    tallies.delete("counted", &DeleteParams::default()).await.unwrap();
    probes.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for(&tallies, "counted", minute, "the tally to go", |tally| tally.is_none()).await.unwrap();
    wait_for(&probes, "owner", minute, "the probe to go", |probe| probe.is_none()).await.unwrap();
    operator.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

/// A derived operator that reads a ConfigMap its objects name (`spec.configMap`) without
/// owning it: each `Keyed` gets the ConfigMap's `value` (or `missing`) in its status.
mod keyed {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kuberator::prelude::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "test.kuberator.dev", version = "v1", kind = "Keyed", namespaced, status = "KeyedStatus")]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct KeyedSpec {
        pub(crate) config_map: Option<String>,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct KeyedStatus {
        pub(crate) value: Option<String>,
        pub(crate) observed_generation: Option<i64>,
    }

    impl ObserveGeneration for KeyedStatus {
        fn add(&mut self, generation: i64) {
            self.observed_generation = Some(generation);
        }
    }

    #[derive(Operator)]
    #[kuberator(resource = Keyed, references(ConfigMap = spec.config_map), controller_name = "keyed-operator")]
    pub(crate) struct KeyedOperator;

    impl KeyedOperator {
        async fn handle_apply(&self, keyed: Arc<Keyed>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            let map = ctx.referenced::<ConfigMap>(&keyed).await?;
            let value = map
                .and_then(|map| map.data.as_ref()?.get("value").cloned())
                .unwrap_or_else(|| "missing".to_owned());
            ctx.update_status(&keyed, KeyedStatus { value: Some(value), ..KeyedStatus::default() }).await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, _keyed: Arc<Keyed>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }
}

/// Issue 22, item 3, on whichever server `KUBERATOR_TEST_CLUSTER` picks: an object that names
/// a ConfigMap it does not own (`references(ConfigMap = spec.config_map)`) is reconciled when
/// that ConfigMap appears, changes and goes, and its handler reads it from the cache; the
/// index forgets the object when it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_is_reconciled_when_the_object_it_names_appears_changes_and_goes() {
    use kuberator::Operator as _;
    let (client, namespace) = kuberator_test::test_env("references").await;
    kuberator_test::install_crd::<keyed::Keyed>(&client).await.unwrap();
    let reconciler = keyed::KeyedOperator.into_reconciler(client.clone());
    let operator = Background::spawn(move |shutdown| reconciler.start(Some(shutdown)));

    let keyeds: Api<keyed::Keyed> = Api::namespaced(client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let minute = Duration::from_secs(60);
    let value_is = |expected: &'static str| {
        move |keyed: Option<&keyed::Keyed>| {
            keyed.and_then(|keyed| keyed.status.as_ref()?.value.as_deref()) == Some(expected)
        }
    };
    let spec = keyed::KeyedSpec { config_map: Some("settings".into()) };
    keyeds.create(&PostParams::default(), &keyed::Keyed::new("reader", spec)).await.unwrap();
    wait_for(&keyeds, "reader", minute, "value missing: no ConfigMap yet", value_is("missing"))
        .await
        .unwrap();

    let map = |value: &str| ConfigMap {
        metadata: ObjectMeta { name: Some("settings".into()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([("value".to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &map("one")).await.unwrap();
    wait_for(&keyeds, "reader", minute, "the ConfigMap that appeared", value_is("one")).await.unwrap();
    maps.replace("settings", &PostParams::default(), &map("two")).await.unwrap();
    wait_for(&keyeds, "reader", minute, "the ConfigMap's change", value_is("two")).await.unwrap();
    maps.delete("settings", &DeleteParams::default()).await.unwrap();
    wait_for(&keyeds, "reader", minute, "the ConfigMap's deletion", value_is("missing")).await.unwrap();

    keyeds.delete("reader", &DeleteParams::default()).await.unwrap();
    wait_for(&keyeds, "reader", minute, "the object to go", |keyed| keyed.is_none()).await.unwrap();
    let series = "kuberator_remembered_objects{controller=\"keyed-operator\",map=\"references\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kuberator_test::metric(&kuberator::telemetry::encode(), series) != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never back to 0:\n{}",
            kuberator::telemetry::encode()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    operator.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

/// Two derived operators that need the same kinds: `Shelf` (the primary of one, referenced by
/// the other) and their child ConfigMaps.
mod shelves {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kuberator::prelude::*;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "test.kuberator.dev", version = "v1", kind = "Shelf", namespaced, status = "NoteStatus")]
    pub(crate) struct ShelfSpec {
        pub(crate) note: String,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "test.kuberator.dev",
        version = "v1",
        kind = "ShelfAudit",
        namespaced,
        status = "NoteStatus"
    )]
    pub(crate) struct ShelfAuditSpec {
        pub(crate) shelf: String,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct NoteStatus {
        pub(crate) note: Option<String>,
        pub(crate) observed_generation: Option<i64>,
    }

    impl ObserveGeneration for NoteStatus {
        fn add(&mut self, generation: i64) {
            self.observed_generation = Some(generation);
        }
    }

    fn child(name: String, note: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some(name), ..ObjectMeta::default() },
            data: Some([("note".to_owned(), note.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    #[derive(Operator)]
    #[kuberator(resource = Shelf, owns = [ConfigMap], controller_name = "shelf-operator")]
    pub(crate) struct ShelfOperator;

    impl ShelfOperator {
        async fn handle_apply(&self, shelf: Arc<Shelf>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            ctx.apply(&*shelf, child(format!("{}-shelf", shelf.try_name()?), &shelf.spec.note)).await?;
            let status = NoteStatus { note: Some(shelf.spec.note.clone()), ..NoteStatus::default() };
            ctx.update_status(&shelf, status).await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, _shelf: Arc<Shelf>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }

    #[derive(Operator)]
    #[kuberator(
        resource = ShelfAudit,
        owns = [ConfigMap],
        references(Shelf = spec.shelf),
        controller_name = "shelf-audit-operator"
    )]
    pub(crate) struct AuditOperator;

    impl AuditOperator {
        async fn handle_apply(&self, audit: Arc<ShelfAudit>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            let shelf = ctx.referenced::<Shelf>(&audit).await?;
            let note = shelf.map_or_else(|| "missing".to_owned(), |shelf| shelf.spec.note.clone());
            ctx.apply(&*audit, child(format!("{}-audit", audit.try_name()?), &note)).await?;
            ctx.update_status(&audit, NoteStatus { note: Some(note), ..NoteStatus::default() }).await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(
            &self,
            _audit: Arc<ShelfAudit>,
            _ctx: &Ctx<Self>,
        ) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }
}

/// Issue 22, item 2, on whichever server `KUBERATOR_TEST_CLUSTER` picks: two controllers that
/// both need every `Shelf` (the primary of one, referenced by the other) hold one watch of
/// `shelves` at the API server when they run in one process, and two when they run apart
/// (each process its own caches); either way a Shelf's change reaches the other controller
/// through the shared store, and both own ConfigMaps from one watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_of_one_process_share_one_watch_per_kind() {
    use kuberator::Operator as _;
    let (client, namespace) = kuberator_test::test_env("shared").await;
    let cluster = kuberator_test::TestCluster::shared().await.unwrap();
    kuberator_test::install_crd::<shelves::Shelf>(&client).await.unwrap();
    kuberator_test::install_crd::<shelves::ShelfAudit>(&client).await.unwrap();
    let shelf_api: Api<shelves::Shelf> = Api::namespaced(client.clone(), &namespace);
    let audits: Api<shelves::ShelfAudit> = Api::namespaced(client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let minute = Duration::from_secs(60);
    let spec = shelves::ShelfSpec { note: "first".into() };
    shelf_api.create(&PostParams::default(), &shelves::Shelf::new("books", spec)).await.unwrap();
    let spec = shelves::ShelfAuditSpec { shelf: "books".into() };
    audits.create(&PostParams::default(), &shelves::ShelfAudit::new("books", spec)).await.unwrap();
    let watches_are = async |expected: usize, when: &str| {
        let deadline = std::time::Instant::now() + minute;
        loop {
            let plural = <shelves::Shelf as kube::Resource>::plural(&());
            let open = cluster.open_watches(&plural).await.unwrap();
            if open == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{open} watches of {plural} {when}, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let follows = async |note: &'static str| {
        shelf_api
            .patch(
                "books",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({ "spec": { "note": note } })),
            )
            .await
            .unwrap();
        let audited = |audit: Option<&shelves::ShelfAudit>| {
            audit.and_then(|audit| audit.status.as_ref()?.note.as_deref()) == Some(note)
        };
        wait_for(&audits, "books", minute, "the audit to follow the shelf", audited).await.unwrap();
        let child = |map: Option<&ConfigMap>| map.and_then(|map| map.data.as_ref()?.get("note").cloned());
        wait_for(&maps, "books-audit", minute, "the audit's child", |map| {
            child(map).as_deref() == Some(note)
        })
        .await
        .unwrap();
        wait_for(&maps, "books-shelf", minute, "the shelf's child", |map| {
            child(map).as_deref() == Some(note)
        })
        .await
        .unwrap();
    };

    // Apart: each its own caches, as two processes would have.
    let apart = [
        Background::spawn({
            let reconciler = shelves::ShelfOperator.into_reconciler(client.clone());
            move |shutdown| reconciler.start(Some(shutdown))
        }),
        Background::spawn({
            let reconciler = shelves::AuditOperator.into_reconciler(client.clone());
            move |shutdown| reconciler.start(Some(shutdown))
        }),
    ];
    follows("apart").await;
    watches_are(2, "with the controllers apart").await;
    for operator in apart {
        operator.stop(Duration::from_secs(30)).await;
    }
    watches_are(0, "once both stopped").await;

    // Together: one watch of shelves for both.
    let operators = kuberator::Operators::new().with(shelves::ShelfOperator).with(shelves::AuditOperator);
    let together = Background::spawn({
        let client = client.clone();
        move |shutdown| operators.start(client, Some(shutdown))
    });
    follows("together").await;
    watches_are(1, "with the controllers in one process").await;

    audits.delete("books", &DeleteParams::default()).await.unwrap();
    shelf_api.delete("books", &DeleteParams::default()).await.unwrap();
    wait_for(&audits, "books", minute, "the audit to go", |audit| audit.is_none()).await.unwrap();
    wait_for(&shelf_api, "books", minute, "the shelf to go", |shelf| shelf.is_none()).await.unwrap();
    together.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

/// A derived operator as the README teaches it: a status with `conditions`, written by the
/// handler, with a condition of its own.
mod ledgers {
    use kuberator::prelude::*;
    use kuberator::status::Condition;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "test.kuberator.dev",
        version = "v1",
        kind = "Ledger",
        namespaced,
        status = "LedgerStatus"
    )]
    pub(crate) struct LedgerSpec {
        pub(crate) entry: String,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[serde(default, rename_all = "camelCase")]
    pub(crate) struct LedgerStatus {
        pub(crate) entry: Option<String>,
        pub(crate) observed_generation: Option<i64>,
        pub(crate) conditions: Conditions,
    }

    impl ObserveGeneration for LedgerStatus {
        fn add(&mut self, generation: i64) {
            self.observed_generation = Some(generation);
        }
    }

    #[derive(Operator)]
    #[kuberator(resource = Ledger, controller_name = "ledger-operator")]
    pub(crate) struct LedgerOperator;

    impl LedgerOperator {
        async fn handle_apply(&self, ledger: Arc<Ledger>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            ctx.set_condition(&ledger, Condition::new("Balanced", true, "Counted", "every entry counted"));
            let status = LedgerStatus { entry: Some(ledger.spec.entry.clone()), ..LedgerStatus::default() };
            ctx.update_status(&ledger, status).await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, _ledger: Arc<Ledger>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }
}

/// Issue 23, item 1, on whichever server `KUBERATOR_TEST_CLUSTER` picks, counted by the API
/// server itself: a new object costs two writes (the finalizer, then the handler's status
/// with `Ready` and its own condition in one), a change of its spec one, and a reconcile that
/// changes nothing none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_writes_its_status_and_conditions_once() {
    use kuberator::Operator as _;
    let (client, namespace) = kuberator_test::test_env("one-write").await;
    let cluster = kuberator_test::TestCluster::shared().await.unwrap();
    kuberator_test::install_crd::<ledgers::Ledger>(&client).await.unwrap();
    let plural = <ledgers::Ledger as kube::Resource>::plural(&()).into_owned();
    let writes = async || {
        let main = cluster.patches_of(&plural).await.unwrap();
        let status = cluster.patches_of(&format!("{plural}/status")).await.unwrap();
        (main, status)
    };
    let before = writes().await;
    let reconciler = ledgers::LedgerOperator.into_reconciler(client.clone());
    let operator = Background::spawn(move |shutdown| reconciler.start(Some(shutdown)));
    let ledger_api: Api<ledgers::Ledger> = Api::namespaced(client.clone(), &namespace);
    let minute = Duration::from_secs(60);
    let settled = |entry: &'static str, generation: i64| {
        move |ledger: Option<&ledgers::Ledger>| {
            ledger.and_then(|ledger| ledger.status.as_ref()).is_some_and(|status| {
                status.entry.as_deref() == Some(entry)
                    && status.observed_generation == Some(generation)
                    && status.conditions.is_true("Ready")
                    && status.conditions.is_true("Balanced")
                    && status.conditions.get("Ready").and_then(|ready| ready.observed_generation)
                        == Some(generation)
            })
        }
    };
    let spec = ledgers::LedgerSpec { entry: "opened".into() };
    ledger_api.create(&PostParams::default(), &ledgers::Ledger::new("book", spec)).await.unwrap();
    wait_for(&ledger_api, "book", minute, "status, Ready and Balanced", settled("opened", 1)).await.unwrap();
    // Nothing more comes: the echo of the status write reconciles nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = writes().await;
    assert_eq!(
        (created.0 - before.0, created.1 - before.1),
        (1, 1),
        "finalizer and status patches of a new object"
    );

    let patch = serde_json::json!({ "spec": { "entry": "closed" } });
    ledger_api
        .patch("book", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(&ledger_api, "book", minute, "the change's status", settled("closed", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let changed = writes().await;
    // The main resource's one patch is the test's own change of the spec.
    assert_eq!((changed.0 - created.0, changed.1 - created.1), (1, 1), "patches of a spec change");

    ledger_api.delete("book", &DeleteParams::default()).await.unwrap();
    wait_for(&ledger_api, "book", minute, "the ledger to go", |ledger| ledger.is_none()).await.unwrap();
    operator.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
