//! [`MockEventRecorder`]: records Events in memory for unit tests.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use async_trait::async_trait;
use kube::Resource;
use kube::runtime::events::EventType;

use super::EmitEvent;
use super::EventData;
use super::Reason;
use super::data::NOTE_LIMIT;
use super::data::REASON_LIMIT;
use super::data::truncate;
use crate::error::Result;
use crate::object::describe;

/// One Event a [`MockEventRecorder`] saw, as it would have been published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The object, as `Kind namespace/name`.
    pub object: String,
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// The reason.
    pub reason: String,
    /// The action.
    pub action: String,
    /// The note, cut to the API's limit as it would be when published.
    pub note: String,
}

/// An [`EmitEvent`] that keeps Events in memory instead of publishing them.
///
/// ```
/// use kuberator::events::{EmitEvent, EventData, MockEventRecorder};
/// # use k8s_openapi::api::core::v1::ConfigMap;
/// # use kube::api::ObjectMeta;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let object = ConfigMap {
/// #     metadata: ObjectMeta { name: Some("demo".into()), namespace: Some("default".into()), ..Default::default() },
/// #     ..Default::default()
/// # };
/// let recorder = MockEventRecorder::new();
/// recorder.emit(&object, EventData::normal("Provisioned", "bucket created")).await;
///
/// let events = recorder.events();
/// assert_eq!(events[0].object, "ConfigMap default/demo");
/// assert_eq!(events[0].reason, "Provisioned");
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MockEventRecorder {
    events: Arc<Mutex<Vec<RecordedEvent>>>,
}

impl MockEventRecorder {
    /// A recorder with no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event recorded so far, oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.lock().clone()
    }

    /// The reasons of every event recorded so far, oldest first.
    pub fn reasons(&self) -> Vec<String> {
        self.lock().iter().map(|event| event.reason.clone()).collect()
    }

    /// Forgets every recorded event.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedEvent>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl EmitEvent for MockEventRecorder {
    async fn try_emit<K, R>(&self, object: &K, event: EventData<R>) -> Result<()>
    where
        K: Resource + Sync,
        K::DynamicType: Default,
        R: Reason,
    {
        let recorded = RecordedEvent {
            object: describe(object),
            type_: event.type_,
            reason: truncate(event.reason.as_str(), REASON_LIMIT).into_owned(),
            action: truncate(event.action(), REASON_LIMIT).into_owned(),
            note: truncate(&event.note, NOTE_LIMIT).into_owned(),
        };
        self.lock().push(recorded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    #[tokio::test]
    async fn records_what_would_be_published() {
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some("demo".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let recorder = MockEventRecorder::new();
        recorder.emit(&object, EventData::warning("QuotaExceeded", "x".repeat(5000))).await;
        recorder.emit(&object, EventData::normal("Provisioned", "ok").with_action("Provision")).await;

        let events = recorder.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].type_, EventType::Warning);
        assert_eq!(events[0].note.len(), 1024, "cut to the API's 1024-byte limit");
        assert_eq!(events[1].action, "Provision");
        assert_eq!(recorder.reasons(), ["QuotaExceeded", "Provisioned"]);
        recorder.clear();
        assert!(recorder.events().is_empty());
    }
}
