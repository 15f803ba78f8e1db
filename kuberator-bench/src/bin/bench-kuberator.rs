//! The Kuberator contender: a derived operator, as the README teaches it. The driver runs it
//! with `KUBERATOR_NAMESPACES`, `KUBERATOR_CONCURRENCY` and `KUBERATOR_LEADER_ELECTION=false`
//! (no other contender elects a leader); `crd` prints the benchmark's CRD.
use std::collections::BTreeMap;

use kuberator::prelude::*;

/// The benchmark's object: about 2 KB with its payload.
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

/// What the operator writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct BenchStatus {
    /// The generation reconciled.
    pub observed_generation: Option<i64>,
    /// `Ready`, kept by Kuberator.
    pub conditions: Conditions,
}

impl ObserveGeneration for BenchStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

/// The operator.
#[derive(Operator)]
#[kuberator(resource = Bench, finalizer = "benches.bench.kuberator.dev/finalizer", caching = Strict, namespaces = ["bench"])]
pub struct BenchOperator;

impl BenchOperator {
    async fn handle_apply(&self, bench: Arc<Bench>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        ctx.update_status(&bench, BenchStatus::default()).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _bench: Arc<Bench>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

/// Reconciles so far, as the operator's own metrics count them.
fn reconciles() -> u64 {
    kuberator::telemetry::encode()
        .lines()
        .filter(|line| line.starts_with("kuberator_reconciles_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kuberator_bench::answer_counts(|| async { reconciles() });
    BenchOperator.run().await
}
