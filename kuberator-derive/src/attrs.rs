//! Parsing: `#[kuberator(...)]` into [`OperatorAttrs`], with darling.
//!
//! Every value is taken as an expression here and checked in `validate.rs`, so that each
//! mistake gets a message that says what to write. darling reports unknown keys (with a
//! "did you mean"), duplicate keys and malformed lists.

use darling::FromDeriveInput;
use syn::Expr;
use syn::Generics;
use syn::Ident;

/// A value as written, kept as an expression. (darling's own `syn::Expr` parsing reads a
/// string literal as the expression inside it, which would turn a finalizer such as
/// `"a.b/c"` into a division.)
#[derive(Debug, Clone)]
pub(crate) struct Value(pub(crate) Expr);

impl darling::FromMeta for Value {
    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        Ok(Value(expr.clone()))
    }
}

/// `references(Secret = spec.credentials_secret, ...)` as written: each item kept as it was.
#[derive(Debug, Clone)]
pub(crate) struct ListValue(pub(crate) Vec<darling::ast::NestedMeta>);

impl darling::FromMeta for ListValue {
    fn from_list(items: &[darling::ast::NestedMeta]) -> darling::Result<Self> {
        Ok(ListValue(items.to_vec()))
    }

    fn from_expr(expr: &Expr) -> darling::Result<Self> {
        Err(darling::Error::custom(
            "`references` is a list of `Kind = spec.field` pairs, such as \
             `references(Secret = spec.credentials_secret)`",
        )
        .with_span(expr))
    }
}

/// `#[kuberator(...)]` as written.
#[derive(Debug, FromDeriveInput)]
#[darling(attributes(kuberator))]
pub(crate) struct OperatorAttrs {
    pub(crate) ident: Ident,
    pub(crate) generics: Generics,
    pub(crate) data: darling::ast::Data<darling::util::Ignored, darling::util::Ignored>,
    /// `resource = MyCrd`
    #[darling(default)]
    pub(crate) resource: Option<Value>,
    /// `finalizer = "mycrds.example.com/finalizer"`
    #[darling(default)]
    pub(crate) finalizer: Option<Value>,
    /// `caching = Strict | Adhoc | Extendable`
    #[darling(default)]
    pub(crate) caching: Option<Value>,
    /// `namespaces = ["default", "production"]`
    #[darling(default)]
    pub(crate) namespaces: Option<Value>,
    /// `concurrency = 4`
    #[darling(default)]
    pub(crate) concurrency: Option<Value>,
    /// `shards = 12`
    #[darling(default)]
    pub(crate) shards: Option<Value>,
    /// `requeue_after_error_seconds = 30`
    #[darling(default)]
    pub(crate) requeue_after_error_seconds: Option<Value>,
    /// `error_backoff_base_millis = 500`
    #[darling(default)]
    pub(crate) error_backoff_base_millis: Option<Value>,
    /// `labels = "app=my-operator"`
    #[darling(default)]
    pub(crate) labels: Option<Value>,
    /// `repository = MyRepository`
    #[darling(default)]
    pub(crate) repository: Option<Value>,
    /// `controller_name = "my-operator"`
    #[darling(default)]
    pub(crate) controller_name: Option<Value>,
    /// `owns = [ConfigMap, Deployment]`
    #[darling(default)]
    pub(crate) owns: Option<Value>,
    /// `reconcile_timeout_seconds = 120`
    #[darling(default)]
    pub(crate) reconcile_timeout_seconds: Option<Value>,
    /// `keep_managed_fields = true`
    #[darling(default)]
    pub(crate) keep_managed_fields: Option<Value>,
    /// `references(Secret = spec.credentials_secret)`
    #[darling(default)]
    pub(crate) references: Option<ListValue>,
    /// `webhooks = [validate, set_defaults]`
    #[darling(default)]
    pub(crate) webhooks: Option<Value>,
    /// `versions = [v1alpha1::Volume]`
    #[darling(default)]
    pub(crate) versions: Option<Value>,
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse(input: proc_macro2::TokenStream) -> darling::Result<OperatorAttrs> {
        OperatorAttrs::from_derive_input(&syn::parse2(input).unwrap())
    }

    #[test]
    fn reads_every_key() {
        let attrs = parse(quote! {
            #[kuberator(
                resource = Echo,
                finalizer = "echoes.example.com/cleanup",
                caching = Extendable,
                namespaces = ["default", "production"],
                concurrency = 4,
                shards = 12,
                requeue_after_error_seconds = 30,
                error_backoff_base_millis = 500,
                labels = "app=echo",
                repository = MyRepo,
                controller_name = "echo-operator",
                owns = [ConfigMap],
                reconcile_timeout_seconds = 120,
                keep_managed_fields = true,
                webhooks = [validate],
                versions = [v1alpha1::Echo],
            )]
            struct EchoOperator;
        })
        .unwrap();
        assert_eq!(attrs.ident, "EchoOperator");
        for value in [
            &attrs.resource,
            &attrs.finalizer,
            &attrs.caching,
            &attrs.namespaces,
            &attrs.concurrency,
            &attrs.shards,
            &attrs.requeue_after_error_seconds,
            &attrs.error_backoff_base_millis,
            &attrs.labels,
            &attrs.repository,
            &attrs.controller_name,
            &attrs.owns,
            &attrs.reconcile_timeout_seconds,
            &attrs.keep_managed_fields,
            &attrs.webhooks,
            &attrs.versions,
        ] {
            assert!(value.is_some());
        }
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let error = parse(quote! {
            #[kuberator(resource = Echo, finaliser = "a.b/c")]
            struct EchoOperator;
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("finaliser"), "{message}");
        assert!(message.contains("finalizer"), "did you mean: {message}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let error = parse(quote! {
            #[kuberator(resource = Echo, resource = Other)]
            struct EchoOperator;
        })
        .unwrap_err();
        assert!(error.to_string().contains("Duplicate field `resource`"), "{error}");
    }
}
