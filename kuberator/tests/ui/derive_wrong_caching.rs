use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, caching = Extendible)]
struct MyOperator;

fn main() {}
