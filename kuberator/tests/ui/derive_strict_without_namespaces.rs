use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, caching = Strict)]
struct MyOperator;

fn main() {}
