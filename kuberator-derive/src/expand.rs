//! Expansion: the `Operator` implementation and the inherent `run()` for a checked [`Model`].
//!
//! Every path is absolute (`::kuberator::...`, `::std::...`), so the expansion works
//! whatever the user has in scope.

use proc_macro2::TokenStream;
use quote::quote;
use quote::quote_spanned;
use syn::Expr;
use syn::spanned::Spanned as _;

use crate::validate::Caching;
use crate::validate::Model;

pub(crate) fn expand(model: &Model) -> TokenStream {
    let Model { ident, resource, .. } = model;
    let kuberator = quote!(::kuberator);
    let private = quote!(#kuberator::__private);
    let some = quote!(::std::option::Option::Some);
    let repository = match &model.repository {
        Some(repository) => quote!(#repository),
        None => {
            quote!(#kuberator::k8s::K8sRepository<#resource, #kuberator::cache::StaticApiProvider<#resource>>)
        }
    };

    // Only what the attribute says; `OperatorConfig::resolve` applies the defaults.
    let mut config = Vec::new();
    let mut checks = Vec::new();
    if let Some(finalizer) = &model.finalizer {
        config.push(quote!(finalizer = #some(#finalizer)));
    }
    if !model.namespaces.is_empty() {
        let namespaces = &model.namespaces;
        config.push(quote!(namespaces = &[#(#namespaces),*]));
    }
    // A cluster-scoped resource has no namespaces to list or limit to: compile errors that say so.
    if let Some(first) = model.namespaces.first() {
        checks.push(quote_spanned!(first.span()=>
            const _: () = #private::namespaces_need_a_namespaced_resource::<#resource>();
        ));
    }
    if model.caching == Some(Caching::Strict) {
        checks.push(quote_spanned!(resource.span()=>
            const _: () = #private::strict_needs_a_namespaced_resource::<#resource>();
        ));
    }
    if let Some(caching) = model.caching {
        let caching = match caching {
            Caching::Strict => quote!(#kuberator::cache::CachingStrategy::Strict),
            Caching::Adhoc => quote!(#kuberator::cache::CachingStrategy::Adhoc),
            Caching::Extendable => quote!(#kuberator::cache::CachingStrategy::Extendable),
        };
        config.push(quote!(caching = #some(#caching)));
    }
    if let Some(limit) = model.concurrency {
        config.push(quote!(concurrency = #some(#limit)));
    }
    if let Some(shards) = model.shards {
        config.push(quote!(shards = #some(#shards)));
    }
    if let Some(seconds) = model.requeue_after_error_seconds {
        config.push(quote!(requeue_after_error = #some(::std::time::Duration::from_secs(#seconds))));
    }
    if let Some((millis, written)) = &model.error_backoff_base_millis {
        config.push(quote!(error_backoff_base = #some(::std::time::Duration::from_millis(#millis))));
        if model.requeue_after_error_seconds.is_none() {
            // Spanned at the value: a base over the default longest delay fails to compile there.
            checks.push(quote_spanned!(written.span()=>
                const _: () = #private::backoff_base_within_default_cap(#millis);
            ));
        }
    }
    if let Some(seconds) = model.reconcile_timeout_seconds {
        config.push(quote!(reconcile_timeout = #some(::std::time::Duration::from_secs(#seconds))));
    }
    if model.keep_managed_fields {
        config.push(quote!(keep_managed_fields = true));
    }
    if !model.owns.is_empty() {
        let owns = &model.owns;
        config.push(quote!(owns = const { &[#(#kuberator::children::Owned::of::<#owns>()),*] }));
        for owned in owns {
            // Spanned at the kind: a child the resource cannot own fails to compile there.
            checks.push(quote_spanned!(owned.span()=>
                const _: () = #private::legal_child::<#resource, #owned>();
            ));
        }
    }
    if !model.references.is_empty() {
        let referenced = model.references.iter().map(|(kind, from)| {
            let written = quote!(#from).to_string();
            match from {
                // A closure reads the names itself.
                Expr::Closure(_) => quote_spanned!(from.span()=>
                    #kuberator::references::Referenced::by::<#kind, #resource, _>(#written, #from)
                ),
                // `spec.field` is read from the object: spanned at the path, so that a field
                // that does not exist, or holds no name, fails to compile there.
                _ => quote_spanned!(from.span()=>
                    #kuberator::references::Referenced::by::<#kind, #resource, _>(
                        #written,
                        |object: &#resource| #kuberator::references::Names::names(&object.#from),
                    )
                ),
            }
        });
        config.push(quote!(references = ::std::vec![#(#referenced),*]));
    }
    let ctx = quote!(#kuberator::operator::Ctx<#ident>);
    let mut webhooks = Vec::new();
    let mut stand_ins = Vec::new();
    for method in &model.webhooks {
        let rejection = quote!(::std::result::Result<(), #kuberator::webhook::Rejection>);
        stand_ins.push(if method == "validate" {
            quote!(
                fn validate<'a>(
                    &'a self,
                    change: #kuberator::webhook::Change<'a, #resource>,
                    ctx: &'a #ctx,
                ) -> ::std::future::Ready<#rejection>
                where
                    Self: #private::ValidateMissing<#resource>,
                {
                    ::std::unreachable!()
                }
            )
        } else {
            quote!(
                fn set_defaults<'a>(&'a self, object: &'a mut #resource, ctx: &'a #ctx) -> ::std::future::Ready<#rejection>
                where
                    Self: #private::SetDefaultsMissing<#resource>,
                {
                    ::std::unreachable!()
                }
            )
        });
        config.push(quote!(webhooks.#method = true));
        let change = quote!(#kuberator::webhook::Change<'a, #resource>);
        let future = quote!(impl ::std::future::Future<Output = #rejection> + ::std::marker::Send + 'a);
        let into = quote!(::std::convert::Into::into);
        // Spanned at the name in the attribute: a missing or mistyped method is reported there.
        webhooks.push(if method == "validate" {
            quote_spanned!(method.span()=>
                #[allow(clippy::manual_async_fn, clippy::useless_conversion)]
                fn __validate<'a>(&'a self, change: #change, ctx: &'a #ctx) -> #future {
                    async move { Self::validate(self, change, ctx).await.map_err(#into) }
                }
            )
        } else {
            quote_spanned!(method.span()=>
                #[allow(clippy::manual_async_fn, clippy::useless_conversion)]
                fn __set_defaults<'a>(&'a self, object: &'a mut #resource, ctx: &'a #ctx) -> #future {
                    async move { Self::set_defaults(self, object, ctx).await.map_err(#into) }
                }
            )
        });
    }
    if !model.versions.is_empty() {
        // Spanned at each version: one that does not convert to and from the resource fails to
        // compile there.
        let versions = model
            .versions
            .iter()
            .map(|version| quote_spanned!(version.span()=> #kuberator::webhook::Version::of::<#version>()));
        webhooks.push(quote! {
            fn versions() -> ::std::vec::Vec<#kuberator::webhook::Version<#resource>> {
                ::std::vec![#(#versions),*]
            }
        });
    }
    if let Some(labels) = &model.labels {
        config.push(quote!(labels = #some(#labels)));
    }
    if let Some(name) = &model.controller_name {
        config.push(quote!(controller_name = #some(#name)));
    }

    let result = quote!(#kuberator::error::Result<#private::kube::runtime::controller::Action>);
    let arc = quote!(::std::sync::Arc<#resource>);
    // Spanned at the struct's name: a missing or mistyped handler is reported there.
    let apply = quote_spanned!(ident.span()=> #private::call_handler(Self::handle_apply, self, object, ctx));
    let cleanup =
        quote_spanned!(ident.span()=> #private::call_handler(Self::handle_cleanup, self, object, ctx));

    quote! {
        #(#checks)*

        const _: () = {
            /// Stands in for a handler the struct lacks, so that the only error is the one that
            /// shows the handler to write. An inherent method of the same name always wins.
            #[allow(dead_code)]
            trait MissingHandlers {
                fn handle_apply(&self, object: #arc, ctx: &#ctx) -> ::std::future::Ready<#result>
                where
                    Self: #private::HandleApplyMissing<#resource>,
                {
                    ::std::unreachable!()
                }

                fn handle_cleanup(&self, object: #arc, ctx: &#ctx) -> ::std::future::Ready<#result>
                where
                    Self: #private::HandleCleanupMissing<#resource>,
                {
                    ::std::unreachable!()
                }

                #(#stand_ins)*
            }

            impl MissingHandlers for #ident {}

            #[automatically_derived]
            impl #kuberator::operator::Operator for #ident {
                type Resource = #resource;
                type Repository = #repository;

                fn config() -> #kuberator::operator::OperatorConfig {
                    #[allow(unused_mut)]
                    let mut config = <#kuberator::operator::OperatorConfig as ::std::default::Default>::default();
                    #(config.#config;)*
                    config
                }

                fn __handle_apply<'a>(
                    &'a self,
                    object: #arc,
                    ctx: &'a #ctx,
                ) -> impl ::std::future::Future<Output = #result> + ::std::marker::Send + 'a {
                    #apply
                }

                fn __handle_cleanup<'a>(
                    &'a self,
                    object: #arc,
                    ctx: &'a #ctx,
                ) -> impl ::std::future::Future<Output = #result> + ::std::marker::Send + 'a {
                    #cleanup
                }

                #(#webhooks)*
            }
        };

        #[automatically_derived]
        impl #ident {
            /// Runs this operator as a program: `run` (the default) reconciles until SIGINT
            /// or SIGTERM; `crd`, `rbac` and `manifests` print what it needs in a cluster;
            /// `--help` lists the flags.
            ///
            /// # Errors
            ///
            /// When no cluster can be reached.
            pub async fn run(self) -> #private::anyhow::Result<()> {
                let program = #kuberator::operator::Program {
                    name: match ::std::option_env!("CARGO_BIN_NAME") {
                        ::std::option::Option::Some(name) => name,
                        ::std::option::Option::None => ::std::env!("CARGO_PKG_NAME"),
                    },
                    version: ::std::env!("CARGO_PKG_VERSION"),
                    about: ::std::env!("CARGO_PKG_DESCRIPTION"),
                };
                #kuberator::operator::run(self, program).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use darling::FromDeriveInput as _;
    use quote::quote;

    use super::*;
    use crate::attrs::OperatorAttrs;
    use crate::validate::validate;

    /// Compares the pretty-printed expansion of `input` with `snapshots/<name>.rs`;
    /// `UPDATE_SNAPSHOTS=1` rewrites the file instead.
    fn snapshot(name: &str, input: TokenStream) {
        let attrs = OperatorAttrs::from_derive_input(&syn::parse2(input).unwrap()).unwrap();
        let expanded = expand(&validate(attrs).unwrap());
        let pretty = prettyplease::unparse(&syn::parse2(expanded).unwrap());
        // Cargo's variable at run time, not the path baked in at build time: a build cache
        // shared by several checkouts may hand this binary to another one.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let path = std::path::Path::new(&dir).join(format!("snapshots/{name}.rs"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &pretty).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_SNAPSHOTS=1", path.display()));
        assert_eq!(pretty, expected, "expansion changed; review it, then run with UPDATE_SNAPSHOTS=1");
    }

    #[test]
    fn minimal_operator() {
        snapshot(
            "minimal",
            quote! {
                #[kuberator(resource = Echo)]
                struct EchoOperator;
            },
        );
    }

    #[test]
    fn every_option() {
        snapshot(
            "every_option",
            quote! {
                #[kuberator(
                    resource = crate::Echo,
                    finalizer = "echoes.example.com/cleanup",
                    caching = Adhoc,
                    namespaces = ["default", "production"],
                    concurrency = 0,
                    shards = 12,
                    requeue_after_error_seconds = 5,
                    error_backoff_base_millis = 250,
                    labels = "app=echo",
                    repository = MyRepository,
                    controller_name = "echo-operator",
                    owns = [ConfigMap, apps::Deployment],
                    reconcile_timeout_seconds = 120,
                    keep_managed_fields = true,
                    webhooks = [validate, set_defaults],
                    versions = [v1alpha1::Echo, v1beta1::Echo],
                )]
                pub struct EchoOperator {
                    greeting: String,
                }
            },
        );
    }
}
