//! The two `Api` caches behind the providers, both on [`NamespaceTable`].

use crate::object::ScopeKind;
use kube::Api;
use kube::Client;
use kube::Resource;

use super::table::FrozenTable;
use super::table::NamespaceTable;

/// The namespaces given at start, and nothing else.
pub(super) struct FrozenApis<R> {
    apis: FrozenTable<Api<R>>,
    /// The namespaces, comma separated, for error messages.
    listed: String,
}

impl<R> FrozenApis<R>
where
    R: Resource<Scope: ScopeKind>,
    R::DynamicType: Default,
{
    pub(super) fn new(client: &Client, namespaces: &[String]) -> Self {
        let apis = FrozenTable::new(namespaces.iter().map(|namespace| {
            (namespace.clone(), crate::object::api_of::<R>(client.clone(), Some(namespace)))
        }));
        let listed = if namespaces.is_empty() { "none".to_owned() } else { namespaces.join(", ") };
        Self { apis, listed }
    }

    #[inline]
    pub(super) fn get(&self, namespace: &str) -> Option<&Api<R>> {
        self.apis.get(namespace)
    }

    pub(super) fn listed(&self) -> &str {
        &self.listed
    }
}

/// The namespaces given at start, and each other one from its first use on.
pub(super) struct GrowingApis<R> {
    client: Client,
    apis: NamespaceTable<Api<R>>,
}

impl<R> GrowingApis<R>
where
    R: Resource<Scope: ScopeKind>,
    R::DynamicType: Default,
{
    pub(super) fn new(client: Client, namespaces: &[String]) -> Self {
        let apis = NamespaceTable::new(namespaces.iter().map(|namespace| {
            (namespace.clone(), crate::object::api_of::<R>(client.clone(), Some(namespace)))
        }));
        Self { client, apis }
    }

    /// The cached `Api` for `namespace`, building and caching it first if needed.
    #[inline]
    pub(super) fn get(&self, namespace: &str) -> &Api<R> {
        self.apis.get_or_insert_with(namespace, || {
            crate::object::api_of::<R>(self.client.clone(), Some(namespace))
        })
    }

    /// How many `Api`s this cache has built.
    pub(super) fn built(&self) -> usize {
        self.apis.len()
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::cache::test_support::Widget;
    use crate::cache::test_support::offline_client;

    #[tokio::test]
    async fn concurrent_first_lookups_build_one_api_per_namespace() {
        let apis: GrowingApis<Widget> = GrowingApis::new(offline_client(), &[]);
        let threads = 8;
        let barrier = Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    barrier.wait();
                    for round in 0..50 {
                        let namespace = format!("team-{}", round % 5);
                        let api = apis.get(&namespace);
                        assert_eq!(api.namespace(), Some(namespace.as_str()));
                    }
                });
            }
        });
        assert_eq!(apis.built(), 5);
        let first = apis.get("team-0") as *const Api<Widget>;
        assert_eq!(first, apis.get("team-0") as *const Api<Widget>, "the same Api every time");
    }
}
