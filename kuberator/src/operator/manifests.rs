//! What a derived operator needs in a cluster: its CRD, the RBAC rules for exactly the
//! calls it makes, and a Deployment to run it.
//!
//! The derived operator's `crd`, `rbac` and `manifests` subcommands print these; they take
//! the same `--namespaces` and leader election flags as `run`, so what they print matches
//! what `run` does with those flags.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::api::core::v1::Capabilities;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::ContainerPort;
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::api::core::v1::EnvVarSource;
use k8s_openapi::api::core::v1::HTTPGetAction;
use k8s_openapi::api::core::v1::ObjectFieldSelector;
use k8s_openapi::api::core::v1::PodSecurityContext;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::api::core::v1::SeccompProfile;
use k8s_openapi::api::core::v1::SecurityContext;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::api::rbac::v1::RoleRef;
use k8s_openapi::api::rbac::v1::Subject;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResourceExt;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Serialize;

use super::Settings;

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

/// The rules for the children of the kinds in `owns`, one per API group, with the calls
/// [`Children`](crate::children::Children) makes:
///
/// | verbs | for |
/// | --- | --- |
/// | `list`, `watch` | the watch that caches children and reconciles their parent |
/// | `get` | reading a child the cache does not hold (before an apply, and `ctx.get`) |
/// | `create`, `patch` | server-side apply (the API server authorizes an apply that makes the object as `create`) |
/// | `delete` | `prune` |
pub fn owned_rules(owns: &[crate::children::Owned]) -> Vec<PolicyRule> {
    rules_by_group(
        owns.iter().map(crate::children::Owned::kind),
        &["get", "list", "watch", "create", "patch", "delete"],
    )
}

/// One rule per API group of `kinds`, with each kind's resource once and `verbs`.
fn rules_by_group(
    kinds: impl Iterator<Item = crate::children::OwnedKind>,
    verbs: &[&str],
) -> Vec<PolicyRule> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in kinds {
        let plurals = by_group.entry(kind.group).or_default();
        if !plurals.contains(&kind.plural) {
            plurals.push(kind.plural);
        }
    }
    by_group
        .into_iter()
        .map(|(group, plurals)| PolicyRule {
            api_groups: Some(vec![group]),
            resources: Some(plurals),
            verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// The rules for the kinds in `references`, one per API group: `list` and `watch`, what their
/// cache needs, and nothing that writes.
pub fn referenced_rules(references: &[crate::references::Referenced]) -> Vec<PolicyRule> {
    rules_by_group(references.iter().map(crate::references::Referenced::kind), &["list", "watch"])
}

/// The rules for leader election on a Lease ([`crate::leader`]): `get`, `create`, `update`,
/// and `list` and `watch` to notice a release at once.
pub fn lease_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".to_owned()]),
        resources: Some(vec!["leases".to_owned()]),
        verbs: ["get", "create", "update", "list", "watch"].map(str::to_owned).to_vec(),
        ..PolicyRule::default()
    }]
}

/// The rules for sharding ([`crate::shard`]): leader election's, and `delete`, for the
/// Leases of replicas that died.
pub fn shard_lease_rules() -> Vec<PolicyRule> {
    let mut rules = lease_rules();
    for rule in &mut rules {
        rule.verbs.push("delete".to_owned());
    }
    rules
}

/// How the replicas of a sharded operator split the objects (`--shards`, `--shard-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlacement {
    /// Shards of the hash space.
    pub shards: u32,
    /// What is hashed.
    pub key: crate::shard::ShardKey,
}

/// Where and how a derived operator is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The namespace it runs in: its ServiceAccount and Deployment.
    pub namespace: String,
    /// The namespaces it watches; empty means every namespace.
    pub watched: Vec<String>,
    /// The namespace of its leader election (or shard) Leases; `None` when leader election
    /// and sharding are off.
    pub lease_namespace: Option<String>,
    /// How its replicas share the objects; `None`: one reconciles them all.
    pub sharding: Option<ShardPlacement>,
    /// Whether `/metrics` is served only to callers the API server authenticates and
    /// authorizes (the default), which takes `create` on `tokenreviews` and
    /// `subjectaccessreviews`; `false` with `--metrics-insecure`.
    pub metrics_auth: bool,
}

impl Placement {
    /// Runs in `namespace`, watches what the attribute says, and holds its Lease in
    /// `namespace`.
    pub fn new(settings: &Settings, namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            watched: settings.namespaces.clone(),
            lease_namespace: Some(namespace.to_owned()),
            sharding: None,
            metrics_auth: true,
        }
    }
}

/// The rules to check a `/metrics` caller with the API server: `create` on `tokenreviews`
/// (who is it?) and `subjectaccessreviews` (may they get `/metrics`?).
pub fn metrics_auth_rules() -> Vec<PolicyRule> {
    let create = |group: &str, resource: &str| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: vec!["create".to_owned()],
        ..PolicyRule::default()
    };
    vec![
        create("authentication.k8s.io", "tokenreviews"),
        create("authorization.k8s.io", "subjectaccessreviews"),
    ]
}

/// The rule a scraper needs to read `/metrics`: `get` on that non-resource URL.
pub fn metrics_reader_rules() -> Vec<PolicyRule> {
    vec![PolicyRule {
        non_resource_urls: Some(vec!["/metrics".to_owned()]),
        verbs: vec!["get".to_owned()],
        ..PolicyRule::default()
    }]
}

/// The RBAC objects for a derived operator running as the ServiceAccount named after its
/// controller, with [`rules`] and [`owned_rules`]: a Role and RoleBinding when it watches one
/// namespace, else a ClusterRole and ClusterRoleBinding; with leader election, a Role and
/// RoleBinding for its Lease too. With [`Placement::metrics_auth`], a ClusterRole and
/// ClusterRoleBinding `<name>-metrics-auth` with [`metrics_auth_rules`] (reviews are
/// cluster-wide), and a ClusterRole `<name>-metrics-reader` with [`metrics_reader_rules`],
/// bound to no one: bind your scraper's ServiceAccount to it.
pub fn rbac<R: Resource<DynamicType = ()>>(
    settings: &Settings,
    placement: &Placement,
) -> Vec<serde_json::Value> {
    rbac_of(settings.controller_name, &[Part::of::<R>(settings, placement.watched.clone())], placement)
}

/// One controller's share of what its process needs in a cluster.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Its CRD, as [`crd`] prints it; `None` for a kind that is not a custom resource.
    pub(crate) crd: Option<serde_json::Value>,
    /// The namespaces it watches; empty means every namespace.
    pub(crate) watched: Vec<String>,
    /// The rules for the calls it makes.
    pub(crate) rules: Vec<PolicyRule>,
    /// Its kind and webhooks, when it serves any.
    pub(crate) hooked: Option<crate::webhook::Hooked>,
}

impl Part {
    /// The share of an operator of `R` with `settings`, watching `watched`: [`rules`] and
    /// [`owned_rules`]. No CRD (see [`Part::with_crd`]).
    pub(crate) fn of<R: Resource<DynamicType = ()>>(settings: &Settings, watched: Vec<String>) -> Self {
        let mut rules = rules::<R>();
        rules.extend(owned_rules(&settings.owns));
        rules.extend(referenced_rules(&settings.references));
        Self { crd: None, watched, rules, hooked: None }
    }

    /// With its webhooks, when `settings` names any.
    pub(crate) fn with_webhooks<R: Resource<DynamicType = ()> + CustomResourceExt>(
        self,
        settings: &Settings,
        versions: &[crate::webhook::Version<R>],
    ) -> Self {
        let convert = !versions.is_empty();
        let crd = if convert { Some(crd_with_versions::<R>(versions)) } else { self.crd.clone() };
        let hooked = (settings.webhooks.any() || convert).then(|| {
            let namespaced = R::crd().spec.scope == "Namespaced";
            let mut hooked = crate::webhook::Hooked::of::<R>(settings, namespaced, convert);
            hooked.namespaces.clone_from(&self.watched);
            hooked
        });
        Self { hooked, crd, ..self }
    }

    /// With `R`'s CRD.
    pub(crate) fn with_crd<R: CustomResourceExt>(self) -> Self {
        Self { crd: Some(crd::<R>()), ..self }
    }
}

/// `rules` with each (API group, resource) once, with the union of the verbs any rule gives
/// it, then the resources of one group with the same verbs in one rule: the least privilege
/// that allows every call of every rule. Order is kept (first seen first), so rules that
/// need no merging come out as they went in.
pub fn merge_rules(rules: impl IntoIterator<Item = PolicyRule>) -> Vec<PolicyRule> {
    let mut verbs: Vec<((String, String), Vec<String>)> = Vec::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let key = (group.clone(), resource.clone());
                let index = match verbs.iter().position(|(known, _)| *known == key) {
                    Some(index) => index,
                    None => {
                        verbs.push((key, Vec::new()));
                        verbs.len() - 1
                    }
                };
                for verb in &rule.verbs {
                    if !verbs[index].1.contains(verb) {
                        verbs[index].1.push(verb.clone());
                    }
                }
            }
        }
    }
    let mut merged: Vec<PolicyRule> = Vec::new();
    for ((group, resource), verbs) in verbs {
        let same = merged.iter_mut().find(|rule| {
            rule.api_groups.as_deref() == Some(std::slice::from_ref(&group)) && rule.verbs == verbs
        });
        match same {
            Some(rule) => rule.resources.get_or_insert_with(Vec::new).push(resource),
            None => merged.push(PolicyRule {
                api_groups: Some(vec![group]),
                resources: Some(vec![resource]),
                verbs,
                ..PolicyRule::default()
            }),
        }
    }
    merged
}

/// The RBAC objects for a process named `name` (its ServiceAccount's name) that runs the
/// controllers of `parts`: their rules merged ([`merge_rules`]) per scope, a Role in the
/// namespace of the controllers that watch exactly one, a ClusterRole for those that watch
/// several or all; the Lease's and `/metrics`' objects as [`rbac`] says.
pub(crate) fn rbac_of(name: &str, parts: &[Part], placement: &Placement) -> Vec<serde_json::Value> {
    let name = name.to_owned();
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.clone(),
        namespace: Some(placement.namespace.clone()),
        ..Subject::default()
    };
    let meta = |object: &str, namespace: Option<&str>| ObjectMeta {
        name: Some(object.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(&name)),
        ..ObjectMeta::default()
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.to_owned(),
    };
    // Each scope (one namespace, or the cluster) with the rules of its controllers.
    let mut scopes: Vec<(Option<&str>, Vec<PolicyRule>)> = Vec::new();
    for part in parts {
        let scope = match part.watched.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        };
        match scopes.iter_mut().find(|(known, _)| *known == scope) {
            Some((_, rules)) => rules.extend(part.rules.iter().cloned()),
            None => scopes.push((scope, part.rules.clone())),
        }
    }
    let mut objects = Vec::new();
    for (scope, rules) in scopes {
        let rules = Some(merge_rules(rules));
        match scope {
            Some(namespace) => {
                objects.push(json(&Role { metadata: meta(&name, Some(namespace)), rules }));
                objects.push(json(&RoleBinding {
                    metadata: meta(&name, Some(namespace)),
                    role_ref: role_ref("Role", &name),
                    subjects: Some(vec![subject.clone()]),
                }));
            }
            None => {
                objects.push(json(&ClusterRole {
                    metadata: meta(&name, None),
                    rules,
                    ..ClusterRole::default()
                }));
                objects.push(json(&ClusterRoleBinding {
                    metadata: meta(&name, None),
                    role_ref: role_ref("ClusterRole", &name),
                    subjects: Some(vec![subject.clone()]),
                }));
            }
        }
    }
    if let Some(lease_namespace) = &placement.lease_namespace {
        let lease_role = format!("{name}-leader-election");
        objects.push(json(&Role {
            metadata: meta(&lease_role, Some(lease_namespace)),
            rules: Some(if placement.sharding.is_some() { shard_lease_rules() } else { lease_rules() }),
        }));
        objects.push(json(&RoleBinding {
            metadata: meta(&lease_role, Some(lease_namespace)),
            role_ref: role_ref("Role", &lease_role),
            subjects: Some(vec![subject.clone()]),
        }));
    }
    if parts.iter().any(|part| part.hooked.is_some()) {
        let webhooks = format!("{name}-webhooks");
        objects.push(json(&ClusterRole {
            metadata: meta(&webhooks, None),
            rules: Some(webhook_rules(&name, parts)),
            ..ClusterRole::default()
        }));
        objects.push(json(&ClusterRoleBinding {
            metadata: meta(&webhooks, None),
            role_ref: role_ref("ClusterRole", &webhooks),
            subjects: Some(vec![subject.clone()]),
        }));
        objects.push(json(&Role {
            metadata: meta(&webhooks, Some(&placement.namespace)),
            rules: Some(webhook_ca_rules(&name)),
        }));
        objects.push(json(&RoleBinding {
            metadata: meta(&webhooks, Some(&placement.namespace)),
            role_ref: role_ref("Role", &webhooks),
            subjects: Some(vec![subject.clone()]),
        }));
    }
    if placement.metrics_auth {
        let auth = format!("{name}-metrics-auth");
        objects.push(json(&ClusterRole {
            metadata: meta(&auth, None),
            rules: Some(metrics_auth_rules()),
            ..ClusterRole::default()
        }));
        objects.push(json(&ClusterRoleBinding {
            metadata: meta(&auth, None),
            role_ref: role_ref("ClusterRole", &auth),
            subjects: Some(vec![subject]),
        }));
        objects.push(json(&ClusterRole {
            metadata: meta(&format!("{name}-metrics-reader"), None),
            rules: Some(metrics_reader_rules()),
            ..ClusterRole::default()
        }));
    }
    objects
}

/// What writing the CA bundle takes: `get` and `patch` on the process's own webhook
/// configurations and on the CRDs it converts, by name (the configurations themselves come from
/// `manifests`, so no `create`).
fn webhook_rules(name: &str, parts: &[Part]) -> Vec<PolicyRule> {
    let hooked: Vec<&crate::webhook::Hooked> = parts.iter().filter_map(|part| part.hooked.as_ref()).collect();
    let mut resources = Vec::new();
    if hooked.iter().any(|hooked| hooked.validate) {
        resources.push("validatingwebhookconfigurations".to_owned());
    }
    if hooked.iter().any(|hooked| hooked.set_defaults) {
        resources.push("mutatingwebhookconfigurations".to_owned());
    }
    let mut rules = Vec::new();
    if !resources.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec!["admissionregistration.k8s.io".to_owned()]),
            resources: Some(resources),
            resource_names: Some(vec![name.to_owned()]),
            verbs: vec!["get".to_owned(), "patch".to_owned()],
            ..PolicyRule::default()
        });
    }
    let converted: Vec<String> =
        hooked.iter().filter(|hooked| hooked.convert).map(|hooked| hooked.crd_name()).collect();
    if !converted.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec!["apiextensions.k8s.io".to_owned()]),
            resources: Some(vec!["customresourcedefinitions".to_owned()]),
            resource_names: Some(converted),
            verbs: vec!["get".to_owned(), "patch".to_owned()],
            ..PolicyRule::default()
        });
    }
    rules
}

/// What sharing the webhook CA between replicas takes, in the operator's namespace: `create` on
/// Secrets (which cannot be limited by name), `get` and `update` on its own,
/// `<name>-webhook-ca`.
fn webhook_ca_rules(name: &str) -> Vec<PolicyRule> {
    let secrets = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".to_owned()]),
        resource_names: names,
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        ..PolicyRule::default()
    };
    vec![
        secrets(&["create"], None),
        secrets(&["get", "update"], Some(vec![crate::webhook::ca_secret_name(name)])),
    ]
}

/// The `format`s of a CRD's schema that the API server knows; it warns on any other
/// (`unrecognized format "uint64"`), and schemars writes some for Rust's integer types.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "password",
    "date",
    "date-time",
    "datetime",
    "duration",
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
];

/// `R`'s CustomResourceDefinition as the `crd` and `manifests` subcommands print it: kube's,
/// without the `format`s the API server does not know (such as `uint64` for a `u64`), so that
/// applying it draws no warning. Such a format never checked anything; the `minimum: 0`
/// beside it stays.
pub fn crd<R: CustomResourceExt>() -> serde_json::Value {
    crd_json(&R::crd())
}

/// `R`'s CRD as [`crd`] prints it, with every version of `versions` served next to `R`'s, which
/// stays the storage version: what the `crd` and `manifests` subcommands print for an operator
/// with `versions = [...]`.
///
/// # Panics
///
/// When a version's CRD is of another group, kind or scope: `versions = [...]` lists only
/// versions of the operator's own kind.
pub fn crd_with_versions<R: CustomResourceExt>(versions: &[crate::webhook::Version<R>]) -> serde_json::Value {
    let mut crd = crd::<R>();
    for version in versions {
        let other = crd_json(&version.crd());
        for field in ["/spec/group", "/spec/scope", "/spec/names/kind"] {
            assert_eq!(
                other.pointer(field),
                crd.pointer(field),
                "`versions = [...]` lists {}, which is not a version of the operator's kind: its {field} differs",
                version.name()
            );
        }
        let mut served = other["spec"]["versions"][0].clone();
        served["storage"] = serde_json::Value::Bool(false);
        if let Some(all) = crd["spec"]["versions"].as_array_mut() {
            all.push(served);
        }
    }
    crd
}

fn crd_json(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let unknown = map
                    .get("format")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|format| !KNOWN_FORMATS.contains(&format));
                if unknown {
                    map.remove("format");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut crd = json(crd);
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        strip(&mut version["schema"]["openAPIV3Schema"]);
    }
    crd
}

/// The user the pod runs as unless its image says otherwise: not root, and the `nonroot`
/// user of the common distroless base images.
pub const RUN_AS_USER: i64 = 65532;

/// What the operator's container asks for and may use at most: requests and limits of CPU
/// and memory, in Kubernetes quantities (`100m`, `128Mi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU reserved for it.
    pub cpu_request: String,
    /// Memory reserved for it.
    pub memory_request: String,
    /// CPU it may use at most (it is throttled beyond).
    pub cpu_limit: String,
    /// Memory it may use at most (it is killed beyond).
    pub memory_limit: String,
}

/// The default CPU request: a tenth of a core.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// The default memory request.
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
/// The default CPU limit: half a core.
pub const DEFAULT_CPU_LIMIT: &str = "500m";
/// The default memory limit.
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

impl Default for Resources {
    /// Enough for an operator caching a few thousand objects: [`DEFAULT_CPU_REQUEST`] and
    /// [`DEFAULT_MEMORY_REQUEST`] requested, [`DEFAULT_CPU_LIMIT`] and
    /// [`DEFAULT_MEMORY_LIMIT`] at most.
    fn default() -> Self {
        Self {
            cpu_request: DEFAULT_CPU_REQUEST.to_owned(),
            memory_request: DEFAULT_MEMORY_REQUEST.to_owned(),
            cpu_limit: DEFAULT_CPU_LIMIT.to_owned(),
            memory_limit: DEFAULT_MEMORY_LIMIT.to_owned(),
        }
    }
}

/// How the operator's pod runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Its container image.
    pub image: String,
    /// Replicas of the Deployment.
    pub replicas: u32,
    /// The port of `/metrics`.
    pub metrics_port: u16,
    /// The port of `/healthz` and `/readyz`.
    pub health_port: u16,
    /// The port of the webhooks, for an operator that serves any.
    pub webhook_port: u16,
    /// Requests and limits.
    pub resources: Resources,
}

/// Everything to `kubectl apply`: the CRD, a ServiceAccount, the RBAC, and a Deployment that
/// runs `workload`; for an operator with webhooks, the Service in front of their port
/// (`<name>-webhook`, port 443) and the webhook configurations, without a CA bundle (the operator
/// writes it at start).
///
/// The pod passes the `restricted` Pod Security Standard: it runs as a non-root user
/// ([`RUN_AS_USER`]) with the `RuntimeDefault` seccomp profile, no privilege escalation, no
/// capabilities and a read-only root filesystem (the operator writes no file), with the
/// requests and limits of [`Workload::resources`].
pub fn manifests<R>(settings: &Settings, placement: &Placement, workload: &Workload) -> Vec<serde_json::Value>
where
    R: Resource<DynamicType = ()> + CustomResourceExt,
{
    let part =
        Part::of::<R>(settings, placement.watched.clone()).with_crd::<R>().with_webhooks::<R>(settings, &[]);
    let namespaces = (placement.watched != settings.namespaces).then(|| placement.watched.clone());
    manifests_of(settings.controller_name, &[part], placement, workload, namespaces)
}

/// [`manifests`] for a process named `name` that runs the controllers of `parts`: every CRD,
/// the ServiceAccount, [`rbac_of`], and the Deployment; `namespaces`, when given, is what
/// `--namespaces` said.
pub(crate) fn manifests_of(
    name: &str,
    parts: &[Part],
    placement: &Placement,
    workload: &Workload,
    namespaces: Option<Vec<String>>,
) -> Vec<serde_json::Value> {
    let metrics_port = workload.metrics_port;
    let name = name.to_owned();
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(placement.namespace.clone()),
        labels: Some(labels(&name)),
        ..ObjectMeta::default()
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value =
        |name: &str, value: String| EnvVar { name: name.to_owned(), value: Some(value), ..EnvVar::default() };
    // The identity in the Lease comes from the pod's name. (The Lease's default namespace is
    // the pod's own, which the client reads from its service account.)
    let mut env = vec![field("POD_NAME", "metadata.name")];
    if let Some(namespaces) = namespaces {
        env.push(value("KUBERATOR_NAMESPACES", namespaces.join(",")));
    }
    match &placement.lease_namespace {
        None => env.push(value("KUBERATOR_LEADER_ELECTION", "false".to_owned())),
        Some(lease) if *lease != placement.namespace => {
            env.push(value("KUBERATOR_LEASE_NAMESPACE", lease.clone()));
        }
        Some(_) => {}
    }
    env.push(value("KUBERATOR_METRICS_ADDRESS", format!("0.0.0.0:{metrics_port}")));
    env.push(value("KUBERATOR_HEALTH_ADDRESS", format!("0.0.0.0:{}", workload.health_port)));
    if !placement.metrics_auth {
        env.push(value("KUBERATOR_METRICS_INSECURE", "true".to_owned()));
    }
    let hooked: Vec<crate::webhook::Hooked> = parts.iter().filter_map(|part| part.hooked.clone()).collect();
    let service = crate::webhook::service_name(&name);
    if !hooked.is_empty() {
        env.push(value("KUBERATOR_WEBHOOK_ADDRESS", format!("0.0.0.0:{}", workload.webhook_port)));
    }
    if let Some(sharding) = &placement.sharding {
        env.push(value("KUBERATOR_SHARDS", sharding.shards.to_string()));
        if sharding.key != crate::shard::ShardKey::Uid {
            env.push(value("KUBERATOR_SHARD_KEY", sharding.key.to_string()));
        }
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("health".to_owned()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    };
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let Resources { cpu_request, memory_request, cpu_limit, memory_limit } = &workload.resources;
    let container = Container {
        name: name.clone(),
        image: Some(workload.image.clone()),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(cpu_request, memory_request)),
            limits: Some(quantities(cpu_limit, memory_limit)),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        env: Some(env),
        ports: Some(
            vec![
                ContainerPort {
                    name: Some("metrics".to_owned()),
                    container_port: i32::from(metrics_port),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    name: Some("health".to_owned()),
                    container_port: i32::from(workload.health_port),
                    ..ContainerPort::default()
                },
            ]
            .into_iter()
            .chain((!hooked.is_empty()).then(|| ContainerPort {
                name: Some("webhook".to_owned()),
                container_port: i32::from(workload.webhook_port),
                ..ContainerPort::default()
            }))
            .collect(),
        ),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta.clone(),
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(workload.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector { match_labels: Some(labels(&name)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name)), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    };
    let endpoint = crate::webhook::Endpoint::Service {
        namespace: placement.namespace.clone(),
        name: crate::webhook::service_name(&name),
        port: 443,
    };
    let mut all: Vec<serde_json::Value> = Vec::new();
    for part in parts {
        let Some(mut crd) = part.crd.clone() else { continue };
        if let Some(hooked) = part.hooked.as_ref().filter(|hooked| hooked.convert) {
            crd["spec"]["conversion"] = hooked.conversion(&endpoint, None);
        }
        all.push(crd);
    }
    all.push(json(&ServiceAccount { metadata: meta.clone(), ..ServiceAccount::default() }));
    all.extend(rbac_of(&name, parts, placement));
    all.push(json(&deployment));
    if !hooked.is_empty() {
        all.push(json(&Service {
            metadata: ObjectMeta { name: Some(service), ..meta },
            spec: Some(ServiceSpec {
                selector: Some(labels(&name)),
                ports: Some(vec![ServicePort {
                    name: Some("webhook".to_owned()),
                    port: 443,
                    target_port: Some(IntOrString::String("webhook".to_owned())),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }));
        all.extend(crate::webhook::configurations(&name, &endpoint, &hooked, None));
    }
    all
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), name.to_owned())])
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

    fn config(namespaces: &'static [&'static str]) -> Settings {
        let config = super::super::OperatorConfig {
            namespaces,
            caching: Some(CachingStrategy::Extendable),
            ..Default::default()
        };
        config.resolve::<Widget>()
    }

    /// `widget:1` with `replicas`, on the default ports and resources.
    fn workload(replicas: u32) -> Workload {
        Workload {
            image: "widget:1".to_owned(),
            replicas,
            metrics_port: 8443,
            health_port: 8081,
            webhook_port: 9443,
            resources: Resources::default(),
        }
    }

    fn placement(settings: &Settings, lease: bool) -> Placement {
        Placement {
            lease_namespace: lease.then(|| "ops".to_owned()),
            metrics_auth: false,
            ..Placement::new(settings, "ops")
        }
    }

    #[test]
    fn referenced_kinds_are_only_listed_and_watched() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use k8s_openapi::api::core::v1::Secret;
        let by = |from| crate::references::Referenced::by::<Secret, Widget, _>(from, |_: &Widget| "creds");
        let maps = crate::references::Referenced::by::<ConfigMap, Widget, _>("map", |_: &Widget| "settings");
        assert_eq!(
            serde_json::to_value(referenced_rules(&[by("a"), maps, by("b")])).unwrap(),
            serde_json::json!([
                { "apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["list", "watch"] },
            ])
        );
    }

    #[test]
    fn merged_rules_give_each_resource_the_union_of_its_verbs_once() {
        let rule = |group: &str, resources: &[&str], verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![group.to_owned()]),
            resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        };
        // A kind that is one controller's primary and another's child; events twice.
        let merged = merge_rules([
            rule("example.com", &["widgets"], &["list", "watch", "patch"]),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
            rule("example.com", &["gadgets"], &["list", "watch", "patch"]),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
            rule(
                "example.com",
                &["widgets", "sprockets"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
        ]);
        assert_eq!(
            merged,
            [
                rule("example.com", &["widgets"], &["list", "watch", "patch", "get", "create", "delete"]),
                rule("events.k8s.io", &["events"], &["create", "patch"]),
                rule("example.com", &["gadgets"], &["list", "watch", "patch"]),
                rule("example.com", &["sprockets"], &["get", "list", "watch", "create", "patch", "delete"]),
            ]
        );
        assert_eq!(merge_rules(merged.clone()), merged, "merging twice changes nothing");
    }

    #[test]
    fn controllers_of_one_process_get_a_role_per_namespace_and_a_cluster_role_for_the_rest() {
        let settings = config(&[]);
        let part = |watched: &[&str]| {
            Part::of::<Widget>(&settings, watched.iter().map(|w| (*w).to_owned()).collect())
        };
        let objects = rbac_of(
            "several",
            &[part(&["team-a"]), part(&[]), part(&["team-a"]), part(&["team-b", "team-c"])],
            &placement(&settings, true),
        );
        let shown: Vec<_> = objects
            .iter()
            .map(|o| {
                format!(
                    "{} {}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "Role team-a/several",
                "RoleBinding team-a/several",
                "ClusterRole /several",
                "ClusterRoleBinding /several",
                "Role ops/several-leader-election",
                "RoleBinding ops/several-leader-election",
            ]
        );
        // The two controllers in team-a share one Role, their rules merged.
        assert_eq!(objects[0]["rules"], objects[2]["rules"]);
        assert_eq!(objects[0]["rules"].as_array().unwrap().len(), 3);
        assert_eq!(objects[1]["subjects"][0]["name"], "several");
    }

    #[test]
    fn owned_kinds_get_the_calls_children_make_grouped_by_api_group() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::ConfigMap;
        use k8s_openapi::api::core::v1::Service;

        use crate::children::Owned;

        let config = super::super::OperatorConfig {
            namespaces: &["team-a"],
            owns: const { &[Owned::of::<ConfigMap>(), Owned::of::<Deployment>(), Owned::of::<Service>()] },
            ..Default::default()
        }
        .resolve::<Widget>();
        let objects = rbac::<Widget>(&config, &placement(&config, false));
        let verbs = serde_json::json!(["get", "list", "watch", "create", "patch", "delete"]);
        assert_eq!(objects[0]["kind"], "Role");
        assert_eq!(
            objects[0]["rules"].as_array().unwrap()[3..],
            [
                serde_json::json!({ "apiGroups": [""], "resources": ["configmaps", "services"], "verbs": verbs }),
                serde_json::json!({ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": verbs }),
            ]
        );
    }

    #[test]
    fn one_namespace_gets_a_role_in_it_and_the_lease_a_role_in_the_operators_namespace() {
        let config = config(&["team-a"]);
        let objects = rbac::<Widget>(&config, &placement(&config, true));
        let kinds: Vec<_> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Role", "RoleBinding", "Role", "RoleBinding"]);
        assert_eq!(objects[0]["metadata"]["namespace"], "team-a");
        assert_eq!(objects[1]["subjects"][0]["namespace"], "ops");
        assert_eq!(objects[1]["subjects"][0]["name"], "widget-operator");
        assert_eq!(objects[2]["metadata"]["name"], "widget-operator-leader-election");
        assert_eq!(objects[2]["metadata"]["namespace"], "ops");
        assert_eq!(
            objects[2]["rules"],
            serde_json::json!([{
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "create", "update", "list", "watch"],
            }])
        );
        assert_eq!(objects[3]["roleRef"]["name"], "widget-operator-leader-election");
        assert_eq!(objects[3]["subjects"][0]["name"], "widget-operator");
    }

    #[test]
    fn every_namespace_gets_a_cluster_role_with_exactly_the_verbs_used() {
        let config = config(&[]);
        let objects = rbac::<Widget>(&config, &placement(&config, false));
        let kinds: Vec<_> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ClusterRole", "ClusterRoleBinding"], "no lease rules without leader election");
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
    fn namespaces_given_at_start_decide_the_rbac() {
        let config = config(&[]);
        let placement = Placement { watched: vec!["team-b".into()], ..placement(&config, false) };
        let objects = rbac::<Widget>(&config, &placement);
        assert_eq!(objects[0]["kind"], "Role");
        assert_eq!(objects[0]["metadata"]["namespace"], "team-b");
    }

    #[test]
    fn an_operator_with_webhooks_gets_their_service_configurations_port_and_rbac() {
        let mut settings = config(&["team-a"]);
        settings.webhooks.validate = true;
        let workload = workload(2);
        let objects = manifests::<Widget>(&settings, &placement(&settings, true), &workload);
        let find = |kind: &str, name: &str| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
        };
        let name = settings.controller_name;
        let service = find("Service", &format!("{name}-webhook"));
        assert_eq!(service["metadata"]["namespace"], "ops");
        assert_eq!(service["spec"]["ports"][0]["port"], 443);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
        let configuration = find("ValidatingWebhookConfiguration", name);
        let webhook = &configuration["webhooks"][0];
        assert_eq!(webhook["clientConfig"]["service"]["name"], format!("{name}-webhook"));
        assert_eq!(
            webhook["namespaceSelector"]["matchExpressions"][0]["values"],
            serde_json::json!(["team-a"])
        );
        assert!(objects.iter().all(|o| o["kind"] != "MutatingWebhookConfiguration"), "no set_defaults, none");
        let rules = &find("ClusterRole", &format!("{name}-webhooks"))["rules"][0];
        assert_eq!(rules["resources"], serde_json::json!(["validatingwebhookconfigurations"]));
        assert_eq!(rules["resourceNames"], serde_json::json!([name]));
        assert_eq!(rules["verbs"], serde_json::json!(["get", "patch"]));
        let secrets = &find("Role", &format!("{name}-webhooks"))["rules"];
        assert_eq!(secrets[1]["resourceNames"], serde_json::json!([format!("{name}-webhook-ca")]));
        let deployment = find("Deployment", name);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["ports"][2], serde_json::json!({"name": "webhook", "containerPort": 9443}));

        let without = manifests::<Widget>(&config(&["team-a"]), &placement(&settings, true), &workload);
        assert!(
            without.iter().all(|o| o["kind"] != "Service" && o["kind"] != "ValidatingWebhookConfiguration")
        );
    }

    mod v1alpha1 {
        use kube::CustomResource;
        use schemars::JsonSchema;
        use serde::Deserialize;
        use serde::Serialize;

        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
        #[kube(group = "example.com", version = "v1alpha1", kind = "Widget", namespaced)]
        pub(super) struct WidgetSpec {
            pub(super) width: u32,
        }
    }

    impl From<v1alpha1::Widget> for Widget {
        fn from(old: v1alpha1::Widget) -> Self {
            Widget {
                metadata: old.metadata,
                spec: crate::cache::test_support::WidgetSpec { size: old.spec.width },
            }
        }
    }

    impl From<Widget> for v1alpha1::Widget {
        fn from(new: Widget) -> Self {
            v1alpha1::Widget { metadata: new.metadata, spec: v1alpha1::WidgetSpec { width: new.spec.size } }
        }
    }

    #[test]
    fn an_operator_with_versions_prints_them_with_its_conversion_and_may_patch_its_crd() {
        let settings = config(&["team-a"]);
        let versions = [crate::webhook::Version::of::<v1alpha1::Widget>()];
        let part = Part::of::<Widget>(&settings, settings.namespaces.clone())
            .with_crd::<Widget>()
            .with_webhooks::<Widget>(&settings, &versions);
        let workload = workload(1);
        let name = settings.controller_name;
        let objects = manifests_of(name, &[part], &placement(&settings, true), &workload, None);
        let crd = &objects[0];
        let served: Vec<(&str, bool)> = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|version| (version["name"].as_str().unwrap(), version["storage"].as_bool().unwrap()))
            .collect();
        assert_eq!(served, [("v1", true), ("v1alpha1", false)], "the reconciled version is stored");
        let conversion = &crd["spec"]["conversion"];
        assert_eq!(conversion["strategy"], "Webhook");
        assert_eq!(
            conversion["webhook"]["clientConfig"]["service"],
            serde_json::json!({"namespace": "ops", "name": format!("{name}-webhook"), "port": 443,
                "path": "/convert/example.com/widgets"})
        );
        let rules = objects
            .iter()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == format!("{name}-webhooks"))
            .unwrap();
        assert_eq!(
            rules["rules"],
            serde_json::json!([{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                "resourceNames": ["widgets.example.com"], "verbs": ["get", "patch"]}]),
            "no admission webhooks: only the CRD"
        );
        assert!(objects.iter().any(|o| o["kind"] == "Service"), "the port conversions reach");
        assert!(objects.iter().all(|o| o["kind"] != "ValidatingWebhookConfiguration"));
    }

    #[test]
    fn a_sharded_operator_gets_replicas_its_shard_count_and_may_delete_leases() {
        let config = config(&["team-a"]);
        let workload = workload(3);
        let sharding = ShardPlacement { shards: 12, key: crate::shard::ShardKey::Namespace };
        let sharded = Placement { sharding: Some(sharding), ..placement(&config, true) };
        let objects = manifests::<Widget>(&config, &sharded, &workload);
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(deployment["spec"]["replicas"], 3);
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        let value = |name: &str| {
            env.as_array().unwrap().iter().find(|e| e["name"] == name).map(|e| e["value"].clone())
        };
        assert_eq!(value("KUBERATOR_SHARDS"), Some(serde_json::json!("12")));
        assert_eq!(value("KUBERATOR_SHARD_KEY"), Some(serde_json::json!("namespace")));
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == "Role" && o["metadata"]["name"].as_str().unwrap().ends_with("-leader-election")
            })
            .unwrap();
        assert_eq!(
            role["rules"][0]["verbs"],
            serde_json::json!(["get", "create", "update", "list", "watch", "delete"])
        );
        // Unsharded, no delete.
        let objects = manifests::<Widget>(&config, &placement(&config, true), &workload);
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == "Role" && o["metadata"]["name"].as_str().unwrap().ends_with("-leader-election")
            })
            .unwrap();
        assert_eq!(
            role["rules"][0]["verbs"],
            serde_json::json!(["get", "create", "update", "list", "watch"])
        );
    }

    #[test]
    fn manifests_are_ready_to_apply() {
        let config = config(&["team-a"]);
        let workload = Workload {
            image: "registry.example/widget:1.0".to_owned(),
            replicas: 1,
            metrics_port: 9443,
            health_port: 9081,
            webhook_port: 9443,
            resources: Resources::default(),
        };
        let placement = Placement { metrics_auth: true, ..placement(&config, true) };
        let objects = manifests::<Widget>(&config, &placement, &workload);
        let kinds: Vec<_> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRole",
                "Deployment"
            ]
        );
        assert_eq!(objects[6]["metadata"]["name"], "widget-operator-metrics-auth");
        assert_eq!(
            objects[6]["rules"],
            serde_json::json!([
                { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
                { "apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"] },
            ])
        );
        assert_eq!(objects[7]["subjects"][0]["name"], "widget-operator");
        assert_eq!(objects[8]["metadata"]["name"], "widget-operator-metrics-reader");
        assert_eq!(
            objects[8]["rules"],
            serde_json::json!([{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }])
        );
        let pod = &objects[9]["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "widget-operator");
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "registry.example/widget:1.0");
        assert_eq!(
            container["ports"],
            serde_json::json!([
                { "name": "metrics", "containerPort": 9443 },
                { "name": "health", "containerPort": 9081 },
            ])
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"],
            serde_json::json!({ "path": "/healthz", "port": "health" })
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"],
            serde_json::json!({ "path": "/readyz", "port": "health" })
        );
        let env: Vec<_> =
            container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(env, ["POD_NAME", "KUBERATOR_METRICS_ADDRESS", "KUBERATOR_HEALTH_ADDRESS"]);
        assert_eq!(
            container["resources"],
            serde_json::json!({
                "requests": { "cpu": "100m", "memory": "64Mi" },
                "limits": { "cpu": "500m", "memory": "256Mi" },
            })
        );
        assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
        let yaml = to_yaml(&objects);
        assert_eq!(yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---")), 9, "{yaml}");
    }

    #[test]
    fn the_crd_keeps_only_the_formats_the_api_server_knows() {
        assert!(serde_json::to_string(&Widget::crd()).unwrap().contains(r#""format":"uint32""#));
        let printed = crd::<Widget>();
        let schema = &printed["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let size = &schema["properties"]["spec"]["properties"]["size"];
        assert_eq!(size["type"], "integer");
        assert!(size.get("format").is_none(), "{size}");
        assert!(size.get("minimum").is_some(), "{size}");
    }

    #[test]
    fn settings_that_differ_from_the_attribute_reach_the_pod() {
        let config = config(&["team-a"]);
        let placement = Placement {
            watched: vec!["x".into(), "y".into()],
            lease_namespace: None,
            ..placement(&config, false)
        };
        let workload = workload(1);
        let objects = manifests::<Widget>(&config, &placement, &workload);
        let env = &objects.last().unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array()
                .unwrap()
                .contains(&serde_json::json!({ "name": "KUBERATOR_NAMESPACES", "value": "x,y" })),
            "{env}"
        );
        assert!(
            env.as_array()
                .unwrap()
                .contains(&serde_json::json!({ "name": "KUBERATOR_LEADER_ELECTION", "value": "false" })),
            "{env}"
        );
        assert!(
            env.as_array()
                .unwrap()
                .contains(&serde_json::json!({ "name": "KUBERATOR_METRICS_INSECURE", "value": "true" })),
            "--metrics-insecure reaches the pod: {env}"
        );
        let names: Vec<_> = objects.iter().map(|o| o["metadata"]["name"].as_str().unwrap()).collect();
        assert!(
            !names.iter().any(|name| name.contains("-metrics-")),
            "no metrics rules for open metrics: {names:?}"
        );
    }
}
