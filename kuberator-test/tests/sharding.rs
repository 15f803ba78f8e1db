//! Sharding across replicas (`--shards`), as separate processes of the baton operator against
//! the real control plane (server-side sharded watches on): three replicas share 600 objects,
//! each reconciled by exactly the replica that holds its shard's Lease; a replica killed with
//! SIGKILL has its shards taken over within the lease duration plus a retry period; scaling
//! 3 → 2 → 3 moves shards with no object ever in two replicas' handlers at once; and every
//! deletion is cleaned up exactly once; and a replica cut off from the API server (a proxy
//! that blocks) stops before its shards are taken over. Sharded by namespace, a namespace's
//! objects and their children stay on one replica, and move together. The journal of
//! handler starts and ends (as in the chaos suite) is the audit. The tests run one at a time: their timing
//! bounds assume the machine is not shared with another set of replicas.

#![allow(clippy::print_stderr)] // a failed test prints the replicas' logs

mod support;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::ResourceExt as _;
use kube::api::ApiResource;
use kube::api::DeleteParams;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::ListParams;
use kube::api::ObjectMeta;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kuberator::shard::ShardKey;
use kuberator::shard::ShardRange;
use support::baton::Entry;
use support::baton::LEASE;
use support::baton::Replica;
use support::baton::Test;
use support::baton::baton;
use support::baton::setup;

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SHARDS: u32 = 12;
/// Shorter timing than the defaults, so that a takeover after a kill takes seconds, with room
/// for a busy machine: an 8 s lease, a 6 s renew deadline, a retry every second.
const TIMING: [&str; 6] = ["--lease-duration", "8s", "--renew-deadline", "6s", "--retry-period", "1s"];
const LEASE_DURATION: Duration = Duration::from_secs(8);
const RENEW_DEADLINE: Duration = Duration::from_secs(6);
const RETRY_PERIOD: Duration = Duration::from_secs(1);

fn start(test: &Test, identity: &'static str) -> Replica {
    start_as(test, identity, &test.kubeconfig)
}

/// A replica, started again on other ports if the ones it drew were taken in between (another
/// process can bind a free port before it does).
fn start_as(test: &Test, identity: &'static str, kubeconfig: &std::path::Path) -> Replica {
    start_with(test, identity, kubeconfig, &[], &[])
}

/// Like [`start_as`], with more arguments and environment variables.
fn start_with(
    test: &Test,
    identity: &'static str,
    kubeconfig: &std::path::Path,
    more: &[&str],
    env: &[(&str, &str)],
) -> Replica {
    let args = [&["--shards", "12", "--concurrency", "8"][..], &TIMING[..], more].concat();
    for _ in 0..3 {
        let mut replica = Replica::spawn_env(test, identity, kubeconfig, &args, env);
        std::thread::sleep(Duration::from_millis(300));
        let exited = replica.child.try_wait().unwrap().is_some();
        if !(exited && replica.log().contains("Address already in use")) {
            return replica;
        }
    }
    panic!("{identity} could not bind its ports three times");
}

/// Who holds each shard now, by the shard Leases (expired or released ones count as no one).
async fn holders(test: &Test) -> BTreeMap<u32, String> {
    let leases = test
        .leases
        .list(&ListParams::default().labels(&format!("kuberator.io/shard-group={LEASE}")))
        .await
        .unwrap();
    let prefix = format!("{LEASE}-shard-{SHARDS}-");
    leases
        .items
        .into_iter()
        .filter_map(|lease| {
            let shard = lease.name_any().strip_prefix(&prefix)?.parse().ok()?;
            let holder = lease.spec?.holder_identity.filter(|holder| !holder.is_empty())?;
            Some((shard, holder))
        })
        .collect()
}

/// Waits until every shard is held and each of `identities` holds its equal share, as the
/// Leases and each replica's `kuberator_shards_held` say.
async fn wait_balanced(test: &Test, replicas: &[&Replica], within: Duration) -> Duration {
    let started = Instant::now();
    let share = f64::from(SHARDS) / replicas.len() as f64;
    let series = format!("kuberator_shards_held{{group=\"{}/{LEASE}\"}}", test.namespace);
    loop {
        let held = holders(test).await;
        let mut balanced = held.len() == SHARDS as usize;
        for replica in replicas {
            let leases = held.values().filter(|holder| *holder == replica.identity).count() as f64;
            balanced &= leases == share && replica.metric(&series).await == Some(share);
        }
        if balanced {
            return started.elapsed();
        }
        let logs: Vec<String> = replicas.iter().map(|replica| replica.log()).collect();
        assert!(started.elapsed() < within, "not balanced after {within:?}: {held:?}\n{}", logs.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shard of an object's uid.
fn shard_of(uid: &str) -> u32 {
    (0..SHARDS)
        .find(|shard| ShardRange::of_shards(ShardKey::Uid, SHARDS, [*shard]).contains(Some(uid), None))
        .unwrap()
}

/// Creates `names`, 32 at a time.
async fn create_all(test: &Test, names: &[String]) {
    futures::stream::iter(names)
        .for_each_concurrent(32, |name| async move {
            test.batons.create(&PostParams::default(), &baton(&test.namespace, name, 0)).await.unwrap();
        })
        .await;
}

/// Waits until every object in `names` has a status for its generation; returns who wrote
/// each.
async fn wait_reconciled(test: &Test, names: &[String], replicas: &[&Replica]) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = test.batons.list(&ListParams::default()).await.unwrap();
        let done: HashMap<String, String> = list
            .items
            .iter()
            .filter(|baton| baton.data["status"]["observedGeneration"].as_i64() == baton.metadata.generation)
            .filter_map(|baton| {
                Some((baton.name_any(), baton.data["status"]["reconciledBy"].as_str()?.to_owned()))
            })
            .collect();
        if names.iter().all(|name| done.contains_key(name)) {
            return done;
        }
        let logs: Vec<String> = replicas.iter().map(|replica| replica.log()).collect();
        assert!(
            Instant::now() < deadline,
            "{} of {} reconciled after 120 s\n{}",
            done.len(),
            names.len(),
            logs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits up to 30 s for `replica`'s `series` to read `expected`.
async fn wait_metric(replica: &Replica, series: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = replica.metric(series).await;
        if value == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {series} is {value:?}, not {expected}\n{}",
            replica.identity,
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shards each replica worked on, from its log: `(unix ms, shards)` each time it started
/// on a set, and an empty set each time it stopped on losing some. (A set that drains, before a
/// move or on shutdown, is still held, and still its replica's.)
fn working_sets(replica: &Replica) -> Vec<(u128, Vec<u32>)> {
    let mut sets = Vec::new();
    for line in replica.log().lines() {
        let Some((stamp, rest)) = line.split_once(' ') else { continue };
        let Ok(at) = stamp.parse::<jiff::Timestamp>() else { continue };
        let at = u128::try_from(at.as_millisecond()).unwrap();
        if let Some(shards) = rest.split_once("reconciling shards shards={").map(|(_, shards)| shards) {
            let shards = shards.split('}').next().unwrap_or_default();
            sets.push((at, shards.split(", ").filter_map(|shard| shard.parse().ok()).collect()));
        } else if rest.contains("lost shards") {
            sets.push((at, Vec::new()));
        }
    }
    sets
}

/// Every handler started while its replica was working on the object's shard (by its uid), by
/// the replica's own log (the journal and the logs share the machine's clock).
fn assert_each_run_in_its_replicas_shards(
    journal: &[Entry],
    replicas: &[&Replica],
    uids: &HashMap<String, String>,
) {
    assert_each_run_in_the_shard(journal, replicas, |object| {
        let name = object.split_once('/').map_or("", |(_, name)| name);
        uids.get(name).map(|uid| shard_of(uid))
    });
}

/// Every handler started while its replica was working on the shard that `shard` gives its
/// object (`namespace/name`; `None`: not one of the test's).
fn assert_each_run_in_the_shard(
    journal: &[Entry],
    replicas: &[&Replica],
    shard: impl Fn(&str) -> Option<u32>,
) {
    let sets: HashMap<&str, Vec<(u128, Vec<u32>)>> =
        replicas.iter().map(|replica| (replica.identity, working_sets(replica))).collect();
    for entry in journal.iter().filter(|entry| entry.what == "apply-start" || entry.what == "cleanup") {
        let Some(shard) = shard(&entry.object) else { continue };
        let Some(sets) = sets.get(entry.identity.as_str()) else { continue };
        let working = sets.iter().rev().find(|(at, _)| *at <= entry.at).map(|(_, shards)| shards.as_slice());
        assert!(
            working.is_some_and(|shards| shards.contains(&shard)),
            "{} ran {} of {} (shard {shard}) at {} while working on {working:?}",
            entry.identity,
            entry.what,
            entry.object,
            entry.at
        );
    }
}

/// No object was ever in the handlers of two replicas at once: per object, each replica's
/// handler runs do not overlap another replica's. A run lasts from its start to its end; one
/// with no end was cancelled, and lasts until its replica's next `lost shards` line (the
/// handlers are cancelled right after it: a cut-off replica's handler hangs on its write
/// until then), or, when it was killed, until its last line in the journal.
fn assert_never_two_at_once(journal: &[Entry], replicas: &[&Replica]) {
    let mut runs: HashMap<&str, Vec<(u128, u128, &str)>> = HashMap::new();
    let mut open: HashMap<(&str, &str), u128> = HashMap::new();
    let last_line: HashMap<&str, u128> = journal.iter().fold(HashMap::new(), |mut last, entry| {
        last.insert(entry.identity.as_str(), entry.at);
        last
    });
    let losses: HashMap<&str, Vec<u128>> = replicas
        .iter()
        .map(|replica| {
            let sets = working_sets(replica);
            (
                replica.identity,
                sets.into_iter().filter(|(_, shards)| shards.is_empty()).map(|(at, _)| at).collect(),
            )
        })
        .collect();
    let cut_off = |identity: &str, start: u128| {
        let lost = losses.get(identity).and_then(|losses| losses.iter().find(|at| **at >= start).copied());
        lost.unwrap_or(last_line[identity])
    };
    for entry in journal {
        let key = (entry.object.as_str(), entry.identity.as_str());
        match entry.what.as_str() {
            "apply-start" => {
                open.insert(key, entry.at);
            }
            "apply-end" => {
                let start = open.remove(&key).unwrap_or(entry.at);
                runs.entry(key.0).or_default().push((start, entry.at, key.1));
            }
            _ => runs.entry(key.0).or_default().push((entry.at, entry.at, key.1)),
        }
    }
    for ((object, identity), start) in open {
        runs.entry(object).or_default().push((start, cut_off(identity, start), identity));
    }
    for (object, mut runs) in runs {
        runs.sort_unstable();
        for pair in runs.windows(2) {
            let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
            assert!(
                first == second || end < start,
                "{object}: {first} ran until {end}, {second} started at {start}: {runs:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_objects_through_a_kill_and_a_rescale() {
    let _serial = SERIAL.lock().await;
    let test = setup("sharding").await;
    let a = start(&test, "replica-a");
    let b = start(&test, "replica-b");
    let mut c = start(&test, "replica-c");
    wait_balanced(&test, &[&a, &b, &c], Duration::from_secs(60)).await;

    // 1. 600 objects, each reconciled only by the replica working on its shard.
    let names: Vec<String> = (0..600).map(|index| format!("b{index:03}")).collect();
    create_all(&test, &names).await;
    wait_reconciled(&test, &names, &[&a, &b, &c]).await;
    let uids: HashMap<String, String> = test
        .batons
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|baton| (baton.name_any(), baton.uid().unwrap()))
        .collect();
    assert_each_run_in_its_replicas_shards(&test.journal(), &[&a, &b, &c], &uids);
    assert_never_two_at_once(&test.journal(), &[&a, &b, &c]);
    let held = holders(&test).await;
    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for name in &names {
        *per_replica.entry(held[&shard_of(&uids[name])].clone()).or_default() += 1;
    }
    assert_eq!(per_replica.len(), 3, "every replica has objects: {per_replica:?}");
    for replica in [&a, &b, &c] {
        let log = replica.log();
        assert!(log.contains("the API server filters each replica's watches by its shards"), "{log}");
    }
    for replica in [&a, &b, &c] {
        // Each caches only its shards' objects (server-side filtered, and filtered here).
        let expected = per_replica[replica.identity] as f64;
        wait_metric(replica, "kuberator_cached_objects{kind=\"Baton\"}", expected).await;
    }

    // 2. kill -9 of replica-c: its shards are taken over within the lease duration plus a retry
    //    period (20 % jitter) and a second of slack, and every change converges.
    let lost: Vec<u32> = holders(&test)
        .await
        .into_iter()
        .filter(|(_, holder)| holder == "replica-c")
        .map(|(shard, _)| shard)
        .collect();
    c.signal("KILL");
    let killed = Instant::now();
    c.exited(Duration::from_secs(10)).await;
    let took = wait_balanced(&test, &[&a, &b], Duration::from_secs(60)).await;
    let bound = LEASE_DURATION + RETRY_PERIOD.mul_f64(1.2) + Duration::from_secs(1);
    assert!(
        took <= bound,
        "shards {lost:?} of the killed replica taken over after {took:?} (bound {bound:?})"
    );
    eprintln!("the killed replica's shards taken over after {:?}", killed.elapsed());
    let patch = serde_json::json!({ "spec": { "note": "after the kill" } });
    let batons = &test.batons;
    futures::stream::iter(&names)
        .for_each_concurrent(32, |name| {
            let patch = &patch;
            async move {
                batons.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
            }
        })
        .await;
    let written = wait_reconciled(&test, &names, &[&a, &b]).await;
    assert!(written.values().all(|by| by != "replica-c"), "every change is reconciled by a live replica");

    // 3. Scale 2 → 3 → 2 with changes arriving meanwhile.
    let trickle = {
        let (batons, names) = (test.batons.clone(), names.clone());
        tokio::spawn(async move {
            for round in 0.. {
                let name = &names[(round * 7) % names.len()];
                let patch = serde_json::json!({ "spec": { "note": format!("trickle {round}") } });
                batons.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut d = start(&test, "replica-d");
    wait_balanced(&test, &[&a, &b, &d], Duration::from_secs(60)).await;
    d.signal("TERM");
    assert_eq!(d.exited(Duration::from_secs(30)).await.code(), Some(0), "{}", d.log());
    // A graceful leave releases at once: no lease to wait out.
    let took = wait_balanced(&test, &[&a, &b], Duration::from_secs(60)).await;
    assert!(took < LEASE_DURATION, "a graceful leave took {took:?} to hand over");
    trickle.abort();
    wait_reconciled(&test, &names, &[&a, &b]).await;
    assert_never_two_at_once(&test.journal(), &[&a, &b, &c, &d]);
    assert_each_run_in_its_replicas_shards(&test.journal(), &[&a, &b, &c, &d], &uids);

    // 4. Delete everything: each object cleaned up exactly once, no finalizer left.
    test.batons.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !test.batons.list(&ListParams::default()).await.unwrap().items.is_empty() {
        assert!(Instant::now() < deadline, "objects left after 120 s\n{}\n{}", a.log(), b.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let journal = test.journal();
    for name in &names {
        let object = format!("{}/{name}", test.namespace);
        let cleanups =
            journal.iter().filter(|entry| entry.what == "cleanup" && entry.object == object).count();
        assert_eq!(cleanups, 1, "{name} cleaned up {cleanups} times");
    }
    assert_never_two_at_once(&journal, &[&a, &b, &c, &d]);
    drop((a, b, c, d));
    test.cleanup().await;
}

/// replica-a reaches the API server through a proxy that then blocks for 20 s: it stops
/// reconciling its shards at its renew deadline, before replica-b and replica-c may take them
/// (once the Leases have run out); back, it gets its share again. No object is ever in two
/// replicas' handlers at once, and every change converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_stops_before_its_shards_are_taken_over() {
    let _serial = SERIAL.lock().await;
    let test = setup("sharding-partition").await;
    let control_plane = kuberator_test::ControlPlane::shared().await.unwrap();
    let proxy = kuberator_test::Proxy::in_front_of(control_plane).await.unwrap();
    let proxied = test.dir().join("through-the-proxy");
    proxy.write_kubeconfig(control_plane, &proxied).unwrap();
    let a = start_as(&test, "replica-a", &proxied);
    let b = start(&test, "replica-b");
    let c = start(&test, "replica-c");
    wait_balanced(&test, &[&a, &b, &c], Duration::from_secs(60)).await;
    let names: Vec<String> = (0..60).map(|index| format!("p{index:02}")).collect();
    create_all(&test, &names).await;
    wait_reconciled(&test, &names, &[&a, &b, &c]).await;
    let trickle = {
        let (batons, names) = (test.batons.clone(), names.clone());
        tokio::spawn(async move {
            for round in 0.. {
                let patch = serde_json::json!({ "spec": { "note": format!("trickle {round}") } });
                let name = &names[round % names.len()];
                batons.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One of replica-a's handlers is in flight when the partition starts (it waits 3 s, then
    // its status write hangs): it is cancelled when replica-a stops, and runs again in the
    // replica that takes its shard over.
    let held = holders(&test).await;
    let list = test.batons.list(&ListParams::default()).await.unwrap();
    let slow = list.items.iter().find(|baton| held[&shard_of(&baton.uid().unwrap())] == "replica-a").unwrap();
    let slow_object = format!("{}/{}", test.namespace, slow.name_any());
    let patch = serde_json::json!({ "spec": { "applySeconds": 3 } });
    let patched =
        test.batons.patch(&slow.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let generation = patched.metadata.generation.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !test.journal().iter().any(|entry| {
        entry.object == slow_object && entry.what == "apply-start" && entry.generation == generation
    }) {
        assert!(Instant::now() < deadline, "replica-a never started {slow_object}\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    proxy.block();
    let partitioned = Instant::now();
    let series = format!("kuberator_shards_held{{group=\"{}/{LEASE}\"}}", test.namespace);
    let (mut stopped, mut taken) = (None, None);
    while stopped.is_none() || taken.is_none() {
        assert!(partitioned.elapsed() < Duration::from_secs(30), "no handover\n{}\n{}", a.log(), b.log());
        if stopped.is_none() && a.metric(&series).await == Some(0.0) {
            stopped = Some(partitioned.elapsed());
        }
        if taken.is_none() && holders(&test).await.values().all(|holder| holder != "replica-a") {
            taken = Some(partitioned.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stopped, taken) = (stopped.unwrap(), taken.unwrap());
    assert!(
        stopped < taken,
        "replica-a still worked {stopped:?} into the partition; its shards were taken at {taken:?}"
    );
    assert!(stopped <= RENEW_DEADLINE + RETRY_PERIOD * 2, "replica-a stopped only after {stopped:?}");
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(partitioned.elapsed())).await;
    proxy.unblock();
    wait_balanced(&test, &[&a, &b, &c], Duration::from_secs(60)).await;
    trickle.abort();
    wait_reconciled(&test, &names, &[&a, &b, &c]).await;
    assert!(a.log().contains("lost shards"), "{}", a.log());
    let journal = test.journal();
    // replica-a started it (again after a failed write, maybe) and never ended it; another
    // replica ran it next.
    let runs: Vec<(&str, &str)> = journal
        .iter()
        .filter(|entry| entry.object == slow_object && entry.generation >= generation)
        .map(|entry| (entry.identity.as_str(), entry.what.as_str()))
        .collect();
    let cut_off = runs.iter().take_while(|run| **run == ("replica-a", "apply-start")).count();
    assert!(
        cut_off > 0 && matches!(runs.get(cut_off), Some((other, "apply-start")) if *other != "replica-a"),
        "{slow_object}: replica-a's handler was cut off and another replica ran it next: {runs:?}"
    );
    assert_never_two_at_once(&journal, &[&a, &b, &c]);
    drop((a, b, c));
    test.cleanup().await;
}

/// `--shard-key namespace`, in the process of two controllers (`BATON_RELAY`: Batons, and
/// Relays that each own a ConfigMap): twelve namespaces, one in each shard, so that each
/// replica's share of shards is a share of namespaces. Every Baton and Relay is reconciled
/// by the replica holding its namespace's shard, each Relay's child is made by it, and each
/// replica caches its namespaces' objects and children only (the children's watch is
/// sharded too). Scaled 2 → 3, the namespaces that move take their children along: the new
/// replica caches them, and a child deleted by hand there is made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharding_by_namespace_keeps_a_namespace_and_its_children_on_one_replica() {
    let _serial = SERIAL.lock().await;
    let test = setup("sharding-ns").await;
    let relay_env = [("BATON_RELAY", "1")];
    let printed =
        std::process::Command::new(support::baton::OPERATOR).arg("crd").envs(relay_env).output().unwrap();
    assert!(printed.status.success(), "{}", String::from_utf8_lossy(&printed.stderr));
    for document in String::from_utf8(printed.stdout).unwrap().split("\n---\n") {
        let crd: CustomResourceDefinition = serde_yaml_ng::from_str(document).unwrap();
        kuberator_test::install_crd_object(&test.client, &crd).await.unwrap();
    }

    // One namespace per shard, named after the test's own.
    let range = |shard| ShardRange::of_shards(ShardKey::Namespace, SHARDS, [shard]);
    let mut by_shard: BTreeMap<u32, String> = BTreeMap::new();
    for index in 0.. {
        let name = format!("{}-{index}", test.namespace);
        let shard = (0..SHARDS).find(|shard| range(*shard).contains(None, Some(&name))).unwrap();
        by_shard.entry(shard).or_insert(name);
        if by_shard.len() == SHARDS as usize {
            break;
        }
    }
    let namespace_api: Api<Namespace> = Api::all(test.client.clone());
    for name in by_shard.values() {
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        namespace_api.create(&PostParams::default(), &namespace).await.unwrap();
    }
    let shard_of_namespace: HashMap<&str, u32> =
        by_shard.iter().map(|(shard, namespace)| (namespace.as_str(), *shard)).collect();
    let watched = [
        "--shard-key",
        "namespace",
        "--namespaces",
        &by_shard.values().cloned().collect::<Vec<_>>().join(","),
    ];
    let start = |identity| start_with(&test, identity, &test.kubeconfig, &watched, &relay_env);
    let a = start("replica-a");
    let b = start("replica-b");
    wait_balanced(&test, &[&a, &b], Duration::from_secs(60)).await;

    // Two Batons and a Relay in each namespace.
    let baton_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kuberator.dev", "v1", "Baton"),
        "batons",
    );
    let relay_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kuberator.dev", "v1", "Relay"),
        "relays",
    );
    for namespace in by_shard.values() {
        let batons: Api<DynamicObject> =
            Api::namespaced_with(test.client.clone(), namespace, &baton_resource);
        for index in 0..2 {
            batons.create(&PostParams::default(), &baton(namespace, &format!("b{index}"), 0)).await.unwrap();
        }
        let relays: Api<DynamicObject> =
            Api::namespaced_with(test.client.clone(), namespace, &relay_resource);
        let relay =
            DynamicObject::new("r", &relay_resource).data(serde_json::json!({"spec": {"note": namespace}}));
        relays.create(&PostParams::default(), &relay).await.unwrap();
    }
    let kinds = Kinds {
        client: &test.client,
        batons: &baton_resource,
        relays: &relay_resource,
        namespaces: &shard_of_namespace,
    };
    kinds.wait_each_with_its_holder(&test, &[&a, &b]).await;
    kinds.assert_each_caches_its_namespaces(&test, &[&a, &b]).await;

    // 2 → 3: a third of the namespaces move to replica-c, their children with them.
    let c = start("replica-c");
    wait_balanced(&test, &[&a, &b, &c], Duration::from_secs(60)).await;
    kinds.wait_each_with_its_holder(&test, &[&a, &b, &c]).await;
    kinds.assert_each_caches_its_namespaces(&test, &[&a, &b, &c]).await;
    let held = holders(&test).await;
    let moved = by_shard
        .iter()
        .find(|(shard, _)| held[shard] == "replica-c")
        .map(|(_, namespace)| namespace)
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(test.client.clone(), moved);
    let before = maps.get("r-relay").await.unwrap();
    maps.delete("r-relay", &DeleteParams::default()).await.unwrap();
    kuberator_test::wait_for(&maps, "r-relay", Duration::from_secs(30), "the child made again", |child| {
        child.is_some_and(|child| child.metadata.uid != before.metadata.uid)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", c.log()));

    // Each Baton's handler ran only in the replica working on its namespace's shard.
    let journal = test.journal();
    let shard = |object: &str| {
        object.split_once('/').and_then(|(namespace, _)| shard_of_namespace.get(namespace).copied())
    };
    assert_each_run_in_the_shard(&journal, &[&a, &b, &c], shard);
    assert_never_two_at_once(&journal, &[&a, &b, &c]);

    // Delete everything: each Baton cleaned up once, no finalizer left.
    for namespace in by_shard.values() {
        for resource in [&baton_resource, &relay_resource] {
            let api: Api<DynamicObject> = Api::namespaced_with(test.client.clone(), namespace, resource);
            api.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while kinds.count().await > 0 {
        assert!(Instant::now() < deadline, "objects left after 60 s\n{}\n{}\n{}", a.log(), b.log(), c.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let journal = test.journal();
    for namespace in by_shard.values() {
        for index in 0..2 {
            let object = format!("{namespace}/b{index}");
            let cleanups =
                journal.iter().filter(|entry| entry.what == "cleanup" && entry.object == object).count();
            assert_eq!(cleanups, 1, "{object} cleaned up {cleanups} times");
        }
    }
    drop((a, b, c));
    for namespace in by_shard.values() {
        kuberator_test::delete_namespace(&test.client, namespace).await.unwrap();
    }
    test.cleanup().await;
}

/// The children of the two controllers, by the label their shared watch selects.
const CHILDREN: &str = "app.kubernetes.io/managed-by in (baton-operator,relay-operator)";

/// The Batons and Relays of the namespace-sharding test, across its namespaces.
struct Kinds<'a> {
    client: &'a kube::Client,
    batons: &'a ApiResource,
    relays: &'a ApiResource,
    /// Each namespace's shard.
    namespaces: &'a HashMap<&'a str, u32>,
}

impl Kinds<'_> {
    fn all(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), resource)
    }

    /// The test's objects of `resource`, with the shard of each one's namespace.
    async fn list(&self, resource: &ApiResource) -> Vec<(DynamicObject, u32)> {
        let list = self.all(resource).list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter_map(|object| {
                let shard = *self.namespaces.get(object.namespace()?.as_str())?;
                Some((object, shard))
            })
            .collect()
    }

    async fn count(&self) -> usize {
        self.list(self.batons).await.len() + self.list(self.relays).await.len()
    }

    /// Waits until every Baton and Relay says it was last reconciled, at its generation, by the
    /// replica holding its namespace's shard, and each Relay's child exists, owned by it.
    async fn wait_each_with_its_holder(&self, test: &Test, replicas: &[&Replica]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held = holders(test).await;
            let mut wrong = Vec::new();
            for (resource, by) in [(self.batons, "reconciledBy"), (self.relays, "relayedBy")] {
                for (object, shard) in self.list(resource).await {
                    let current =
                        object.data["status"]["observedGeneration"].as_i64() == object.metadata.generation;
                    let who = object.data["status"][by].as_str();
                    if !current || who != held.get(&shard).map(String::as_str) {
                        wrong.push(format!(
                            "{}/{} by {who:?}",
                            object.namespace().unwrap(),
                            object.name_any()
                        ));
                    }
                }
            }
            for (relay, _) in self.list(self.relays).await {
                let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &relay.namespace().unwrap());
                let child = maps.get_opt("r-relay").await.unwrap();
                let owner =
                    child.and_then(|child| Some(child.metadata.owner_references?.first()?.uid.clone()));
                if owner != relay.metadata.uid {
                    wrong.push(format!("{}/r-relay owned by {owner:?}", relay.namespace().unwrap()));
                }
            }
            if wrong.is_empty() {
                return;
            }
            let logs: Vec<String> = replicas.iter().map(|replica| replica.log()).collect();
            assert!(
                Instant::now() < deadline,
                "not with their holders after 60 s: {wrong:?}\n{}",
                logs.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Each replica caches the Batons, Relays and children (ConfigMaps) of the namespaces it
    /// holds, and nothing of the others'. (Several namespaces are watched cluster-wide, so a
    /// replica's cache also holds what other tests left in namespaces in its shards: counted
    /// from the server too.)
    async fn assert_each_caches_its_namespaces(&self, test: &Test, replicas: &[&Replica]) {
        let children = ApiResource::erase::<ConfigMap>(&());
        let sources = [
            ("Baton", self.batons, ListParams::default()),
            ("Relay", self.relays, ListParams::default()),
            ("ConfigMap", &children, ListParams::default().labels(CHILDREN)),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held = holders(test).await;
            let mut wrong = Vec::new();
            for replica in replicas {
                let shards =
                    held.iter().filter(|(_, holder)| *holder == replica.identity).map(|(shard, _)| *shard);
                let range = ShardRange::of_shards(ShardKey::Namespace, SHARDS, shards);
                for (kind, resource, params) in &sources {
                    let listed = self.all(resource).list(params).await.unwrap().items;
                    let expected = listed
                        .iter()
                        .filter(|object| range.contains(None, object.namespace().as_deref()))
                        .count();
                    let series = format!("kuberator_cached_objects{{kind=\"{kind}\"}}");
                    let cached = replica.metric(&series).await;
                    if cached != Some(expected as f64) {
                        wrong.push(format!("{} caches {cached:?} {kind}s, not {expected}", replica.identity));
                    }
                }
            }
            if wrong.is_empty() {
                return;
            }
            let logs: Vec<String> = replicas.iter().map(|replica| replica.log()).collect();
            assert!(Instant::now() < deadline, "after 30 s: {wrong:?}\n{}", logs.join("\n"));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
