//! Builds and drives the kube [`Controller`] behind [`Reconcile`](crate::Reconcile).

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::Controller;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller;
use kube::runtime::controller::Action;
use kube::runtime::predicates;
use kube::runtime::reflector;
use kube::runtime::utils::Predicate;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use crate::backoff::Failures;
use crate::decode::DecodeFailures;
use crate::decode::decoded_watch;
use crate::error::Error;
use crate::error::Result;
use crate::events::EmitEvent;
use crate::events::EventData;
use crate::events::EventRecorder;
use crate::object::describe;
use crate::telemetry::ControllerMetrics;

/// Everything [`drive`] needs.
pub(crate) struct Settings<R, C, G, Rec, Pol> {
    pub(crate) api: Api<R>,
    pub(crate) watcher: watcher::Config,
    pub(crate) context: Arc<C>,
    pub(crate) limit: Option<usize>,
    pub(crate) shutdown: Option<G>,
    pub(crate) controller_name: String,
    pub(crate) reconcile: Rec,
    pub(crate) error_policy: Pol,
}

/// Runs a controller until its shutdown future completes.
///
/// Objects come from a watch that decodes each object on its own (see [`crate::decode`]),
/// filtered to generation and finalizer changes, so status writes do not trigger
/// reconciles; requeues bypass the filter.
pub(crate) async fn drive<R, C, G, Rec, RecFut, Pol>(settings: Settings<R, C, G, Rec, Pol>)
where
    R: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R::DynamicType: Default + Eq + Hash + Clone + Debug + Unpin,
    C: Send + Sync + 'static,
    G: Future<Output = ()> + Send + 'static,
    Rec: FnMut(Arc<R>, Arc<C>) -> RecFut,
    RecFut: Future<Output = Result<Action>> + Send + 'static,
    Pol: Fn(Arc<R>, &Error, Arc<C>) -> Action,
{
    let Settings {
        api,
        watcher: watcher_config,
        context,
        limit,
        shutdown,
        controller_name,
        reconcile,
        error_policy,
    } = settings;
    let (telemetry, _registered) = ControllerMetrics::new(&controller_name);
    let recorder = EventRecorder::new(api.clone().into_client(), controller_name);

    let (reader, writer) = reflector::store();
    let undecodable = Arc::new(DecodeFailures::default());
    // Objects whose change arrived and whose reconcile has not started: the queue depth.
    let waiting = Arc::new(Waiting::default());
    let changes = decoded_watch(&api, watcher_config, recorder.clone(), undecodable, telemetry.clone())
        .reflect(writer)
        .touched_objects()
        .predicate_filter(predicates::generation.combine(predicates::finalizers), Default::default())
        .inspect({
            let (waiting, telemetry) = (Arc::clone(&waiting), telemetry.clone());
            move |change| {
                if let Ok(object) = change {
                    telemetry.queue_depth(
                        waiting.add(object.meta().namespace.clone(), object.meta().name.clone()),
                    );
                }
            }
        });

    let concurrency = match limit {
        None | Some(0) => 0,
        Some(limit) => u16::try_from(limit).unwrap_or(u16::MAX),
    };
    let mut controller = Controller::for_stream(changes, reader)
        .with_config(controller::Config::default().concurrency(concurrency));

    // kube wants a `Sync` shutdown future; the user's needs only be `Send`, so it runs in a
    // task of its own and signals through a channel.
    let mut signal_task = None;
    if let Some(shutdown) = shutdown {
        let (fired, on_fire) = tokio::sync::oneshot::channel::<()>();
        signal_task = Some(tokio::spawn(async move {
            shutdown.await;
            let _ = fired.send(());
        }));
        controller = controller.graceful_shutdown_on(async move {
            let _ = on_fire.await;
        });
    }

    // A panic in a handler must not take the controller, and every other object, down with
    // it: it becomes an error of that object, reported and retried like any other.
    let mut reconcile = reconcile;
    let failures = Arc::new(Failures::default());
    let isolated = {
        let failures = Arc::clone(&failures);
        let telemetry = telemetry.clone();
        let waiting = Arc::clone(&waiting);
        move |object: Arc<R>, context: Arc<C>| {
            let depth = waiting.remove(object.meta().namespace.clone(), object.meta().name.clone());
            telemetry.queue_depth(depth);
            let label = describe(&*object);
            let reconciling = AssertUnwindSafe(reconcile(object, context)).catch_unwind();
            let failures = Arc::clone(&failures);
            let telemetry = telemetry.clone();
            async move {
                telemetry.started();
                let started = std::time::Instant::now();
                let result = reconciling.await.unwrap_or_else(|payload| {
                    Err(Error::Panicked { object: label.clone(), message: panic_message(payload.as_ref()) })
                });
                telemetry.finished(started.elapsed(), result.is_ok());
                if result.is_ok() {
                    failures.succeeded(&label);
                }
                result
            }
        }
    };
    let gone = telemetry.clone();
    let report_and_decide = move |object: Arc<R>, error: &Error, context: Arc<C>| {
        telemetry.failed(error);
        publish_failure(&recorder, &object, error);
        error_policy(object, error, context)
    };
    let running = controller.run(isolated, report_and_decide, context).for_each(move |result| {
        match result {
            Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
            // Already logged by the error policy, with the whole error chain.
            Err(controller::Error::ReconcilerFailed(_, object)) => {
                tracing::debug!(object = %object, "reconcile failed");
            }
            // Deleted before its turn came: it waits no more.
            Err(controller::Error::ObjectNotFound(object)) => {
                tracing::debug!(object = %object, "gone before its reconcile");
                gone.queue_depth(waiting.remove(object.namespace.clone(), Some(object.name.clone())));
            }
            Err(error) => tracing::warn!(error = %crate::error::report(&error), "controller error"),
        }
        futures::future::ready(())
    });
    // The error policy runs while this future is polled, and finds the failure counts here.
    failures.scope(running).await;

    if let Some(task) = signal_task {
        task.abort();
    }
    tracing::info!("controller stopped");
}

/// The objects that changed and wait for their reconcile to start, by namespace and name.
#[derive(Default)]
struct Waiting(dashmap::DashSet<(Option<String>, Option<String>)>);

impl Waiting {
    /// Adds one; returns how many wait now.
    fn add(&self, namespace: Option<String>, name: Option<String>) -> usize {
        self.0.insert((namespace, name));
        self.0.len()
    }

    /// Takes one out; returns how many wait now.
    fn remove(&self, namespace: Option<String>, name: Option<String>) -> usize {
        self.0.remove(&(namespace, name));
        self.0.len()
    }
}

/// Publishes a `Warning` Event for a failed reconcile, in the background: the error policy
/// cannot wait, and an Event must never hold up a retry.
fn publish_failure<R>(recorder: &EventRecorder, object: &Arc<R>, error: &Error)
where
    R: Resource + Send + Sync + 'static,
    R::DynamicType: Default,
{
    let reason = match error {
        Error::ApplyFailed { .. } => "ApplyFailed",
        Error::CleanupFailed { .. } => "CleanupFailed",
        Error::Panicked { .. } => "ReconcilePanicked",
        _ => "ReconcileFailed",
    };
    let note = error.report();
    let recorder = recorder.clone();
    let object = Arc::clone(object);
    tokio::spawn(async move {
        // The failure itself is logged by the error policy; only a failure to publish is new.
        if let Err(error) = recorder.try_emit(&*object, EventData::warning(reason, note)).await {
            tracing::warn!(object = %describe(&*object), error = %error.report(), "could not publish event");
        }
    });
}

/// The message of a panic payload: a `&str` or `String` as `panic!` makes them.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a payload that is not a string".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let from_str = std::panic::catch_unwind(|| panic!("static message")).unwrap_err();
        assert_eq!(panic_message(from_str.as_ref()), "static message");
        let from_string = std::panic::catch_unwind(|| panic!("formatted {}", 42)).unwrap_err();
        assert_eq!(panic_message(from_string.as_ref()), "formatted 42");
    }
}
