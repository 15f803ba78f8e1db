const _: () = ::kuberator::__private::namespaces_need_a_namespaced_resource::<
    crate::Echo,
>();
const _: () = ::kuberator::__private::legal_child::<crate::Echo, ConfigMap>();
const _: () = ::kuberator::__private::legal_child::<crate::Echo, apps::Deployment>();
const _: () = {
    /// Stands in for a handler the struct lacks, so that the only error is the one that
    /// shows the handler to write. An inherent method of the same name always wins.
    #[allow(dead_code)]
    trait MissingHandlers {
        fn handle_apply(
            &self,
            object: ::std::sync::Arc<crate::Echo>,
            ctx: &::kuberator::operator::Ctx<EchoOperator>,
        ) -> ::std::future::Ready<
            ::kuberator::error::Result<
                ::kuberator::__private::kube::runtime::controller::Action,
            >,
        >
        where
            Self: ::kuberator::__private::HandleApplyMissing<crate::Echo>,
        {
            ::std::unreachable!()
        }
        fn handle_cleanup(
            &self,
            object: ::std::sync::Arc<crate::Echo>,
            ctx: &::kuberator::operator::Ctx<EchoOperator>,
        ) -> ::std::future::Ready<
            ::kuberator::error::Result<
                ::kuberator::__private::kube::runtime::controller::Action,
            >,
        >
        where
            Self: ::kuberator::__private::HandleCleanupMissing<crate::Echo>,
        {
            ::std::unreachable!()
        }
        fn validate<'a>(
            &'a self,
            change: ::kuberator::webhook::Change<'a, crate::Echo>,
            ctx: &'a ::kuberator::operator::Ctx<EchoOperator>,
        ) -> ::std::future::Ready<
            ::std::result::Result<(), ::kuberator::webhook::Rejection>,
        >
        where
            Self: ::kuberator::__private::ValidateMissing<crate::Echo>,
        {
            ::std::unreachable!()
        }
        fn set_defaults<'a>(
            &'a self,
            object: &'a mut crate::Echo,
            ctx: &'a ::kuberator::operator::Ctx<EchoOperator>,
        ) -> ::std::future::Ready<
            ::std::result::Result<(), ::kuberator::webhook::Rejection>,
        >
        where
            Self: ::kuberator::__private::SetDefaultsMissing<crate::Echo>,
        {
            ::std::unreachable!()
        }
    }
    impl MissingHandlers for EchoOperator {}
    #[automatically_derived]
    impl ::kuberator::operator::Operator for EchoOperator {
        type Resource = crate::Echo;
        type Repository = MyRepository;
        fn config() -> ::kuberator::operator::OperatorConfig {
            #[allow(unused_mut)]
            let mut config = <::kuberator::operator::OperatorConfig as ::std::default::Default>::default();
            config.finalizer = ::std::option::Option::Some("echoes.example.com/cleanup");
            config.namespaces = &["default", "production"];
            config.caching = ::std::option::Option::Some(
                ::kuberator::cache::CachingStrategy::Adhoc,
            );
            config.concurrency = ::std::option::Option::Some(0usize);
            config.shards = ::std::option::Option::Some(12u32);
            config.requeue_after_error = ::std::option::Option::Some(
                ::std::time::Duration::from_secs(5u64),
            );
            config.error_backoff_base = ::std::option::Option::Some(
                ::std::time::Duration::from_millis(250u64),
            );
            config.reconcile_timeout = ::std::option::Option::Some(
                ::std::time::Duration::from_secs(120u64),
            );
            config.keep_managed_fields = true;
            config.owns = const {
                &[
                    ::kuberator::children::Owned::of::<ConfigMap>(),
                    ::kuberator::children::Owned::of::<apps::Deployment>(),
                ]
            };
            config.webhooks.validate = true;
            config.webhooks.set_defaults = true;
            config.labels = ::std::option::Option::Some("app=echo");
            config.controller_name = ::std::option::Option::Some("echo-operator");
            config
        }
        fn __handle_apply<'a>(
            &'a self,
            object: ::std::sync::Arc<crate::Echo>,
            ctx: &'a ::kuberator::operator::Ctx<EchoOperator>,
        ) -> impl ::std::future::Future<
            Output = ::kuberator::error::Result<
                ::kuberator::__private::kube::runtime::controller::Action,
            >,
        > + ::std::marker::Send + 'a {
            ::kuberator::__private::call_handler(Self::handle_apply, self, object, ctx)
        }
        fn __handle_cleanup<'a>(
            &'a self,
            object: ::std::sync::Arc<crate::Echo>,
            ctx: &'a ::kuberator::operator::Ctx<EchoOperator>,
        ) -> impl ::std::future::Future<
            Output = ::kuberator::error::Result<
                ::kuberator::__private::kube::runtime::controller::Action,
            >,
        > + ::std::marker::Send + 'a {
            ::kuberator::__private::call_handler(Self::handle_cleanup, self, object, ctx)
        }
        #[allow(clippy::manual_async_fn, clippy::useless_conversion)]
        fn __validate<'a>(
            &'a self,
            change: ::kuberator::webhook::Change<'a, crate::Echo>,
            ctx: &'a ::kuberator::operator::Ctx<EchoOperator>,
        ) -> impl ::std::future::Future<
            Output = ::std::result::Result<(), ::kuberator::webhook::Rejection>,
        > + ::std::marker::Send + 'a {
            async move {
                Self::validate(self, change, ctx)
                    .await
                    .map_err(::std::convert::Into::into)
            }
        }
        #[allow(clippy::manual_async_fn, clippy::useless_conversion)]
        fn __set_defaults<'a>(
            &'a self,
            object: &'a mut crate::Echo,
            ctx: &'a ::kuberator::operator::Ctx<EchoOperator>,
        ) -> impl ::std::future::Future<
            Output = ::std::result::Result<(), ::kuberator::webhook::Rejection>,
        > + ::std::marker::Send + 'a {
            async move {
                Self::set_defaults(self, object, ctx)
                    .await
                    .map_err(::std::convert::Into::into)
            }
        }
        fn versions() -> ::std::vec::Vec<::kuberator::webhook::Version<crate::Echo>> {
            ::std::vec![
                ::kuberator::webhook::Version::of:: < v1alpha1::Echo > (),
                ::kuberator::webhook::Version::of:: < v1beta1::Echo > ()
            ]
        }
    }
};
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
