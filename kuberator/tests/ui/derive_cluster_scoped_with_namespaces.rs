use kuberator::prelude::*;

// A cluster-scoped resource: #[kube(...)] has no `namespaced`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Zone")]
pub struct ZoneSpec {
    pub name: String,
}

// Cluster-scoped resources are supported, but they live in no namespace.
#[derive(Operator)]
#[kuberator(resource = Zone, namespaces = ["default"], caching = Strict)]
struct ZoneOperator;

impl ZoneOperator {
    async fn handle_apply(&self, _zone: Arc<Zone>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _zone: Arc<Zone>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

fn main() {}
