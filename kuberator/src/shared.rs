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
use kube::Client;
use kube::Resource;
use kube::ResourceExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use crate::decode::Watched;
use crate::shard::ShardFilter;
use crate::shard::ShardKey;
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
    /// The range this process reconciles when it is one replica of a shard group.
    shard: Option<ShardFilter>,
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
    shard: Option<ShardFilter>,
}

/// Whether a subscription is filtered by the process's shard range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharded {
    /// A controller's own kind: filtered.
    Primary,
    /// Owned children: filtered when the range is by namespace (they share their parent's).
    Children,
    /// Everything of the kind (referenced objects).
    Whole,
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

/// What travels to a subscriber: a change, or the whole store as a list for one that joins,
/// as the store's own objects. Each is copied only when the subscriber reads it, so a joining
/// subscriber never holds a second copy of the store at once.
enum Sent<K> {
    Change(Change<K>),
    Replay(Vec<Arc<K>>),
}

/// A subscriber's share of a watch: the store, whether it has synced, and the changes from
/// its list on.
pub(crate) struct Subscription<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub(crate) store: Store<K>,
    pub(crate) synced: Synced,
    pub(crate) changes: futures::stream::BoxStream<'static, Change<K>>,
}

/// Whether a shared store has synced (its first list is done), for any number of waiters.
///
/// kube's `Store::wait_until_ready` wakes only the last task that waited on it (one oneshot
/// receiver behind a lock): with one store shared by several controllers, a second waiter
/// would leave the first asleep for good. Everything here waits on this instead, and reads
/// the store only once it says so, when kube's own wait returns at once.
#[derive(Debug, Clone)]
pub(crate) struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    /// Whether the store has synced.
    pub(crate) fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the store has synced (never, if its caches go first).
    pub(crate) async fn wait(&self) {
        let mut synced = self.0.clone();
        if synced.wait_for(|synced| *synced).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg_attr(not(feature = "app"), allow(dead_code, reason = "the application shell builds them"))]
impl Caches {
    /// Caches for a process whose controllers are named `managers`.
    pub(crate) fn new(managers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::with(managers, None)
    }

    /// Caches for one replica of a shard group: its controllers' own kinds (and, by namespace,
    /// their children) are watched only within `shard`.
    pub(crate) fn sharded(managers: impl IntoIterator<Item = impl Into<String>>, shard: ShardFilter) -> Self {
        Self::with(managers, Some(shard))
    }

    fn with(managers: impl IntoIterator<Item = impl Into<String>>, shard: Option<ShardFilter>) -> Self {
        let mut managers: Vec<String> = managers.into_iter().map(Into::into).collect();
        managers.sort();
        managers.dedup();
        Self { inner: Arc::new(Inner { managers, shard, ..Inner::default() }) }
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
    /// unless `keep_managed_fields` (see [`crate::own_writes::trim`]), within this process's
    /// shard range as `sharded` says: the shared watch, started by the first subscriber.
    pub(crate) fn subscribe<K>(
        &self,
        api: &Api<K>,
        config: watcher::Config,
        keep_managed_fields: bool,
        sharded: Sharded,
    ) -> Subscription<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let shard = match sharded {
            Sharded::Primary => self.inner.shard.clone(),
            Sharded::Children => {
                self.inner.shard.clone().filter(|shard| shard.range.key() == ShardKey::Namespace)
            }
            Sharded::Whole => None,
        };
        let key = Key {
            kind: TypeId::of::<K>(),
            namespace: api.namespace().map(str::to_owned),
            config: format!("{config:?}"),
            keep_managed_fields,
            shard: shard.clone(),
        };
        let entry = {
            let mut entries = self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.entry(key).or_insert_with(|| {
                let entry = Arc::new(Entry::<K>::new(keep_managed_fields, shard));
                let watch = tokio::spawn(Arc::clone(&entry).follow(
                    api.clone().into_client(),
                    api.namespace().map(str::to_owned),
                    config,
                ));
                self.inner.watches.lock().unwrap_or_else(PoisonError::into_inner).push(AbortOnDrop(watch));
                entry as Arc<dyn Any + Send + Sync>
            });
            Arc::clone(entry)
        };
        let entry = entry.downcast::<Entry<K>>().unwrap_or_else(|_| unreachable!("keyed by the type"));
        entry.subscribe()
    }
}

/// `K` in `namespace` (or all), decoding each object on its own.
fn watched<K>(client: Client, namespace: Option<&str>) -> Api<Watched<K>>
where
    K: Resource + Clone,
    K::DynamicType: Default,
{
    match namespace {
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
    synced: tokio::sync::watch::Sender<bool>,
    keep_managed_fields: bool,
    /// The range the watch is filtered by, here (and by the API server where it can).
    shard: Option<ShardFilter>,
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
    live: Vec<mpsc::UnboundedSender<Sent<K>>>,
    /// Subscribers that get theirs when the list in progress is done.
    waiting: Vec<mpsc::UnboundedSender<Sent<K>>>,
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
/// `objects` by namespace and name: the store keeps no order, and what a subscriber is sent
/// in one go goes in a fixed one (a simulated run, replayed from its seed, needs it).
fn by_name<K: Resource>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    objects
}

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
    fn new(keep_managed_fields: bool, shard: Option<ShardFilter>) -> Self {
        let writer = Writer::default();
        Self {
            reader: writer.as_reader(),
            synced: tokio::sync::watch::Sender::new(false),
            keep_managed_fields,
            shard,
            cached: crate::telemetry::cached_objects(&K::kind(&K::DynamicType::default())),
            fanout: Mutex::new(Fanout {
                writer,
                live: Vec::new(),
                waiting: Vec::new(),
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
        if *self.synced.borrow() && fanout.list.is_none() {
            self.replay(&fanout, &sender);
            fanout.live.push(sender);
        } else {
            fanout.waiting.push(sender);
        }
        let changes = changes
            .flat_map(|sent| match sent {
                Sent::Change(change) => futures::stream::iter(vec![change]).left_stream(),
                Sent::Replay(objects) => futures::stream::iter(objects)
                    .map(|object| Change::Applied {
                        object: Watched::Decoded((*object).clone()),
                        listed: true,
                        new: true,
                    })
                    .right_stream(),
            })
            .boxed();
        Subscription { store: self.reader.clone(), synced: Synced(self.synced.subscribe()), changes }
    }

    /// The store as a list, to a subscriber that joins.
    fn replay(&self, fanout: &Fanout<K>, to: &mpsc::UnboundedSender<Sent<K>>) {
        let _ = to.unbounded_send(Sent::Change(Change::Listing));
        let _ = to.unbounded_send(Sent::Replay(by_name(self.reader.state())));
        for object in fanout.undecodable.values() {
            let change = Change::Applied { object: object.clone(), listed: true, new: true };
            let _ = to.unbounded_send(Sent::Change(change));
        }
        let _ = to.unbounded_send(Sent::Change(Change::Listed { gone: Vec::new() }));
    }

    /// Runs the watch, for as long as the caches live.
    async fn follow(self: Arc<Self>, client: Client, namespace: Option<String>, config: watcher::Config) {
        let api = self.sharded_api(client, namespace.as_deref());
        let what =
            format!("{}/{}", K::kind(&K::DynamicType::default()), namespace.as_deref().unwrap_or_default());
        let mut events = watcher::watcher(api, config).backoff(crate::backoff::watch_backoff(&what)).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(event),
                Err(error) => {
                    let error = crate::error::report(&error);
                    tracing::warn!(
                        kind = %K::kind(&K::DynamicType::default()),
                        %error,
                        "watch failed; retrying",
                    );
                }
            }
        }
    }

    /// The watch's `Api`: with the shard selector when the API server filters by it.
    fn sharded_api(&self, client: Client, namespace: Option<&str>) -> Api<Watched<K>> {
        match self.shard.as_ref().filter(|shard| shard.server_side) {
            Some(shard) => watched(crate::shard::with_selector(client, &shard.range.selector()), namespace),
            None => watched(client, namespace),
        }
    }

    /// Whether `object` is this replica's (always, unsharded).
    fn admits(&self, object: &Watched<K>) -> bool {
        self.shard.as_ref().is_none_or(|shard| {
            let meta = object.meta();
            shard.admits(meta.uid.as_deref(), meta.namespace.as_deref())
        })
    }

    /// Applies `event` to the store, then hands it to the subscribers.
    fn apply(&self, event: watcher::Event<Watched<K>>) {
        if let watcher::Event::InitApply(object)
        | watcher::Event::Apply(object)
        | watcher::Event::Delete(object) = &event
            && !self.admits(object)
        {
            return;
        }
        let mut fanout = self.fanout();
        let fanout = &mut *fanout;
        let change = match event {
            watcher::Event::Init => {
                let before =
                    self.reader.state().into_iter().map(|object| (ObjectRef::from_obj(&*object), object));
                fanout.list = Some(List { before: before.collect(), undecodable: HashMap::new() });
                self.store(&mut fanout.writer, &watcher::Event::Init);
                Change::Listing
            }
            watcher::Event::InitApply(object) => {
                let object = self.trimmed(object);
                let new = self.is_new(&object);
                let list = fanout
                    .list
                    .get_or_insert_with(|| List { before: HashMap::new(), undecodable: HashMap::new() });
                let object = match object {
                    Watched::Decoded(decoded) => {
                        list.before.remove(&ObjectRef::from_obj(&decoded));
                        Watched::Decoded(
                            self.store_object(&mut fanout.writer, watcher::Event::InitApply(decoded)),
                        )
                    }
                    undecodable @ Watched::Undecodable(_) => {
                        list.undecodable.insert(undecodable.uid().unwrap_or_default(), undecodable.clone());
                        undecodable
                    }
                };
                Change::Applied { object, listed: true, new }
            }
            watcher::Event::InitDone => {
                self.store(&mut fanout.writer, &watcher::Event::InitDone);
                let list = fanout.list.take();
                let (gone, undecodable) = list
                    .map(|list| (by_name(list.before.into_values().collect()), list.undecodable))
                    .unwrap_or_default();
                fanout.undecodable = undecodable;
                self.synced.send_replace(true);
                tracing::debug!(
                    kind = %K::kind(&K::DynamicType::default()),
                    objects = self.reader.len(),
                    subscribers = fanout.live.len(),
                    joining = fanout.waiting.len(),
                    "shared cache listed"
                );
                send_all(&mut fanout.live, Change::Listed { gone });
                for joining in std::mem::take(&mut fanout.waiting) {
                    self.replay(fanout, &joining);
                    fanout.live.push(joining);
                }
                return;
            }
            watcher::Event::Apply(object) => {
                let object = self.trimmed(object);
                let new = self.is_new(&object);
                let object = match object {
                    Watched::Decoded(decoded) => {
                        fanout.undecodable.remove(&decoded.uid().unwrap_or_default());
                        Watched::Decoded(
                            self.store_object(&mut fanout.writer, watcher::Event::Apply(decoded)),
                        )
                    }
                    undecodable @ Watched::Undecodable(_) => {
                        fanout.undecodable.insert(undecodable.uid().unwrap_or_default(), undecodable.clone());
                        undecodable
                    }
                };
                Change::Applied { object, listed: false, new }
            }
            watcher::Event::Delete(object) => {
                fanout.undecodable.remove(&object.uid().unwrap_or_default());
                let object = match object {
                    Watched::Decoded(decoded) => Watched::Decoded(
                        self.store_object(&mut fanout.writer, watcher::Event::Delete(decoded)),
                    ),
                    undecodable @ Watched::Undecodable(_) => undecodable,
                };
                Change::Deleted(object)
            }
        };
        send_all(&mut fanout.live, change);
    }

    /// Applies `event` to the store through `writer` (the fan-out's, under its lock), and
    /// its change in size to `kuberator_cached_objects`.
    fn store(&self, writer: &mut Writer<K>, event: &watcher::Event<K>) {
        let before = self.reader.len();
        writer.apply_watcher_event(event);
        let change =
            i64::try_from(self.reader.len()).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
        if change != 0 {
            self.cached.inc_by(change);
        }
    }

    /// Applies an object's `event` to the store (which keeps a copy of its own), and gives the
    /// object back.
    fn store_object(&self, writer: &mut Writer<K>, event: watcher::Event<K>) -> K {
        self.store(writer, &event);
        match event {
            watcher::Event::Apply(object)
            | watcher::Event::InitApply(object)
            | watcher::Event::Delete(object) => object,
            watcher::Event::Init | watcher::Event::InitDone => unreachable!("only an object's event has one"),
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

/// Sends `change` to every live subscriber, and forgets the ones that went: a copy to each but
/// the last, which gets the change itself.
fn send_all<K: Clone>(live: &mut Vec<mpsc::UnboundedSender<Sent<K>>>, change: Change<K>) {
    let mut change = Some(change);
    let last = live.len().saturating_sub(1);
    let mut index = 0;
    live.retain(|subscriber| {
        let this = if index == last { change.take() } else { change.clone() };
        index += 1;
        this.is_some_and(|this| subscriber.unbounded_send(Sent::Change(this)).is_ok())
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn map(name: &str, version: &str) -> Watched<ConfigMap> {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(name.into());
        map.metadata.namespace = Some("team-a".into());
        map.metadata.uid = Some(format!("uid-{name}"));
        map.metadata.resource_version = Some(version.into());
        Watched::Decoded(map)
    }

    /// What `changes` holds now, as `Listing`, `+name@version` (listed), `~name@version`
    /// (changed), `-name` and `Listed[gone]`.
    fn drain(changes: &mut futures::stream::BoxStream<'static, Change<ConfigMap>>) -> Vec<String> {
        use futures::FutureExt as _;
        let mut seen = Vec::new();
        while let Some(Some(change)) = changes.next().now_or_never() {
            seen.push(match change {
                Change::Listing => "Listing".to_owned(),
                Change::Applied { object, listed, new } => format!(
                    "{}{}@{}{}",
                    if listed { "+" } else { "~" },
                    object.name_any(),
                    object.resource_version().unwrap_or_default(),
                    if new { "" } else { " (known)" }
                ),
                Change::Deleted(object) => format!("-{}", object.name_any()),
                Change::Listed { gone } => {
                    format!("Listed{:?}", gone.iter().map(|gone| gone.name_any()).collect::<Vec<_>>())
                }
            });
        }
        seen
    }

    #[tokio::test]
    async fn subscribers_get_the_whole_store_once_it_synced_then_every_change() {
        let entry = Entry::<ConfigMap>::new(false, None);
        let mut early = entry.subscribe();
        entry.apply(watcher::Event::Init);
        entry.apply(watcher::Event::InitApply(map("a", "1")));
        // Joining while the list runs: it waits for the list's end.
        let mut during = entry.subscribe();
        entry.apply(watcher::Event::InitApply(map("b", "2")));
        assert!(drain(&mut early.changes).is_empty(), "nothing before the store synced");
        assert!(!early.synced.is_synced());
        entry.apply(watcher::Event::InitDone);
        assert!(early.synced.is_synced() && during.synced.is_synced());
        let listed = |seen: Vec<String>| {
            let mut middle = seen[1..seen.len() - 1].to_vec();
            middle.sort();
            (seen[0].clone(), middle, seen[seen.len() - 1].clone())
        };
        let whole = ("Listing".to_owned(), vec!["+a@1".to_owned(), "+b@2".to_owned()], "Listed[]".to_owned());
        assert_eq!(listed(drain(&mut early.changes)), whole);
        assert_eq!(listed(drain(&mut during.changes)), whole);
        // Joining a synced store: the store at once.
        let mut late = entry.subscribe();
        assert_eq!(listed(drain(&mut late.changes)), whole);

        entry.apply(watcher::Event::Apply(map("a", "3")));
        entry.apply(watcher::Event::Apply(map("a", "3")));
        entry.apply(watcher::Event::Delete(map("b", "2")));
        for subscription in [&mut early, &mut during, &mut late] {
            assert_eq!(drain(&mut subscription.changes), ["~a@3", "~a@3 (known)", "-b"]);
        }
        assert_eq!(early.store.len(), 1);
    }

    #[tokio::test]
    async fn a_relist_names_what_went_while_the_watch_was_down_and_what_it_knew() {
        let entry = Entry::<ConfigMap>::new(false, None);
        let mut subscription = entry.subscribe();
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(map("kept", "1")),
            watcher::Event::InitApply(map("gone", "1")),
            watcher::Event::InitDone,
        ] {
            entry.apply(event);
        }
        drain(&mut subscription.changes);
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(map("kept", "1")),
            watcher::Event::InitApply(map("new", "5")),
            watcher::Event::InitDone,
        ] {
            entry.apply(event);
        }
        assert_eq!(
            drain(&mut subscription.changes),
            ["Listing", "+kept@1 (known)", "+new@5", "Listed[\"gone\"]"]
        );
        assert_eq!(subscription.store.len(), 2);
    }

    /// kube's `Store::wait_until_ready` wakes only its last waiter; `Synced` wakes them all,
    /// after which the store's own wait returns at once.
    #[tokio::test]
    async fn every_waiter_wakes_when_the_store_syncs() {
        let entry = Arc::new(Entry::<ConfigMap>::new(false, None));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let subscription = entry.subscribe();
                tokio::spawn(async move {
                    subscription.synced.wait().await;
                    subscription.store.wait_until_ready().await.is_ok()
                })
            })
            .collect();
        tokio::task::yield_now().await;
        entry.apply(watcher::Event::Init);
        entry.apply(watcher::Event::InitDone);
        for waiter in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(true))), "a waiter never woke");
        }
    }

    #[test]
    fn children_of_several_controllers_share_one_selector() {
        let caches = Caches::new(["b-operator", "a-operator"]);
        assert_eq!(caches.children_selector("m", "a-operator"), "m in (a-operator,b-operator)");
        assert_eq!(caches.children_selector("m", "c-operator"), "m=c-operator");
        assert_eq!(Caches::new(["a-operator"]).children_selector("m", "a-operator"), "m=a-operator");
        assert_eq!(caches.watches(), 0);
    }
}
