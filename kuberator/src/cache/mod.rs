//! Namespace-keyed [`Api`](kube::Api) providers.
//!
//! An operator talks to the API server through one [`Api<R>`](kube::Api) per namespace. Building an
//! `Api` allocates (its URL, its namespace, the erased resource type), so the providers here
//! build each one once and hand out borrowed references on every later lookup.
//!
//! # Expected flow
//!
//! Build a [`StaticApiProvider`] with the namespaces you know and a [`CachingStrategy`], hand
//! it to a repository (for example [`K8sRepository`](crate::k8s::K8sRepository)), and let
//! [`Finalize`](crate::Finalize) ask it for the `Api` of each object's namespace.
//!
//! # Guarantees
//!
//! | strategy | listed namespace | other namespace |
//! | --- | --- | --- |
//! | [`Strict`](CachingStrategy::Strict) | cached `Api` | [`Error::UncachedNamespace`](crate::error::Error::UncachedNamespace) naming it |
//! | [`Adhoc`](CachingStrategy::Adhoc) | cached `Api` | a new `Api`, not cached |
//! | [`Extendable`](CachingStrategy::Extendable) | cached `Api` | built once, cached from then on |
//!
//! - Lookups never take a lock and never write memory that another reader reads, so
//!   concurrent reconciles do not slow each other down.
//! - Under `Extendable` (and in [`CachedApiProvider`]) concurrent first lookups of one
//!   namespace build exactly one `Api`; the others wait for it.
//!
//! # Caveats
//!
//! Cached `Api`s live as long as the provider: an `Extendable` provider that sees many
//! short-lived namespaces grows with them. Use `Adhoc` when namespaces come and go.
//!
//! # Errors
//!
//! Only `Strict` fails, and only for a namespace it was not given.

mod api_ref;
mod apis;
mod cached_provider;
mod static_provider;
mod strategy;
mod table;

use crate::object::ScopeKind;
use kube::Resource;

pub use self::api_ref::ApiRef;
pub use self::cached_provider::CachedApiProvider;
pub use self::static_provider::StaticApiProvider;
pub use self::strategy::CachingStrategy;
use crate::error::Result;

/// Hands out the [`Api<R>`](kube::Api) for a namespace.
///
/// Implement it to control how `Api`s are built (another client per namespace, say); use
/// [`StaticApiProvider`] or [`CachedApiProvider`] otherwise.
pub trait ProvideApi<R>: Send + Sync
where
    R: Resource<Scope: ScopeKind> + Clone,
{
    /// The `Api` for `namespace`: [`ApiRef::Cached`] when the provider keeps it,
    /// [`ApiRef::Built`] when it was built for this call alone.
    ///
    /// # Errors
    ///
    /// When the provider refuses the namespace, with an error that names it.
    fn get(&self, namespace: &str) -> Result<ApiRef<'_, R>>;
}

/// The namespaces a provider was built with, deduplicated, in the order given.
fn dedup_namespaces<I, S>(namespaces: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<String> = Vec::new();
    for namespace in namespaces {
        let namespace = namespace.as_ref();
        if !out.iter().any(|known| known == namespace) {
            out.push(namespace.to_owned());
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod test_support {
    use kube::Client;
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde::Serialize;

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
    pub(crate) struct WidgetSpec {
        pub(crate) size: u32,
    }

    /// A client whose service answers nothing: providers never send requests.
    pub(crate) fn offline_client() -> Client {
        let (service, _handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        Client::new(service, "default")
    }
}
