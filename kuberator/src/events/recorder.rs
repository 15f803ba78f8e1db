//! [`EventRecorder`]: publishes Events through kube's [`Recorder`].

use std::fmt;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::Resource;
use kube::runtime::events::Event;
use kube::runtime::events::Recorder;
use kube::runtime::events::Reporter;

use super::EmitEvent;
use super::EventData;
use super::Reason;
use super::data::NOTE_LIMIT;
use super::data::REASON_LIMIT;
use super::data::truncate;
use crate::error::Error;
use crate::error::Result;
use crate::object::describe;

/// Publishes `events.k8s.io/v1` Events about objects; see the [module docs](super).
///
/// Cloning is cheap and clones share the cache that folds repeated events into series.
#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
    controller: String,
}

impl EventRecorder {
    /// A recorder that reports as `controller` (shown as `reportingController`), from this
    /// host (the `reportingInstance`).
    pub fn new(client: Client, controller: impl Into<String>) -> Self {
        let controller = controller.into();
        let reporter = Reporter::from(controller.as_str());
        Self { recorder: Recorder::new(client, reporter), controller }
    }

    /// A recorder with a reporter built by hand, for example with a pod name as instance.
    pub fn with_reporter(client: Client, reporter: Reporter) -> Self {
        let controller = reporter.controller.clone();
        Self { recorder: Recorder::new(client, reporter), controller }
    }

    /// The controller name this recorder reports as.
    pub fn controller(&self) -> &str {
        &self.controller
    }
}

impl EventRecorder {
    /// Publishes an Event about the object `reference` names, for objects that exist only as
    /// a reference (one that does not decode, say).
    pub(crate) async fn publish_to<R: Reason>(
        &self,
        reference: ObjectReference,
        event: EventData<R>,
    ) -> Result<()> {
        let object = crate::object::label(
            reference.kind.as_deref().unwrap_or_default(),
            reference.namespace.as_deref(),
            reference.name.as_deref(),
        );
        self.publish(reference, object, event).await
    }

    /// Publishes `event` about `reference` (named `object` in errors), with the API's length
    /// limits applied.
    async fn publish<R: Reason>(
        &self,
        reference: ObjectReference,
        object: String,
        event: EventData<R>,
    ) -> Result<()> {
        let published = Event {
            type_: event.type_,
            reason: truncate(event.reason.as_str(), REASON_LIMIT).into_owned(),
            note: Some(truncate(&event.note, NOTE_LIMIT).into_owned()),
            action: truncate(event.action(), REASON_LIMIT).into_owned(),
            secondary: event.related,
        };
        self.recorder.publish(&published, &reference).await.map_err(|source| Error::PublishEvent {
            object,
            reason: published.reason,
            source: Box::new(source),
        })
    }
}

#[async_trait]
impl EmitEvent for EventRecorder {
    async fn try_emit<K, R>(&self, object: &K, event: EventData<R>) -> Result<()>
    where
        K: Resource + Sync,
        K::DynamicType: Default,
        R: Reason,
    {
        self.publish(object.object_ref(&K::DynamicType::default()), describe(object), event).await
    }
}

impl fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecorder").field("controller", &self.controller).finish_non_exhaustive()
    }
}
