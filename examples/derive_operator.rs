//! A whole operator from one annotated struct: `cargo run --example derive_operator -- demo`.
use kuberator::prelude::*;

/// What to shout.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "kuberator.dev", version = "v1", kind = "Shout", namespaced, status = "ShoutStatus")]
pub struct ShoutSpec {
    /// The message.
    pub message: String,
}

/// What was shouted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ShoutStatus {
    /// The message, in capitals.
    pub shouted: Option<String>,
    /// The generation shouted.
    pub observed_generation: Option<i64>,
    /// `Ready`, kept by Kuberator: `kubectl wait --for=condition=Ready shout/hello` works.
    pub conditions: Conditions,
}

impl ObserveGeneration for ShoutStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

/// The operator.
#[derive(Operator)]
#[kuberator(resource = Shout, finalizer = "shouts.kuberator.dev/finalizer", namespaces = ["default"])]
pub struct ShoutOperator;

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
        // Create a Shout in `default`, wait until it is Ready, delete it, show cleanup ran.
        let shout = Shout::new("hello", ShoutSpec { message: "hello, operator".into() });
        return kuberator_examples::demo_operator(ShoutOperator, shout, kuberator_examples::is_ready).await;
    }
    ShoutOperator.run().await
}
