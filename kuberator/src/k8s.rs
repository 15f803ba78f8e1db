//! [`K8sRepository`]: a ready [`Finalize`] implementation.

use std::fmt;
use std::fmt::Debug;
use std::marker::PhantomData;

use crate::Finalize;
use crate::KubeResource;
use crate::cache::ProvideApi;

/// A repository that implements [`Finalize`] with the provider it holds.
///
/// Use it unless you need state or methods of your own on the repository:
///
/// ```
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// use kuberator::cache::{CachingStrategy, StaticApiProvider};
/// use kuberator::k8s::K8sRepository;
///
/// type Repo = K8sRepository<ConfigMap, StaticApiProvider<ConfigMap>>;
///
/// # fn demo(client: kube::Client) {
/// let repo: Repo = K8sRepository::new(StaticApiProvider::new(client, vec!["default"], CachingStrategy::Strict));
/// # }
/// ```
pub struct K8sRepository<R, P> {
    api_provider: P,
    _resource: PhantomData<fn() -> R>,
}

impl<R, P> K8sRepository<R, P> {
    /// A repository that reaches the API through `api_provider`.
    pub fn new(api_provider: P) -> Self {
        Self { api_provider, _resource: PhantomData }
    }
}

impl<R, P> Finalize<R, P> for K8sRepository<R, P>
where
    R: KubeResource,
    P: ProvideApi<R>,
{
    fn api_provider(&self) -> &P {
        &self.api_provider
    }
}

impl<R, P> From<P> for K8sRepository<R, P> {
    fn from(api_provider: P) -> Self {
        Self::new(api_provider)
    }
}

impl<R, P: Debug> Debug for K8sRepository<R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("K8sRepository").field("api_provider", &self.api_provider).finish()
    }
}
