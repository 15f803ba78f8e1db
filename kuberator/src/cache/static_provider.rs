//! [`StaticApiProvider`]: the namespaces known at start, and a [`CachingStrategy`] for the rest.

use std::fmt;

use crate::object::ScopeKind;
use kube::Client;
use kube::Resource;

use super::ApiRef;
use super::CachingStrategy;
use super::ProvideApi;
use super::apis::FrozenApis;
use super::apis::GrowingApis;
use super::dedup_namespaces;
use crate::error::Error;
use crate::error::Result;

/// An [`Api`](kube::Api) provider built from a list of namespaces and a [`CachingStrategy`].
///
/// ```
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// use kuberator::cache::{CachingStrategy, ProvideApi, StaticApiProvider};
///
/// # fn demo(client: kube::Client) -> kuberator::error::Result<()> {
/// let provider: StaticApiProvider<ConfigMap> =
///     StaticApiProvider::new(client, vec!["default", "production"], CachingStrategy::Strict);
/// let api = provider.get("production")?;
/// assert_eq!(api.namespace(), Some("production"));
/// assert!(provider.get("staging").is_err());
/// # Ok(())
/// # }
/// ```
pub struct StaticApiProvider<R> {
    strategy: CachingStrategy,
    client: Client,
    /// The namespaces given at start: every strategy looks here first.
    listed: FrozenApis<R>,
    /// Namespaces discovered at run time, under `Extendable` only.
    discovered: Option<GrowingApis<R>>,
}

impl<R> StaticApiProvider<R>
where
    R: Resource<Scope: ScopeKind>,
    R::DynamicType: Default,
{
    /// Builds an `Api` for each of `namespaces` now, and handles other namespaces as
    /// `strategy` says.
    pub fn new<I, S>(client: Client, namespaces: I, strategy: CachingStrategy) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let namespaces = dedup_namespaces(namespaces);
        let listed = FrozenApis::new(&client, &namespaces);
        let discovered =
            (strategy == CachingStrategy::Extendable).then(|| GrowingApis::new(client.clone(), &[]));
        Self { strategy, client, listed, discovered }
    }

    /// The strategy this provider was built with.
    pub fn strategy(&self) -> CachingStrategy {
        self.strategy
    }

    /// The client every `Api` of this provider uses.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl<R> ProvideApi<R> for StaticApiProvider<R>
where
    R: Resource<Scope: ScopeKind> + Clone + Send + Sync,
    R::DynamicType: Default,
{
    #[inline]
    fn get(&self, namespace: &str) -> Result<ApiRef<'_, R>> {
        match self.listed.get(namespace) {
            Some(api) => Ok(ApiRef::Cached(api)),
            None => self.unlisted(namespace),
        }
    }
}

impl<R> StaticApiProvider<R>
where
    R: Resource<Scope: ScopeKind>,
    R::DynamicType: Default,
{
    /// A namespace that was not given at start: what the strategy says.
    #[cold]
    #[inline(never)]
    fn unlisted(&self, namespace: &str) -> Result<ApiRef<'_, R>> {
        match (&self.discovered, self.strategy) {
            (Some(discovered), _) => Ok(ApiRef::Cached(discovered.get(namespace))),
            (None, CachingStrategy::Adhoc) => {
                Ok(ApiRef::Built(Box::new(crate::object::api_of::<R>(self.client.clone(), Some(namespace)))))
            }
            (None, _) => Err(Error::UncachedNamespace {
                namespace: namespace.to_owned(),
                cached: self.listed.listed().to_owned(),
            }),
        }
    }
}

impl<R> fmt::Debug for StaticApiProvider<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticApiProvider").field("strategy", &self.strategy).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use kube::Api;

    use super::*;
    use crate::cache::test_support::Widget;
    use crate::cache::test_support::offline_client;

    fn provider(strategy: CachingStrategy) -> StaticApiProvider<Widget> {
        StaticApiProvider::new(offline_client(), vec!["default", "production", "default"], strategy)
    }

    fn is_borrowed(api: &ApiRef<'_, Widget>) -> bool {
        api.is_cached()
    }

    #[tokio::test]
    async fn strict_hits_listed_namespaces() {
        let provider = provider(CachingStrategy::Strict);
        let api = provider.get("production").unwrap();
        assert!(is_borrowed(&api));
        assert_eq!(api.namespace(), Some("production"));
        assert_eq!(api.resource_url(), "/apis/example.com/v1/namespaces/production/widgets");
    }

    #[tokio::test]
    async fn strict_refuses_an_unlisted_namespace_by_name() {
        let provider = provider(CachingStrategy::Strict);
        let error = provider.get("team-b").unwrap_err();
        match &error {
            Error::UncachedNamespace { namespace, cached } => {
                assert_eq!(namespace, "team-b");
                assert_eq!(cached, "default, production");
            }
            other => panic!("expected UncachedNamespace, got {other:?}"),
        }
        assert!(error.to_string().contains("`team-b`"));
    }

    #[tokio::test]
    async fn strict_with_no_namespaces_says_so() {
        let provider: StaticApiProvider<Widget> =
            StaticApiProvider::new(offline_client(), Vec::<&str>::new(), CachingStrategy::Strict);
        let error = provider.get("default").unwrap_err();
        assert!(error.to_string().contains("(cached: none)"), "{error}");
    }

    #[tokio::test]
    async fn adhoc_hits_listed_and_builds_others_without_caching() {
        let provider = provider(CachingStrategy::Adhoc);
        assert!(is_borrowed(&provider.get("default").unwrap()));

        let first = provider.get("team-b").unwrap();
        assert!(!is_borrowed(&first), "an unlisted namespace is built for this call only");
        assert_eq!(first.namespace(), Some("team-b"));
        assert!(!is_borrowed(&provider.get("team-b").unwrap()), "and not cached afterwards");
    }

    #[tokio::test]
    async fn extendable_caches_a_new_namespace_on_first_use() {
        let provider = provider(CachingStrategy::Extendable);
        assert!(is_borrowed(&provider.get("default").unwrap()));
        let apis = provider.discovered.as_ref().expect("Extendable grows");
        assert_eq!(apis.built(), 0, "listed namespaces live in the fixed table");

        let first = provider.get("team-b").unwrap();
        assert_eq!(first.namespace(), Some("team-b"));
        let first: *const Api<Widget> = &*first;
        let second: *const Api<Widget> = &*provider.get("team-b").unwrap();
        assert_eq!(first, second, "the second lookup returns the cached Api");
        assert_eq!(apis.built(), 1);
    }

    #[tokio::test]
    async fn the_strategy_is_reported() {
        assert_eq!(provider(CachingStrategy::Adhoc).strategy(), CachingStrategy::Adhoc);
        assert_eq!(CachingStrategy::Extendable.to_string(), "Extendable");
    }
}
