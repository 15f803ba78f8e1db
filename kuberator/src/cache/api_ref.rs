//! [`ApiRef`]: what a provider hands out.

use std::fmt;
use std::ops::Deref;

use kube::Api;

/// An [`Api`] from a provider: borrowed from its cache, or built for this lookup alone.
///
/// It dereferences to [`Api<R>`], so `provider.get(ns)?.patch_status(..)` reads as if it
/// were one. It is two words, so handing it out costs nothing next to the lookup.
pub enum ApiRef<'a, R> {
    /// An `Api` the provider keeps.
    Cached(&'a Api<R>),
    /// An `Api` built for this lookup and not kept (a miss under
    /// [`CachingStrategy::Adhoc`](super::CachingStrategy::Adhoc)).
    Built(Box<Api<R>>),
}

impl<R> ApiRef<'_, R> {
    /// Whether the provider keeps this `Api`.
    pub fn is_cached(&self) -> bool {
        matches!(self, ApiRef::Cached(_))
    }
}

impl<R: Clone> ApiRef<'_, R> {
    /// The `Api` itself, cloned when it is cached.
    pub fn into_owned(self) -> Api<R> {
        match self {
            ApiRef::Cached(api) => api.clone(),
            ApiRef::Built(api) => *api,
        }
    }
}

impl<R> Deref for ApiRef<'_, R> {
    type Target = Api<R>;

    #[inline]
    fn deref(&self) -> &Api<R> {
        match self {
            ApiRef::Cached(api) => api,
            ApiRef::Built(api) => api,
        }
    }
}

impl<R: kube::Resource> fmt::Debug for ApiRef<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_cached() { "Cached" } else { "Built" };
        f.debug_tuple(state).field(&self.resource_url()).finish()
    }
}
