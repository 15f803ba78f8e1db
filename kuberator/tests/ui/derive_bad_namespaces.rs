use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, namespaces = ["default", "Team_A"])]
struct MyOperator;

fn main() {}
