//! Status conditions with `metav1.Condition` semantics: [`Condition`] and the list type
//! [`Conditions`] a status carries.
//!
//! # Expected flow
//!
//! Put a [`Conditions`] field named `conditions` in your status struct. When the CRD's status
//! schema has it, a derived operator keeps a `Ready` condition there on its own: `True` after
//! a successful `handle_apply`, `False` with the error's reason and message after a failed
//! one, so `kubectl wait --for=condition=Ready` works. Add conditions of your own with
//! [`Ctx::set_condition`](crate::operator::Ctx::set_condition); they are written with `Ready`
//! when the handler returns.
//!
//! # Guarantees
//!
//! - One condition per `type`; setting a type again replaces it.
//! - `lastTransitionTime` changes only when `status` changes: setting `Ready=True` on a
//!   condition that is already `True` keeps the time it became `True`.
//! - `observedGeneration` is the `metadata.generation` the condition was computed from.
//! - The schema marks the list as a map keyed by `type`
//!   (`x-kubernetes-list-type: map`), as the Kubernetes API conventions ask.
//! - One status write per reconcile: see [the status module](crate::status#one-status-write-per-reconcile).

use std::borrow::Cow;
use std::time::SystemTime;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::runtime::controller::Action;
use schemars::JsonSchema;
use schemars::Schema;
use schemars::SchemaGenerator;
use schemars::json_schema;
use serde::Deserialize;
use serde::Serialize;

use crate::KubeResource;
use crate::cache::ProvideApi;
use crate::error::Error;
use crate::error::Result;
use crate::object::describe;
use crate::object::name_and_scope;

/// The condition a derived operator maintains: `True` once the current generation was
/// applied without error.
pub const READY: &str = "Ready";

/// One status condition, as `metav1.Condition` defines it.
///
/// ```
/// use kuberator::status::Condition;
///
/// let synced = Condition::new("Synced", true, "ConfigWritten", "the ConfigMap holds 3 keys");
/// assert_eq!(synced.status, "True");
/// assert!(synced.is_true());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about, in CamelCase: `Ready`, `Synced`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in CamelCase, for machines: `Reconciled`, `ApplyFailed`.
    pub reason: String,
    /// Why, for people.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` the condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    #[schemars(with = "String")]
    pub last_transition_time: Time,
}

impl Condition {
    /// A condition of `type_` that is `True` or `False`, with its reason and message, stamped
    /// now (writing it keeps an older time when the status did not change).
    pub fn new(
        type_: impl Into<String>,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: now(),
        }
    }

    /// Like [`new`](Condition::new), with status `Unknown`.
    pub fn unknown(type_: impl Into<String>, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status: "Unknown".to_owned(), ..Self::new(type_, false, reason, message) }
    }

    /// Whether its status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The `conditions` of a status: a list with at most one [`Condition`] per type.
///
/// ```
/// use kuberator::status::{Condition, Conditions};
///
/// let mut conditions = Conditions::default();
/// conditions.set(Condition::new("Ready", false, "Starting", ""), Some(1));
/// let first = conditions.get("Ready").unwrap().last_transition_time.clone();
/// conditions.set(Condition::new("Ready", false, "StillStarting", ""), Some(2));
/// assert_eq!(conditions.get("Ready").unwrap().last_transition_time, first);
/// assert_eq!(conditions.get("Ready").unwrap().reason, "StillStarting");
/// assert!(!conditions.is_true("Ready"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Conditions(pub Vec<Condition>);

impl Conditions {
    /// The condition of `type_`, if there is one.
    pub fn get(&self, type_: &str) -> Option<&Condition> {
        self.0.iter().find(|condition| condition.type_ == type_)
    }

    /// Whether the condition of `type_` is there and `True`.
    pub fn is_true(&self, type_: &str) -> bool {
        self.get(type_).is_some_and(Condition::is_true)
    }

    /// Sets `condition`, observed at `generation`: replaces the one of its type (keeping
    /// that one's `lastTransitionTime` when `status` is unchanged) or adds it. Returns
    /// whether anything but the time changed.
    pub fn set(&mut self, mut condition: Condition, generation: Option<i64>) -> bool {
        if generation.is_some() {
            condition.observed_generation = generation;
        }
        match self.0.iter_mut().find(|known| known.type_ == condition.type_) {
            Some(known) => {
                if known.status == condition.status {
                    condition.last_transition_time = known.last_transition_time.clone();
                }
                let changed = *known != condition;
                *known = condition;
                changed
            }
            None => {
                self.0.push(condition);
                true
            }
        }
    }

    /// Removes the condition of `type_`; returns whether there was one.
    pub fn remove(&mut self, type_: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|condition| condition.type_ != type_);
        self.0.len() != before
    }

    /// The conditions, in the order they were first set.
    pub fn iter(&self) -> std::slice::Iter<'_, Condition> {
        self.0.iter()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Conditions {
    type Item = &'a Condition;
    type IntoIter = std::slice::Iter<'a, Condition>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl JsonSchema for Conditions {
    fn schema_name() -> Cow<'static, str> {
        "Conditions".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let item = generator.subschema_for::<Condition>();
        json_schema!({
            "type": "array",
            "items": item,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        })
    }
}

tokio::task_local! {
    /// The object whose `handle_apply` runs in this task, and where its conditions go.
    static APPLYING: Applying;
}

/// One derived operator's apply of one object (see [`ReadyWriter::applying`]).
struct Applying {
    writer: std::sync::Arc<ReadyWriter>,
    uid: String,
}

/// What [`route`] did with a status about to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Write it now, as it is.
    Write,
    /// Kept, to be written with the conditions when the handler returns.
    Deferred,
}

/// Keeps `status`, about to be written to the object `uid` through
/// [`Finalize::update_status`](crate::Finalize::update_status), when that object's
/// `handle_apply` runs in this task and its CRD holds conditions: the status (merged with any
/// the handler wrote before) and its conditions (set as
/// [`Ctx::set_condition`](crate::operator::Ctx::set_condition) sets them) are written in one
/// write with `Ready` when the handler returns. Anywhere else (a cleanup, a trait-level
/// operator, another object, a status that is not an object) it is written now, as given.
pub(crate) fn route(uid: Option<&str>, status: &mut serde_json::Value) -> Routed {
    APPLYING
        .try_with(|applying| {
            if uid != Some(applying.uid.as_str()) || !applying.writer.enabled {
                return Routed::Write;
            }
            let Some(fields) = status.as_object_mut() else { return Routed::Write };
            let conditions = match fields.remove("conditions") {
                Some(conditions) => match Conditions::deserialize(&conditions) {
                    Ok(conditions) => conditions,
                    // Not conditions as Kuberator writes them: the status goes as given.
                    Err(_) => {
                        fields.insert("conditions".to_owned(), conditions);
                        return Routed::Write;
                    }
                },
                None => Conditions::default(),
            };
            let mut pending = applying.writer.pending.entry(applying.uid.clone()).or_default();
            pending.conditions.extend(conditions.iter().cloned());
            let written = pending.status.get_or_insert_with(|| serde_json::Value::Object(Default::default()));
            json_patch::merge(written, status);
            drop(pending);
            applying.writer.report();
            Routed::Deferred
        })
        .unwrap_or(Routed::Write)
}

/// What a reconcile has set and not written yet: conditions, and the status its handler
/// wrote.
#[derive(Debug, Default)]
struct Pending {
    conditions: Vec<Condition>,
    /// The merge of every status the handler wrote, in order.
    status: Option<serde_json::Value>,
}

/// Keeps the `Ready` condition, and the conditions a handler sets, of a derived operator's
/// objects (see [`Ctx`](crate::operator::Ctx#conditions)).
pub(crate) struct ReadyWriter {
    /// Whether the CRD's status can hold conditions; when not, nothing is written.
    enabled: bool,
    size: crate::telemetry::Remembered,
    /// The conditions set during the reconcile of each object, by uid: an object made again
    /// under the same name never sees those of the one before. Each entry leaves when the
    /// reconcile that set it ends, however it ends ([`ReadyWriter::reconciling`]).
    pending: dashmap::DashMap<String, Pending>,
}

/// The reconcile of one object, for as long as it runs: what it set and did not write is
/// dropped with it (a condition set in `handle_cleanup`, or in a reconcile that failed, timed
/// out or panicked).
pub(crate) struct Reconciling<'a> {
    writer: &'a ReadyWriter,
    uid: Option<String>,
}

impl Drop for Reconciling<'_> {
    fn drop(&mut self) {
        if let Some(uid) = &self.uid
            && self.writer.pending.remove(uid).is_some()
        {
            self.writer.report();
        }
    }
}

impl ReadyWriter {
    /// A writer for objects of `R`, on when `crd` gives `R`'s version a status subresource
    /// with `conditions` in its schema (else the API server would drop them).
    pub(crate) fn for_crd<R: Resource<DynamicType = ()>>(
        crd: &CustomResourceDefinition,
        controller: &str,
    ) -> Self {
        let version = R::version(&());
        let enabled = crd.spec.versions.iter().filter(|served| served.name == version).any(|served| {
            let has_status = served.subresources.as_ref().is_some_and(|sub| sub.status.is_some());
            let conditions =
                served.schema.as_ref().and_then(|schema| schema.open_api_v3_schema.as_ref()).and_then(
                    |schema| {
                        schema.properties.as_ref()?.get("status")?.properties.as_ref()?.get("conditions")
                    },
                );
            has_status && conditions.is_some()
        });
        Self {
            enabled,
            size: crate::telemetry::Remembered::new(controller, "conditions"),
            pending: dashmap::DashMap::new(),
        }
    }

    fn report(&self) {
        self.size.set(self.pending.len());
    }

    /// Starts the reconcile of `object`: the conditions set during it and not written leave
    /// when the returned guard is dropped.
    pub(crate) fn reconciling<R: Resource>(&self, object: &R) -> Reconciling<'_> {
        Reconciling { writer: self, uid: object.meta().uid.clone() }
    }

    /// Runs `apply`, the `handle_apply` of the object `uid`, so that conditions written
    /// through the repository inside it join the ones set ([`route`]).
    pub(crate) async fn applying<F: std::future::Future>(
        self: &std::sync::Arc<Self>,
        uid: Option<String>,
        apply: F,
    ) -> F::Output {
        match uid {
            Some(uid) => APPLYING.scope(Applying { writer: std::sync::Arc::clone(self), uid }, apply).await,
            None => apply.await,
        }
    }

    /// Records `condition` for `object`, to be written by the next [`write`](Self::write).
    pub(crate) fn set<R: Resource<DynamicType = ()>>(&self, object: &R, condition: Condition) {
        if !self.enabled {
            tracing::warn!(
                object = %describe(object),
                condition = %condition.type_,
                "the CRD's status has no `conditions` field, so the condition is not written; add a \
                 `conditions: kuberator::status::Conditions` field to the status struct"
            );
            return;
        }
        let Some(uid) = object.meta().uid.clone() else {
            tracing::warn!(object = %describe(object), "an object never stored has no conditions to set");
            return;
        };
        self.pending.entry(uid).or_default().conditions.push(condition);
        self.report();
    }

    /// Writes, in one status write, what `object`'s apply wrote to its status (see
    /// [`route`]) and `Ready` for its `outcome` with the conditions set meanwhile; nothing
    /// when the object already has all of it.
    ///
    /// # Errors
    ///
    /// [`Error::UpdateStatus`] when the status write is refused.
    pub(crate) async fn write<R, P>(&self, object: &R, outcome: &Result<Action>, provider: &P) -> Result<()>
    where
        R: KubeResource,
        P: ProvideApi<R>,
    {
        let uid = object.meta().uid.as_deref().unwrap_or_default();
        let pending = self.pending.remove(uid).map(|(_, pending)| pending).unwrap_or_default();
        self.report();
        if !self.enabled {
            return Ok(());
        }
        let now = serde_json::to_value(object)
            .ok()
            .and_then(|mut value| value.get_mut("status").map(serde_json::Value::take));
        let known = now
            .as_ref()
            .and_then(|status| status.get("conditions"))
            .and_then(|conditions| Conditions::deserialize(conditions).ok())
            .unwrap_or_default();
        let mut conditions = known.clone();
        let generation = object.meta().generation;
        for condition in pending.conditions {
            conditions.set(condition, generation);
        }
        conditions.set(ready(outcome, generation), generation);
        let empty = || serde_json::Value::Object(serde_json::Map::new());
        let mut status = pending.status.unwrap_or_else(empty);
        let now = now.unwrap_or_else(empty);
        let mut merged = now.clone();
        json_patch::merge(&mut merged, &status);
        // The object came from the cache: when it does not show this controller's last status
        // write yet, the server may hold something else than it shows (a failure's `Ready`),
        // and the write goes.
        let caught_up = crate::own_writes::status_caught_up(uid, object.meta().resource_version.as_deref());
        if caught_up && conditions == known && merged == now {
            return Ok(());
        }
        if (conditions != known || !caught_up)
            && let Some(fields) = status.as_object_mut()
        {
            let conditions = serde_json::to_value(&conditions)
                .map_err(|source| Error::SerializeStatus { object: describe(object), source })?;
            fields.insert("conditions".to_owned(), conditions);
        }
        let (name, namespace) = name_and_scope(object)?;
        let patch = serde_json::json!({ "status": status });
        let written = provider
            .get(namespace.unwrap_or_default())?
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        // A write that failed may have landed (its answer lost): the next one goes whatever
        // the cache shows.
        let answered = written.as_ref().ok().and_then(|written| written.meta().resource_version.clone());
        crate::own_writes::remember_status(uid, answered);
        written
            .map_err(|source| Error::UpdateStatus { object: describe(object), source: Box::new(source) })?;
        Ok(())
    }
}

/// `Ready` after an apply that ended with `outcome`.
fn ready(outcome: &Result<Action>, generation: Option<i64>) -> Condition {
    match outcome {
        Ok(_) => {
            let message = match generation {
                Some(generation) => format!("generation {generation} is applied"),
                None => "applied".to_owned(),
            };
            Condition::new(READY, true, "Reconciled", message)
        }
        Err(error) => {
            let reason = match error.event_reason() {
                "ReconcileFailed" => "ApplyFailed",
                specific => specific,
            };
            Condition::new(READY, false, reason, error.report())
        }
    }
}

/// Now, to the second, as the API server stores times.
fn now() -> Time {
    let seconds = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    Time(Timestamp::from_second(i64::try_from(seconds).unwrap_or(i64::MAX)).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut conditions = Conditions::default();
        let mut ready = Condition::new(READY, true, "Reconciled", "");
        ready.last_transition_time = at(100);
        assert!(conditions.set(ready, Some(1)));

        let mut again = Condition::new(READY, true, "Reconciled", "");
        again.last_transition_time = at(200);
        assert!(!conditions.set(again, Some(1)), "nothing but the time differs");
        assert_eq!(conditions.get(READY).unwrap().last_transition_time, at(100));

        let mut newer = Condition::new(READY, true, "Reconciled", "");
        newer.last_transition_time = at(300);
        assert!(conditions.set(newer, Some(2)), "a new generation is a change");
        assert_eq!(conditions.get(READY).unwrap().last_transition_time, at(100));
        assert_eq!(conditions.get(READY).unwrap().observed_generation, Some(2));

        let mut failed = Condition::new(READY, false, "ApplyFailed", "boom");
        failed.last_transition_time = at(400);
        assert!(conditions.set(failed, Some(2)));
        assert_eq!(conditions.get(READY).unwrap().last_transition_time, at(400));
        assert_eq!(conditions.0.len(), 1, "one condition per type");
    }

    #[test]
    fn conditions_serialize_as_metav1_conditions() {
        let mut conditions = Conditions::default();
        let mut ready = Condition::new(READY, false, "ApplyFailed", "boom");
        ready.last_transition_time = at(0);
        conditions.set(ready, Some(3));
        assert_eq!(
            serde_json::to_value(&conditions).unwrap(),
            serde_json::json!([{
                "type": "Ready",
                "status": "False",
                "reason": "ApplyFailed",
                "message": "boom",
                "observedGeneration": 3,
                "lastTransitionTime": "1970-01-01T00:00:00Z",
            }])
        );
    }

    #[test]
    fn the_schema_is_a_list_map_keyed_by_type() {
        let schema = serde_json::to_value(schemars::schema_for!(Conditions)).unwrap();
        assert_eq!(schema["x-kubernetes-list-type"], "map");
        assert_eq!(schema["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
        assert_eq!(schema["type"], "array");
    }
}
