//! Label and field selectors, as `list`, `watch` and `deletecollection` take them.

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector(Vec<Requirement>);

/// Splits at commas that are not inside parentheses.
fn split_top(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for character in text.chars() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(character);
    }
    parts.push(current);
    parts.into_iter().map(|part| part.trim().to_string()).filter(|part| !part.is_empty()).collect()
}

fn set_values(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|value| value.trim().to_string()).collect())
}

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let invalid = |part: &str| ApiError::bad_request(format!("unable to parse requirement: {part}"));
        let mut requirements = Vec::new();
        for part in split_top(text) {
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, values)) = part.split_once(" notin ") {
                Requirement::NotIn(key.trim().into(), set_values(values).ok_or_else(|| invalid(&part))?)
            } else if let Some((key, values)) = part.split_once(" in ") {
                Requirement::In(key.trim().into(), set_values(values).ok_or_else(|| invalid(&part))?)
            } else if part.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                Requirement::Exists(part.clone())
            } else {
                return Err(invalid(&part));
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value),
            Requirement::NotEquals(key, value) => label(key) != Some(value),
            Requirement::In(key, values) => label(key).is_some_and(|label| values.iter().any(|v| v == label)),
            Requirement::NotIn(key, values) => {
                !label(key).is_some_and(|label| values.iter().any(|v| v == label))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::NotExists(key) => label(key).is_none(),
        })
    }
}

/// A parsed field selector: `path=value` and `path!=value` terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

/// The fields a kind can be selected by, beyond `metadata.name` and `metadata.namespace`.
fn extra_fields(storage: &str) -> &'static [&'static str] {
    match storage {
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "reportingController",
        ],
        super::store::NAMESPACES => &["status.phase"],
        "/pods" => &["spec.nodeName", "status.phase", "spec.serviceAccountName"],
        "/secrets" => &["type"],
        _ => &[],
    }
}

impl FieldSelector {
    pub(crate) fn parse(text: &str, storage: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in split_top(text) {
            let (path, equal, value) = if let Some((path, value)) = part.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) = part.split_once("==") {
                (path, true, value)
            } else if let Some((path, value)) = part.split_once('=') {
                (path, true, value)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let path = path.trim();
            if path != "metadata.name"
                && path != "metadata.namespace"
                && !extra_fields(storage).contains(&path)
            {
                return Err(ApiError::bad_request(format!("field label not supported: {path}")));
            }
            terms.push((path.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let path = path
                .replacen("regarding.", "involvedObject.", 1)
                .replace("reportingController", "reportingComponent");
            let found = if path == "source" {
                object["source"]["component"].as_str().unwrap_or_default().to_string()
            } else {
                let mut current = object;
                for segment in path.split('.') {
                    current = &current[segment];
                }
                match current {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                }
            };
            (found == *value) == *equal
        })
    }
}

/// What a list, a watch or a deletecollection selects: one namespace (or all) and the
/// request's selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// The `shardSelector` (Kubernetes 1.36's `ShardedListAndWatch`): hash ranges of the uid
    /// or the namespace.
    pub(crate) shards: Option<kuberator::shard::ShardRange>,
}

impl Scope {
    pub(crate) fn selects(&self, object: &Value) -> bool {
        let namespace_matches = self
            .namespace
            .as_deref()
            .is_none_or(|namespace| object["metadata"]["namespace"].as_str() == Some(namespace));
        let shard_matches = self.shards.as_ref().is_none_or(|shards| {
            let metadata = &object["metadata"];
            shards.contains(metadata["uid"].as_str(), metadata["namespace"].as_str())
        });
        namespace_matches && self.labels.matches(object) && self.fields.matches(object) && shard_matches
    }
}
