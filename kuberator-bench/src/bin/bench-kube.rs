//! The kube-rs contender: a hand-written `Controller` with kube's `finalizer()` helper, the
//! way kube-rs's own examples write one. Same object, same writes as the other contenders.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::Client;
use kube::CustomResource;
use kube::ResourceExt as _;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::runtime::controller;
use kube::runtime::controller::Action;
use kube::runtime::controller::Controller;
use kube::runtime::finalizer;
use kube::runtime::finalizer::Event;
use kube::runtime::watcher;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

/// The benchmark's object.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "bench.kuberator.dev", version = "v1", kind = "Bench", namespaced, status = "BenchStatus")]
pub struct BenchSpec {
    /// A number.
    pub replicas: i32,
    /// A string.
    pub image: String,
    /// A map.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The bulk of the object.
    pub payload: String,
}

/// What the controller writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BenchStatus {
    /// The generation reconciled.
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default)]
    pub conditions: Vec<serde_json::Value>,
}

struct Context {
    client: Client,
    reconciles: AtomicU64,
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

async fn reconcile(bench: Arc<Bench>, ctx: Arc<Context>) -> Result<Action, Failed> {
    ctx.reconciles.fetch_add(1, Ordering::Relaxed);
    let namespace = bench.namespace().unwrap_or_default();
    let benches: Api<Bench> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&benches, kuberator_bench::FINALIZER, bench, |event| async {
        match event {
            Event::Apply(bench) => apply(&bench, &benches).await,
            Event::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
    .map_err(|error| Failed(error.to_string()))
}

/// Writes status: observedGeneration and a Ready condition (kept as it is when it says so
/// already, so that writing it again changes nothing).
async fn apply(bench: &Bench, benches: &Api<Bench>) -> Result<Action, kube::Error> {
    let generation = bench.metadata.generation;
    let status = bench.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|condition| condition["type"] == "Ready");
    let since = ready
        .filter(|condition| condition["status"] == "True")
        .and_then(|condition| condition["lastTransitionTime"].as_str().map(str::to_owned))
        .unwrap_or_else(|| k8s_openapi::jiff::Timestamp::now().to_string());
    let patch = serde_json::json!({ "status": {
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Reconciled", "message": "reconciled",
            "observedGeneration": generation, "lastTransitionTime": since,
        }],
    }});
    benches.patch_status(&bench.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(Action::await_change())
}

fn error_policy(_bench: Arc<Bench>, _error: &Failed, _ctx: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let namespace = kuberator_bench::env(kuberator_bench::NAMESPACE_ENV)?;
    let concurrency = kuberator_bench::concurrency()?;
    let client = Client::try_default().await?;
    let ctx = Arc::new(Context { client: client.clone(), reconciles: AtomicU64::new(0) });
    let counted = Arc::clone(&ctx);
    kuberator_bench::answer_counts(move || {
        let counted = Arc::clone(&counted);
        async move { counted.reconciles.load(Ordering::Relaxed) }
    });
    let benches: Api<Bench> = Api::namespaced(client, &namespace);
    let config = controller::Config::default().concurrency(u16::try_from(concurrency)?);
    Controller::new(benches, watcher::Config::default())
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
    Ok(())
}
