use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, concurrency = 2, concurrency = 4)]
struct MyOperator;

fn main() {}
