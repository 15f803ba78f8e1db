use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Database", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    credentials_secret: String,
}

#[derive(Operator)]
#[kuberator(resource = Database, references(k8s_openapi::api::core::v1::Secret))]
struct DatabaseOperator;

fn main() {}
