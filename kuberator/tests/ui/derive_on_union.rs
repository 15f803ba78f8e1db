use kuberator::Operator;

#[derive(Operator)]
#[kuberator(resource = k8s_openapi::api::core::v1::ConfigMap)]
union MyOperator {
    number: u32,
}

fn main() {}
