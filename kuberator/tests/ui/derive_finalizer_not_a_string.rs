use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, finalizer = cleanup)]
struct MyOperator;

fn main() {}
