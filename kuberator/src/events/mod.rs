//! Kubernetes Events that `kubectl describe` and `kubectl events` show.
//!
//! # Expected flow
//!
//! Define your reasons as an enum implementing [`Reason`], build an [`EventRecorder`] once,
//! and call [`EmitEvent::emit`] with an [`EventData`] from your handlers:
//!
//! ```
//! use kuberator::events::{EmitEvent, EventData, EventRecorder, Reason};
//! # use k8s_openapi::api::core::v1::ConfigMap;
//!
//! #[derive(Debug, Clone, Copy)]
//! enum MyReason {
//!     Provisioned,
//!     QuotaExceeded,
//! }
//!
//! impl Reason for MyReason {
//!     fn as_str(&self) -> &str {
//!         match self {
//!             MyReason::Provisioned => "Provisioned",
//!             MyReason::QuotaExceeded => "QuotaExceeded",
//!         }
//!     }
//! }
//!
//! # async fn demo(client: kube::Client, object: ConfigMap) {
//! let recorder = EventRecorder::new(client, "my-operator");
//! recorder.emit(&object, EventData::normal(MyReason::Provisioned, "bucket photos created")).await;
//! recorder
//!     .emit(&object, EventData::warning(MyReason::QuotaExceeded, "bucket quota is 10"))
//!     .await;
//! # }
//! ```
//!
//! # Guarantees
//!
//! - Events are `events.k8s.io/v1` Events regarding the object, published with
//!   [`kube::runtime::events::Recorder`]: the same event (type, reason, action, object)
//!   repeated within a few minutes is folded into one Event whose series count grows, rather
//!   than into a new Event each time.
//! - Notes longer than the API's 1024-byte limit are cut at a character boundary and end in
//!   `…`; reasons and actions are cut at 128 bytes. Nothing is rejected for its length.
//! - [`EmitEvent::emit`] logs every event and never fails: a failure to publish is logged
//!   as a warning with the object and the reason. Use [`EmitEvent::try_emit`] to get the
//!   error instead.
//!
//! # Testing
//!
//! `MockEventRecorder` implements [`EmitEvent`] in memory, so handlers written against
//! `EmitEvent` can be unit tested without a cluster. It is a test double, so it sits behind
//! the `testing` feature (`kuberator = { version = "...", features = ["testing"] }` in
//! `[dev-dependencies]`), and `kuberator-test` re-exports it.

mod data;
#[cfg(any(test, feature = "testing"))]
mod mock;
mod recorder;

use async_trait::async_trait;
use kube::Resource;

pub use self::data::EventData;
pub use self::data::Reason;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::mock::MockEventRecorder;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::mock::RecordedEvent;
pub use self::recorder::EventRecorder;
use crate::error::Result;
pub use kube::runtime::events::EventType;

/// Publishes Events about objects.
#[async_trait]
pub trait EmitEvent: Send + Sync {
    /// Publishes `event` about `object`.
    ///
    /// # Errors
    ///
    /// [`Error::PublishEvent`](crate::error::Error::PublishEvent), naming the object and the
    /// reason, when the API server refuses the Event.
    async fn try_emit<K, R>(&self, object: &K, event: EventData<R>) -> Result<()>
    where
        K: Resource + Sync,
        K::DynamicType: Default,
        R: Reason;

    /// Publishes `event` about `object` and logs it; a failure to publish is logged, never
    /// returned, so an Event can never fail a reconcile.
    ///
    /// kube-rs calls this `Recorder::publish`, which returns the error: that is
    /// [`try_emit`](EmitEvent::try_emit) here. The other name is kept for the one that cannot
    /// fail, so that the common call needs no `?` and no `let _ =`.
    async fn emit<K, R>(&self, object: &K, event: EventData<R>)
    where
        K: Resource + Sync,
        K::DynamicType: Default,
        R: Reason,
    {
        let label = crate::object::describe(object);
        let reason = event.reason.as_str().to_owned();
        match event.type_ {
            EventType::Normal => tracing::info!(object = %label, %reason, note = %event.note, "event"),
            EventType::Warning => tracing::warn!(object = %label, %reason, note = %event.note, "event"),
        }
        if let Err(error) = self.try_emit(object, event).await {
            tracing::warn!(object = %label, %reason, error = %error.report(), "could not publish event");
        }
    }
}
