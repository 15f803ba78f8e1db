//! The in-memory server's faults, one call each, as an operator author's own tests use them;
//! and an operator that rides them out.

mod support;

use std::collections::BTreeMap;
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

/// An operator with a child and conditions, for the churn and watch-outage tests: each
/// `Churn` owns a ConfigMap `<name>-child`, gets a `Noted` condition, and its cleanup sets a
/// `CleanedUp` condition (which must never reach a later object of the same name).
mod churn {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kuberator::prelude::*;
    use kuberator::status::Condition;
    use kuberator::status::Conditions;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "churn.kuberator.dev", version = "v1", kind = "Churn", namespaced, status = "ChurnStatus")]
    pub(crate) struct ChurnSpec {
        pub(crate) note: String,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct ChurnStatus {
        pub(crate) observed_generation: Option<i64>,
        #[serde(default)]
        pub(crate) conditions: Conditions,
    }

    #[derive(Operator)]
    #[kuberator(
        resource = Churn,
        finalizer = "churn.kuberator.dev/finalizer",
        owns = [ConfigMap],
        concurrency = 16,
        controller_name = "churn-operator"
    )]
    pub(crate) struct ChurnOperator;

    impl ChurnOperator {
        async fn handle_apply(&self, churn: Arc<Churn>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            let child = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(format!("{}-child", churn.try_name()?)),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([("note".to_owned(), churn.spec.note.clone())])),
                ..ConfigMap::default()
            };
            ctx.apply(&*churn, child).await?;
            ctx.set_condition(&churn, Condition::new("Noted", true, "Noted", churn.spec.note.clone()));
            // A condition written through the repository joins the ones set, and Ready.
            let mut conditions = Conditions::default();
            conditions.set(Condition::new("Written", true, "Written", "through the repository"), None);
            ctx.repository()
                .update_status(&*churn, ChurnStatus { observed_generation: None, conditions })
                .await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, churn: Arc<Churn>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
            let object =
                format!("{}/{}", churn.namespace().unwrap_or_default(), churn.uid().unwrap_or_default());
            *CLEANUPS.lock().unwrap().entry(object).or_default() += 1;
            ctx.set_condition(&churn, Condition::new("CleanedUp", true, "CleanedUp", "cleanup ran"));
            Ok(Action::await_change())
        }
    }

    /// How many times the cleanup ran, per object (`namespace/uid`).
    pub(crate) static CLEANUPS: std::sync::Mutex<BTreeMap<String, usize>> =
        std::sync::Mutex::new(BTreeMap::new());

    impl ObserveGeneration for ChurnStatus {
        fn add(&mut self, generation: i64) {
            self.observed_generation = Some(generation);
        }
    }

    pub(crate) fn new(name: &str, note: &str) -> Churn {
        Churn::new(name, ChurnSpec { note: note.to_owned() })
    }

    /// Whether `churn` is Ready at its current generation.
    pub(crate) fn ready(churn: &Churn) -> bool {
        churn.status.as_ref().is_some_and(|status| {
            status.observed_generation.is_some()
                || status.conditions.get("Ready").is_some_and(|ready| {
                    ready.is_true() && ready.observed_generation == churn.metadata.generation
                })
        })
    }
}

/// The operator's per-object maps, from `kuberator_remembered_objects`.
fn remembered() -> BTreeMap<String, f64> {
    let metrics = kuberator::telemetry::encode();
    metrics
        .lines()
        .filter(|line| line.starts_with("kuberator_remembered_objects{controller=\"churn-operator\""))
        .filter_map(|line| {
            let map = line.split("map=\"").nth(1)?.split('"').next()?.to_owned();
            Some((map, line.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits until `done` holds for the list of Churns (polled every 200 ms, up to `within`).
async fn until(
    api: &Api<churn::Churn>,
    within: Duration,
    what: &str,
    done: impl Fn(&[churn::Churn]) -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        if done(&list) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One round of churn: `count` objects created, changed and deleted, each reconciled.
async fn churn_round(api: &Api<churn::Churn>, count: usize, round: usize) {
    use futures::StreamExt as _;
    let within = Duration::from_secs(600);
    let names: Vec<String> = (0..count).map(|n| format!("churn-{round}-{n}")).collect();
    futures::stream::iter(&names)
        .for_each_concurrent(64, |name| async move {
            api.create(&PostParams::default(), &churn::new(name, "first")).await.unwrap();
        })
        .await;
    until(api, within, "all Ready", |list| list.len() == count && list.iter().all(churn::ready)).await;
    futures::stream::iter(&names)
        .for_each_concurrent(64, |name| async move {
            let patch = Patch::Merge(json!({ "spec": { "note": "second" } }));
            api.patch(name, &PatchParams::default(), &patch).await.unwrap();
        })
        .await;
    until(api, within, "all Ready again", |list| {
        list.iter().all(|churn| churn.metadata.generation == Some(2) && churn::ready(churn))
    })
    .await;
    futures::stream::iter(&names)
        .for_each_concurrent(64, |name| async move {
            api.delete(name, &Default::default()).await.unwrap();
        })
        .await;
    until(api, within, "all gone", <[churn::Churn]>::is_empty).await;
}

/// The in-memory server in a process of its own (the `memory-server` binary), so that this
/// process's memory is the operator's; it stops when this value drops (its stdin closes),
/// also when this process dies.
struct ServerProcess {
    child: std::process::Child,
    client: kube::Client,
    /// Held open: the server prints a few more lines and would fail on a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    _directory: tempfile::TempDir,
}

impl ServerProcess {
    async fn start() -> ServerProcess {
        use std::io::BufRead as _;
        let directory = tempfile::tempdir().unwrap();
        let kubeconfig = directory.path().join("kubeconfig");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_memory-server"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--until-stdin-closes")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The first line says the kubeconfig is written.
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        assert!(line.trim_end().ends_with("kubeconfig"), "memory-server said {line:?}");
        let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        ServerProcess { child, client, _stdout: stdout, _directory: directory }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Issue 21, item 2: objects with children churned through the operator (created, changed,
/// deleted) leave nothing behind: every per-object map (`kuberator_remembered_objects`) is
/// back to empty, and the operator's memory after a second round is within 10 % of where
/// the first left it. The server runs in a process of its own, so that its history of
/// changes does not count as the operator's memory. `KUBERATOR_CHURN_OBJECTS` objects a
/// round, 200 unless set (10 000 is a documented command, in IN_MEMORY.md's "Speed"). A condition set in cleanup never reaches a later object of the
/// same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_objects_leave_no_entry_behind_and_memory_settles() {
    use kuberator::Operator as _;
    let count: usize =
        std::env::var("KUBERATOR_CHURN_OBJECTS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let server = ServerProcess::start().await;
    let client = server.client.clone();
    kuberator_test::install_crd::<churn::Churn>(&client).await.unwrap();
    let reconciler = churn::ChurnOperator.into_reconciler(client.clone());
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));
    let api: Api<churn::Churn> = Api::namespaced(client.clone(), "default");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // The same name again after a cleanup that set a condition: the new object never has it.
    api.create(&PostParams::default(), &churn::new("again", "first")).await.unwrap();
    until(&api, Duration::from_secs(30), "again Ready", |list| list.iter().all(churn::ready)).await;
    api.delete("again", &Default::default()).await.unwrap();
    until(&api, Duration::from_secs(30), "again gone", <[churn::Churn]>::is_empty).await;
    api.create(&PostParams::default(), &churn::new("again", "second")).await.unwrap();
    until(&api, Duration::from_secs(30), "again Ready", |list| list.iter().all(churn::ready)).await;
    let again = api.get("again").await.unwrap();
    let conditions = &again.status.as_ref().unwrap().conditions;
    assert!(conditions.get("Noted").is_some(), "{conditions:?}");
    // Written through `ctx.repository().update_status` in the apply: kept beside Ready.
    assert!(conditions.get("Written").is_some(), "{conditions:?}");
    assert!(conditions.is_true("Ready"), "{conditions:?}");
    assert!(
        conditions.get("CleanedUp").is_none(),
        "the old object's cleanup condition leaked: {conditions:?}"
    );
    api.delete("again", &Default::default()).await.unwrap();
    until(&api, Duration::from_secs(30), "again gone", <[churn::Churn]>::is_empty).await;

    let started = std::time::Instant::now();
    churn_round(&api, count, 1).await;
    let settled = rss_kib();
    churn_round(&api, count, 2).await;
    let after = rss_kib();
    let took = started.elapsed();
    assert!(maps.list(&ListParams::default()).await.unwrap().items.is_empty(), "every child went");
    // Deletes and relists are followed at once; give the last gauges a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sizes = remembered();
    eprintln!(
        "churn: 2 rounds of {count} objects in {took:?}; RSS {settled} KiB settled, {after} KiB after; maps {sizes:?}"
    );
    for map in ["echoes", "backoff", "conditions", "children", "seen", "statuses"] {
        assert!(sizes.contains_key(map), "the {map} map was never used: {sizes:?}");
    }
    assert!(sizes.values().all(|size| *size == 0.0), "entries left behind: {sizes:?}");
    let cleanups: BTreeMap<String, usize> = churn::CLEANUPS
        .lock()
        .unwrap()
        .iter()
        .filter(|(object, _)| object.starts_with("default/"))
        .map(|(object, runs)| (object.clone(), *runs))
        .collect();
    assert_eq!(cleanups.len(), 2 * count + 2, "one cleanup per deleted object");
    let twice: Vec<_> = cleanups.iter().filter(|(_, runs)| **runs != 1).collect();
    assert!(twice.is_empty(), "cleanup ran more than once for {twice:?}");
    assert!(
        after as f64 <= settled as f64 * 1.1,
        "the operator's memory grew from {settled} KiB after one round to {after} KiB after two"
    );
    operator.stop(Duration::from_secs(30)).await;
}

/// Issue 21, items 3 and 10: a child deleted while its watch is down comes back when the watch
/// relists (after 410 Gone), though the parent waits for changes (`await_change`); and an
/// apply whose answer takes 5 s does not hold up another parent's child event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_converge_after_a_watch_outage_and_a_slow_apply_holds_up_no_one() {
    use kuberator::Operator as _;
    let server = MemoryServer::new();
    let client = server.client();
    kuberator_test::install_crd::<churn::Churn>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "outage").await.unwrap();
    let reconciler = churn::ChurnOperator.into_reconciler(client.clone());
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));
    let api: Api<churn::Churn> = Api::namespaced(client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let minute = Duration::from_secs(60);

    api.create(&PostParams::default(), &churn::new("steady", "kept")).await.unwrap();
    let child =
        wait_for(&maps, "steady-child", minute, "the child", |map| map.is_some()).await.unwrap().unwrap();

    // Every watch is cut and every version expired, and ConfigMaps can be neither watched
    // nor listed: the child is deleted while its watch is down, and the relist once the
    // watch is back must notice it is gone.
    server.refuse(Verb::Watch, "configmaps");
    server.refuse(Verb::List, "configmaps");
    server.expire_resource_versions();
    maps.delete("steady-child", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.clear_faults();
    let made =
        wait_for(&maps, "steady-child", Duration::from_secs(30), "the child to be made again", |made| {
            made.is_some_and(|made| made.metadata.uid != child.metadata.uid)
        })
        .await;
    assert!(made.is_ok(), "a child deleted during a watch outage never came back");

    // The answer to one parent's child apply takes 5 s; another parent's child, deleted by
    // hand meanwhile, is made again without waiting for it.
    server.delay_answer("slow-child", Duration::from_secs(5));
    api.create(&PostParams::default(), &churn::new("slow", "slow")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = std::time::Instant::now();
    maps.delete("steady-child", &Default::default()).await.unwrap();
    wait_for(&maps, "steady-child", minute, "the child to be made again", |map| map.is_some()).await.unwrap();
    let took = deleted.elapsed();
    assert!(took < Duration::from_secs(3), "another parent's child waited {took:?} on a slow apply");
    wait_for(&maps, "slow-child", minute, "the slow child", |map| map.is_some()).await.unwrap();
    operator.stop(Duration::from_secs(30)).await;
}

/// An operator that takes 100 ms per reconcile, one at a time, and notes when each object's
/// first reconcile started: for the queue's order and aging, in virtual time.
mod queued {
    use std::collections::BTreeMap;

    use kuberator::prelude::*;
    use tokio::time::Instant;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "queue.kuberator.dev", version = "v1", kind = "Queued", namespaced)]
    pub(crate) struct QueuedSpec {
        pub(crate) note: String,
    }

    #[derive(Operator)]
    #[kuberator(
        resource = Queued,
        finalizer = "queue.kuberator.dev/finalizer",
        concurrency = 1,
        controller_name = "queued-operator"
    )]
    pub(crate) struct QueuedOperator;

    impl QueuedOperator {
        async fn handle_apply(&self, queued: Arc<Queued>, _: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(apply(&queued).await)
        }

        async fn handle_cleanup(&self, _: Arc<Queued>, _: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }

    /// The same, under a name of its own: its metrics are apart from `QueuedOperator`'s
    /// while both tests run in this process.
    #[derive(Operator)]
    #[kuberator(
        resource = Queued,
        finalizer = "queue.kuberator.dev/finalizer",
        concurrency = 1,
        controller_name = "minutely-operator"
    )]
    pub(crate) struct MinutelyOperator;

    impl MinutelyOperator {
        async fn handle_apply(&self, queued: Arc<Queued>, _: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(apply(&queued).await)
        }

        async fn handle_cleanup(&self, _: Arc<Queued>, _: &Ctx<Self>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }

    /// Notes the start, takes 100 ms; requeues in a minute when the note says so.
    async fn apply(queued: &Queued) -> Action {
        STARTS.lock().unwrap().entry(queued.name_any()).or_insert_with(Instant::now);
        *RUNS.lock().unwrap().entry(queued.name_any()).or_default() += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if queued.spec.note == "every minute" {
            return Action::requeue(std::time::Duration::from_secs(60));
        }
        Action::await_change()
    }

    /// How many times each object was reconciled, by name.
    pub(crate) static RUNS: std::sync::Mutex<BTreeMap<String, usize>> =
        std::sync::Mutex::new(BTreeMap::new());

    /// When each object's first reconcile started, by name.
    pub(crate) static STARTS: std::sync::Mutex<BTreeMap<String, Instant>> =
        std::sync::Mutex::new(BTreeMap::new());

    pub(crate) fn new(name: &str) -> Queued {
        Queued::new(name, QueuedSpec { note: name.to_owned() })
    }

    pub(crate) fn runs(name: &str) -> usize {
        RUNS.lock().unwrap().get(name).copied().unwrap_or_default()
    }

    pub(crate) fn started(name: &str) -> Option<Instant> {
        STARTS.lock().unwrap().get(name).copied()
    }
}

/// Issue 23, item 2, in virtual time: 100 objects wait at start (one reconcile at a time,
/// 100 ms each). A new object 2 s in starts before the rest of them, and so do changes that
/// arrive at the controller's full throughput, until the waiting objects have aged 30 s: then
/// they go, and the last starts within the stated bound (aging + N / μ = 30 s + 10 s).
#[tokio::test(start_paused = true)]
async fn changes_go_before_the_initial_list_which_still_finishes_within_its_bound() {
    use kuberator::Operator as _;
    use tokio::time::Instant;
    let listed = 100;
    let server = MemoryServer::new();
    let client = server.client();
    kuberator_test::install_crd::<queued::Queued>(&client).await.unwrap();
    let api: Api<queued::Queued> = Api::namespaced(client.clone(), "default");
    for index in 0..listed {
        api.create(&PostParams::default(), &queued::new(&format!("listed-{index}"))).await.unwrap();
    }
    let start = Instant::now();
    let reconciler = queued::QueuedOperator.into_reconciler(client.clone());
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let listed_before =
        (0..listed).filter(|index| queued::started(&format!("listed-{index}")).is_some()).count();
    api.create(&PostParams::default(), &queued::new("fresh")).await.unwrap();
    let created = Instant::now();
    while queued::started("fresh").is_none() {
        assert!(created.elapsed() < Duration::from_secs(5), "the fresh object waited 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = queued::started("fresh").unwrap() - created;
    let listed_after =
        (0..listed).filter(|index| queued::started(&format!("listed-{index}")).is_some()).count();
    // At most the one running and the one handed to kube go before it.
    assert!(waited <= Duration::from_millis(300), "the fresh object waited {waited:?}");
    assert!(
        listed_after <= listed_before + 2,
        "{listed_before} listed objects had started, then {listed_after}"
    );
    assert!(
        listed_after < listed / 2,
        "the initial list was not held back: {listed_after} of {listed} started"
    );

    // Changes at the controller's full throughput: one new object per reconcile time.
    let loader = tokio::spawn({
        let api = api.clone();
        async move {
            for index in 0.. {
                api.create(&PostParams::default(), &queued::new(&format!("load-{index}"))).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let last_listed = loop {
        let starts: Vec<_> =
            (0..listed).filter_map(|index| queued::started(&format!("listed-{index}"))).collect();
        if starts.len() == listed {
            break starts.into_iter().max().unwrap() - start;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} of {listed} listed objects started",
            starts.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    loader.abort();
    // Held back while they aged (FIFO would have finished them by 12 s), then done within the bound.
    assert!(last_listed >= Duration::from_secs(30), "the last listed object started at {last_listed:?}");
    assert!(last_listed <= Duration::from_secs(42), "the last listed object started at {last_listed:?}");
    // A change that came before the listed objects aged went at once.
    let load_20 = queued::started("load-20").unwrap() - created;
    assert!(
        load_20 <= Duration::from_secs(3),
        "load-20, created about 2 s after fresh, started {load_20:?} after it"
    );

    let metrics = kuberator::telemetry::encode();
    let resyncs = "kuberator_queue_wait_seconds_count{controller=\"queued-operator\",priority=\"resync\"}";
    let line = metrics.lines().find(|line| line.starts_with(resyncs)).unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(line.rsplit(' ').next(), Some(listed.to_string().as_str()), "{line}");
    operator.stop(Duration::from_secs(30)).await;
}

/// A handler's `Action::requeue(60 s)` comes back as a resync a minute later (in virtual time),
/// once per minute, and its timer goes with the object.
#[tokio::test(start_paused = true)]
async fn a_periodic_requeue_comes_due_as_a_resync_and_leaves_with_its_object() {
    use kuberator::Operator as _;
    let server = MemoryServer::new();
    let client = server.client();
    kuberator_test::install_crd::<queued::Queued>(&client).await.unwrap();
    let api: Api<queued::Queued> = Api::namespaced(client.clone(), "default");
    let reconciler = queued::MinutelyOperator.into_reconciler(client.clone());
    let operator = Background::spawn(|shutdown| reconciler.start(Some(shutdown)));
    let mut minutely = queued::new("minutely");
    minutely.spec.note = "every minute".to_owned();
    api.create(&PostParams::default(), &minutely).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(queued::runs("minutely"), 1);
    let series = |name: &str| {
        let metrics = kuberator::telemetry::encode();
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let requeues = "kuberator_remembered_objects{controller=\"minutely-operator\",map=\"requeues\"}";
    assert_eq!(series(requeues), Some(1.0));
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(queued::runs("minutely"), 1, "requeued before its minute");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(queued::runs("minutely"), 2, "not requeued after its minute");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(queued::runs("minutely"), 3);

    api.delete("minutely", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(api.get_opt("minutely").await.unwrap().is_none(), "the finalizer was not removed");
    assert_eq!(series(requeues), Some(0.0), "the timer outlived its object");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(queued::runs("minutely"), 3);
    let resyncs = "kuberator_queue_wait_seconds_count{controller=\"minutely-operator\",priority=\"resync\"}";
    assert_eq!(series(resyncs), Some(2.0), "each requeue waited as a resync");
    operator.stop(Duration::from_secs(30)).await;
}
