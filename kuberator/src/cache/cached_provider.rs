//! [`CachedApiProvider`]: every namespace cached on first use.

use std::fmt;

use crate::object::ScopeKind;
use kube::Client;
use kube::Resource;

use super::ApiRef;
use super::ProvideApi;
use super::apis::GrowingApis;
use super::dedup_namespaces;
use crate::error::Result;

/// An [`Api`](kube::Api) provider that discovers namespaces at run time: each one is built on first use
/// and cached from then on.
///
/// It behaves like a [`StaticApiProvider`](super::StaticApiProvider) with
/// [`CachingStrategy::Extendable`](super::CachingStrategy::Extendable) and no namespaces
/// listed; use it when an operator watches every namespace. Lookups take no lock.
///
/// ```
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// use kuberator::cache::{CachedApiProvider, ProvideApi};
///
/// # fn demo(client: kube::Client) -> kuberator::error::Result<()> {
/// let provider: CachedApiProvider<ConfigMap> = CachedApiProvider::new(client);
/// assert_eq!(provider.get("team-a")?.namespace(), Some("team-a"));
/// # Ok(())
/// # }
/// ```
pub struct CachedApiProvider<R> {
    apis: GrowingApis<R>,
}

impl<R> CachedApiProvider<R>
where
    R: Resource<Scope: ScopeKind>,
    R::DynamicType: Default,
{
    /// A provider with nothing cached yet.
    pub fn new(client: Client) -> Self {
        Self::with_namespaces(client, Vec::<&str>::new())
    }

    /// A provider with `namespaces` cached now and any other cached on first use.
    pub fn with_namespaces<I, S>(client: Client, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self { apis: GrowingApis::new(client, &dedup_namespaces(namespaces)) }
    }

    /// How many namespaces are cached.
    pub fn cached(&self) -> usize {
        self.apis.built()
    }

    /// The client every `Api` of this provider uses.
    pub fn client(&self) -> &Client {
        self.apis.client()
    }
}

impl<R> ProvideApi<R> for CachedApiProvider<R>
where
    R: Resource<Scope: ScopeKind> + Clone + Send + Sync,
    R::DynamicType: Default,
{
    #[inline]
    fn get(&self, namespace: &str) -> Result<ApiRef<'_, R>> {
        Ok(ApiRef::Cached(self.apis.get(namespace)))
    }
}

impl<R> fmt::Debug for CachedApiProvider<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedApiProvider").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::test_support::Widget;
    use crate::cache::test_support::offline_client;

    #[tokio::test]
    async fn caches_each_namespace_once() {
        let provider: CachedApiProvider<Widget> = CachedApiProvider::with_namespaces(offline_client(), ["a"]);
        assert_eq!(provider.cached(), 1);
        assert!(provider.get("b").unwrap().is_cached());
        assert!(provider.get("b").unwrap().is_cached());
        assert_eq!(provider.cached(), 2);
        assert_eq!(provider.get("b").unwrap().namespace(), Some("b"));
    }
}
