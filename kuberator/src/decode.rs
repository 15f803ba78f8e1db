//! A watch that decodes each object on its own, so one object that does not fit the type
//! (schema drift, a field of the wrong type) cannot stall the controller.
//!
//! kube's typed watcher decodes a whole list page at once: a single undecodable object
//! fails the list, the watcher retries it with backoff, and no object of the kind is
//! reconciled any more. Here the watch runs on [`DynamicObject`]s and each one is decoded
//! into `R` by itself. One that fails is left out (it is never reconciled, and never has
//! its finalizer removed by us), logged as an error with its `namespace/name`, the path of
//! the field that does not fit and what was expected there, counted in
//! `kuberator_undecodable_objects_total`, and reported once per resource version as a
//! `DecodeFailed` Warning Event on the object. Every other object goes on as before.
//!
//! The report never quotes a value of the object: whoever may read Events may not be allowed
//! to read the object, and a field may hold a secret. serde's own message does quote it
//! (`invalid type: string "hunter2", expected u32`), so the report says only the field's
//! path, what was expected, and what kind of value was found (`spec.port: expected u32,
//! found a string`); a message it does not know how to strip is left out.
//!
//! An undecodable object that is being deleted while a finalizer holds it cannot be cleaned
//! up: its Event (`DecodeFailedWhileDeleting`) and log line say so, and give the two ways
//! out as commands to run: fix the object (`kubectl edit`, then cleanup runs), or remove the
//! finalizer without cleanup (a `kubectl patch` that tests and removes it by index).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use futures::Stream;
use futures::StreamExt as _;
use futures::future::ready;
use kube::Api;
use kube::Resource;
use kube::ResourceExt;
use kube::api::ApiResource;
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use crate::events::EventData;
use crate::events::EventRecorder;
use crate::telemetry::ControllerMetrics;

/// Per object (by uid) that does not decode now, the resourceVersion last reported: as many
/// entries as objects that are undecodable at the moment, not one per version ever seen.
#[derive(Debug, Default)]
pub(crate) struct DecodeFailures {
    reported: Mutex<HashMap<String, String>>,
}

impl DecodeFailures {
    /// Whether this version of the object is new to report.
    fn first_report(&self, uid: &str, version: &str) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.insert(uid.to_owned(), version.to_owned()).as_deref() != Some(version)
    }

    /// The object decodes again, or is gone.
    fn forget(&self, uid: Option<String>) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(uid) = uid
            && !reported.is_empty()
        {
            reported.remove(&uid);
        }
    }
}

/// Watches what `api` watches, decoding every object into `R` on its own; with `namespaces`
/// listed, objects in other namespaces are left out before they are decoded.
pub(crate) fn decoded_watch<R>(
    api: &Api<R>,
    config: watcher::Config,
    namespaces: Vec<String>,
    recorder: EventRecorder,
    failures: Arc<DecodeFailures>,
    telemetry: ControllerMetrics,
) -> impl Stream<Item = Result<watcher::Event<R>, watcher::Error>> + Send + 'static
where
    R: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R::DynamicType: Default,
{
    let resource = ApiResource::erase::<R>(&R::DynamicType::default());
    let client = api.clone().into_client();
    let dynamic: Api<DynamicObject> = match api.namespace() {
        Some(namespace) => Api::namespaced_with(client, namespace, &resource),
        None => Api::all_with(client, &resource),
    };
    watcher(dynamic, config).default_backoff().filter_map(move |event| {
        let decoded = match event {
            Ok(event) => {
                if matches!(event, watcher::Event::InitDone) {
                    telemetry.synced();
                }
                let watched = |object: &DynamicObject| {
                    namespaces.is_empty()
                        || object.metadata.namespace.as_ref().is_some_and(|ns| namespaces.contains(ns))
                };
                decode_event::<R>(event, watched, &resource, &recorder, &failures, &telemetry).map(Ok)
            }
            Err(error) => Some(Err(error)),
        };
        ready(decoded)
    })
}

fn decode_event<R>(
    event: watcher::Event<DynamicObject>,
    watched: impl Fn(&DynamicObject) -> bool,
    resource: &ApiResource,
    recorder: &EventRecorder,
    failures: &Arc<DecodeFailures>,
    telemetry: &ControllerMetrics,
) -> Option<watcher::Event<R>>
where
    R: Resource + DeserializeOwned,
    R::DynamicType: Default,
{
    let decode_or_report = |object: DynamicObject| match decode::<R>(&object) {
        Ok(decoded) => {
            failures.forget(object.uid());
            Some(decoded)
        }
        Err(error) => {
            report(&object, &error, resource, recorder, failures, telemetry);
            None
        }
    };
    match event {
        watcher::Event::Apply(object)
        | watcher::Event::InitApply(object)
        | watcher::Event::Delete(object)
            if !watched(&object) =>
        {
            None
        }
        watcher::Event::Apply(object) => decode_or_report(object).map(watcher::Event::Apply),
        watcher::Event::InitApply(object) => decode_or_report(object).map(watcher::Event::InitApply),
        // An undecodable object that is gone needs no report.
        watcher::Event::Delete(object) => {
            failures.forget(object.uid());
            decode::<R>(&object).ok().map(watcher::Event::Delete)
        }
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// Why an object did not decode, as [`describe`] puts it: no value of the object in it.
#[derive(Debug)]
struct DecodeError(String);

fn decode<R: DeserializeOwned>(object: &DynamicObject) -> Result<R, DecodeError> {
    let value =
        serde_json::to_value(object).map_err(|error| DecodeError(describe("", &error.to_string())))?;
    serde_path_to_error::deserialize(value)
        .map_err(|error| DecodeError(describe(&error.path().to_string(), &error.inner().to_string())))
}

/// `path: what was wrong`, from serde's message without the value it quotes: the kind of
/// value found (`a string`, `an integer`) stays, the value goes; a message of another shape
/// (a custom one, from a type's own `Deserialize`) is left out, since it may quote anything.
fn describe(path: &str, message: &str) -> String {
    let at = if path.is_empty() || path == "." { "the object".to_owned() } else { format!("`{path}`") };
    let kind = |unexpected: &str| {
        let kind = unexpected.split([' ', '`', '"']).next().unwrap_or_default();
        let kind = if unexpected.starts_with("floating point") { "floating point number" } else { kind };
        let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        format!("{article} {kind}")
    };
    let split =
        |rest: &str| rest.rfind(", expected ").map(|at| (rest[..at].to_owned(), rest[at + 2..].to_owned()));
    let what = if let Some((unexpected, expected)) = message.strip_prefix("invalid type: ").and_then(split) {
        format!("{expected}, found {}", kind(&unexpected))
    } else if let Some((unexpected, expected)) = message.strip_prefix("invalid value: ").and_then(split) {
        format!("{expected}, found {} that is not one", kind(&unexpected))
    } else if let Some((_, expected)) = message.strip_prefix("unknown variant ").and_then(split) {
        format!("unknown variant, {expected}")
    } else if ["missing field `", "unknown field `", "duplicate field `", "invalid length "]
        .iter()
        .any(|safe| message.starts_with(safe))
    {
        message.to_owned()
    } else {
        "the value does not fit the type (its own message is left out, since it may quote the value)"
            .to_owned()
    };
    format!("at {at}: {what}")
}

fn report(
    object: &DynamicObject,
    error: &DecodeError,
    resource: &ApiResource,
    recorder: &EventRecorder,
    failures: &Arc<DecodeFailures>,
    telemetry: &ControllerMetrics,
) {
    let label = crate::object::label(
        &resource.kind,
        object.metadata.namespace.as_deref(),
        object.metadata.name.as_deref(),
    );
    let (uid, version) = (object.uid().unwrap_or_default(), object.resource_version().unwrap_or_default());
    if !failures.first_report(&uid, &version) {
        return;
    }
    telemetry.undecodable();
    let mut note = format!(
        "{label} does not match the operator's type and is not reconciled until it is fixed: {}",
        error.0
    );
    // A reason of its own: Events of one reason fold into a series that keeps its first note.
    let mut reason = "DecodeFailed";
    if let Some(way_out) = way_out(object, resource) {
        note.push_str(&way_out);
        reason = "DecodeFailedWhileDeleting";
    }
    tracing::error!(object = %label, "{note}");
    let reference = object.object_ref(resource);
    let recorder = recorder.clone();
    tokio::spawn(async move {
        if let Err(error) = recorder.publish_to(reference, EventData::warning(reason, note)).await {
            tracing::warn!(object = %label, error = %error.report(), "could not publish event");
        }
    });
}

/// For an object being deleted that finalizers hold: that its cleanup cannot run, and the two
/// commands that get it out (fix it, or remove a finalizer without cleanup).
fn way_out(object: &DynamicObject, resource: &ApiResource) -> Option<String> {
    object.metadata.deletion_timestamp.as_ref()?;
    let finalizers = object.metadata.finalizers.as_deref().filter(|all| !all.is_empty())?;
    let kind = match resource.group.as_str() {
        "" => resource.plural.clone(),
        group => format!("{}.{group}", resource.plural),
    };
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let namespace = object.metadata.namespace.as_deref().map(|ns| format!(" -n {ns}")).unwrap_or_default();
    let removals: Vec<String> = finalizers
        .iter()
        .enumerate()
        .map(|(index, finalizer)| {
            format!(
                "`kubectl patch {kind} {name}{namespace} --type=json -p '[{{\"op\":\"test\",\"path\":\"/metadata/finalizers/{index}\",\"value\":\"{finalizer}\"}},{{\"op\":\"remove\",\"path\":\"/metadata/finalizers/{index}\"}}]'` (removes {finalizer})"
            )
        })
        .collect();
    Some(format!(
        ". It is being deleted, and its finalizers hold it, but its cleanup cannot run while it does not \
         decode. Fix it with `kubectl edit {kind} {name}{namespace}` and cleanup runs; or release it \
         without cleanup (what cleanup would undo stays) with {}",
        removals.join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_is_reported_once_and_only_undecodable_objects_are_kept() {
        let failures = DecodeFailures::default();
        assert!(failures.first_report("uid-1", "10"));
        assert!(!failures.first_report("uid-1", "10"), "a re-list of the same version");
        assert!(failures.first_report("uid-1", "11"), "a new version that still does not decode");
        assert!(failures.first_report("uid-2", "5"));
        failures.forget(Some("uid-1".into()));
        assert_eq!(failures.reported.lock().unwrap().len(), 1, "fixed objects are forgotten");
        assert!(failures.first_report("uid-1", "11"), "broken again: reported again");
        failures.forget(None);
        assert_eq!(failures.reported.lock().unwrap().len(), 2);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Spec {
        port: u16,
        mode: Mode,
        #[serde(default)]
        ratio: Option<f32>,
        #[serde(default)]
        checked: Option<Checked>,
    }

    #[derive(Debug, serde::Deserialize)]
    enum Mode {
        Fast,
        Safe,
    }

    /// A type whose own error quotes the value.
    #[derive(Debug)]
    struct Checked;

    impl<'de> serde::Deserialize<'de> for Checked {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            Err(serde::de::Error::custom(format!("{text} is not allowed")))
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Object {
        spec: Spec,
    }

    fn decoded(spec: &serde_json::Value) -> String {
        let object: DynamicObject =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": "x" }, "spec": spec })).unwrap();
        decode::<Object>(&object).unwrap_err().0
    }

    #[test]
    fn a_decode_failure_names_the_field_and_the_expected_type_but_never_the_value() {
        let secret = "hunter2-do-not-log";
        let cases = [
            (
                serde_json::json!({ "port": secret, "mode": "Fast" }),
                "at `spec.port`: expected u16, found a string",
            ),
            (
                serde_json::json!({ "port": 70000, "mode": "Fast" }),
                "at `spec.port`: expected u16, found an integer that is not one",
            ),
            (
                serde_json::json!({ "port": 1, "mode": secret }),
                "at `spec.mode`: unknown variant, expected `Fast` or `Safe`",
            ),
            (
                serde_json::json!({ "port": 1, "mode": "Fast", "ratio": secret }),
                "at `spec.ratio`: expected f32, found a string",
            ),
            (
                serde_json::json!({ "port": 1.5, "mode": "Fast" }),
                "at `spec.port`: expected u16, found a floating point number",
            ),
            (serde_json::json!({ "port": 1 }), "at `spec`: missing field `mode`"),
            (
                serde_json::json!({ "port": 1, "mode": "Fast", "checked": secret }),
                "at `spec.checked`: the value does not fit the type (its own message is left out, since it may quote the value)",
            ),
        ];
        for (spec, expected) in cases {
            let said = decoded(&spec);
            assert_eq!(said, expected, "for {spec}");
            assert!(!said.contains(secret) && !said.contains("70000") && !said.contains("1.5"), "{said}");
        }
    }
}
