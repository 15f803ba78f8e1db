use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Database", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    credentials_secret: String,
}

#[derive(Operator)]
#[kuberator(resource = Database, references(k8s_openapi::api::core::v1::Secret = spec.credentials))]
struct DatabaseOperator;

impl DatabaseOperator {
    async fn handle_apply(&self, _: Arc<Database>, _: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _: Arc<Database>, _: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

fn main() {}
