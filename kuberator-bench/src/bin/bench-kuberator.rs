//! The Kuberator contender: a derived operator, as the README teaches it. The driver runs it
//! with `KUBERATOR_NAMESPACES`, `KUBERATOR_CONCURRENCY` and `KUBERATOR_LEADER_ELECTION=false`
//! (no other contender elects a leader); `crd` prints the benchmark's CRD.
//!
//! `BENCH_HANDLER_MS` makes each `handle_apply` wait that long first (the sharding benchmark,
//! `kuberator-bench --sharding`, runs it with `--shards`).
//!
//! `BENCH_PAIR` makes it the shared-cache benchmark's contender (`kuberator-bench --shared`):
//! `both` runs [`BenchOperator`] and [`AuditOperator`] in one process (one watch of `Bench`,
//! shared by both), `audit` runs [`AuditOperator`] alone (a second process, with a second
//! watch and cache of `Bench`); `crd` then prints both CRDs.
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

/// `BENCH_HANDLER_MS`: how long each `handle_apply` waits first, as for an external call.
static HANDLER_WAIT: std::sync::LazyLock<Option<std::time::Duration>> = std::sync::LazyLock::new(|| {
    let millis = std::env::var("BENCH_HANDLER_MS").ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(millis))
});

/// The operator.
#[derive(Operator)]
#[kuberator(resource = Bench, finalizer = "benches.bench.kuberator.dev/finalizer", caching = Strict, namespaces = ["bench"])]
pub struct BenchOperator;

impl BenchOperator {
    async fn handle_apply(&self, bench: Arc<Bench>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        if let Some(wait) = *HANDLER_WAIT {
            // An external call (a cloud API, a database): the sharding benchmark's handler.
            tokio::time::sleep(wait).await;
        }
        ctx.update_status(&bench, BenchStatus::default()).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _bench: Arc<Bench>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

/// A second kind, whose objects name a `Bench`: a controller that references a kind another
/// controller reconciles.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "bench.kuberator.dev",
    version = "v1",
    kind = "BenchAudit",
    namespaced,
    status = "AuditStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BenchAuditSpec {
    /// The `Bench` it audits.
    pub bench: String,
}

/// What the audit writes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AuditStatus {
    /// The generation reconciled.
    pub observed_generation: Option<i64>,
    /// The audited `Bench`'s replicas, once it exists.
    pub replicas: Option<i32>,
}

impl ObserveGeneration for AuditStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

/// The audit: reads the `Bench` its object names from the cache of `Bench`.
#[derive(Operator)]
#[kuberator(
    resource = BenchAudit,
    finalizer = "benchaudits.bench.kuberator.dev/finalizer",
    caching = Strict,
    namespaces = ["bench"],
    references(Bench = spec.bench)
)]
pub struct AuditOperator;

impl AuditOperator {
    async fn handle_apply(&self, audit: Arc<BenchAudit>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let bench = ctx.referenced::<Bench>(&audit).await?;
        let status =
            AuditStatus { replicas: bench.map(|bench| bench.spec.replicas), ..AuditStatus::default() };
        ctx.update_status(&audit, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _audit: Arc<BenchAudit>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
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
    match std::env::var("BENCH_PAIR").as_deref() {
        Ok("both") => {
            kuberator::Operators::new()
                .with(BenchOperator)
                .with(AuditOperator)
                .run(kuberator::program!())
                .await
        }
        Ok("audit") => AuditOperator.run().await,
        _ => BenchOperator.run().await,
    }
}
