//! Objects as Kuberator sees them: the [`NamespacedResource`] bound every trait shares, how an
//! object is named in messages, and [`TryResource`] to read its name and namespace.

use std::fmt::Debug;
use std::hash::Hash;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::NamespaceResourceScope;
use kube::Api;
use kube::Client;
use kube::Resource;
use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::error::Result;

/// A namespaced Kubernetes resource that Kuberator can reconcile: what every trait of the crate
/// asks of its `R`. Custom resources from `#[derive(CustomResource)]` with `namespaced`, and
/// namespaced `k8s-openapi` types such as `ConfigMap`, implement it through the blanket
/// implementation; there is nothing to implement by hand.
pub trait NamespacedResource: KubeResource + Resource<Scope = NamespaceResourceScope> {}

impl<R> NamespacedResource for R where R: KubeResource + Resource<Scope = NamespaceResourceScope> {}

/// The scope of a resource type, namespaced or cluster-wide, as a trait Kuberator can be generic
/// over: implemented for `k8s-openapi`'s [`NamespaceResourceScope`] and
/// [`ClusterResourceScope`], the `Scope` of every typed resource.
pub trait ScopeKind: sealed::Sealed {
    /// Whether objects of this scope live in a namespace.
    const NAMESPACED: bool;

    /// The `Api` of `K` in `namespace`; every namespace (or the cluster, for a cluster-scoped
    /// `K`) when it is `None`.
    fn api<K>(client: Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = Self>,
        K::DynamicType: Default;
}

impl ScopeKind for NamespaceResourceScope {
    const NAMESPACED: bool = true;

    fn api<K>(client: Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = Self>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }
}

impl ScopeKind for ClusterResourceScope {
    const NAMESPACED: bool = false;

    fn api<K>(client: Client, _namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = Self>,
        K::DynamicType: Default,
    {
        Api::all(client)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for k8s_openapi::NamespaceResourceScope {}
    impl Sealed for k8s_openapi::ClusterResourceScope {}
}

/// The `Api` of `K` in `namespace` (ignored for a cluster-scoped `K`).
pub(crate) fn api_of<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource,
    K::Scope: ScopeKind,
    K::DynamicType: Default,
{
    <K::Scope as ScopeKind>::api::<K>(client, namespace)
}

/// Whether `K` is namespaced.
pub(crate) fn is_namespaced<K>() -> bool
where
    K: Resource,
    K::Scope: ScopeKind,
{
    <K::Scope as ScopeKind>::NAMESPACED
}

/// A Kubernetes resource that Kuberator can reconcile, namespaced or cluster-scoped: what the
/// traits of the crate ask of their `R`. Every [`NamespacedResource`] is one, and so is a
/// cluster-scoped custom resource (`#[derive(CustomResource)]` without `namespaced`) or a
/// cluster-scoped `k8s-openapi` type such as `Namespace`. Implemented through a blanket
/// implementation; there is nothing to implement by hand.
pub trait KubeResource:
    Resource<DynamicType: Default + Eq + Hash + Clone + Debug + Unpin, Scope: ScopeKind>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<R> KubeResource for R where
    R: Resource<DynamicType: Default + Eq + Hash + Clone + Debug + Unpin, Scope: ScopeKind>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// `Kind namespace/name` (or `Kind name` without a namespace), the way every message Kuberator
/// writes names an object; the one place that format is written.
pub(crate) fn label(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let name = name.unwrap_or("<unnamed>");
    match namespace {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// [`label`] of a typed object.
pub(crate) fn describe<K>(object: &K) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    let meta = object.meta();
    label(&K::kind(&K::DynamicType::default()), meta.namespace.as_deref(), meta.name.as_deref())
}

/// Reads an object's name and namespace, or says which is missing: `try_name()?` and
/// `try_namespace()?` in a handler instead of `unwrap()`.
///
/// Implemented for every [`Resource`].
///
/// ```
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kuberator::TryResource;
///
/// let mut map = ConfigMap::default();
/// map.metadata.name = Some("settings".into());
/// assert_eq!(map.try_name().unwrap(), "settings");
/// assert_eq!(
///     map.try_namespace().unwrap_err().to_string(),
///     "ConfigMap settings has no metadata.namespace, but ConfigMap is namespaced"
/// );
/// ```
pub trait TryResource {
    /// `metadata.name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnnamedObject`], naming the kind, when the object has no name.
    fn try_name(&self) -> Result<&str>;

    /// `metadata.namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::MissingNamespace`], naming the object, when it has no namespace.
    fn try_namespace(&self) -> Result<String>;
}

impl<K> TryResource for K
where
    K: Resource,
    K::DynamicType: Default,
{
    fn try_name(&self) -> Result<&str> {
        self.meta()
            .name
            .as_deref()
            .ok_or_else(|| Error::UnnamedObject { kind: K::kind(&K::DynamicType::default()).into_owned() })
    }

    fn try_namespace(&self) -> Result<String> {
        self.namespace().ok_or_else(|| Error::MissingNamespace {
            kind: K::kind(&K::DynamicType::default()).into_owned(),
            name: self.name_any(),
        })
    }
}

/// The object's name, and its namespace when `K` is namespaced (`None` for a cluster-scoped
/// `K`), or an error that says which is missing.
pub(crate) fn name_and_scope<K>(object: &K) -> Result<(&str, Option<&str>)>
where
    K: Resource<Scope: ScopeKind>,
    K::DynamicType: Default,
{
    let name = object.try_name()?;
    if !is_namespaced::<K>() {
        return Ok((name, None));
    }
    let namespace = object.meta().namespace.as_deref().ok_or_else(|| Error::MissingNamespace {
        kind: K::kind(&K::DynamicType::default()).into_owned(),
        name: name.to_owned(),
    })?;
    Ok((name, Some(namespace)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn config_map(name: Option<&str>, namespace: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: name.map(Into::into),
                namespace: namespace.map(Into::into),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn objects_are_named_kind_namespace_name() {
        assert_eq!(describe(&config_map(Some("demo"), Some("team-a"))), "ConfigMap team-a/demo");
        assert_eq!(describe(&config_map(Some("demo"), None)), "ConfigMap demo");
        assert_eq!(label("Namespace", None, Some("team-a")), "Namespace team-a");
    }

    #[test]
    fn a_missing_namespace_or_name_is_an_error_naming_the_kind() {
        let error = name_and_scope(&config_map(Some("demo"), None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ConfigMap demo has no metadata.namespace, but ConfigMap is namespaced"
        );
        let error = name_and_scope(&config_map(None, Some("default"))).unwrap_err();
        assert_eq!(error.to_string(), "a ConfigMap object has no metadata.name");
        assert_eq!(name_and_scope(&config_map(Some("a"), Some("b"))).unwrap(), ("a", Some("b")));
        let namespace = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta { name: Some("team-a".into()), ..ObjectMeta::default() },
            ..Default::default()
        };
        assert_eq!(name_and_scope(&namespace).unwrap(), ("team-a", None), "cluster-scoped: no namespace");
    }

    #[test]
    fn try_resource_reads_name_and_namespace_or_names_what_is_missing() {
        let map = config_map(Some("demo"), Some("team-a"));
        assert_eq!(map.try_name().unwrap(), "demo");
        assert_eq!(map.try_namespace().unwrap(), "team-a");
        let error = config_map(None, None).try_name().unwrap_err();
        assert!(matches!(error, Error::UnnamedObject { ref kind } if kind == "ConfigMap"), "{error}");
    }
}
