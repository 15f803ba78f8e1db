//! A whole operator from one annotated struct: `cargo run --example derive_operator -- demo`.
use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "kuberator.dev", version = "v1", kind = "Shout", namespaced, status = "ShoutStatus")]
struct ShoutSpec {
    message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct ShoutStatus {
    shouted: Option<String>,
    observed_generation: Option<i64>,
}

impl ObserveGeneration for ShoutStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator)]
#[kuberator(resource = Shout, finalizer = "shouts.kuberator.dev/finalizer", namespaces = ["default"])]
struct ShoutOperator;

impl ShoutOperator {
    async fn handle_apply(&self, shout: Arc<Shout>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let status = ShoutStatus { shouted: Some(shout.spec.message.to_uppercase()), ..Default::default() };
        ctx.update_status(&shout, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, shout: Arc<Shout>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        ctx.emit(&shout, EventData::normal("Silenced", "shout deleted")).await;
        Ok(Action::await_change())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("demo") {
        // Create a Shout in `default`, show it reconciled, delete it, show cleanup ran.
        let shout = Shout::new("hello", ShoutSpec { message: "hello, operator".into() });
        let reconciled = |s: &Shout| s.status.as_ref().is_some_and(|st| st.observed_generation.is_some());
        return kuberator_examples::demo_operator(ShoutOperator, shout, reconciled).await;
    }
    ShoutOperator.run().await
}
