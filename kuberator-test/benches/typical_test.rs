//! A typical operator test, timed on the in-memory API server and on the real control
//! plane, side by side: install the CRD, start the operator, create an object, wait until it
//! is Ready, delete it, wait until it is gone, stop the operator.
//!
//! `cargo bench -p kuberator-test --bench typical_test` runs 20 rounds of each, alternating
//! which server goes first, and prints medians with min–max and the ratio. Waits use watches
//! (`await_condition`), not polling, so the figure is the servers' and the operator's.
//! `KUBERATOR_BENCH_ROUNDS` sets the rounds (CI runs 2 as a smoke).
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use kube::Api;
use kube::runtime::wait::await_condition;
use kuberator::prelude::*;
use kuberator_test::Background;
use kuberator_test::TestCluster;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "bench.kuberator.dev", version = "v1", kind = "Chime", namespaced, status = "ChimeStatus")]
pub struct ChimeSpec {
    pub note: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ChimeStatus {
    pub rung: Option<String>,
    pub observed_generation: Option<i64>,
    pub conditions: Conditions,
}

impl ObserveGeneration for ChimeStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator)]
#[kuberator(resource = Chime, finalizer = "chimes.bench.kuberator.dev/cleanup", caching = Strict, namespaces = ["bench-typical"])]
pub struct ChimeOperator;

impl ChimeOperator {
    async fn handle_apply(&self, chime: Arc<Chime>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let status = ChimeStatus { rung: Some(chime.spec.note.clone()), ..ChimeStatus::default() };
        ctx.update_status(&chime, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _chime: Arc<Chime>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

fn ready(chime: Option<&Chime>) -> bool {
    chime.and_then(|chime| chime.status.as_ref()).is_some_and(|status| {
        status.conditions.get("Ready").is_some_and(|ready| ready.status == "True")
            && status.observed_generation.is_some()
    })
}

/// One typical test on `cluster`; returns how long it took.
async fn typical_test(cluster: &TestCluster) -> Duration {
    let started = Instant::now();
    let client = cluster.client().await.expect("a client");
    kuberator_test::install_crd::<Chime>(&client).await.expect("the CRD installs");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if namespaces.get_opt("bench-typical").await.expect("namespaces read").is_none() {
        let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "bench-typical"}}))
            .expect("a namespace");
        namespaces.create(&Default::default(), &namespace).await.expect("the namespace is created");
    }
    let operator = Background::spawn({
        let client = client.clone();
        move |shutdown| ChimeOperator.into_reconciler(client).start(Some(shutdown))
    });
    let chimes: Api<Chime> = Api::namespaced(client.clone(), "bench-typical");
    let chime = Chime::new("ding", ChimeSpec { note: "A4".into() });
    chimes.create(&Default::default(), &chime).await.expect("created");
    await_condition(chimes.clone(), "ding", ready).await.expect("Ready");
    chimes.delete("ding", &Default::default()).await.expect("deleted");
    await_condition(chimes.clone(), "ding", |chime: Option<&Chime>| chime.is_none()).await.expect("gone");
    operator.stop(Duration::from_secs(30)).await;
    started.elapsed()
}

fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(samples[0]), ms(samples[samples.len() - 1]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize =
        std::env::var("KUBERATOR_BENCH_ROUNDS").ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(20);
    let real = TestCluster::real().await.expect("the control plane must start");
    // Warm both: the first run of each pays for connection set-up and the CRD's first install.
    typical_test(&TestCluster::in_memory()).await;
    typical_test(&real).await;
    let mut in_memory = Vec::new();
    let mut on_real = Vec::new();
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer machine.
        if round % 2 == 0 {
            in_memory.push(typical_test(&TestCluster::in_memory()).await);
            on_real.push(typical_test(&real).await);
        } else {
            on_real.push(typical_test(&real).await);
            in_memory.push(typical_test(&TestCluster::in_memory()).await);
        }
    }
    let (memory_median, memory_min, memory_max) = summary(&mut in_memory);
    let (real_median, real_min, real_max) = summary(&mut on_real);
    println!("typical operator test ({rounds} rounds each, alternating; milliseconds)");
    println!("| server | median | min–max | vs in-memory |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| in-memory (new server per test, in-process) | {memory_median:.1} | {memory_min:.1}–{memory_max:.1} | 1.00x |"
    );
    println!(
        "| real control plane (shared, loopback HTTPS) | {real_median:.1} | {real_min:.1}–{real_max:.1} | {:.1}x |",
        real_median / memory_median
    );
}
