//! A derived operator that kuberator-test's own tests run as several processes (leader
//! election, signals): each object's status says which replica reconciled it, by the
//! replica's `KUBERATOR_IDENTITY`. `baton-operator crd` prints its CRD.
use kuberator::prelude::*;

/// An object that records who reconciled it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "test.kuberator.dev", version = "v1", kind = "Baton", namespaced, status = "BatonStatus")]
#[serde(rename_all = "camelCase")]
struct BatonSpec {
    note: String,
    /// `handle_apply` sleeps this long first: a slow or hung handler.
    #[serde(default)]
    apply_seconds: u64,
}

/// Which replica reconciled the object last.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct BatonStatus {
    reconciled_by: Option<String>,
    observed_generation: Option<i64>,
}

impl ObserveGeneration for BatonStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator)]
#[kuberator(resource = Baton, finalizer = "batons.test.kuberator.dev/finalizer")]
struct BatonOperator;

impl BatonOperator {
    async fn handle_apply(&self, baton: Arc<Baton>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        tokio::time::sleep(std::time::Duration::from_secs(baton.spec.apply_seconds)).await;
        let replica = std::env::var("KUBERATOR_IDENTITY").unwrap_or_else(|_| "unnamed".to_owned());
        ctx.update_status(&baton, BatonStatus { reconciled_by: Some(replica), ..Default::default() }).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _baton: Arc<Baton>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    BatonOperator.run().await
}
