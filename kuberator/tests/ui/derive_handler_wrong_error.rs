use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Echo", namespaced)]
pub struct EchoSpec {
    pub message: String,
}

#[derive(Operator)]
#[kuberator(resource = Echo)]
struct EchoOperator;

impl EchoOperator {
    async fn handle_apply(&self, _echo: Arc<Echo>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    // An error that is not a std::error::Error.
    async fn handle_cleanup(&self, _echo: Arc<Echo>, _ctx: &Ctx<Self>) -> Result<Action, u16> {
        Err(503)
    }
}

fn main() {}
