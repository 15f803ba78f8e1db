use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Echo", namespaced)]
pub struct EchoSpec {
    pub message: String,
}

#[derive(Operator)]
#[kuberator(resource = Echo, webhooks = [validate, mutate])]
struct EchoOperator;

fn main() {}
