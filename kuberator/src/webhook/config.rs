//! The webhook configurations the API server reads: what it sends where, and what it trusts.

use serde_json::Value;
use serde_json::json;

/// Where the API server reaches the webhook port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// A Service in front of the operator's Pods (what `manifests` prints): the certificate is
    /// made for `<name>.<namespace>.svc` and `<name>.<namespace>.svc.cluster.local`.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port (443 in the printed Service).
        port: u16,
    },
    /// A base URL such as `https://127.0.0.1:9443`, for an operator outside the cluster (a
    /// local run against a development cluster): the certificate is made for its host.
    Url(String),
}

impl Endpoint {
    /// The names the serving certificate is made for.
    pub(crate) fn names(&self) -> Vec<String> {
        match self {
            Endpoint::Service { namespace, name, .. } => {
                vec![format!("{name}.{namespace}.svc"), format!("{name}.{namespace}.svc.cluster.local")]
            }
            Endpoint::Url(url) => {
                let host = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or_default();
                // `[::1]:9443`, `127.0.0.1:9443`, `example.com`
                let host = match host.strip_prefix('[') {
                    Some(rest) => rest.split(']').next().unwrap_or_default(),
                    None => host.rsplit_once(':').map_or(host, |(host, _)| host),
                };
                vec![host.to_owned()]
            }
        }
    }

    /// `clientConfig` for `path`, trusting `bundle` (PEM) when given.
    fn client_config(&self, path: &str, bundle: Option<&str>) -> Value {
        let mut config = match self {
            Endpoint::Service { namespace, name, port } => {
                json!({"service": {"namespace": namespace, "name": name, "port": port, "path": path}})
            }
            Endpoint::Url(url) => json!({"url": format!("{}{path}", url.trim_end_matches('/'))}),
        };
        if let Some(bundle) = bundle {
            use base64::Engine as _;
            config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(bundle));
        }
        config
    }
}

/// One kind whose changes the operator's webhooks check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hooked {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
    pub(crate) namespaced: bool,
    pub(crate) validate: bool,
    pub(crate) set_defaults: bool,
    /// Whether it serves other versions of its kind, converted by the operator.
    pub(crate) convert: bool,
    /// The namespaces its controller watches; empty for all.
    pub(crate) namespaces: Vec<String>,
}

impl Hooked {
    /// The kind `R` as the controller with `settings` serves it.
    pub(crate) fn of<R: kube::Resource<DynamicType = ()>>(
        settings: &crate::operator::Settings,
        namespaced: bool,
        convert: bool,
    ) -> Self {
        Self {
            group: R::group(&()).into_owned(),
            version: R::version(&()).into_owned(),
            plural: R::plural(&()).into_owned(),
            namespaced,
            validate: settings.webhooks.validate,
            set_defaults: settings.webhooks.set_defaults,
            convert,
            namespaces: settings.namespaces.clone(),
        }
    }

    pub(crate) fn validate_path(&self) -> String {
        format!("/validate/{}/{}", self.group, self.plural)
    }

    pub(crate) fn mutate_path(&self) -> String {
        format!("/mutate/{}/{}", self.group, self.plural)
    }

    pub(crate) fn convert_path(&self) -> String {
        format!("/convert/{}/{}", self.group, self.plural)
    }

    /// The CRD's name.
    pub(crate) fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// The CRD's `spec.conversion` that sends conversions to the operator at `endpoint`.
    pub(crate) fn conversion(&self, endpoint: &Endpoint, bundle: Option<&str>) -> Value {
        json!({
            "strategy": "Webhook",
            "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": endpoint.client_config(&self.convert_path(), bundle),
            },
        })
    }

    fn webhook(
        &self,
        verb: &str,
        path: &str,
        operations: &[&str],
        endpoint: &Endpoint,
        bundle: Option<&str>,
    ) -> Value {
        let mut webhook = json!({
            "name": format!("{verb}.{}.{}", self.plural, self.group),
            "admissionReviewVersions": ["v1"],
            "clientConfig": endpoint.client_config(path, bundle),
            "rules": [{
                "apiGroups": [self.group],
                // Only the version the operator reads: with `matchPolicy: Equivalent`, a change
                // made through another version is converted to this one before it is sent.
                "apiVersions": [self.version],
                "resources": [self.plural],
                "operations": operations,
                "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            }],
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
        });
        if self.namespaced && !self.namespaces.is_empty() {
            webhook["namespaceSelector"] = json!({"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In", "values": self.namespaces,
            }]});
        }
        webhook
    }
}

#[cfg(test)]
impl Hooked {
    /// `volumes.example.com/v1`, namespaced, validated, in every namespace.
    pub(crate) fn example() -> Self {
        Self {
            group: "example.com".to_owned(),
            version: "v1".to_owned(),
            plural: "volumes".to_owned(),
            namespaced: true,
            validate: true,
            set_defaults: false,
            convert: false,
            namespaces: Vec::new(),
        }
    }
}

/// How long the API server waits for an answer.
pub(crate) const TIMEOUT_SECONDS: u64 = 10;

/// The ValidatingWebhookConfiguration and MutatingWebhookConfiguration named `name` for
/// `hooked` (each only when some kind needs it), reaching the port at `endpoint`, trusting
/// `bundle` when given.
pub(crate) fn configurations(
    name: &str,
    endpoint: &Endpoint,
    hooked: &[Hooked],
    bundle: Option<&str>,
) -> Vec<Value> {
    let validating: Vec<Value> = hooked
        .iter()
        .filter(|hooked| hooked.validate)
        .map(|hooked| {
            hooked.webhook(
                "validate",
                &hooked.validate_path(),
                &["CREATE", "UPDATE", "DELETE"],
                endpoint,
                bundle,
            )
        })
        .collect();
    let mutating: Vec<Value> = hooked
        .iter()
        .filter(|hooked| hooked.set_defaults)
        .map(|hooked| {
            let mut webhook =
                hooked.webhook("default", &hooked.mutate_path(), &["CREATE", "UPDATE"], endpoint, bundle);
            webhook["reinvocationPolicy"] = json!("Never");
            webhook
        })
        .collect();
    let mut configurations = Vec::new();
    for (kind, webhooks) in
        [("ValidatingWebhookConfiguration", validating), ("MutatingWebhookConfiguration", mutating)]
    {
        if !webhooks.is_empty() {
            configurations.push(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kuberator"}},
                "webhooks": webhooks,
            }));
        }
    }
    configurations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes(namespaces: &[&str]) -> Hooked {
        Hooked { namespaces: namespaces.iter().map(|ns| (*ns).to_owned()).collect(), ..Hooked::example() }
    }

    #[test]
    fn a_configuration_per_kind_of_webhook_with_the_settings_the_docs_state() {
        let endpoint =
            Endpoint::Service { namespace: "ops".to_owned(), name: "v-webhook".to_owned(), port: 443 };
        let printed = configurations("v", &endpoint, &[volumes(&["a", "b"])], None);
        assert_eq!(printed.len(), 1, "no mutating configuration without set_defaults");
        let webhook = &printed[0]["webhooks"][0];
        assert_eq!(printed[0]["kind"], "ValidatingWebhookConfiguration");
        assert_eq!(webhook["name"], "validate.volumes.example.com");
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(webhook["rules"][0]["resources"], json!(["volumes"]), "not volumes/status");
        assert_eq!(webhook["rules"][0]["apiVersions"], json!(["v1"]), "the others arrive converted");
        assert_eq!(webhook["namespaceSelector"]["matchExpressions"][0]["values"], json!(["a", "b"]));
        assert_eq!(
            webhook["clientConfig"]["service"],
            json!({"namespace": "ops", "name": "v-webhook", "port": 443, "path": "/validate/example.com/volumes"})
        );
        assert!(webhook["clientConfig"].get("caBundle").is_none());

        let mut both = volumes(&[]);
        both.set_defaults = true;
        let printed =
            configurations("v", &Endpoint::Url("https://127.0.0.1:9443/".to_owned()), &[both], Some("PEM"));
        assert_eq!(printed.len(), 2);
        let mutating = &printed[1]["webhooks"][0];
        assert_eq!(mutating["name"], "default.volumes.example.com");
        assert_eq!(mutating["clientConfig"]["url"], "https://127.0.0.1:9443/mutate/example.com/volumes");
        assert_eq!(mutating["clientConfig"]["caBundle"], "UEVN");
        assert!(mutating.get("namespaceSelector").is_none(), "every namespace");
        assert_eq!(mutating["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
    }

    #[test]
    fn the_certificate_names_where_the_api_server_calls() {
        let service = Endpoint::Service { namespace: "ops".to_owned(), name: "w".to_owned(), port: 443 };
        assert_eq!(service.names(), ["w.ops.svc", "w.ops.svc.cluster.local"]);
        assert_eq!(Endpoint::Url("https://127.0.0.1:9443".to_owned()).names(), ["127.0.0.1"]);
        assert_eq!(Endpoint::Url("https://[::1]:9443/x".to_owned()).names(), ["::1"]);
        assert_eq!(Endpoint::Url("https://hooks.example.com".to_owned()).names(), ["hooks.example.com"]);
    }
}
