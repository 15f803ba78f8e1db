use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Echo", namespaced)]
pub struct EchoSpec {
    pub message: String,
}

#[derive(Operator)]
#[kuberator(resource = Echo, webhooks = [set_defaults])]
struct EchoOperator;

impl EchoOperator {
    async fn handle_apply(&self, _echo: Arc<Echo>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _echo: Arc<Echo>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
    // set_defaults is missing
}

fn main() {}
