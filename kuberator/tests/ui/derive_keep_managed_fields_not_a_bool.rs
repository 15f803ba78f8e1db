use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap, keep_managed_fields = "yes")]
struct MyOperator;

fn main() {}
