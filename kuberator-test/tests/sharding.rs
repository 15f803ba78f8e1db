//! Sharding across replicas (`--shards`), as separate processes of the baton operator against
//! the real control plane (server-side sharded watches on): three replicas share 600 objects,
//! each reconciled by exactly the replica that holds its shard's Lease; a replica killed with
//! SIGKILL has its shards taken over within the lease duration plus a retry period; scaling
//! 3 → 2 → 3 moves shards with no object ever in two replicas' handlers at once; and every
//! deletion is cleaned up exactly once. The journal of handler starts and ends (as in the
//! chaos suite) is the audit.

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

const SHARDS: u32 = 12;
/// Short timing, so that a takeover after a kill takes seconds: a 6 s lease, a 4 s renew
/// deadline, a retry every second.
const TIMING: [&str; 6] = ["--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s"];
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RETRY_PERIOD: Duration = Duration::from_secs(1);

fn start(test: &Test, identity: &'static str) -> Replica {
    let args = [&["--shards", "12", "--concurrency", "8"][..], &TIMING[..]].concat();
    Replica::start_with(test, identity, &args)
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
    let test = setup("sharding").await;
    let a = start(&test, "replica-a");
    let b = start(&test, "replica-b");
    let mut c = start(&test, "replica-c");
    wait_balanced(&test, &[&a, &b, &c], Duration::from_secs(60)).await;

    // 1. 600 objects, each reconciled by exactly the replica that holds its shard.
    let names: Vec<String> = (0..600).map(|index| format!("b{index:03}")).collect();
    create_all(&test, &names).await;
    let written = wait_reconciled(&test, &names, &[&a, &b, &c]).await;
    let held = holders(&test).await;
    let uids: HashMap<String, String> = test
        .batons
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|baton| (baton.name_any(), baton.uid().unwrap()))
        .collect();
    let journal = test.journal();
    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for name in &names {
        let object = format!("{}/{name}", test.namespace);
        let owner = &held[&shard_of(&uids[name])];
        let ran: Vec<&str> = journal
            .iter()
            .filter(|entry| entry.object == object)
            .map(|entry| entry.identity.as_str())
            .collect();
        assert!(
            ran.iter().all(|identity| identity == owner),
            "{name}: handlers ran on {ran:?}; its shard's holder is {owner}"
        );
        assert_eq!(&written[name], owner, "{name}: status written by another replica");
        *per_replica.entry(owner.clone()).or_default() += 1;
    }
    assert_eq!(per_replica.len(), 3, "every replica has objects: {per_replica:?}");
    for replica in [&a, &b, &c] {
        let cached = replica.metric("kuberator_cached_objects{kind=\"Baton\"}").await.unwrap_or_default();
        assert_eq!(
            cached as usize, per_replica[replica.identity],
            "{} caches only its shards' objects (server-side filtered)",
            replica.identity
        );
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
