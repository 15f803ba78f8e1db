//! One AdmissionReview: read, handed to the operator's method, answered.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::Resource;
use serde::Deserialize;
use serde_json::Value;
use serde_json::json;

use super::Change;
use super::Hooked;
use crate::operator::Ctx;
use crate::operator::Operator;

/// How long the operator's method may take: a second less than the API server waits.
const METHOD_TIMEOUT: Duration = Duration::from_secs(super::config::TIMEOUT_SECONDS - 1);

/// Which question a review asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Question {
    Validate,
    SetDefaults,
}

/// An operator's webhooks, its types erased.
pub(crate) trait Admit: Send + Sync {
    /// Its kind and which webhooks it has.
    fn hooked(&self) -> &Hooked;
    /// The answer to `request` (an `AdmissionReview`'s `request`).
    fn answer(&self, question: Question, request: Request) -> BoxFuture<'_, Answer>;
    /// The ConversionReview that answers `request` (a ConversionReview's `request`).
    fn convert(&self, request: &Value) -> Value;
}

/// The part of an AdmissionReview's request the operator reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Request {
    pub(crate) uid: String,
    operation: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

impl Request {
    fn object_name(&self, kind: &str) -> String {
        let name = if self.name.is_empty() { "(name to be generated)" } else { &self.name };
        match &self.namespace {
            Some(namespace) if !namespace.is_empty() => format!("{kind} {namespace}/{name}"),
            _ => format!("{kind} {name}"),
        }
    }
}

/// What the operator answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Allow,
    Patch(json_patch::Patch),
    Deny(String),
}

impl Answer {
    /// The AdmissionReview that answers request `uid`.
    pub(crate) fn review(self, uid: &str) -> Value {
        let response = match self {
            Answer::Allow => json!({"uid": uid, "allowed": true}),
            Answer::Patch(patch) if patch.0.is_empty() => json!({"uid": uid, "allowed": true}),
            Answer::Patch(patch) => {
                use base64::Engine as _;
                let patch = serde_json::to_vec(&patch).expect("a JSON patch serializes");
                json!({
                    "uid": uid, "allowed": true, "patchType": "JSONPatch",
                    "patch": base64::engine::general_purpose::STANDARD.encode(patch),
                })
            }
            Answer::Deny(message) => json!({
                "uid": uid, "allowed": false,
                "status": {"status": "Failure", "code": 403, "reason": "Forbidden", "message": message},
            }),
        };
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    }
}

/// The webhooks of the derived operator `O`.
pub(crate) struct Admission<O: Operator> {
    pub(crate) ctx: Arc<Ctx<O>>,
    pub(crate) hooked: Hooked,
    /// The other versions it converts.
    pub(crate) versions: Vec<super::Version<O::Resource>>,
}

impl<O: Operator> Admit for Admission<O> {
    fn hooked(&self) -> &Hooked {
        &self.hooked
    }

    fn convert(&self, request: &Value) -> Value {
        super::convert::review(request, &self.versions)
    }

    fn answer(&self, question: Question, request: Request) -> BoxFuture<'_, Answer> {
        Box::pin(async move {
            let kind = O::Resource::kind(&());
            let about = request.object_name(&kind);
            let answered = tokio::time::timeout(METHOD_TIMEOUT, async {
                match question {
                    Question::Validate => self.validate(&request, &kind).await,
                    Question::SetDefaults => self.set_defaults(&request, &kind).await,
                }
            })
            .await;
            let answer = answered.unwrap_or_else(|_| {
                let method = if question == Question::Validate { "validate" } else { "set_defaults" };
                Answer::Deny(format!(
                    "the operator's `{method}` did not answer within {} s; try again",
                    METHOD_TIMEOUT.as_secs()
                ))
            });
            if let Answer::Deny(message) = &answer {
                tracing::info!(object = %about, operation = %request.operation, "webhook refused: {message}");
            }
            answer
        })
    }
}

impl<O: Operator> Admission<O> {
    async fn validate(&self, request: &Request, kind: &str) -> Answer {
        let about = request.object_name(kind);
        let operator = self.ctx.operator();
        let decoded =
            |value: &Option<Value>, which: &str| decode::<O::Resource>(value.as_ref(), which, &about, kind);
        let result = match request.operation.as_str() {
            "CREATE" => match decoded(&request.object, "object") {
                Ok(new) => operator.__validate(Change::Create { new: &new }, &self.ctx).await,
                Err(answer) => return answer,
            },
            "UPDATE" => {
                if being_deleted(request.old_object.as_ref()) || !changes_more_than_metadata(request) {
                    return Answer::Allow;
                }
                match (decoded(&request.old_object, "oldObject"), decoded(&request.object, "object")) {
                    (Ok(old), Ok(new)) => {
                        operator.__validate(Change::Update { old: &old, new: &new }, &self.ctx).await
                    }
                    (Err(answer), _) | (_, Err(answer)) => return answer,
                }
            }
            "DELETE" => {
                // An object the API server no longer sends (it did not read as R) cannot be judged.
                let Ok(old) = decoded(&request.old_object, "oldObject") else { return Answer::Allow };
                operator.__validate(Change::Delete { old: &old }, &self.ctx).await
            }
            _ => return Answer::Allow,
        };
        match result {
            Ok(()) => Answer::Allow,
            Err(rejection) => Answer::Deny(rejection.message().to_owned()),
        }
    }

    async fn set_defaults(&self, request: &Request, kind: &str) -> Answer {
        let about = request.object_name(kind);
        if !matches!(request.operation.as_str(), "CREATE" | "UPDATE")
            || being_deleted(request.old_object.as_ref())
        {
            return Answer::Allow;
        }
        let mut object: O::Resource = match decode(request.object.as_ref(), "object", &about, kind) {
            Ok(object) => object,
            Err(answer) => return answer,
        };
        let original = request.object.as_ref().expect("decoded from it");
        let before = serde_json::to_value(&object).expect("a resource serializes");
        if let Err(rejection) = self.ctx.operator().__set_defaults(&mut object, &self.ctx).await {
            return Answer::Deny(rejection.message().to_owned());
        }
        let after = serde_json::to_value(&object).expect("a resource serializes");
        Answer::Patch(patch_for(original, &before, &after))
    }
}

/// `value`, the review's `which`, as the operator's type; a refusal that says why when it is not
/// there or does not read.
fn decode<R: serde::de::DeserializeOwned>(
    value: Option<&Value>,
    which: &str,
    about: &str,
    kind: &str,
) -> Result<R, Answer> {
    let Some(value) = value else {
        return Err(Answer::Deny(format!("the review of {about} has no {which}")));
    };
    serde_json::from_value(value.clone())
        .map_err(|error| Answer::Deny(format!("{about} does not read as a {kind}: {error}")))
}

/// Whether `old` is being deleted: its finalizers are being let go, and nothing may hold that up.
fn being_deleted(old: Option<&Value>) -> bool {
    old.is_some_and(|old| old.pointer("/metadata/deletionTimestamp").is_some_and(|stamp| !stamp.is_null()))
}

/// Whether the update changes anything but `metadata` and `status`.
fn changes_more_than_metadata(request: &Request) -> bool {
    let (Some(Value::Object(new)), Some(Value::Object(old))) = (&request.object, &request.old_object) else {
        return true;
    };
    fn rest(object: &serde_json::Map<String, Value>) -> std::collections::BTreeMap<&str, &Value> {
        object
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
            .map(|(key, value)| (key.as_str(), value))
            .collect()
    }
    rest(new) != rest(old)
}

/// The JSON patch that makes `original` (as the API server sent it) what the method made of
/// it: the method's changes, `before` to `after`, and nothing the round trip through the Rust
/// type adds or drops (fields it does not know, `null` for an absent `Option`).
fn patch_for(original: &Value, before: &Value, after: &Value) -> json_patch::Patch {
    let mut changed = original.clone();
    for operation in json_patch::diff(before, after).0 {
        let single = json_patch::Patch(vec![operation.clone()]);
        if json_patch::patch(&mut changed, &single).is_ok() {
            continue;
        }
        // Set where the original had nothing (an absent `Option` became `null` in `before`).
        if let json_patch::PatchOperation::Replace(replace) = operation {
            let add = json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: replace.path.clone(),
                value: replace.value.clone(),
            });
            let _ = json_patch::patch(&mut changed, &json_patch::Patch(vec![add]));
        }
    }
    json_patch::diff(original, &changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_is_patched_onto_what_the_api_server_sent_and_nothing_else() {
        // The round trip adds `status: null` and drops `extra`; only the default is patched.
        let original = json!({"metadata": {"name": "a"}, "spec": {"size": 1}, "extra": true});
        let before = json!({"metadata": {"name": "a"}, "spec": {"size": 1, "tier": null}, "status": null});
        let after =
            json!({"metadata": {"name": "a"}, "spec": {"size": 1, "tier": "standard"}, "status": null});
        let patch = patch_for(&original, &before, &after);
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(
            patched,
            json!({"metadata": {"name": "a"}, "spec": {"size": 1, "tier": "standard"}, "extra": true})
        );
        assert!(patch_for(&original, &before, &before).0.is_empty(), "nothing to set: no patch");
    }

    #[test]
    fn an_update_of_metadata_or_of_an_object_being_deleted_is_let_through() {
        let request = |old: Value, new: Value| Request {
            uid: "u".to_owned(),
            operation: "UPDATE".to_owned(),
            name: "a".to_owned(),
            namespace: Some("ns".to_owned()),
            object: Some(new),
            old_object: Some(old),
        };
        let finalizer_removed = request(
            json!({"metadata": {"finalizers": ["f"]}, "spec": {"size": 9}}),
            json!({"metadata": {}, "spec": {"size": 9}}),
        );
        assert!(!changes_more_than_metadata(&finalizer_removed));
        let spec_changed = request(
            json!({"metadata": {}, "spec": {"size": 9}}),
            json!({"metadata": {}, "spec": {"size": 1}}),
        );
        assert!(changes_more_than_metadata(&spec_changed));
        assert!(being_deleted(Some(&json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}))));
        assert!(!being_deleted(Some(&json!({"metadata": {}}))));
        assert_eq!(spec_changed.object_name("Volume"), "Volume ns/a");
    }

    #[test]
    fn a_refusal_carries_the_message_and_a_default_its_patch() {
        let denied = Answer::Deny("replicas must be at most 9".to_owned()).review("uid-1");
        assert_eq!(denied["response"]["uid"], "uid-1");
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["message"], "replicas must be at most 9");
        let patch = json_patch::diff(&json!({}), &json!({"a": 1}));
        let patched = Answer::Patch(patch).review("uid-2");
        assert_eq!(patched["response"]["patchType"], "JSONPatch");
        assert_eq!(patched["response"]["patch"], "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2EiLCJ2YWx1ZSI6MX1d");
        assert_eq!(Answer::Allow.review("uid-3")["response"], json!({"uid": "uid-3", "allowed": true}));
    }
}
