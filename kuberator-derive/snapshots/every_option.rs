#[automatically_derived]
impl ::kuberator::operator::Operator for EchoOperator {
    type Resource = <crate::Echo as ::kuberator::__private::Checked>::Resource;
    type Repository = MyRepository;
    fn config() -> ::kuberator::operator::OperatorConfig {
        ::kuberator::operator::OperatorConfig {
            finalizer: "echoes.example.com/cleanup",
            namespaces: &["default", "production"],
            caching: ::kuberator::cache::CachingStrategy::Adhoc,
            concurrency: ::std::option::Option::None,
            requeue_after_error: ::std::time::Duration::from_secs(5u64),
            labels: ::std::option::Option::Some("app=echo"),
            controller_name: "echo-operator",
        }
    }
    fn apply(
        &self,
        object: ::std::sync::Arc<crate::Echo>,
        ctx: &::kuberator::operator::Ctx<Self>,
    ) -> impl ::std::future::Future<
        Output = ::kuberator::error::Result<
            ::kuberator::__private::kube::runtime::controller::Action,
        >,
    > + ::std::marker::Send {
        EchoOperator::handle_apply(self, object, ctx)
    }
    fn cleanup(
        &self,
        object: ::std::sync::Arc<crate::Echo>,
        ctx: &::kuberator::operator::Ctx<Self>,
    ) -> impl ::std::future::Future<
        Output = ::kuberator::error::Result<
            ::kuberator::__private::kube::runtime::controller::Action,
        >,
    > + ::std::marker::Send {
        EchoOperator::handle_cleanup(self, object, ctx)
    }
}
#[automatically_derived]
impl EchoOperator {
    /// Runs this operator until SIGINT or SIGTERM: connects to the cluster in
    /// `KUBECONFIG` (or in-cluster), logs as `RUST_LOG` says, and reconciles.
    /// `crd` as the first argument prints the CRD instead.
    ///
    /// # Errors
    ///
    /// When no cluster can be reached.
    pub async fn run(self) -> ::kuberator::__private::anyhow::Result<()> {
        ::kuberator::operator::run(self).await
    }
}
