#![doc = include_str!("../README.md")]

mod attrs;
mod expand;
mod fallback;
mod validate;

use darling::FromDeriveInput as _;
use proc_macro::TokenStream;

/// Implements `kuberator::operator::Operator` and an inherent `run()`.
///
#[doc = include_str!("../README.md")]
#[proc_macro_derive(Operator, attributes(kuberator))]
pub fn derive_operator(input: TokenStream) -> TokenStream {
    derive(input.into()).into()
}

fn derive(input: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    if let syn::Data::Union(union) = &input.data {
        let error = syn::Error::new(
            union.union_token.span,
            "#[derive(Operator)] goes on a struct that holds your operator's state, not on a union",
        );
        return fallback::fallback(&input.ident, error.into());
    }
    match attrs::OperatorAttrs::from_derive_input(&input).and_then(validate::validate) {
        Ok(model) => expand::expand(&model),
        Err(errors) => fallback::fallback(&input.ident, errors),
    }
}
