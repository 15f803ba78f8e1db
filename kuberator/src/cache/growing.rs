//! Append-only maps from namespace to [`Api`], read without locks.
//!
//! [`FrozenApis`] is built once and never changes. [`GrowingApis`] adds namespaces on first
//! use: each `Api` is pushed into an append-only [`boxcar::Vec`] (so a reference to it stays
//! valid for as long as the map lives), and a copy-on-write index maps names to slots. A
//! lookup loads the current index through [`ArcSwap`], whose read path writes only to a slot
//! owned by the reading thread, so readers on different cores never bounce a cache line.
//! Inserts are rare (once per namespace) and serialized by a mutex.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use k8s_openapi::NamespaceResourceScope;
use kube::Api;
use kube::Client;
use kube::Resource;

type Index = HashMap<Box<str>, usize, RandomState>;

/// A fixed map from namespace to `Api`.
pub(super) struct FrozenApis<R> {
    apis: HashMap<Box<str>, Api<R>, RandomState>,
    /// The namespaces, comma separated, for error messages.
    listed: String,
}

impl<R> FrozenApis<R>
where
    R: Resource<Scope = NamespaceResourceScope>,
    R::DynamicType: Default,
{
    pub(super) fn new(client: &Client, namespaces: &[String]) -> Self {
        let apis = namespaces
            .iter()
            .map(|namespace| (namespace.as_str().into(), Api::namespaced(client.clone(), namespace)))
            .collect();
        Self { apis, listed: namespaces.join(", ") }
    }

    #[inline]
    pub(super) fn get(&self, namespace: &str) -> Option<&Api<R>> {
        self.apis.get(namespace)
    }

    pub(super) fn listed(&self) -> &str {
        if self.listed.is_empty() { "none" } else { &self.listed }
    }
}

/// A map from namespace to `Api` that builds each missing `Api` once, on first use.
pub(super) struct GrowingApis<R> {
    client: Client,
    apis: boxcar::Vec<Api<R>>,
    index: ArcSwap<Index>,
    insert: Mutex<()>,
}

impl<R> GrowingApis<R>
where
    R: Resource<Scope = NamespaceResourceScope>,
    R::DynamicType: Default,
{
    pub(super) fn new(client: Client, namespaces: &[String]) -> Self {
        let apis = boxcar::Vec::new();
        let mut index = Index::default();
        for namespace in namespaces {
            let slot = apis.push(Api::namespaced(client.clone(), namespace));
            index.insert(namespace.as_str().into(), slot);
        }
        Self { client, apis, index: ArcSwap::from_pointee(index), insert: Mutex::new(()) }
    }

    /// The cached `Api` for `namespace`, building and caching it first if needed.
    #[inline]
    pub(super) fn get(&self, namespace: &str) -> &Api<R> {
        match self.cached(namespace) {
            Some(api) => api,
            None => self.insert(namespace),
        }
    }

    #[inline]
    fn cached(&self, namespace: &str) -> Option<&Api<R>> {
        let slot = *self.index.load().get(namespace)?;
        self.apis.get(slot)
    }

    #[cold]
    fn insert(&self, namespace: &str) -> &Api<R> {
        // The lock guards no data, only the check-then-insert below; a panic while it was
        // held left the index as it was, so a poisoned lock is safe to take.
        let _only_writer = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(api) = self.cached(namespace) {
            return api;
        }
        let slot = self.apis.push(Api::namespaced(self.client.clone(), namespace));
        let mut index = Index::clone(&self.index.load());
        index.insert(namespace.into(), slot);
        self.index.store(Arc::new(index));
        &self.apis[slot]
    }

    /// How many `Api`s this map has built.
    pub(super) fn built(&self) -> usize {
        self.apis.count()
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
