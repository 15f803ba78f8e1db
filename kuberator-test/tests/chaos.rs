//! Faults against the real control plane, each scenario asserting the invariants a user
//! relies on: every live object converged (observedGeneration == generation), every deleted
//! object gone, no finalizer stranded, cleanup once per object. Each prints a `chaos:` line
//! with its figures (the README's reliability table quotes them).
//!
//! `KUBERATOR_CHAOS_OBJECTS` (default 200) and `KUBERATOR_CHAOS_BLOCK_SECONDS` (default 30)
//! size the run.

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use kube::Api;
use kube::api::DeleteParams;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kuberator::Reconcile as _;
use kuberator_test::Background;
use kuberator_test::ControlPlane;
use kuberator_test::Proxy;
use support::Probe;
use support::ProbeSpec;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Lists the Probes of `namespace` until `done` holds for all of them, or panics after `timeout`.
async fn wait_all(api: &Api<Probe>, what: &str, timeout: Duration, done: impl Fn(&[Probe]) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let probes = api.list(&ListParams::default()).await.unwrap().items;
        if done(&probes) {
            return;
        }
        let converged = probes.iter().filter(|p| converged(p)).count();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {converged} of {} converged",
            probes.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn converged(probe: &Probe) -> bool {
    probe.status.as_ref().and_then(|status| status.observed_generation) == probe.metadata.generation
}

/// Create, update and delete of many objects while a proxy cuts the operator's connections
/// every 1.5 s, and blocks them once for a while in the middle of the updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_every_one_and_a_half_seconds_and_blocked_once() {
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
    let operator = Background::spawn(|shutdown| reconciler.start_concurrent(Some(8), Some(shutdown)));
    let proxy = std::sync::Arc::new(proxy);
    let cutting = {
        let proxy = std::sync::Arc::clone(&proxy);
        tokio::spawn(async move {
            let mut cuts = 0_u32;
            loop {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                proxy.cut();
                cuts += 1;
                if cuts > 10_000 {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let names: Vec<String> = (0..objects).map(|i| format!("p{i:03}")).collect();

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
    wait_all(&probes, "every object applied", Duration::from_secs(300), |all| {
        all.len() == names.len() && all.iter().all(converged)
    })
    .await;
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
    wait_all(&probes, "every update applied after the block", Duration::from_secs(300), |all| {
        all.iter().all(|probe| converged(probe) && probe.metadata.generation == Some(2))
    })
    .await;
    let recovery = unblocked.elapsed();

    // Delete.
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |name| {
            let probes = probes.clone();
            async move {
                probes.delete(&name, &DeleteParams::default()).await.unwrap();
            }
        })
        .await;
    wait_all(
        &probes,
        "every object deleted (no finalizer stranded)",
        Duration::from_secs(300),
        <[Probe]>::is_empty,
    )
    .await;
    let total = started.elapsed();
    cutting.abort();
    operator.stop(Duration::from_secs(30)).await;

    {
        let journal = journal.lock().unwrap();
        let cleaned: BTreeMap<&String, &u32> = journal.cleanups.iter().collect();
        let twice: Vec<_> = cleaned.iter().filter(|(_, count)| ***count != 1).collect();
        assert_eq!(cleaned.len(), names.len(), "every object was cleaned up");
        assert!(twice.is_empty(), "cleanup ran more than once for {twice:?}");
        assert!(journal.applies_without_finalizer.is_empty(), "{:?}", journal.applies_without_finalizer);
        let errors = journal.errors.len();
        let removals = journal.errors.iter().filter(|e| e.contains("could not remove finalizer")).count();
        eprintln!(
            "chaos: cuts every 1.5s + one {block:?} block | {objects} objects | created and applied in {created:.1?} \
             | recovered {recovery:.1?} after the block | all deleted after {total:.1?} | {} connections | {errors} \
             reconcile errors ({removals} finalizer removals retried without cleanup) | cleanups once each | 0 \
             stranded finalizers",
            proxy.accepted(),
            created = created,
            recovery = recovery,
            total = total,
        );
    }
    kuberator_test::delete_namespace(&admin, &namespace).await.unwrap();
}
