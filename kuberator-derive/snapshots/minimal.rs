#[automatically_derived]
impl ::kuberator::operator::Operator for EchoOperator {
    type Resource = <Echo as ::kuberator::__private::Checked>::Resource;
    type Repository = ::kuberator::k8s::K8sRepository<
        Echo,
        ::kuberator::cache::StaticApiProvider<Echo>,
    >;
    fn config() -> ::kuberator::operator::OperatorConfig {
        ::kuberator::operator::OperatorConfig {
            finalizer: {
                static FINALIZER: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
                FINALIZER
                    .get_or_init(|| {
                        ::std::format!(
                            "{}.{}/finalizer", < Echo as
                            ::kuberator::__private::kube::Resource > ::plural(& ()), <
                            Echo as ::kuberator::__private::kube::Resource > ::group(&
                            ()),
                        )
                    })
            },
            namespaces: &[],
            caching: ::kuberator::cache::CachingStrategy::Extendable,
            concurrency: ::std::option::Option::Some(1usize),
            requeue_after_error: ::std::time::Duration::from_secs(60u64),
            error_backoff_base: ::std::time::Duration::from_millis(1000u64),
            labels: ::std::option::Option::None,
            controller_name: {
                static NAME: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
                NAME.get_or_init(|| {
                    ::std::format!(
                        "{}-operator", < Echo as ::kuberator::__private::kube::Resource >
                        ::kind(& ()).to_lowercase(),
                    )
                })
            },
        }
    }
    fn apply(
        &self,
        object: ::std::sync::Arc<Echo>,
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
        object: ::std::sync::Arc<Echo>,
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
