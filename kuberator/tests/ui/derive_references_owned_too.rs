use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Database", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    credentials_secret: String,
}

#[derive(Operator)]
#[kuberator(resource = Database, owns = [k8s_openapi::api::core::v1::ConfigMap], references(k8s_openapi::api::core::v1::ConfigMap = spec.credentials_secret))]
struct DatabaseOperator;

fn main() {}
