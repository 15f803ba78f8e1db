//! What the simulator learns from inside the process: the runtime's own tracing events for
//! a reconcile and for a cleanup that succeeded, caught on the simulator's thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use tracing::field::Field;
use tracing::field::Visit;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Counts kept across the process's lives.
#[derive(Default, Debug)]
pub(crate) struct Seen {
    /// Reconciles finished, all lives together.
    pub(crate) reconciles: u64,
    /// Successful cleanups by uid, in the current life.
    pub(crate) cleanups: BTreeMap<String, u32>,
    /// A uid cleaned up twice in one life, the first time it happened.
    pub(crate) twice: Option<String>,
}

#[derive(Clone, Default)]
pub(crate) struct Observer(pub(crate) Arc<Mutex<Seen>>);

impl Observer {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    uid: String,
    object: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "uid" => value.clone_into(&mut self.uid),
            "object" => value.clone_into(&mut self.object),
            "message" => value.clone_into(&mut self.message),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "object" => self.object = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Observer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let target = event.metadata().target();
        if target != "kuberator::cleanup" && target != "kuberator::controller" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.with(|seen| match (target, fields.message.as_str()) {
            ("kuberator::cleanup", _) => {
                let count = seen.cleanups.entry(fields.uid.clone()).or_default();
                *count += 1;
                if *count > 1 && seen.twice.is_none() {
                    seen.twice = Some(format!("{} (uid {})", fields.object, fields.uid));
                }
            }
            (_, "reconciled") => seen.reconciles += 1,
            _ => {}
        });
    }
}
