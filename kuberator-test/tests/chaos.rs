//! Faults against the real control plane, each scenario asserting the invariants a user
//! relies on: every live object converged (observedGeneration == generation), every deleted
//! object gone, no finalizer stranded, cleanup once per object, and no reconcile storm (from
//! the operator's metrics: successful reconciles per change stay near what a quiet run
//! needs, and a settled operator does not reconcile at all). Each prints a `chaos:` line with
//! its figures (RELIABILITY.md quotes them).
//!
//! The scenarios run one at a time (they share the machine's two cores and the in-process
//! operator's metrics). `KUBERATOR_CHAOS_OBJECTS` (default 200) and
//! `KUBERATOR_CHAOS_BLOCK_SECONDS` (default 30) size the run.

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use kube::Api;
use kube::api::DeleteParams;
use kube::api::DynamicObject;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use kuberator::Reconcile as _;
use kuberator_test::Background;
use kuberator_test::ControlPlane;
use kuberator_test::Proxy;
use serde::de::DeserializeOwned;
use support::Probe;
use support::ProbeSpec;
use support::baton::Entry;
use support::baton::Replica;
use support::baton::Test;

/// One scenario at a time: they share two cores, and the in-process operator's metrics.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a settled operator is watched for reconciles it should not run.
const QUIET: Duration = Duration::from_secs(3);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Lists the objects of `api` until `done` holds for all of them, or panics after `timeout`
/// saying how many had converged.
async fn wait_all<K>(
    api: &Api<K>,
    what: &str,
    timeout: Duration,
    converged: impl Fn(&K) -> bool,
    done: impl Fn(&[K]) -> bool,
) where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + timeout;
    loop {
        let listed = api.list(&ListParams::default()).await.map(|list| list.items);
        // The API server may be down for a moment in a scenario; the deadline still holds.
        if let Ok(objects) = &listed
            && done(objects)
        {
            return;
        }
        let converged = listed.as_ref().map(|all| all.iter().filter(|o| converged(o)).count());
        let total = listed.as_ref().map(Vec::len);
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {converged:?} of {total:?} converged"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn converged(probe: &Probe) -> bool {
    probe.status.as_ref().and_then(|status| status.observed_generation) == probe.metadata.generation
}

fn baton_converged(baton: &DynamicObject) -> bool {
    baton.data["status"]["observedGeneration"].as_i64() == baton.metadata.generation
}

/// The in-process operator's reconciles so far, from its metrics: successes and errors.
fn reconciles() -> (f64, f64) {
    let metrics = kuberator::telemetry::encode();
    let series = |result: &str| {
        let name = format!("kuberator_reconciles_total{{controller=\"probe-operator\",result=\"{result}\"}}");
        kuberator_test::metric(&metrics, &name).unwrap_or(0.0)
    };
    (series("success"), series("error"))
}

/// No reconcile storm once settled: with nothing changing for [`QUIET`], nothing reconciles.
async fn assert_quiet(what: &str, count: impl AsyncFn() -> (f64, f64)) {
    let before = count().await;
    tokio::time::sleep(QUIET).await;
    let after = count().await;
    assert_eq!(
        before, after,
        "{what}: the operator kept reconciling with nothing changing (successes, errors)"
    );
}

/// Successful reconciles per change, bounded: a create, an update or a delete takes 1 (the
/// reconcile that adds the finalizer also applies). Faults add failed attempts, not successful ones, except
/// for a write that succeeded on the server while its answer was cut; a storm would be
/// many times this.
fn assert_no_storm(scenario: &str, successes: f64, expected: f64) -> f64 {
    let ratio = successes / expected;
    assert!(
        ratio <= 1.25,
        "{scenario}: {successes} successful reconciles where a quiet run needs {expected} (x{ratio:.2})"
    );
    ratio
}

/// Asserts that `handle_cleanup` ran exactly once for each of `names`.
fn assert_cleaned_once<'a>(cleanups: impl IntoIterator<Item = (&'a String, u32)>, names: &[String]) {
    let cleaned: BTreeMap<&String, u32> = cleanups.into_iter().collect();
    let not_once: Vec<_> = cleaned.iter().filter(|(_, count)| **count != 1).collect();
    assert!(not_once.is_empty(), "cleanup did not run exactly once for {not_once:?}");
    let missing: Vec<_> = names.iter().filter(|name| !cleaned.contains_key(name)).collect();
    assert!(missing.is_empty(), "cleanup never ran for {missing:?}");
}

/// The end of an in-process scenario: once every object is gone, the operator stays quiet
/// for [`QUIET`], then stops; cleanup ran once per object and no apply ran without the
/// finalizer. Returns the successful reconciles and the errors since `before`, and the
/// successes' ratio to a quiet run's `per_object` each.
async fn settle(
    scenario: &str,
    operator: Background,
    journal: &std::sync::Mutex<support::Journal>,
    names: &[String],
    before: (f64, f64),
    per_object: f64,
) -> (f64, f64, f64) {
    assert_quiet(&format!("{scenario}, after the deletes"), async || reconciles()).await;
    operator.stop(Duration::from_secs(30)).await;
    let (successes, errors) = reconciles();
    let (successes, errors) = (successes - before.0, errors - before.1);
    let ratio = assert_no_storm(scenario, successes, per_object * names.len() as f64);
    let journal = journal.lock().unwrap();
    assert_cleaned_once(journal.cleanups.iter().map(|(name, count)| (name, *count)), names);
    assert!(journal.applies_without_finalizer.is_empty(), "{:?}", journal.applies_without_finalizer);
    (successes, errors, ratio)
}

fn names(objects: u64) -> Vec<String> {
    (0..objects).map(|i| format!("p{i:03}")).collect()
}

/// Deletes every one of `names`, 16 at a time (one already gone is fine), and waits until
/// all are gone: no finalizer stranded.
async fn delete_all<K>(api: &Api<K>, names: &[String], converged: impl Fn(&K) -> bool)
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| async move {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => panic!("deleting {name}: {error}"),
            }
        })
        .await;
    let what = "every object deleted (no finalizer stranded)";
    wait_all(api, what, Duration::from_secs(300), converged, <[K]>::is_empty).await;
}

/// Waits until all `count` objects of `api` exist and have converged.
async fn wait_converged<K>(api: &Api<K>, what: &str, count: usize, converged: impl Fn(&K) -> bool + Copy)
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    wait_all(api, what, Duration::from_secs(300), converged, |all| {
        all.len() == count && all.iter().all(converged)
    })
    .await;
}

/// Create, update and delete of many objects while a proxy cuts the operator's connections
/// every 1.5 s, and blocks them once for a while in the middle of the updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_every_one_and_a_half_seconds_and_blocked_once() {
    let _serial = SERIAL.lock().await;
    let objects = setting("KUBERATOR_CHAOS_OBJECTS", 200);
    let block = Duration::from_secs(setting("KUBERATOR_CHAOS_BLOCK_SECONDS", 30));
    let admin = kuberator_test::admin_client().await;
    let control_plane = ControlPlane::shared().await.unwrap();
    kuberator_test::install_crd::<Probe>(&admin).await.unwrap();
    let namespace = kuberator_test::test_namespace(&admin, "chaos-cuts").await.unwrap();
    let probes: Api<Probe> = Api::namespaced(admin.clone(), &namespace);

    // The operator reaches the API server only through the proxy.
    let proxy = Proxy::in_front_of(control_plane).await.unwrap();
    let through = proxy.client(control_plane).await.unwrap();
    let operated = support::Setup {
        client: through.clone(),
        namespace: namespace.clone(),
        api: Api::namespaced(through, &namespace),
    };
    let (reconciler, journal) = operated.operator();
    let before = reconciles();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(8), Some(shutdown)));
    let proxy = Arc::new(proxy);
    let cutting = {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                proxy.cut();
            }
        })
    };
    let started = Instant::now();
    let names = names(objects);

    // Create.
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| {
            let probes = probes.clone();
            async move {
                let spec = ProbeSpec { message: format!("{name} v1"), ..ProbeSpec::default() };
                probes.create(&PostParams::default(), &Probe::new(&name, spec)).await.unwrap();
            }
        })
        .await;
    wait_converged(&probes, "every object applied", names.len(), converged).await;
    let created = started.elapsed();

    // Update, with the operator cut off for `block` halfway through.
    let half = names.len() / 2;
    let update = |name: String| {
        let probes = probes.clone();
        async move {
            let patch = serde_json::json!({ "spec": { "message": format!("{name} v2") } });
            probes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };
    futures::stream::iter(names[..half].iter().cloned()).for_each_concurrent(16, update).await;
    proxy.block();
    futures::stream::iter(names[half..].iter().cloned()).for_each_concurrent(16, update).await;
    tokio::time::sleep(block).await;
    proxy.unblock();
    let unblocked = Instant::now();
    wait_all(&probes, "every update applied after the block", Duration::from_secs(300), converged, |all| {
        all.iter().all(|probe| converged(probe) && probe.metadata.generation == Some(2))
    })
    .await;
    let recovery = unblocked.elapsed();

    // Delete.
    delete_all(&probes, &names, converged).await;
    let total = started.elapsed();
    cutting.abort();
    // Per object: 2 to create, 1 to update, 1 to delete.
    let (successes, errors, ratio) = settle("cuts", operator, &journal, &names, before, 3.0).await;
    let removals =
        journal.lock().unwrap().errors.iter().filter(|e| e.contains("could not remove finalizer")).count();
    eprintln!(
        "chaos: cuts every 1.5s + one {block:?} block | {objects} objects | created and applied in {created:.1?} | \
         recovered {recovery:.1?} after the block | all deleted after {total:.1?} | {} connections | {errors} \
         reconcile errors ({removals} finalizer removals retried without cleanup) | {successes} successful \
         reconciles (x{ratio:.2} of a quiet run) | cleanups once each | 0 stranded finalizers",
        proxy.accepted(),
    );
    kuberator_test::delete_namespace(&admin, &namespace).await.unwrap();
}

/// Creates `name`, retrying while the API server is away; returns the failed attempts.
async fn create_until_done(probes: &Api<Probe>, name: &str) -> u32 {
    let spec = ProbeSpec { message: format!("{name} v1"), ..ProbeSpec::default() };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = 0;
    loop {
        match probes.create(&PostParams::default(), &Probe::new(name, spec.clone())).await {
            Ok(_) => return failed,
            // A create whose answer was lost may have been stored.
            Err(kube::Error::Api(status)) if status.code == 409 => return failed,
            Err(error) => {
                failed += 1;
                assert!(Instant::now() < deadline, "could not create {name} in 120 s: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// kube-apiserver killed with SIGKILL halfway through a bulk create, kept down 5 s, and
/// started again on the same etcd: the operator reconnects and converges everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_killed_and_restarted_during_a_bulk_create() {
    let _serial = SERIAL.lock().await;
    kuberator_test::init_tracing();
    let objects = setting("KUBERATOR_CHAOS_OBJECTS", 200);
    // A control plane of its own: the shared one serves the other test binaries' tests.
    let mut control_plane = ControlPlane::start().await.expect("a control plane of the scenario's own");
    let client = control_plane.client().await.unwrap();
    kuberator_test::install_crd::<Probe>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, "chaos-restart").await.unwrap();
    let probes: Api<Probe> = Api::namespaced(client.clone(), &namespace);
    let operated =
        support::Setup { client: client.clone(), namespace: namespace.clone(), api: probes.clone() };
    let (reconciler, journal) = operated.operator();
    let before = reconciles();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(8), Some(shutdown)));
    let names = names(objects);

    let created = Arc::new(AtomicUsize::new(0));
    let creating = {
        let (probes, names, created) = (probes.clone(), names.clone(), Arc::clone(&created));
        tokio::spawn(async move {
            let failed = AtomicUsize::new(0);
            futures::stream::iter(names)
                .for_each_concurrent(16, |name| {
                    let (probes, created, failed) = (&probes, &created, &failed);
                    async move {
                        let attempts = create_until_done(probes, &name).await;
                        failed.fetch_add(attempts as usize, Ordering::SeqCst);
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await;
            failed.into_inner()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while created.load(Ordering::SeqCst) < names.len() / 2 {
        assert!(Instant::now() < deadline, "the first half of the creates did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_kill = created.load(Ordering::SeqCst);
    let ready_again = control_plane.restart_apiserver(Duration::from_secs(5)).await.unwrap();
    let restarted = Instant::now();
    let failed_creates = creating.await.unwrap();
    wait_converged(&probes, "every object applied after the restart", names.len(), converged).await;
    let recovery = restarted.elapsed();

    delete_all(&probes, &names, converged).await;
    // Per object: 2 to create, 1 to delete.
    let (successes, errors, ratio) = settle("restart", operator, &journal, &names, before, 2.0).await;
    eprintln!(
        "chaos: kube-apiserver SIGKILL after {at_kill} of {objects} creates, down 5s, ready {ready_again:.1?} \
     after its restart | {failed_creates} creates retried | all applied {recovery:.1?} after it was ready \
     | {errors} reconcile errors | {successes} successful reconciles (x{ratio:.2} of a quiet run) | cleanups \
     once each | 0 stranded finalizers"
    );
    control_plane.stop();
}

/// What the second writer wrote last to each object: (label, annotation).
type Written = HashMap<String, (Option<String>, Option<String>)>;

/// Patches labels and annotations of `names`, in turn, at about 15 writes a second, until
/// `stop`; an object already gone is skipped. Returns how many writes it made, and the last
/// value of each.
async fn second_writer(probes: Api<Probe>, names: Vec<String>, stop: Arc<AtomicBool>) -> (u64, Written) {
    let mut ticker = tokio::time::interval(Duration::from_millis(1000 / 15));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = Written::new();
    let mut writes = 0_u64;
    while !stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        let name = &names[(writes as usize * 37) % names.len()];
        let value = format!("w{writes}");
        let (patch, label) = if writes.is_multiple_of(2) {
            (serde_json::json!({ "metadata": { "labels": { "chaos.kuberator.dev/writer": value } } }), true)
        } else {
            (
                serde_json::json!({ "metadata": { "annotations": { "chaos.kuberator.dev/writer": value } } }),
                false,
            )
        };
        match probes.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                let entry = written.entry(name.clone()).or_default();
                if label { entry.0 = Some(value) } else { entry.1 = Some(value) }
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => panic!("the second writer could not patch {name}: {error}"),
        }
        writes += 1;
    }
    (writes, written)
}

/// A second writer patches labels and annotations of the same objects at about 15 writes a
/// second while their specs change: its writes reconcile nothing, every spec change exactly
/// once, and the operator never overwrites what the other writer wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_patches_labels_and_annotations_while_specs_change() {
    let _serial = SERIAL.lock().await;
    let objects = setting("KUBERATOR_CHAOS_OBJECTS", 200);
    let test = support::setup("chaos-writer").await;
    let (reconciler, journal) = test.operator();
    let before = reconciles();
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(8), Some(shutdown)));
    let names = names(objects);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(second_writer(test.api.clone(), names.clone(), Arc::clone(&stop)));

    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| {
            let probes = test.api.clone();
            async move {
                let spec = ProbeSpec { message: format!("{name} v1"), ..ProbeSpec::default() };
                probes.create(&PostParams::default(), &Probe::new(&name, spec)).await.unwrap();
            }
        })
        .await;
    wait_converged(&test.api, "every object applied", names.len(), converged).await;

    // Only the second writer, for 5 s: nothing to reconcile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writer_only = reconciles();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(reconciles(), writer_only, "label and annotation writes reconciled (successes, errors)");

    // Two rounds of spec changes, each of every object, with the writer still on.
    let mut per_round = Vec::new();
    for round in 2..=3 {
        let (successes_before, _) = reconciles();
        futures::stream::iter(names.iter().cloned())
            .for_each_concurrent(16, |name| {
                let probes = test.api.clone();
                async move {
                    let patch = serde_json::json!({ "spec": { "message": format!("{name} v{round}") } });
                    probes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
                }
            })
            .await;
        wait_all(&test.api, "every spec change applied", Duration::from_secs(300), converged, |all| {
            all.iter().all(|probe| converged(probe) && probe.metadata.generation == Some(round))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        per_round.push(reconciles().0 - successes_before);
    }
    stop.store(true, Ordering::SeqCst);
    let (writes, written) = writer.await.unwrap();
    let rate = writes as f64 / started.elapsed().as_secs_f64();
    assert!(rate >= 10.0, "the second writer made only {rate:.1} writes a second");
    for expected in &per_round {
        assert_eq!(
            *expected,
            names.len() as f64,
            "reconciles per round of {} spec changes: {per_round:?}",
            names.len()
        );
    }

    // Nothing the other writer wrote was lost.
    let label = "chaos.kuberator.dev/writer";
    for probe in test.api.list(&ListParams::default()).await.unwrap() {
        let name = kube::ResourceExt::name_any(&probe);
        let (wrote_label, wrote_annotation) = written.get(&name).cloned().unwrap_or_default();
        assert_eq!(
            probe.metadata.labels.unwrap_or_default().get(label),
            wrote_label.as_ref(),
            "label of {name}"
        );
        assert_eq!(
            probe.metadata.annotations.unwrap_or_default().get(label),
            wrote_annotation.as_ref(),
            "annotation of {name}"
        );
        assert!(probe.status.is_some_and(|status| status.message == Some(format!("{name} v3"))));
    }

    // Delete, with the writer on again.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(second_writer(test.api.clone(), names.clone(), Arc::clone(&stop)));
    delete_all(&test.api, &names, converged).await;
    stop.store(true, Ordering::SeqCst);
    let (more_writes, _) = writer.await.unwrap();
    // Per object: 2 to create, 2 spec changes, 1 to delete.
    let (successes, errors, ratio) = settle("second writer", operator, &journal, &names, before, 4.0).await;
    eprintln!(
        "chaos: second writer at {rate:.1} writes/s | {objects} objects, 2 rounds of spec changes | {} label and \
         annotation writes, 0 reconciles from them, none lost | reconciles per round: {per_round:?} | {errors} \
         reconcile errors | {successes} successful reconciles (x{ratio:.2} of a quiet run) | cleanups once each | \
         0 stranded finalizers",
        writes + more_writes
    );
    test.cleanup().await;
}

/// Waits until every one of `names` exists and its status says it is reconciled.
async fn wait_batons(test: &Test, what: &str, names: &[String]) {
    wait_converged(&test.batons, what, names.len(), baton_converged).await;
}

/// Per object, how often the journal says `what` ran, for `identity` if given.
fn journal_counts(journal: &[Entry], what: &str, identity: Option<&str>) -> HashMap<String, u32> {
    let mut counts = HashMap::new();
    for entry in journal {
        if entry.what == what && identity.is_none_or(|identity| entry.identity == identity) {
            let name = entry.object.rsplit('/').next().unwrap_or_default().to_owned();
            *counts.entry(name).or_default() += 1;
        }
    }
    counts
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

/// SIGTERM while slow handlers run: they finish, their statuses are written, the process
/// exits 0 well within the drain deadline, and a restarted replica does the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_slow_handlers_run_lets_them_finish() {
    let _serial = SERIAL.lock().await;
    let test = support::baton::setup("chaos-sigterm").await;
    let args = ["--concurrency", "4", "--drain-deadline", "20s"];
    let mut replica = Replica::start_with(&test, "replica-a", &args);
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    replica.wait_ready().await;
    let names: Vec<String> = (0..12).map(|i| format!("slow{i:02}")).collect();
    for name in &names {
        test.create_slow(name, 2).await;
    }
    // Four handlers in flight (started, not ended).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let journal = test.journal();
        let started: u32 = journal_counts(&journal, "apply-start", None).values().sum();
        let ended: u32 = journal_counts(&journal, "apply-end", None).values().sum();
        if started.saturating_sub(ended) == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "never four handlers in flight\n{}", replica.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    replica.signal("TERM");
    let terminated = Instant::now();
    let signalled_at = unix_millis();
    let status = replica.exited(Duration::from_secs(30)).await;
    let took = terminated.elapsed();
    assert_eq!(status.code(), Some(0), "a drain that finishes is a clean exit\n{}", replica.log());
    assert!(
        took < Duration::from_secs(10),
        "exited after {took:?}, near the drain deadline\n{}",
        replica.log()
    );
    let journal = test.journal();
    let started = journal_counts(&journal, "apply-start", None);
    let ended = journal_counts(&journal, "apply-end", None);
    assert_eq!(started, ended, "every handler that started finished\n{}", replica.log());
    let finished_after = journal.iter().filter(|e| e.what == "apply-end" && e.at > signalled_at).count();
    assert!(finished_after >= 4, "the four in flight finished after the signal: {journal:?}");
    for name in ended.keys() {
        let baton = test.batons.get(name).await.unwrap();
        assert!(baton_converged(&baton), "{name}: its handler ended, so its status is written");
    }
    assert_eq!(test.holder().await, None, "the lease is released");
    let left = names.len() - ended.len();

    // Nothing lost: the next replica reconciles the ones that had not started.
    let replica = Replica::start_with(&test, "replica-b", &args);
    wait_batons(&test, "the rest reconciled by the next replica", &names).await;
    eprintln!(
        "chaos: SIGTERM with 4 handlers of 2s in flight | exit 0 after {took:.1?} (drain deadline 20s) | \
         {finished_after} finished after the signal, 0 cancelled, lease released | the {left} not started were \
         reconciled by the next replica"
    );
    drop(replica);
    test.cleanup().await;
}

/// kill -9 of the operator halfway through 200 creates, then a restart (same identity, as
/// the kubelet restarts a container): everything converges, every delete runs cleanup
/// once, and no finalizer is stranded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_creates_then_a_restart() {
    let _serial = SERIAL.lock().await;
    let objects = setting("KUBERATOR_CHAOS_OBJECTS", 200);
    let test = support::baton::setup("chaos-kill").await;
    let args = ["--concurrency", "8"];
    let mut first = Replica::start_with(&test, "pod-0", &args);
    test.wait_holder("pod-0", Duration::from_secs(30)).await;
    first.wait_ready().await;
    let names = names(objects);

    let created = Arc::new(AtomicUsize::new(0));
    let creating = {
        let (batons, namespace, names, created) =
            (test.batons.clone(), test.namespace.clone(), names.clone(), Arc::clone(&created));
        tokio::spawn(async move {
            futures::stream::iter(names)
                .for_each_concurrent(4, |name| {
                    let (batons, namespace, created) = (&batons, &namespace, &created);
                    async move {
                        // One in ten takes a second, so that some are cut short.
                        let baton = support::baton::baton(namespace, &name, u64::from(name.ends_with('0')));
                        batons.create(&PostParams::default(), &baton).await.unwrap();
                        created.fetch_add(1, Ordering::SeqCst);
                        // About 40 a second, so that the operator keeps up and is killed
                        // in the middle of its work, not before it.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
                .await;
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while created.load(Ordering::SeqCst) < names.len() / 2 {
        assert!(Instant::now() < deadline, "the first half of the creates did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.signal("KILL");
    first.exited(Duration::from_secs(10)).await;
    let at_kill = created.load(Ordering::SeqCst);
    let journal = test.journal();
    let by_first: u32 = journal_counts(&journal, "apply-end", Some("pod-0")).values().sum();
    let cut_short = journal_counts(&journal, "apply-start", Some("pod-0")).values().sum::<u32>() - by_first;
    let second = Replica::start_with(&test, "pod-0", &args);
    let restarted = Instant::now();
    creating.await.unwrap();
    wait_batons(&test, "every object reconciled after the restart", &names).await;
    let recovery = restarted.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = second.reconciles().await;

    delete_all(&test.batons, &names, baton_converged).await;
    let count = async || (second.reconciles().await, 0.0);
    assert_quiet("after the deletes", count).await;
    let successes = second.reconciles().await;
    // The restarted process: 1 per object to create (or to look again at one the first
    // process had done), and 1 per delete.
    let ratio = assert_no_storm("kill -9", successes, 2.0 * names.len() as f64);
    let cleanups = journal_counts(&test.journal(), "cleanup", None);
    assert_cleaned_once(cleanups.iter().map(|(name, count)| (name, *count)), &names);
    eprintln!(
        "chaos: kill -9 after {at_kill} of {objects} creates ({by_first} reconciled by then, {cut_short} handlers \
         cut short) | restarted: all \
         reconciled {recovery:.1?} later ({settled} reconciles) | {successes} successful reconciles in the new \
         process (x{ratio:.2} of a quiet run) | cleanups once each | 0 stranded finalizers"
    );
    drop(second);
    test.cleanup().await;
}

/// One status write seen by the audit: who wrote it, for which generation, at which
/// resourceVersion.
#[derive(Debug, Clone, PartialEq)]
struct StatusWrite {
    name: String,
    by: String,
    generation: i64,
    resource_version: u64,
}

/// Watches the Batons and records every change of `status` (who reconciled, which
/// generation), in the order the API server stored them.
fn audit_status_writes(
    batons: Api<DynamicObject>,
) -> (tokio::task::JoinHandle<()>, Arc<std::sync::Mutex<Vec<StatusWrite>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<StatusWrite>::new()));
    let recording = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        let mut last: HashMap<String, (String, i64)> = HashMap::new();
        let mut stream = std::pin::pin!(watcher(batons, watcher::Config::default()).applied_objects());
        while let Some(Ok(baton)) = stream.next().await {
            let status = &baton.data["status"];
            let (Some(by), Some(generation)) =
                (status["reconciledBy"].as_str(), status["observedGeneration"].as_i64())
            else {
                continue;
            };
            let name = kube::ResourceExt::name_any(&baton);
            let now = (by.to_owned(), generation);
            if last.get(&name) != Some(&now) {
                // The real API server's resourceVersions are etcd revisions: one order for all.
                let resource_version =
                    baton.metadata.resource_version.as_deref().unwrap_or("0").parse().unwrap();
                recording.lock().unwrap().push(StatusWrite {
                    name: name.clone(),
                    by: now.0.clone(),
                    generation,
                    resource_version,
                });
                last.insert(name, now);
            }
        }
    });
    (task, seen)
}

/// The leader's connections are cut off (a partition) for longer than its lease: it stops
/// reconciling at its renew deadline, before the standby may take over; the standby takes
/// over once the lease runs out; the old leader, back, stands by. An audit of every status
/// write, and the replicas' journal, show that no two replicas ever reconciled at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_before_the_standby_takes_over() {
    let _serial = SERIAL.lock().await;
    let test = support::baton::setup("chaos-partition").await;
    let control_plane = ControlPlane::shared().await.unwrap();
    let proxy = Proxy::in_front_of(control_plane).await.unwrap();
    let proxied = test.dir().join("through-the-proxy");
    proxy.write_kubeconfig(control_plane, &proxied).unwrap();
    let (auditing, writes) = audit_status_writes(test.batons.clone());

    let a = Replica::start_as(&test, "replica-a", &proxied);
    test.wait_holder("replica-a", Duration::from_secs(30)).await;
    a.wait_ready().await;
    let b = Replica::start(&test, "replica-b");
    b.wait_ready().await;
    let names: Vec<String> = (0..20).map(|i| format!("b{i:02}")).collect();
    for name in &names {
        test.create(name).await;
    }
    wait_batons(&test, "every object reconciled by the leader", &names).await;

    // A spec change every 200 ms, all through the partition.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (batons, names, stop) = (test.batons.clone(), names.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut changes = 0_usize;
            while !stop.load(Ordering::SeqCst) {
                let patch = serde_json::json!({ "spec": { "note": format!("change {changes}") } });
                let name = &names[changes % names.len()];
                batons.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
                changes += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            changes
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    proxy.block();
    let partitioned = Instant::now();
    let partitioned_at = unix_millis();
    // When replica-a stops leading (its own metrics, served locally, say so), and when
    // replica-b takes the Lease.
    let lease = format!("{}/{}", test.namespace, support::baton::LEASE);
    let (mut stepped_down, mut took_over) = (None, None);
    while stepped_down.is_none() || took_over.is_none() {
        assert!(partitioned.elapsed() < Duration::from_secs(40), "no handover\n{}\n{}", a.log(), b.log());
        if stepped_down.is_none() && a.leading(&lease).await == Some(0.0) {
            stepped_down = Some(partitioned.elapsed());
        }
        if took_over.is_none() && test.holder().await.as_deref() == Some("replica-b") {
            took_over = Some(partitioned.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stepped_down, took_over) = (stepped_down.unwrap(), took_over.unwrap());
    assert!(
        stepped_down < took_over,
        "replica-a still led {stepped_down:?} into the partition; replica-b took over at {took_over:?}"
    );
    tokio::time::sleep(Duration::from_secs(25).saturating_sub(partitioned.elapsed())).await;
    proxy.unblock();
    let healed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let changes = trickle.await.unwrap();
    wait_batons(&test, "every change reconciled by the new leader", &names).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    auditing.abort();

    // The journal: the old leader's last handler ran before the new leader's first, and
    // within its renew deadline (10 s) of the partition.
    let journal = test.journal();
    let last_a = journal.iter().filter(|e| e.identity == "replica-a").map(|e| e.at).max().unwrap();
    let first_b = journal.iter().filter(|e| e.identity == "replica-b").map(|e| e.at).min().unwrap();
    assert!(
        last_a < first_b,
        "replica-a ran a handler at {last_a}, after replica-b's first at {first_b}\n{}\n{}",
        a.log(),
        b.log()
    );
    assert!(
        last_a < partitioned_at + u128::from(u32::try_from(stepped_down.as_millis()).unwrap()),
        "replica-a ran a handler after it stopped leading\n{}",
        a.log()
    );
    assert!(a.log().contains("lost leadership"), "{}", a.log());
    assert_eq!(a.leading(&lease).await, Some(0.0), "replica-a stands by after the partition healed");

    // The audit of status writes: all of replica-a's before all of replica-b's.
    let writes = writes.lock().unwrap().clone();
    let by =
        |who: &str| writes.iter().filter(|w| w.by == who).map(|w| w.resource_version).collect::<Vec<_>>();
    let (by_a, by_b) = (by("replica-a"), by("replica-b"));
    assert!(!by_a.is_empty() && !by_b.is_empty(), "{writes:?}");
    assert!(
        by_a.iter().max() < by_b.iter().min(),
        "a status write of replica-a came after one of replica-b: {writes:?}"
    );
    let after_heal: Vec<_> = journal
        .iter()
        .filter(|e| {
            e.identity == "replica-a"
                && e.at > partitioned_at + healed.duration_since(partitioned).as_millis()
        })
        .collect();
    assert!(after_heal.is_empty(), "replica-a reconciled after the partition healed: {after_heal:?}");
    let gap = Duration::from_millis(u64::try_from(first_b - last_a).unwrap());
    eprintln!(
        "chaos: leader partitioned 25s | {changes} spec changes meanwhile | replica-a stopped leading \
         {stepped_down:.1?} into the partition (renew deadline 10s), replica-b took the lease after \
         {took_over:.1?} | replica-b's first handler {gap:.1?} after replica-a's last | status writes audited: \
         {} by replica-a, then {} by replica-b, none interleaved",
        by_a.len(),
        by_b.len()
    );
    drop((a, b));
    test.cleanup().await;
}
