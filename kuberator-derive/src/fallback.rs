//! The fallback: when the attribute is wrong, the errors, plus a stub of what the derive
//! would have generated, so that the user sees the mistakes in the attribute and not a
//! cascade of "no method named `run`" where the operator is used.

use proc_macro2::TokenStream;
use quote::quote;
use syn::Ident;

pub(crate) fn fallback(ident: &Ident, errors: darling::Error) -> TokenStream {
    let errors = errors.write_errors();
    quote! {
        #errors

        #[automatically_derived]
        impl #ident {
            #[allow(dead_code, clippy::unused_async)]
            pub async fn run(self) -> ::kuberator::__private::anyhow::Result<()> {
                ::core::unreachable!("#[derive(Operator)] reported errors above")
            }
        }
    }
}
