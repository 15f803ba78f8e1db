//! A watch that decodes each object on its own, so one object that does not fit the type
//! (schema drift, a field of the wrong type) cannot stall the controller.
//!
//! kube's typed watcher decodes a whole list page at once: a single undecodable object
//! fails the list, the watcher retries it with backoff, and no object of the kind is
//! reconciled any more. Here each object of a page is decoded into `R` by itself, straight
//! from the API server's JSON (once: not into a `DynamicObject` first). One that fails is
//! left out (it is never reconciled, and never has
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use futures::Stream;
use futures::StreamExt as _;
use futures::future::ready;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::ResourceExt;
use kube::api::ApiResource;
use kube::api::ObjectMeta;
use kube::core::DynamicResourceScope;
use kube::runtime::watcher;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::events::EventData;
use crate::events::EventRecorder;
use crate::shared::Change;
use crate::telemetry::ControllerMetrics;

/// Per object (by uid) that does not decode now, the resourceVersion last reported: as many
/// entries as objects that are undecodable at the moment, not one per version ever seen. An
/// entry leaves when its object decodes again, is deleted, or is missing from a relist
/// (deleted while the watch was down).
#[derive(Debug, Default)]
pub(crate) struct DecodeFailures {
    size: crate::telemetry::Remembered,
    reported: Mutex<HashMap<String, String>>,
    /// During a relist: the undecodable objects it has shown so far.
    relisted: Mutex<Option<std::collections::HashSet<String>>>,
}

impl DecodeFailures {
    pub(crate) fn new(controller: &str) -> Self {
        Self { size: crate::telemetry::Remembered::new(controller, "undecodable"), ..Self::default() }
    }

    /// Whether this version of the object is new to report.
    fn first_report(&self, uid: &str, version: &str) -> bool {
        if let Some(relisted) = self.relisted.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            relisted.insert(uid.to_owned());
        }
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let first = reported.insert(uid.to_owned(), version.to_owned()).as_deref() != Some(version);
        self.size.set(reported.len());
        first
    }

    /// The object decodes again, or is gone.
    fn forget(&self, uid: Option<String>) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(uid) = uid
            && !reported.is_empty()
            && reported.remove(&uid).is_some()
        {
            self.size.set(reported.len());
        }
    }

    /// A relist begins.
    fn relist_started(&self) {
        *self.relisted.lock().unwrap_or_else(PoisonError::into_inner) = Some(Default::default());
    }

    /// A relist is done: what it did not show is gone.
    fn relist_done(&self) {
        let relisted =
            self.relisted.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default();
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        reported.retain(|uid, _| relisted.contains(uid));
        self.size.set(reported.len());
    }
}

/// An object as the watch delivers it: decoded into `R` straight from the API server's JSON,
/// or, when it does not fit `R`, its metadata and why.
///
/// Its `Deserialize` never fails on an object of the wrong shape, so that kube's watcher,
/// which decodes a whole list page at once, never fails a page because of one object.
#[derive(Clone, Debug)]
pub(crate) enum Watched<R> {
    Decoded(R),
    Undecodable(Box<Undecodable>),
}

/// The metadata of an object that does not fit the type, and why (no value of it).
#[derive(Clone, Debug)]
pub(crate) struct Undecodable {
    meta: ObjectMeta,
    error: DecodeError,
}

impl<'de, R: DeserializeOwned> Deserialize<'de> for Watched<R> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Only what a report needs.
        #[derive(Deserialize)]
        struct Header {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        // The object's JSON text, checked but not parsed into a tree: `R` is decoded from it
        // once; only an object that does not fit is read again, for the path of the field
        // and for its metadata.
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if let Ok(decoded) = serde_json::from_str(raw.get()) {
            return Ok(Self::Decoded(decoded));
        }
        // Again, tracking the path this time (it costs on every field, so only now).
        let mut json = serde_json::Deserializer::from_str(raw.get());
        let error = match serde_path_to_error::deserialize::<_, R>(&mut json) {
            Ok(decoded) => return Ok(Self::Decoded(decoded)),
            Err(error) => DecodeError(describe(&error.path().to_string(), &error.inner().to_string())),
        };
        let header: Header = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Self::Undecodable(Box::new(Undecodable { meta: header.metadata, error })))
    }
}

impl<R: Resource> Resource for Watched<R> {
    type DynamicType = R::DynamicType;
    type Scope = DynamicResourceScope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        R::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        R::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        R::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        R::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Decoded(object) => object.meta(),
            Self::Undecodable(undecodable) => &undecodable.meta,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Decoded(object) => object.meta_mut(),
            Self::Undecodable(undecodable) => &mut undecodable.meta,
        }
    }
}

/// The changes of a shared watch of `R` as this controller sees them: every object decoded
/// into `R` on its own (the others reported); with `namespaces` listed, objects in other
/// namespaces are left out.
pub(crate) fn decoded_changes<R>(
    changes: impl Stream<Item = Change<R>> + Send + 'static,
    namespaces: Vec<String>,
    recorder: EventRecorder,
    failures: Arc<DecodeFailures>,
    telemetry: ControllerMetrics,
) -> impl Stream<Item = watcher::Event<R>> + Send + 'static
where
    R: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R::DynamicType: Default,
{
    let resource = ApiResource::erase::<R>(&R::DynamicType::default());
    changes.filter_map(move |change| {
        let event = match change {
            Change::Listing => watcher::Event::Init,
            Change::Applied { object, listed: true, .. } => watcher::Event::InitApply(object),
            Change::Applied { object, listed: false, .. } => watcher::Event::Apply(object),
            Change::Deleted(object) => watcher::Event::Delete(object),
            Change::Listed { .. } => {
                telemetry.synced();
                watcher::Event::InitDone
            }
        };
        let watched = |meta: &ObjectMeta| {
            namespaces.is_empty() || meta.namespace.as_ref().is_some_and(|ns| namespaces.contains(ns))
        };
        ready(decode_event::<R>(event, watched, &resource, &recorder, &failures, &telemetry))
    })
}

fn decode_event<R>(
    event: watcher::Event<Watched<R>>,
    watched: impl Fn(&ObjectMeta) -> bool,
    resource: &ApiResource,
    recorder: &EventRecorder,
    failures: &Arc<DecodeFailures>,
    telemetry: &ControllerMetrics,
) -> Option<watcher::Event<R>>
where
    R: Resource,
    R::DynamicType: Default,
{
    let decoded_or_reported = |object: Watched<R>| match object {
        Watched::Decoded(decoded) => {
            failures.forget(decoded.uid());
            Some(decoded)
        }
        Watched::Undecodable(undecodable) => {
            report(&undecodable, resource, recorder, failures, telemetry);
            None
        }
    };
    match event {
        watcher::Event::Apply(object)
        | watcher::Event::InitApply(object)
        | watcher::Event::Delete(object)
            if !watched(object.meta()) =>
        {
            None
        }
        watcher::Event::Apply(object) => decoded_or_reported(object).map(watcher::Event::Apply),
        watcher::Event::InitApply(object) => decoded_or_reported(object).map(watcher::Event::InitApply),
        // An undecodable object that is gone needs no report.
        watcher::Event::Delete(object) => {
            failures.forget(object.uid());
            match object {
                Watched::Decoded(decoded) => Some(watcher::Event::Delete(decoded)),
                Watched::Undecodable(_) => None,
            }
        }
        watcher::Event::Init => {
            failures.relist_started();
            Some(watcher::Event::Init)
        }
        watcher::Event::InitDone => {
            failures.relist_done();
            Some(watcher::Event::InitDone)
        }
    }
}

/// Why an object did not decode, as [`describe`] puts it: no value of the object in it.
#[derive(Clone, Debug)]
struct DecodeError(String);

/// `path: what was wrong`, from serde's message without the value it quotes: the kind of
/// value found (`a string`, `an integer`) stays, the value goes; a message of another shape
/// (a custom one, from a type's own `Deserialize`) is left out, since it may quote anything.
fn describe(path: &str, message: &str) -> String {
    // serde_json ends a message read from text with ` at line 1 column 86`: the path says more.
    let message = match message.rsplit_once(" at line ") {
        Some((message, position))
            if position.split(" column ").all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            message
        }
        _ => message,
    };
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
    undecodable: &Undecodable,
    resource: &ApiResource,
    recorder: &EventRecorder,
    failures: &Arc<DecodeFailures>,
    telemetry: &ControllerMetrics,
) {
    let meta = &undecodable.meta;
    let label = crate::object::label(&resource.kind, meta.namespace.as_deref(), meta.name.as_deref());
    let uid = meta.uid.clone().unwrap_or_default();
    let version = meta.resource_version.clone().unwrap_or_default();
    if !failures.first_report(&uid, &version) {
        return;
    }
    telemetry.undecodable();
    let mut note = format!(
        "{label} does not match the operator's type and is not reconciled until it is fixed: {}",
        undecodable.error.0
    );
    // A reason of its own: Events of one reason fold into a series that keeps its first note.
    let mut reason = "DecodeFailed";
    if let Some(way_out) = way_out(meta, resource) {
        note.push_str(&way_out);
        reason = "DecodeFailedWhileDeleting";
    }
    tracing::error!(object = %label, "{note}");
    let reference = ObjectReference {
        api_version: Some(resource.api_version.clone()),
        kind: Some(resource.kind.clone()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    };
    let recorder = recorder.clone();
    tokio::spawn(async move {
        if let Err(error) = recorder.publish_to(reference, EventData::warning(reason, note)).await {
            tracing::warn!(object = %label, error = %error.report(), "could not publish event");
        }
    });
}

/// For an object being deleted that finalizers hold: that its cleanup cannot run, and the two
/// commands that get it out (fix it, or remove a finalizer without cleanup).
fn way_out(meta: &ObjectMeta, resource: &ApiResource) -> Option<String> {
    meta.deletion_timestamp.as_ref()?;
    let finalizers = meta.finalizers.as_deref().filter(|all| !all.is_empty())?;
    let kind = match resource.group.as_str() {
        "" => resource.plural.clone(),
        group => format!("{}.{group}", resource.plural),
    };
    let name = meta.name.as_deref().unwrap_or_default();
    let namespace = meta.namespace.as_deref().map(|ns| format!(" -n {ns}")).unwrap_or_default();
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
        // A relist that shows uid-1 only: uid-2 went while the watch was down.
        failures.relist_started();
        assert!(!failures.first_report("uid-1", "11"), "still the same version");
        failures.relist_done();
        assert_eq!(failures.reported.lock().unwrap().keys().collect::<Vec<_>>(), ["uid-1"]);
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
        let json = serde_json::json!({ "metadata": { "name": "x", "uid": "u-1" }, "spec": spec }).to_string();
        match serde_json::from_str::<Watched<Object>>(&json).unwrap() {
            Watched::Decoded(object) => panic!("decoded: {object:?}"),
            Watched::Undecodable(undecodable) => {
                assert_eq!(undecodable.meta.uid.as_deref(), Some("u-1"), "the metadata is kept");
                undecodable.error.0
            }
        }
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
