//! What a derived operator needs in a cluster: its CRD, the RBAC rules for exactly the
//! calls it makes, and a Deployment to run it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::api::rbac::v1::RoleRef;
use k8s_openapi::api::rbac::v1::Subject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResourceExt;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Serialize;

use super::OperatorConfig;

/// The rules for exactly the calls a derived operator makes on `R`:
///
/// | group | resource | verbs | for |
/// | --- | --- | --- | --- |
/// | the CRD's | `<plural>` | `list`, `watch` | the controller's watch |
/// | the CRD's | `<plural>` | `patch` | adding and removing the finalizer |
/// | the CRD's | `<plural>/status` | `patch` | `update_status` |
/// | `events.k8s.io` | `events` | `create`, `patch` | Events, and their series |
pub fn rules<R: Resource<DynamicType = ()>>() -> Vec<PolicyRule> {
    let group = R::group(&()).into_owned();
    let plural = R::plural(&()).into_owned();
    let rule = |group: &str, resource: String, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource]),
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        ..PolicyRule::default()
    };
    vec![
        rule(&group, plural.clone(), &["list", "watch", "patch"]),
        rule(&group, format!("{plural}/status"), &["patch"]),
        rule("events.k8s.io", "events".to_owned(), &["create", "patch"]),
    ]
}

/// The RBAC objects for a derived operator running as ServiceAccount `account` in
/// `namespace`: a Role and RoleBinding when it watches one namespace, else a ClusterRole and
/// ClusterRoleBinding.
pub fn rbac<R: Resource<DynamicType = ()>>(
    config: &OperatorConfig,
    namespace: &str,
) -> Vec<serde_json::Value> {
    let name = config.controller_name.to_owned();
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.clone(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    };
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(config)),
        ..ObjectMeta::default()
    };
    match config.namespaces {
        [only] => vec![
            json(&Role { metadata: meta(Some(only)), rules: Some(rules::<R>()) }),
            json(&RoleBinding {
                metadata: meta(Some(only)),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: name.clone(),
                },
                subjects: Some(vec![subject]),
            }),
        ],
        _ => vec![
            json(&ClusterRole { metadata: meta(None), rules: Some(rules::<R>()), ..ClusterRole::default() }),
            json(&ClusterRoleBinding {
                metadata: meta(None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: name.clone(),
                },
                subjects: Some(vec![subject]),
            }),
        ],
    }
}

/// Everything to `kubectl apply`: the CRD, a ServiceAccount, the RBAC, and a Deployment of
/// `image` in `namespace`.
pub fn manifests<R>(config: &OperatorConfig, namespace: &str, image: &str) -> Vec<serde_json::Value>
where
    R: Resource<DynamicType = ()> + CustomResourceExt,
{
    let name = config.controller_name.to_owned();
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(config)),
        ..ObjectMeta::default()
    };
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector { match_labels: Some(labels(config)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(config)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    containers: vec![Container {
                        name,
                        image: Some(image.to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    let mut all =
        vec![json(&R::crd()), json(&ServiceAccount { metadata: meta, ..ServiceAccount::default() })];
    all.extend(rbac::<R>(config, namespace));
    all.push(json(&deployment));
    all
}

fn labels(config: &OperatorConfig) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), config.controller_name.to_owned())])
}

/// A k8s-openapi object as JSON, with its `apiVersion` and `kind`.
fn json<T: Serialize + k8s_openapi::Resource>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).expect("Kubernetes objects serialize")
}

/// Objects as a multi-document YAML stream.
pub fn to_yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|object| serde_yaml_ng::to_string(object).expect("JSON values serialize as YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachingStrategy;
    use crate::cache::test_support::Widget;

    fn config(namespaces: &'static [&'static str]) -> OperatorConfig {
        OperatorConfig {
            finalizer: "widgets.example.com/finalizer",
            namespaces,
            caching: CachingStrategy::Extendable,
            concurrency: Some(1),
            requeue_after_error: std::time::Duration::from_secs(60),
            labels: None,
            controller_name: "widget-operator",
        }
    }

    #[test]
    fn one_namespace_gets_a_role_in_it() {
        let objects = rbac::<Widget>(&config(&["team-a"]), "ops");
        let kinds: Vec<_> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Role", "RoleBinding"]);
        assert_eq!(objects[0]["metadata"]["namespace"], "team-a");
        assert_eq!(objects[1]["subjects"][0]["namespace"], "ops");
        assert_eq!(objects[1]["subjects"][0]["name"], "widget-operator");
    }

    #[test]
    fn every_namespace_gets_a_cluster_role_with_exactly_the_verbs_used() {
        let objects = rbac::<Widget>(&config(&[]), "ops");
        assert_eq!(objects[0]["kind"], "ClusterRole");
        assert_eq!(
            objects[0]["rules"],
            serde_json::json!([
                { "apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["list", "watch", "patch"] },
                { "apiGroups": ["example.com"], "resources": ["widgets/status"], "verbs": ["patch"] },
                { "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] },
            ])
        );
    }

    #[test]
    fn manifests_are_ready_to_apply() {
        let objects = manifests::<Widget>(&config(&["team-a"]), "ops", "registry.example/widget:1.0");
        let kinds: Vec<_> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding", "Deployment"]
        );
        let deployment = &objects[4];
        assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], "widget-operator");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example/widget:1.0"
        );
        let yaml = to_yaml(&objects);
        assert_eq!(yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---")), 4, "{yaml}");
    }
}
