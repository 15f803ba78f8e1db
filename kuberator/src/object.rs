//! How Kuberator names objects in errors, logs and Events.

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::ResourceExt;

use crate::error::Error;
use crate::error::Result;

/// `Kind namespace/name`, the way an object is named in every message Kuberator writes.
pub(crate) fn describe<K>(object: &K) -> String
where
    K: Resource,
    K::DynamicType: Default,
{
    let dynamic_type = K::DynamicType::default();
    let kind = K::kind(&dynamic_type);
    let name = object.meta().name.as_deref().unwrap_or("<unnamed>");
    match object.meta().namespace.as_deref() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The object's name and namespace, or an error that says which is missing.
pub(crate) fn name_and_namespace<K>(object: &K) -> Result<(&str, &str)>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    let kind = || K::kind(&K::DynamicType::default()).into_owned();
    let name = object.meta().name.as_deref().ok_or_else(|| Error::UnnamedObject { kind: kind() })?;
    let namespace = object
        .meta()
        .namespace
        .as_deref()
        .ok_or_else(|| Error::MissingNamespace { kind: kind(), name: object.name_any() })?;
    Ok((name, namespace))
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
    }

    #[test]
    fn a_missing_namespace_or_name_is_an_error_naming_the_kind() {
        let error = name_and_namespace(&config_map(Some("demo"), None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "ConfigMap demo has no metadata.namespace, but ConfigMap is namespaced"
        );
        let error = name_and_namespace(&config_map(None, Some("default"))).unwrap_err();
        assert_eq!(error.to_string(), "a ConfigMap object has no metadata.name");
        assert_eq!(name_and_namespace(&config_map(Some("a"), Some("b"))).unwrap(), ("a", "b"));
    }
}
