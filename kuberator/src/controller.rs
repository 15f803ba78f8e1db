//! Builds and drives the kube [`Controller`] behind [`Reconcile`](crate::Reconcile).

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use futures::Stream;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::future::ready;
use futures::stream::BoxStream;
use kube::Api;
use kube::Resource;
use kube::runtime::Controller;
use kube::runtime::controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use crate::backoff::Failures;
use crate::decode::DecodeFailures;
use crate::decode::decoded_changes;
use crate::error::Error;
use crate::error::Result;
use crate::events::EmitEvent;
use crate::events::EventData;
use crate::events::EventRecorder;
use crate::object::describe;
use crate::own_writes::OwnWrites;
use crate::queue::Feeder;
use crate::queue::Handed;
use crate::queue::Priority;
use crate::queue::Requeue;
use crate::queue::Trigger;
use crate::shared::Caches;
use crate::shared::Subscription;
use crate::shutdown::AbortOnDrop;
use crate::telemetry::ControllerMetrics;

/// Everything [`drive`] needs.
pub(crate) struct Setup<R: Resource, C, G, Rec, Pol> {
    pub(crate) api: Api<R>,
    pub(crate) watcher: watcher::Config,
    /// Only objects in these namespaces are reconciled; empty: every namespace `api` sees.
    pub(crate) namespaces: Vec<String>,
    /// Parents to reconcile because one of their children changed.
    pub(crate) parents: Option<BoxStream<'static, reflector::ObjectRef<R>>>,
    /// The referenced kinds, whose index follows the objects' watch.
    pub(crate) references: Option<crate::references::References>,
    pub(crate) context: Arc<C>,
    pub(crate) limit: Option<usize>,
    /// The longest one reconcile may run before it is cancelled; `None`: no limit.
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) shutdown: Option<G>,
    /// Publishes the failure Events; its controller name labels the metrics.
    pub(crate) recorder: EventRecorder,
    pub(crate) reconcile: Rec,
    pub(crate) error_policy: Pol,
    /// Whether cached objects keep `managedFields` and the last-applied annotation.
    pub(crate) keep_managed_fields: bool,
    /// Where the watch of `R` and its store come from.
    pub(crate) caches: Caches,
}

/// Runs a controller until its shutdown future completes: the [watch stream](changes) feeds
/// kube's `Controller`, each reconcile runs [isolated](isolate), and each failure is
/// [reported](report_failure) before the error policy decides on the retry.
pub(crate) async fn drive<R, C, G, Rec, RecFut, Pol>(setup: Setup<R, C, G, Rec, Pol>)
where
    R: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R::DynamicType: Default + Eq + Hash + Clone + Debug + Unpin,
    C: Send + Sync + 'static,
    G: Future<Output = ()> + Send + 'static,
    Rec: FnMut(Arc<R>, Arc<C>) -> RecFut,
    RecFut: Future<Output = Result<Action>> + Send + 'static,
    Pol: Fn(Arc<R>, &Error, Arc<C>) -> Action,
{
    let Setup {
        api,
        watcher,
        namespaces,
        parents,
        references,
        context,
        limit,
        timeout,
        shutdown,
        recorder,
        reconcile,
        error_policy,
        keep_managed_fields,
        caches,
    } = setup;
    let (telemetry, _registered) = ControllerMetrics::new(recorder.controller());
    let handed = Arc::new(Handed::default());
    let failures = Arc::new(Failures::new(recorder.controller()));
    let own_writes = Arc::new(OwnWrites::new(recorder.controller(), keep_managed_fields));

    let subscription = caches.subscribe(&api, watcher, keep_managed_fields, crate::shared::Sharded::Primary);
    let reader = subscription.store.clone();
    // kube's controller waits for its store to be ready, a wait that wakes only its last
    // waiter (see `Synced`): it starts once the shared store has synced, so that it never waits.
    let mut shutdown = shutdown.map(Box::pin);
    let stopped = async {
        match &mut shutdown {
            Some(shutdown) => shutdown.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = subscription.synced.wait() => {}
        () = stopped => {
            tracing::info!("controller stopped before its cache synced");
            return;
        }
    }
    let remembered = Remembered {
        store: reader.clone(),
        own_writes: Arc::clone(&own_writes),
        failures: Arc::clone(&failures),
        seen: Seen::new(recorder.controller()),
        references,
    };
    let changes = changes(subscription, namespaces, &recorder, &telemetry, remembered);
    let triggers = match parents {
        Some(parents) => futures::stream::select(
            changes,
            parents.map(|parent| Trigger::Reconcile(parent, Priority::Change)),
        )
        .boxed(),
        None => changes.boxed(),
    };
    let concurrency = match limit {
        None | Some(0) => 0,
        Some(limit) => u16::try_from(limit).unwrap_or(u16::MAX),
    };
    let (requeue, requeues) = tokio::sync::mpsc::unbounded_channel();
    let feeder = Feeder::new(
        triggers,
        requeues,
        crate::queue::DEFAULT_AGING,
        usize::from(concurrency),
        reader.clone(),
        Arc::clone(&handed),
        &telemetry,
    );
    // Everything reaches kube through the feeder, in its order; kube's own trigger stream
    // stays empty (and open: its end would stop the controller).
    let controller =
        Controller::for_stream(futures::stream::pending::<Result<R, watcher::Error>>(), reader.clone())
            .with_config(controller::Config::default().concurrency(concurrency))
            .reconcile_on(feeder);
    let (controller, _signal) = stop_on(controller, shutdown);

    let reconcile = isolate(
        reconcile,
        timeout,
        Arc::clone(&failures),
        telemetry.clone(),
        (Arc::clone(&handed), requeue.clone()),
        own_writes,
        reader.clone(),
    );
    let on_error = report_failure(
        recorder,
        telemetry.clone(),
        error_policy,
        reader.clone(),
        (Arc::clone(&failures), requeue),
    );
    let running = controller.run(reconcile, on_error, context).for_each(move |result| {
        log_outcome(result, &handed);
        futures::future::ready(())
    });
    // The error policy runs while this future is polled, and finds the failure counts here.
    failures.scope(running).await;
    tracing::info!("controller stopped");
}

/// The watch stream as [`Trigger`]s: the shared watch of `R` (see [`crate::shared`]), every
/// object decoded on its own (see [`crate::decode`]) and trimmed (see [`crate::own_writes`]),
/// only the watched namespaces, only generation and finalizer changes (so status writes do not
/// trigger reconciles; requeues bypass this) that are not the echo of our own finalizer write.
/// The objects of the controller's first list are resyncs; every later change (a relist's
/// too: it passed the filter, so it changed while the watch was down) is a change.
fn changes<R>(
    subscription: Subscription<R>,
    namespaces: Vec<String>,
    recorder: &EventRecorder,
    telemetry: &ControllerMetrics,
    remembered: Remembered<R>,
) -> impl Stream<Item = Trigger<reflector::ObjectRef<R>>> + Send + 'static
where
    R: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R::DynamicType: Default + Eq + Hash + Clone,
{
    let undecodable = Arc::new(DecodeFailures::new(recorder.controller()));
    let mut listed_once = false;
    decoded_changes(subscription.changes, namespaces, recorder.clone(), undecodable, telemetry.clone())
        .filter_map(move |event| {
            remembered.follow(&event);
            let trigger = match event {
                watcher::Event::Apply(object) => remembered.changed(&object, Priority::Change),
                watcher::Event::InitApply(object) => {
                    let priority = if listed_once { Priority::Change } else { Priority::Resync };
                    remembered.changed(&object, priority)
                }
                watcher::Event::Delete(object) => {
                    Some(Trigger::Gone(reflector::ObjectRef::from_obj(&object)))
                }
                watcher::Event::InitDone => {
                    listed_once = true;
                    None
                }
                watcher::Event::Init => None,
            };
            ready(trigger)
        })
}

/// What the controller keeps per object, and the store that says which objects exist: each
/// entry leaves on its object's Delete event, and, for objects deleted while the watch was
/// down (a relist shows them gone, without a Delete), when the relist is done.
struct Remembered<R: Resource + 'static>
where
    R::DynamicType: Eq + Hash + Clone,
{
    store: reflector::Store<R>,
    own_writes: Arc<OwnWrites>,
    failures: Arc<Failures>,
    /// What the change filter last let through, per object.
    seen: Seen,
    references: Option<crate::references::References>,
}

impl<R: Resource + Clone + 'static> Remembered<R>
where
    R::DynamicType: Eq + Hash + Clone + Default,
{
    fn follow(&self, event: &watcher::Event<R>) {
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                if let Some(references) = &self.references {
                    references.parent_changed(object);
                }
            }
            watcher::Event::Delete(object) => {
                self.seen.forget(object.meta());
                self.own_writes.forget(object);
                self.failures.forget(&describe(object));
                if let Some(references) = &self.references {
                    references.parent_gone(object);
                }
            }
            // The store holds the relisted objects now.
            watcher::Event::InitDone => {
                let objects = self.store.state();
                let uids = objects.iter().filter_map(|object| object.meta().uid.clone()).collect();
                self.seen.retain(&uids);
                self.own_writes.retain(&uids);
                self.failures.retain(&objects.iter().map(|object| describe(&**object)).collect());
                if let Some(references) = &self.references {
                    let live = objects.iter().map(|object| crate::references::key_of(&**object)).collect();
                    references.retain_parents(&live);
                }
            }
            _ => {}
        }
    }

    /// A reconcile of `object` for `priority`, unless neither its generation nor its
    /// finalizers changed since the last one let through, or it is the echo of our own
    /// finalizer write.
    fn changed(&self, object: &R, priority: Priority) -> Option<Trigger<reflector::ObjectRef<R>>> {
        self.own_writes.status_seen(object);
        // Checked second, so that `seen` remembers the finalizers as they are now.
        (self.seen.changed(object.meta()) && !self.own_writes.is_echo(object))
            .then(|| Trigger::Reconcile(reflector::ObjectRef::from_obj(object), priority))
    }
}

/// Stops `controller` gracefully when `shutdown` completes. kube wants a `Sync` shutdown
/// future; the user's needs only be `Send`, so it runs in a task of its own (aborted when the
/// returned guard drops) and signals through a channel.
fn stop_on<R, G>(controller: Controller<R>, shutdown: Option<G>) -> (Controller<R>, Option<AbortOnDrop<()>>)
where
    R: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R::DynamicType: Eq + Hash + Clone,
    G: Future<Output = ()> + Send + 'static,
{
    let Some(shutdown) = shutdown else {
        return (controller, None);
    };
    let (fired, on_fire) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        shutdown.await;
        let _ = fired.send(());
    });
    let controller = controller.graceful_shutdown_on(async move {
        let _ = on_fire.await;
    });
    (controller, Some(AbortOnDrop(task)))
}

/// One reconcile, isolated: a panic in a handler must not take the controller, and every
/// other object, down with it. It becomes an error of that object, reported and retried like
/// any other. Also counts the reconcile in the metrics and resets the object's backoff on
/// success.
///
/// What [`OwnWrites`] keeps for the object (a cleanup that ran, an echo expected) stays while
/// the reconcile runs, even if the object's Delete event comes meanwhile, and goes when it
/// ends if the object went (see [`OwnWrites::started`]).
fn isolate<R, C, Rec, RecFut>(
    mut reconcile: Rec,
    timeout: Option<std::time::Duration>,
    failures: Arc<Failures>,
    telemetry: ControllerMetrics,
    (handed, requeue): (Arc<Handed>, tokio::sync::mpsc::UnboundedSender<Requeue<R>>),
    own_writes: Arc<OwnWrites>,
    store: reflector::Store<R>,
) -> impl FnMut(Arc<R>, Arc<C>) -> BoxFuture<'static, Result<Action>>
where
    R: Resource + Clone + Send + Sync + 'static,
    R::DynamicType: Default + Eq + Hash + Clone,
    Rec: FnMut(Arc<R>, Arc<C>) -> RecFut,
    RecFut: Future<Output = Result<Action>> + Send + 'static,
{
    move |object: Arc<R>, context: Arc<C>| {
        if let Some((priority, since)) =
            handed.started(object.meta().namespace.clone(), object.meta().name.clone().unwrap_or_default())
        {
            telemetry.waited(priority.label(), since.elapsed());
        }
        let label = describe(&*object);
        let reference = reflector::ObjectRef::from_obj(&*object);
        // Started here, in the same step as kube took the object from the store: no Delete
        // can come in between.
        let running = object.meta().uid.clone().map(|uid| {
            let (store, reference) = (store.clone(), reference.clone());
            own_writes.started(&uid.clone(), move || {
                store.get(&reference).is_none_or(|now| now.meta().uid.as_ref() != Some(&uid))
            })
        });
        let reconciling =
            Arc::clone(&own_writes).scope(AssertUnwindSafe(reconcile(object, context)).catch_unwind());
        let (failures, telemetry, requeue) = (Arc::clone(&failures), telemetry.clone(), requeue.clone());
        async move {
            telemetry.started();
            let _running = InFlight::enter(&label);
            let started = std::time::Instant::now();
            let finished = match timeout {
                Some(after) => tokio::time::timeout(after, reconciling)
                    .await
                    .unwrap_or_else(|_| Ok(Err(Error::ReconcileTimedOut { object: label.clone(), after }))),
                None => reconciling.await,
            };
            let result = finished.unwrap_or_else(|payload| {
                Err(Error::Panicked { object: label.clone(), message: panic_message(payload.as_ref()) })
            });
            telemetry.finished(started.elapsed(), result.is_ok());
            if result.is_ok() {
                failures.succeeded(&label);
            }
            drop(running);
            // A periodic requeue waits in the feeder, as a resync; a failure's retry follows
            // from the error policy (`report_failure`).
            let (result, after) = match result {
                Ok(action) => {
                    let (action, after) = crate::queue::take_requeue(action);
                    (Ok(action), after.flatten().map(|after| (after, Priority::Resync)))
                }
                Err(error) => (Err(error), None),
            };
            // The feeder is gone only when the controller stopped.
            let _ = requeue.send((reference, after));
            result
        }
        .boxed()
    }
}

/// Failure reporting: counts the failure, publishes it as a `Warning` Event, then lets
/// `error_policy` decide on the retry, which waits in the feeder as a change (kube is told to
/// await a change: kube would hold retries due together in a set and take them in that set's
/// order, which differs between processes).
///
/// The error policy counts the failure for the object's backoff. When the object was deleted
/// while its reconcile ran, its Delete event may have come and gone before that count: so
/// after the policy, an object the store no longer holds has its count forgotten. (Counted
/// first, looked up second: a Delete that comes in between forgets it itself.)
fn report_failure<R, C, Pol>(
    recorder: EventRecorder,
    telemetry: ControllerMetrics,
    error_policy: Pol,
    store: reflector::Store<R>,
    (failures, requeue): (Arc<Failures>, tokio::sync::mpsc::UnboundedSender<Requeue<R>>),
) -> impl Fn(Arc<R>, &Error, Arc<C>) -> Action
where
    R: Resource + Clone + Send + Sync + 'static,
    R::DynamicType: Default + Eq + Hash + Clone,
    Pol: Fn(Arc<R>, &Error, Arc<C>) -> Action,
{
    move |object: Arc<R>, error: &Error, context: Arc<C>| {
        telemetry.failed(error);
        publish_failure(&recorder, &object, error);
        let label = describe(&*object);
        let reference = reflector::ObjectRef::from_obj(&*object);
        let action = error_policy(object, error, context);
        if store.get(&reference).is_none() {
            failures.forget(&label);
        }
        match crate::queue::take_retry(&action) {
            Some(after) => {
                // The feeder is gone only when the controller stopped.
                let _ = requeue.send((reference, after.map(|after| (after, Priority::Change))));
                Action::await_change()
            }
            None => action,
        }
    }
}

/// Logs what became of one reconcile; failures were logged by the error policy already.
fn log_outcome<R, QErr>(
    result: std::result::Result<(reflector::ObjectRef<R>, Action), controller::Error<Error, QErr>>,
    handed: &Handed,
) where
    R: Resource,
    R::DynamicType: Eq + Hash + Clone + Debug,
    QErr: std::error::Error + 'static,
    controller::Error<Error, QErr>: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => {
            tracing::debug!(object = %object, "reconciled");
            handed.finished(object.namespace, object.name);
        }
        Err(controller::Error::ReconcilerFailed(_, object)) => {
            tracing::debug!(object = %object, "reconcile failed");
            handed.finished(object.namespace, object.name);
        }
        // Deleted before its turn came: it waits no more.
        Err(controller::Error::ObjectNotFound(object)) => {
            tracing::debug!(object = %object, "gone before its reconcile");
            handed.started(object.namespace.clone(), object.name.clone());
            handed.finished(object.namespace, object.name);
        }
        Err(error) => tracing::warn!(error = %crate::error::report(&error), "controller error"),
    }
}

/// The objects whose reconcile runs now in this process, as `Kind namespace/name`: what a
/// shutdown that runs out of time names.
static IN_FLIGHT: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// One reconcile in [`IN_FLIGHT`], for as long as it lives (cancelled or not).
struct InFlight(String);

impl InFlight {
    fn enter(label: &str) -> Self {
        *IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(label.to_owned())
            .or_default() += 1;
        Self(label.to_owned())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut running = IN_FLIGHT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.0);
            }
        }
    }
}

/// The objects whose reconcile runs now, in this process: what a drain that ran out of time
/// names (`operator::run`).
#[cfg(feature = "app")]
pub(crate) fn in_flight() -> Vec<String> {
    IN_FLIGHT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
}

/// Per object (by namespace and name), its uid and a hash of its generation and finalizers
/// as the change filter last let them through: a later version with the same hash changed
/// neither (a status write, a label) and is no reason to reconcile. An entry leaves on its
/// object's Delete event, or when a relist no longer shows it.
struct Seen {
    size: crate::telemetry::Remembered,
    last: std::sync::Mutex<LastSeen>,
}

/// `namespace, name` → `uid, hash`.
type LastSeen = std::collections::HashMap<(Option<String>, String), (Option<String>, u64)>;

impl Seen {
    fn new(controller: &str) -> Self {
        Self {
            size: crate::telemetry::Remembered::new(controller, "seen"),
            last: std::sync::Mutex::default(),
        }
    }

    /// Whether this version is new to the filter; it remembers it. An object without a
    /// generation always is.
    fn changed(&self, meta: &kube::api::ObjectMeta) -> bool {
        let Some(generation) = meta.generation else { return true };
        let mut hasher = std::hash::DefaultHasher::new();
        (generation, &meta.finalizers).hash(&mut hasher);
        let key = (meta.namespace.clone(), meta.name.clone().unwrap_or_default());
        let now = (meta.uid.clone(), std::hash::Hasher::finish(&hasher));
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = last.insert(key, now.clone()).as_ref() != Some(&now);
        self.size.set(last.len());
        changed
    }

    fn forget(&self, meta: &kube::api::ObjectMeta) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.remove(&(meta.namespace.clone(), meta.name.clone().unwrap_or_default()));
        crate::queue::give_back_room(&mut last);
        self.size.set(last.len());
    }

    fn retain(&self, uids: &std::collections::HashSet<String>) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.retain(|_, (uid, _)| uid.as_ref().is_some_and(|uid| uids.contains(uid)));
        crate::queue::give_back_room(&mut last);
        self.size.set(last.len());
    }
}

/// Publishes a `Warning` Event for a failed reconcile, in the background: the error policy
/// cannot wait, and an Event must never hold up a retry.
fn publish_failure<R>(recorder: &EventRecorder, object: &Arc<R>, error: &Error)
where
    R: Resource + Send + Sync + 'static,
    R::DynamicType: Default,
{
    let reason = error.event_reason();
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
