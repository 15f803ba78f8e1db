//! Expansion: the `Operator` implementation and the inherent `run()` for a checked [`Model`].
//!
//! Every path is absolute (`::kuberator::...`, `::std::...`), so the expansion works
//! whatever the user has in scope.

use proc_macro2::TokenStream;
use quote::quote;
use quote::quote_spanned;
use syn::spanned::Spanned as _;

use crate::validate::Caching;
use crate::validate::Model;

pub(crate) fn expand(model: &Model) -> TokenStream {
    let Model { ident, resource, .. } = model;
    let kuberator = quote!(::kuberator);
    let private = quote!(#kuberator::__private);
    let repository = match &model.repository {
        Some(repository) => quote!(#repository),
        None => {
            quote!(#kuberator::k8s::K8sRepository<#resource, #kuberator::cache::StaticApiProvider<#resource>>)
        }
    };
    let finalizer = match &model.finalizer {
        Some(finalizer) => quote!(#finalizer),
        None => quote!({
            static FINALIZER: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
            FINALIZER.get_or_init(|| {
                ::std::format!(
                    "{}.{}/finalizer",
                    <#resource as #private::kube::Resource>::plural(&()),
                    <#resource as #private::kube::Resource>::group(&()),
                )
            })
        }),
    };
    let controller_name = match &model.controller_name {
        Some(name) => quote!(#name),
        None => quote!({
            static NAME: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();
            NAME.get_or_init(|| {
                ::std::format!(
                    "{}-operator",
                    <#resource as #private::kube::Resource>::kind(&()).to_lowercase(),
                )
            })
        }),
    };
    let caching = match model.caching {
        Caching::Strict => quote!(#kuberator::cache::CachingStrategy::Strict),
        Caching::Adhoc => quote!(#kuberator::cache::CachingStrategy::Adhoc),
        Caching::Extendable => quote!(#kuberator::cache::CachingStrategy::Extendable),
    };
    let namespaces = &model.namespaces;
    let concurrency = match model.concurrency {
        Some(limit) => quote!(::std::option::Option::Some(#limit)),
        None => quote!(::std::option::Option::None),
    };
    let requeue = model.requeue_after_error_seconds;
    let backoff_base = model.error_backoff_base_millis;
    let labels = match &model.labels {
        Some(labels) => quote!(::std::option::Option::Some(#labels)),
        None => quote!(::std::option::Option::None),
    };
    let result = quote!(#kuberator::error::Result<#private::kube::runtime::controller::Action>);
    // Spanned at the struct's name: a missing or mistyped handler is reported there.
    let apply = quote_spanned!(ident.span()=> #ident::handle_apply(self, object, ctx));
    let cleanup = quote_spanned!(ident.span()=> #ident::handle_cleanup(self, object, ctx));
    // Spanned at the resource: "must be a namespaced custom resource" points at it.
    let checked = quote_spanned!(resource.span()=> <#resource as #private::Checked>::Resource);

    quote! {
        #[automatically_derived]
        impl #kuberator::operator::Operator for #ident {
            type Resource = #checked;
            type Repository = #repository;

            fn config() -> #kuberator::operator::OperatorConfig {
                #kuberator::operator::OperatorConfig {
                    finalizer: #finalizer,
                    namespaces: &[#(#namespaces),*],
                    caching: #caching,
                    concurrency: #concurrency,
                    requeue_after_error: ::std::time::Duration::from_secs(#requeue),
                    error_backoff_base: ::std::time::Duration::from_millis(#backoff_base),
                    labels: #labels,
                    controller_name: #controller_name,
                }
            }

            fn apply(
                &self,
                object: ::std::sync::Arc<#resource>,
                ctx: &#kuberator::operator::Ctx<Self>,
            ) -> impl ::std::future::Future<Output = #result> + ::std::marker::Send {
                #apply
            }

            fn cleanup(
                &self,
                object: ::std::sync::Arc<#resource>,
                ctx: &#kuberator::operator::Ctx<Self>,
            ) -> impl ::std::future::Future<Output = #result> + ::std::marker::Send {
                #cleanup
            }
        }

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
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("snapshots/{name}.rs"));
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
                    requeue_after_error_seconds = 5,
                    error_backoff_base_millis = 250,
                    labels = "app=echo",
                    repository = MyRepository,
                    controller_name = "echo-operator",
                )]
                pub struct EchoOperator {
                    greeting: String,
                }
            },
        );
    }
}
