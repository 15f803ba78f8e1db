use kuberator::Operator;

#[derive(Operator)]
#[kuberator(
    resource = k8s_openapi::api::core::v1::ConfigMap,
    requeue_after_error_seconds = 2,
    error_backoff_base_millis = 5000
)]
struct MyOperator;

fn main() {}
