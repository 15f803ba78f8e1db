//! Sharding across replicas (`--shards`), as separate processes of the baton operator against
//! the real control plane (server-side sharded watches on): three replicas share 600 objects,
//! each reconciled by exactly the replica that holds its shard's Lease; a replica killed with
//! SIGKILL has its shards taken over within the lease duration plus a retry period; scaling
//! 3 → 2 → 3 moves shards with no object ever in two replicas' handlers at once; and every
//! deletion is cleaned up exactly once; and a replica cut off from the API server (a proxy
//! that blocks) stops before its shards are taken over. The journal of handler starts and
//! ends (as in the chaos suite) is the audit. The tests run one at a time: their timing
//! bounds assume the machine is not shared with another set of replicas.

#![allow(clippy::print_stderr)] // a failed test prints the replicas' logs

mod support;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::api::ListParams;
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
    let args = [&["--shards", "12", "--concurrency", "8"][..], &TIMING[..]].concat();
    for _ in 0..3 {
        let mut replica = Replica::spawn(test, identity, kubeconfig, &args);
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

/// Every handler started while its replica was working on the object's shard, by the replica's
/// own log (the journal and the logs share the machine's clock).
fn assert_each_run_in_its_replicas_shards(
    journal: &[Entry],
    replicas: &[&Replica],
    uids: &HashMap<String, String>,
) {
    let sets: HashMap<&str, Vec<(u128, Vec<u32>)>> =
        replicas.iter().map(|replica| (replica.identity, working_sets(replica))).collect();
    for entry in journal.iter().filter(|entry| entry.what == "apply-start" || entry.what == "cleanup") {
        let name = entry.object.split_once('/').map_or("", |(_, name)| name);
        let Some(uid) = uids.get(name) else { continue };
        let shard = shard_of(uid);
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
/// handler runs (start to end, or to the replica's last line when it was killed in one) do
/// not overlap another replica's.
fn assert_never_two_at_once(journal: &[Entry]) {
    let mut runs: HashMap<&str, Vec<(u128, u128, &str)>> = HashMap::new();
    let mut open: HashMap<(&str, &str), u128> = HashMap::new();
    let last_line: HashMap<&str, u128> = journal.iter().fold(HashMap::new(), |mut last, entry| {
        last.insert(entry.identity.as_str(), entry.at);
        last
    });
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
        runs.entry(object).or_default().push((start, last_line[identity], identity));
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
    assert_never_two_at_once(&test.journal());
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
    assert_never_two_at_once(&test.journal());
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
    assert_never_two_at_once(&journal);
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
    assert_never_two_at_once(&test.journal());
    drop((a, b, c));
    test.cleanup().await;
}
