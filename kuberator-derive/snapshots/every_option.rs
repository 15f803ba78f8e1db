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
            error_backoff_base: ::std::time::Duration::from_millis(250u64),
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
    /// Runs this operator as a program: `run` (the default) reconciles until SIGINT
    /// or SIGTERM; `crd`, `rbac` and `manifests` print what it needs in a cluster;
    /// `--help` lists the flags.
    ///
    /// # Errors
    ///
    /// When no cluster can be reached.
    pub async fn run(self) -> ::kuberator::__private::anyhow::Result<()> {
        let program = ::kuberator::operator::Program {
            name: match ::std::option_env!("CARGO_BIN_NAME") {
                ::std::option::Option::Some(name) => name,
                ::std::option::Option::None => ::std::env!("CARGO_PKG_NAME"),
            },
            version: ::std::env!("CARGO_PKG_VERSION"),
            about: ::std::env!("CARGO_PKG_DESCRIPTION"),
        };
        ::kuberator::operator::run(self, program).await
    }
}
