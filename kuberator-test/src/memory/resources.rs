//! The kinds the in-memory server serves: the built-in ones operators use, and the custom
//! resources of the CRDs installed into it.

use serde_json::Value;
use serde_json::json;

/// One served resource: a group, version and plural, and how the server treats it.
#[derive(Debug, Clone)]
pub(crate) struct ResourceType {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) namespaced: bool,
    pub(crate) short_names: Vec<String>,
    pub(crate) categories: Vec<String>,
    /// Whether it has a `/status` subresource: then the main resource ignores status.
    pub(crate) status: bool,
    /// Whether `metadata.generation` is kept (bumped on changes outside metadata and status).
    pub(crate) generation: bool,
    /// Where its objects are stored: several versions (and both kinds of Event) share one.
    pub(crate) storage: String,
    /// The CRD's structural schema, for custom resources.
    pub(crate) schema: Option<Value>,
    /// The CRD's extra `kubectl get` columns.
    pub(crate) columns: Vec<Value>,
    /// Whether a PUT without `resourceVersion` is allowed (built-ins) or refused (custom).
    pub(crate) unconditional_update: bool,
    /// Whether DELETE answers with the deleted object (custom resources) or a `Status`.
    pub(crate) returns_deleted: bool,
    /// A review (TokenReview, SubjectAccessReview): only `create`, nothing stored.
    pub(crate) review: bool,
    /// Whether it is a custom resource.
    pub(crate) custom: bool,
    /// The CRD's `scale` subresource is not served; kept for discovery.
    pub(crate) served_verbs: &'static [&'static str],
}

const ALL_VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const CREATE_ONLY: &[&str] = &["create"];

impl ResourceType {
    /// `plural` for the core group, `plural.group` otherwise: how messages name it.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `api/v1` for the core group, `apis/group/version` otherwise: where it is served.
    pub(crate) fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    #[allow(clippy::too_many_arguments)]
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
        status: bool,
        generation: bool,
    ) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: short_names.iter().map(|name| (*name).to_string()).collect(),
            categories: Vec::new(),
            status,
            generation,
            storage: format!("{group}/{plural}"),
            schema: None,
            columns: Vec::new(),
            unconditional_update: true,
            returns_deleted: false,
            review: false,
            custom: false,
            served_verbs: ALL_VERBS,
        }
    }

    fn review(group: &str, plural: &str, kind: &str) -> Self {
        let mut review = Self::builtin(group, "v1", plural, kind, false, &[], false, false);
        review.review = true;
        review.served_verbs = CREATE_ONLY;
        review
    }
}

/// The built-in resources: what operators and `kubectl` use.
pub(crate) fn builtins() -> Vec<ResourceType> {
    let b = ResourceType::builtin;
    let mut namespaces = b("", "v1", "namespaces", "Namespace", false, &["ns"], true, false);
    namespaces.returns_deleted = true;
    let mut crds = b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        true,
    );
    crds.returns_deleted = true;
    let mut core_events = b("", "v1", "events", "Event", true, &["ev"], false, false);
    core_events.storage = "events".into();
    let mut events = b("events.k8s.io", "v1", "events", "Event", true, &["ev"], false, false);
    events.storage = "events".into();
    let mut deployments = b("apps", "v1", "deployments", "Deployment", true, &["deploy"], true, true);
    deployments.categories = vec!["all".into()];
    let mut services = b("", "v1", "services", "Service", true, &["svc"], true, false);
    services.categories = vec!["all".into()];
    let mut pods = b("", "v1", "pods", "Pod", true, &["po"], true, false);
    pods.categories = vec!["all".into()];
    vec![
        namespaces,
        b("", "v1", "configmaps", "ConfigMap", true, &["cm"], false, false),
        b("", "v1", "secrets", "Secret", true, &[], false, false),
        services,
        b("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"], false, false),
        pods,
        b("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, &["pvc"], true, false),
        core_events,
        events,
        deployments,
        b("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"], true, true),
        b("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true, true),
        b("batch", "v1", "jobs", "Job", true, &[], true, true),
        b("networking.k8s.io", "v1", "ingresses", "Ingress", true, &["ing"], true, true),
        b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, &["pdb"], true, true),
        b("coordination.k8s.io", "v1", "leases", "Lease", true, &[], false, false),
        crds,
        b("rbac.authorization.k8s.io", "v1", "roles", "Role", true, &[], false, false),
        b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, &[], false, false),
        b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, &[], false, false),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
        ),
        ResourceType::review("authentication.k8s.io", "tokenreviews", "TokenReview"),
        ResourceType::review("authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview"),
        ResourceType::review("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ]
}

/// The resources a CRD defines: one per served version.
pub(crate) fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let strings = |value: &Value| -> Vec<String> {
        value.as_array().into_iter().flatten().filter_map(|item| item.as_str().map(str::to_string)).collect()
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    versions
        .iter()
        .filter(|version| version["served"].as_bool().unwrap_or(true))
        .map(|version| ResourceType {
            group: group.into(),
            version: version["name"].as_str().unwrap_or_default().into(),
            plural: plural.into(),
            singular: names["singular"].as_str().map_or_else(|| kind.to_lowercase(), str::to_string),
            kind: kind.into(),
            namespaced: spec["scope"] != "Cluster",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: version["subresources"]["status"].is_object(),
            generation: true,
            storage: format!("{group}/{plural}"),
            schema: Some(version["schema"]["openAPIV3Schema"].clone()).filter(|schema| !schema.is_null()),
            columns: version["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
            unconditional_update: false,
            returns_deleted: false,
            review: false,
            custom: true,
            served_verbs: ALL_VERBS,
        })
        .collect()
}

/// An `APIResource` for discovery, and its `/status` when it has one.
pub(crate) fn discovery_entries(resource: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": resource.plural,
        "singularName": resource.singular,
        "namespaced": resource.namespaced,
        "kind": resource.kind,
        "verbs": resource.served_verbs,
    });
    if !resource.short_names.is_empty() {
        main["shortNames"] = json!(resource.short_names);
    }
    if !resource.categories.is_empty() {
        main["categories"] = json!(resource.categories);
    }
    let mut entries = vec![main];
    if resource.status {
        entries.push(json!({
            "name": format!("{}/status", resource.plural),
            "singularName": "",
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    entries
}
