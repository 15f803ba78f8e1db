use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, shards = 5000)]
struct TooMany;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, shards = "twelve")]
struct NotANumber;

fn main() {}
