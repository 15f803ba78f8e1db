//! One watch and one store per kind in a process, shared by every controller that needs it.
//!
//! # Expected flow
//!
//! A controller [subscribes](Caches::subscribe) to a kind with the `Api` (which fixes the
//! namespace scope) and the watch configuration (label and field selectors) it needs. The
//! first subscription to a (kind, namespace scope, configuration, trimming) starts its watch
//! and its store; every later one shares both: it gets the store's reader and a stream of
//! [`Change`]s. The primary kind of one controller, the children of another and the
//! referenced objects of a third are one watch when they ask for the same thing.
//!
//! The process ([`Operators`](crate::Operators), or a derived operator's `run()`) makes
//! one [`Caches`] for all its controllers and keeps it for its whole life, so its watches
//! keep running while it does not hold the Lease (warm standby): a new term subscribes to
//! stores that are already synced. A controller started on its own gets caches of its own,
//! dropped (and their watches stopped) when it stops.
//!
//! # Guarantees
//!
//! - One watch request at a time per key, whatever the number of subscribers.
//! - A subscriber never sees a store that has not synced: until the store's first list (or a
//!   relist in progress) is done, a new subscriber waits; it then gets the whole store as a
//!   list ([`Change::Listing`], one [`Change::Applied`] per object, [`Change::Listed`]),
//!   followed by every change after it, in order.
//! - Every subscriber sees every change after its list, in the order the watch delivered
//!   them, and each change is applied to the store before any subscriber sees it.
//! - A relist's [`Change::Listed`] names what the store held before that the relist no
//!   longer shows (objects deleted while the watch was down), computed once for all.
//! - Objects that do not decode are kept out of the store and handed to subscribers as
//!   [`Watched::Undecodable`], so that the controller of their kind reports them.
//!
//! # Caveats
//!
//! - A kind watched with different selectors (a controller's children by label, another's
//!   referenced objects whole) is one watch per selector: the API server filters each.
//! - Subscribers are in-process consumers that only update indexes and queues; their
//!   channels are unbounded, so a subscriber that stops reading without dropping its
//!   stream would hold the changes it has not read.

use std::any::Any;
use std::any::TypeId;
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use futures::StreamExt as _;
use futures::channel::mpsc;
use kube::Api;
use kube::Resource;
use kube::ResourceExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use crate::decode::Watched;
use crate::shutdown::AbortOnDrop;

tokio::task_local! {
    /// The caches of the process the current controller runs in.
    static PROCESS: Caches;
}

/// The shared watches and stores of one process (one client). Cheap to clone; clones share
/// everything, and the watches stop when the last clone goes.
#[derive(Clone, Default)]
pub(crate) struct Caches {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The controller names of the process: its children carry one of them in their
    /// managed-by label, and one watch per kind selects them all.
    managers: Vec<String>,
    entries: Mutex<HashMap<Key, Arc<dyn Any + Send + Sync>>>,
    /// The watch tasks, stopped when the caches go.
    watches: Mutex<Vec<AbortOnDrop<()>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: TypeId,
    namespace: Option<String>,
    /// The watch configuration, as `Debug` prints it: selectors, page size, timeouts.
    config: String,
    keep_managed_fields: bool,
}

/// What a subscriber sees of a shared watch.
#[derive(Debug, Clone)]
pub(crate) enum Change<K> {
    /// A list (the first, or a relist after the watch was down) begins.
    Listing,
    /// An object as it is now; `listed`: a list showed it; `new`: the store did not hold
    /// this version of it before.
    Applied { object: Watched<K>, listed: bool, new: bool },
    /// An object was deleted.
    Deleted(Watched<K>),
    /// The list is done: the store holds what it showed. `gone`: what the store held
    /// before that the list no longer shows.
    Listed { gone: Vec<Arc<K>> },
}

/// A subscriber's share of a watch: the store, and the changes from its list on.
pub(crate) struct Subscription<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub(crate) store: Store<K>,
    pub(crate) changes: mpsc::UnboundedReceiver<Change<K>>,
}

impl Caches {
    /// Caches for a process whose controllers are named `managers`.
    pub(crate) fn new(managers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut managers: Vec<String> = managers.into_iter().map(Into::into).collect();
        managers.sort();
        managers.dedup();
        Self { inner: Arc::new(Inner { managers, ..Inner::default() }) }
    }

    /// The caches of the process this runs in, or new ones of its own outside a process.
    pub(crate) fn current() -> Self {
        PROCESS.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `future` with these as the process's caches.
    pub(crate) fn scope<F: Future>(&self, future: F) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        PROCESS.scope(self.clone(), future)
    }

    /// The label selector of the children of the controller named `manager`: every
    /// controller's of the process when it is one of them, so that they share one watch.
    pub(crate) fn children_selector(&self, label: &str, manager: &str) -> String {
        let managers = &self.inner.managers;
        if managers.len() > 1 && managers.iter().any(|known| known == manager) {
            format!("{label} in ({})", managers.join(","))
        } else {
            format!("{label}={manager}")
        }
    }

    /// The number of watches running: one per key.
    #[cfg(test)]
    fn watches(&self) -> usize {
        self.inner.watches.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Subscribes to `K` as `api` (its namespace) and `config` watch it, objects trimmed
    /// unless `keep_managed_fields` (see [`crate::own_writes::trim`]): the shared watch,
    /// started by the first subscriber.
    pub(crate) fn subscribe<K>(
        &self,
        api: &Api<K>,
        config: watcher::Config,
        keep_managed_fields: bool,
    ) -> Subscription<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let key = Key {
            kind: TypeId::of::<K>(),
            namespace: api.namespace().map(str::to_owned),
            config: format!("{config:?}"),
            keep_managed_fields,
        };
        let entry = {
            let mut entries = self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.entry(key).or_insert_with(|| {
                let entry = Arc::new(Entry::<K>::new(keep_managed_fields));
                let watch = tokio::spawn(Arc::clone(&entry).follow(watched(api), config));
                self.inner.watches.lock().unwrap_or_else(PoisonError::into_inner).push(AbortOnDrop(watch));
                entry as Arc<dyn Any + Send + Sync>
            });
            Arc::clone(entry)
        };
        let entry = entry.downcast::<Entry<K>>().unwrap_or_else(|_| unreachable!("keyed by the type"));
        entry.subscribe()
    }
}

/// `api`, decoding each object on its own.
fn watched<K>(api: &Api<K>) -> Api<Watched<K>>
where
    K: Resource + Clone,
    K::DynamicType: Default,
{
    let client = api.clone().into_client();
    match api.namespace() {
        Some(namespace) => Api::namespaced_with(client, namespace, &K::DynamicType::default()),
        None => Api::all_with(client, &K::DynamicType::default()),
    }
}

/// One shared watch: its store and its subscribers.
struct Entry<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    reader: Store<K>,
    keep_managed_fields: bool,
    fanout: Mutex<Fanout<K>>,
    /// Its share of `kuberator_cached_objects`.
    cached: prometheus_client::metrics::gauge::Gauge,
}

struct Fanout<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    writer: Writer<K>,
    /// Subscribers that had their list.
    live: Vec<mpsc::UnboundedSender<Change<K>>>,
    /// Subscribers that get theirs when the list in progress is done.
    waiting: Vec<mpsc::UnboundedSender<Change<K>>>,
    /// A list has completed.
    synced: bool,
    /// The list in progress.
    list: Option<List<K>>,
    /// The objects that do not decode, by uid: not in the store, but part of a list.
    undecodable: HashMap<String, Watched<K>>,
}

impl<K: Resource + Clone + 'static> Drop for Entry<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// A cache that goes takes its objects out of `kuberator_cached_objects`.
    fn drop(&mut self) {
        self.cached.dec_by(i64::try_from(self.reader.len()).unwrap_or(i64::MAX));
    }
}

/// A list in progress: what the store held when it began and the list has not shown yet,
/// and the undecodable objects it showed.
struct List<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    before: HashMap<ObjectRef<K>, Arc<K>>,
    undecodable: HashMap<String, Watched<K>>,
}

impl<K> Entry<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    fn new(keep_managed_fields: bool) -> Self {
        let writer = Writer::default();
        Self {
            reader: writer.as_reader(),
            keep_managed_fields,
            cached: crate::telemetry::cached_objects(&K::kind(&K::DynamicType::default())),
            fanout: Mutex::new(Fanout {
                writer,
                live: Vec::new(),
                waiting: Vec::new(),
                synced: false,
                list: None,
                undecodable: HashMap::new(),
            }),
        }
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, Fanout<K>> {
        self.fanout.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&self) -> Subscription<K> {
        let (sender, changes) = mpsc::unbounded();
        let mut fanout = self.fanout();
        if fanout.synced && fanout.list.is_none() {
            self.replay(&fanout, &sender);
            fanout.live.push(sender);
        } else {
            fanout.waiting.push(sender);
        }
        Subscription { store: self.reader.clone(), changes }
    }

    /// The store as a list, to a subscriber that joins.
    fn replay(&self, fanout: &Fanout<K>, to: &mpsc::UnboundedSender<Change<K>>) {
        let _ = to.unbounded_send(Change::Listing);
        for object in self.reader.state() {
            let object = Watched::Decoded((*object).clone());
            let _ = to.unbounded_send(Change::Applied { object, listed: true, new: true });
        }
        for object in fanout.undecodable.values() {
            let _ = to.unbounded_send(Change::Applied { object: object.clone(), listed: true, new: true });
        }
        let _ = to.unbounded_send(Change::Listed { gone: Vec::new() });
    }

    /// Runs the watch, for as long as the caches live.
    async fn follow(self: Arc<Self>, api: Api<Watched<K>>, config: watcher::Config) {
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(event),
                Err(error) => {
                    let error = crate::error::report(&error);
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), %error, "watch failed; retrying");
                }
            }
        }
    }

    /// Applies `event` to the store, then hands it to the subscribers.
    fn apply(&self, event: watcher::Event<Watched<K>>) {
        let mut fanout = self.fanout();
        let fanout = &mut *fanout;
        let change = match event {
            watcher::Event::Init => {
                let before = self.reader.state().into_iter().map(|object| (ObjectRef::from_obj(&*object), object));
                fanout.list = Some(List { before: before.collect(), undecodable: HashMap::new() });
                fanout.writer.apply_watcher_event(&watcher::Event::Init);
                Change::Listing
            }
            watcher::Event::InitApply(object) => {
                let object = self.trimmed(object);
                let new = self.is_new(&object);
                let list = fanout.list.get_or_insert_with(|| List { before: HashMap::new(), undecodable: HashMap::new() });
                match &object {
                    Watched::Decoded(decoded) => {
                        list.before.remove(&ObjectRef::from_obj(decoded));
                        fanout.writer.apply_watcher_event(&watcher::Event::InitApply(decoded.clone()));
                    }
                    Watched::Undecodable(_) => {
                        list.undecodable.insert(object.uid().unwrap_or_default(), object.clone());
                    }
                }
                Change::Applied { object, listed: true, new }
            }
            watcher::Event::InitDone => {
                let before = self.reader.len();
                fanout.writer.apply_watcher_event(&watcher::Event::InitDone);
                self.count(self.reader.len(), before);
                let list = fanout.list.take();
                let (gone, undecodable) =
                    list.map(|list| (list.before.into_values().collect(), list.undecodable)).unwrap_or_default();
                fanout.undecodable = undecodable;
                fanout.synced = true;
                let change = Change::Listed { gone };
                fanout.live.retain(|subscriber| subscriber.unbounded_send(change.clone()).is_ok());
                for joining in std::mem::take(&mut fanout.waiting) {
                    self.replay(fanout, &joining);
                    fanout.live.push(joining);
                }
                return;
            }
            watcher::Event::Apply(object) => {
                let object = self.trimmed(object);
                let new = self.is_new(&object);
                match &object {
                    Watched::Decoded(decoded) => {
                        fanout.undecodable.remove(&decoded.uid().unwrap_or_default());
                        let before = self.reader.len();
                        fanout.writer.apply_watcher_event(&watcher::Event::Apply(decoded.clone()));
                        self.count(self.reader.len(), before);
                    }
                    Watched::Undecodable(_) => {
                        fanout.undecodable.insert(object.uid().unwrap_or_default(), object.clone());
                    }
                }
                Change::Applied { object, listed: false, new }
            }
            watcher::Event::Delete(object) => {
                fanout.undecodable.remove(&object.uid().unwrap_or_default());
                if let Watched::Decoded(decoded) = &object {
                    let before = self.reader.len();
                    fanout.writer.apply_watcher_event(&watcher::Event::Delete(decoded.clone()));
                    self.count(self.reader.len(), before);
                }
                Change::Deleted(object)
            }
        };
        fanout.live.retain(|subscriber| subscriber.unbounded_send(change.clone()).is_ok());
    }

    /// The store went from `before` objects to `now`.
    fn count(&self, now: usize, before: usize) {
        let change = i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
        if change != 0 {
            self.cached.inc_by(change);
        }
    }

    fn trimmed(&self, mut object: Watched<K>) -> Watched<K> {
        if let (false, Watched::Decoded(decoded)) = (self.keep_managed_fields, &mut object) {
            crate::own_writes::trim(decoded);
        }
        object
    }

    /// Whether the store lacks this version of `object`.
    fn is_new(&self, object: &Watched<K>) -> bool {
        let Watched::Decoded(decoded) = object else { return true };
        let known = self.reader.get(&ObjectRef::from_obj(decoded));
        known.is_none_or(|known| known.resource_version() != decoded.resource_version())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_several_controllers_share_one_selector() {
        let caches = Caches::new(["b-operator", "a-operator"]);
        assert_eq!(caches.children_selector("m", "a-operator"), "m in (a-operator,b-operator)");
        assert_eq!(caches.children_selector("m", "c-operator"), "m=c-operator");
        assert_eq!(Caches::new(["a-operator"]).children_selector("m", "a-operator"), "m=a-operator");
        assert_eq!(caches.watches(), 0);
    }
}
