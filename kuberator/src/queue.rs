//! The order in which a controller's objects are reconciled: real changes first, the initial
//! list and periodic resyncs after them, and nothing waits for ever.
//!
//! kube's controller runs what it is handed in the order it was handed, so Kuberator holds
//! the objects that changed in a queue of its own ([`Feeder`]) and hands kube only as many as
//! it can start (its concurrency). The rest wait here, in this order:
//!
//! - Each waiting object has a *due* time. A [`Priority::Change`] (the object was created,
//!   its spec or finalizers changed, it is being deleted, one of its children or referenced
//!   objects changed, or it changed while the watch was down) is due when it arrives; a
//!   [`Priority::Resync`] (the object was in the controller's first list, or its periodic
//!   requeue came due) is due the aging bound later ([`DEFAULT_AGING`], 30 s).
//! - The object due first goes first. So a change that arrives while the initial list is
//!   being worked through goes before every resync, unless that resync has waited `aging`
//!   already, and a resync never waits behind a change that arrived more than `aging` after
//!   it: the bound. If the controller starts `μ` reconciles a second and `N` resyncs wait,
//!   the last of them starts at most `aging + (N + B) / μ` after it was queued, where `B` is
//!   what waited before it, however many changes keep arriving (FIFO order would take
//!   `(N + B) / μ`).
//! - An object waits once: a second trigger of a waiting object keeps its place, or moves it
//!   forward when the new one is due earlier (a change of an object whose resync waits).
//! - A failure's retry waits on a timer here until its backoff ends, then waits as a change.
//! - kube is handed as many objects as it has free slots, and one while every slot is busy:
//!   kube keeps what it cannot start yet in a hash set and takes from it in that set's order,
//!   which differs between processes. So the order here decides what runs next, and a run can
//!   be replayed (the simulator's seeds).
//!
//! Every entry leaves when its object is handed to kube, or when the object is deleted.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::future::Future as _;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use futures::task::AtomicWaker;
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use tokio::time::Instant;

use crate::telemetry::ControllerMetrics;

/// How long a resync may wait before it is due like a change: the default aging bound.
pub(crate) const DEFAULT_AGING: Duration = Duration::from_secs(30);

/// How many objects the feeder hands kube at most before their reconciles start: kube starts
/// the next at once when a reconcile ends, and a new change waits behind at most these. While
/// every slot of a concurrency limit is busy, only one waits in kube: kube keeps the objects it
/// cannot start yet in a hash set and takes them in that set's order, which differs between
/// processes; one at a time, the queue decides what runs next (and a seed of the simulator
/// replays the same run in any process).
pub(crate) const HANDED_AHEAD: usize = 4;

/// Why an object waits for its reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Priority {
    /// Something changed: a create, a spec or finalizer change, a deletion, a child or a
    /// referenced object, a change seen by a relist.
    Change,
    /// Nothing is known to have changed: the controller's first list, a periodic requeue.
    Resync,
}

impl Priority {
    /// The `priority` label of the queue metrics.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Priority::Change => "change",
            Priority::Resync => "resync",
        }
    }

    const fn index(self) -> usize {
        match self {
            Priority::Change => 0,
            Priority::Resync => 1,
        }
    }
}

/// What reaches the queue.
#[derive(Debug)]
pub(crate) enum Trigger<K> {
    /// Reconcile this object.
    Reconcile(K, Priority),
    /// The object was deleted: it waits no more, and its periodic requeue is forgotten.
    Gone(K),
}

/// One waiting object.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    due: (Instant, u64),
    priority: Priority,
    since: Instant,
}

/// The objects waiting to be handed to kube, in the order of their due time (ties in order of
/// arrival), and the periodic requeues not due yet.
#[derive(Debug)]
pub(crate) struct Queue<K> {
    aging: Duration,
    order: BTreeMap<(Instant, u64), K>,
    waiting: HashMap<K, Waiting>,
    /// Timers: a periodic requeue comes due as a resync, a failure's retry as a change.
    timers: BTreeMap<(Instant, u64), (K, Priority)>,
    timer_of: HashMap<K, (Instant, u64)>,
    arrivals: u64,
    depth: [usize; 2],
}

/// Below this many entries' room a map keeps what it has.
const ROOM_KEPT: usize = 64;

/// Shrinks `map` to twice its entries once they fill less than a quarter of its room: a map
/// never gives back the room a burst made it take (a cold start queues the whole list at
/// once, 2.4 MB for 10 000 objects, kept empty for the life of the process). Each shrink
/// rehashes what is left, fewer entries than half the room it frees, and the next one waits
/// until the map has halved again, so the cost per removal stays constant.
pub(crate) fn give_back_room<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > ROOM_KEPT && map.len() < map.capacity() / 4 {
        map.shrink_to((map.len() * 2).max(ROOM_KEPT));
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    pub(crate) fn new(aging: Duration) -> Self {
        Self {
            aging,
            order: BTreeMap::new(),
            waiting: HashMap::new(),
            timers: BTreeMap::new(),
            timer_of: HashMap::new(),
            arrivals: 0,
            depth: [0; 2],
        }
    }

    fn next_arrival(&mut self) -> u64 {
        self.arrivals += 1;
        self.arrivals
    }

    /// `object` waits from `now`, unless it waits already (then it keeps the earlier due time).
    pub(crate) fn push(&mut self, object: K, priority: Priority, now: Instant) {
        let due_at = match priority {
            Priority::Change => now,
            Priority::Resync => now.checked_add(self.aging).unwrap_or(now),
        };
        if let Some(&waiting) = self.waiting.get(&object) {
            if due_at >= waiting.due.0 {
                return;
            }
            // Due earlier now (a change of an object whose resync waits): it moves forward.
            self.order.remove(&waiting.due);
            self.depth[waiting.priority.index()] -= 1;
            let due = (due_at, self.next_arrival());
            self.order.insert(due, object.clone());
            self.waiting.insert(object, Waiting { due, priority, since: waiting.since });
            self.depth[priority.index()] += 1;
            return;
        }
        let due = (due_at, self.next_arrival());
        self.order.insert(due, object.clone());
        self.waiting.insert(object, Waiting { due, priority, since: now });
        self.depth[priority.index()] += 1;
    }

    /// The object due first, why it waited, and since when.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Option<(K, Priority, Instant)> {
        self.pop_where(|_| true)
    }

    /// The first object in order that `eligible` lets go, out of the queue; the others keep
    /// their places.
    pub(crate) fn pop_where(&mut self, eligible: impl Fn(&K) -> bool) -> Option<(K, Priority, Instant)> {
        let due = *self.order.iter().find(|(_, object)| eligible(object))?.0;
        let object = self.order.remove(&due)?;
        let waiting = self.waiting.remove(&object).expect("every ordered object waits");
        self.depth[waiting.priority.index()] -= 1;
        give_back_room(&mut self.waiting);
        Some((object, waiting.priority, waiting.since))
    }

    /// The object was deleted: it leaves the queue and its timer.
    pub(crate) fn forget(&mut self, object: &K) {
        if let Some(waiting) = self.waiting.remove(object) {
            self.order.remove(&waiting.due);
            self.depth[waiting.priority.index()] -= 1;
            give_back_room(&mut self.waiting);
        }
        self.set_timer(object.clone(), None, Instant::now());
    }

    /// After a reconcile of `object`: when it runs again, `after` from `now` and with what
    /// priority (a periodic requeue as a resync, a failure's retry as a change), replacing the
    /// timer it had; `None`: no timer.
    pub(crate) fn set_timer(&mut self, object: K, after: Option<(Duration, Priority)>, now: Instant) {
        if let Some(old) = self.timer_of.remove(&object) {
            self.timers.remove(&old);
            give_back_room(&mut self.timer_of);
        }
        if let Some((after, priority)) = after {
            let at = (now.checked_add(after).unwrap_or(now), self.next_arrival());
            self.timers.insert(at, (object.clone(), priority));
            self.timer_of.insert(object, at);
        }
    }

    /// Moves every timer due by `now` into the queue, with its priority; returns when the next
    /// one is due.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let (object, priority) = entry.remove();
            self.timer_of.remove(&object);
            self.push(object, priority, now);
        }
        None
    }

    /// How many wait with `priority`.
    pub(crate) fn depth(&self, priority: Priority) -> usize {
        self.depth[priority.index()]
    }

    /// How many periodic requeues are set.
    pub(crate) fn timers(&self) -> usize {
        self.timer_of.len()
    }
}

/// The objects handed to kube whose reconcile has not started yet (by namespace and name),
/// shared by the [`Feeder`] (which hands them) and the reconcile (which starts them).
#[derive(Debug, Default)]
pub(crate) struct Handed {
    state: Mutex<HandedState>,
    /// The feeder, waiting for room to hand more.
    room: AtomicWaker,
}

#[derive(Debug, Default)]
struct HandedState {
    objects: HashMap<(Option<String>, String), (Priority, Instant)>,
    depth: [usize; 2],
    /// The objects whose reconcile runs now: the feeder hands none of them to kube until it
    /// ends, so that what runs next is the queue's order, not kube's set of held objects.
    running: std::collections::HashSet<(Option<String>, String)>,
}

impl Handed {
    fn hand(&self, key: (Option<String>, String), priority: Priority, since: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Handed again before it started: kube merges the two, so it waits once, since the first.
        if let std::collections::hash_map::Entry::Vacant(entry) = state.objects.entry(key) {
            entry.insert((priority, since));
            state.depth[priority.index()] += 1;
        }
    }

    /// The reconcile of `namespace/name` started (or it was gone when its turn came): why and
    /// since when it waited, if it was handed by the feeder.
    pub(crate) fn started(&self, namespace: Option<String>, name: String) -> Option<(Priority, Instant)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (namespace, name);
        let started = state.objects.remove(&key);
        if let Some((priority, _)) = started {
            state.depth[priority.index()] -= 1;
        }
        state.running.insert(key);
        drop(state);
        self.room.wake();
        started
    }

    /// The reconcile of `namespace/name` ended (or it was gone when its turn came).
    pub(crate) fn finished(&self, namespace: Option<String>, name: String) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).running.remove(&(namespace, name));
        self.room.wake();
    }

    fn is_running(&self, key: &(Option<String>, String)) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).running.contains(key)
    }

    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).objects.len()
    }

    /// How many objects may wait in kube under a concurrency `limit` (0: none): as many as
    /// there are free slots, and one while every slot is busy; never more than
    /// [`HANDED_AHEAD`]. (`running` may still hold a reconcile kube has just ended: then one
    /// fewer is handed, never one more.)
    fn room(&self, limit: usize) -> usize {
        let free = match limit {
            0 => HANDED_AHEAD,
            limit => {
                limit.saturating_sub(self.state.lock().unwrap_or_else(PoisonError::into_inner).running.len())
            }
        };
        free.clamp(1, HANDED_AHEAD)
    }

    /// How many wait, by [`Priority::index`].
    fn depths(&self) -> [usize; 2] {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).depth
    }
}

/// What a finished reconcile asked for, as the feeder's timers keep it: the requeue interval
/// of an `Ok` action as a resync, or a failure's retry as a change (`None`: await a change).
pub(crate) type Requeue<R> = (ObjectRef<R>, Option<(Duration, Priority)>);

/// The stream kube's controller is fed from: [`Trigger`]s in, objects out, in [`Queue`] order,
/// no more than [`Handed::room`] handed and not started at a time.
pub(crate) struct Feeder<R: Resource + 'static>
where
    R::DynamicType: Eq + Hash + Clone,
{
    triggers: BoxStream<'static, Trigger<ObjectRef<R>>>,
    requeues: tokio::sync::mpsc::UnboundedReceiver<Requeue<R>>,
    queue: Queue<ObjectRef<R>>,
    handed: Arc<Handed>,
    /// kube's concurrency limit (0: none).
    limit: usize,
    store: Store<R>,
    /// `kuberator_queue_depth` of each priority, by [`Priority::index`].
    depth_gauges: [prometheus_client::metrics::gauge::Gauge; 2],
    /// Wakes the feeder when the next periodic requeue comes due.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The periodic requeues set, in `kuberator_remembered_objects`.
    requeues_size: crate::telemetry::Remembered,
}

impl<R: Resource + Clone + 'static> Feeder<R>
where
    R::DynamicType: Eq + Hash + Clone,
{
    /// `limit`: kube's concurrency limit (0: none).
    pub(crate) fn new(
        triggers: BoxStream<'static, Trigger<ObjectRef<R>>>,
        requeues: tokio::sync::mpsc::UnboundedReceiver<Requeue<R>>,
        aging: Duration,
        limit: usize,
        store: Store<R>,
        handed: Arc<Handed>,
        telemetry: &ControllerMetrics,
    ) -> Self {
        Self {
            triggers,
            requeues,
            queue: Queue::new(aging),
            handed,
            limit,
            store,
            requeues_size: crate::telemetry::Remembered::new(telemetry.controller(), "requeues"),
            depth_gauges: [Priority::Change, Priority::Resync]
                .map(|priority| telemetry.queue_depth(priority.label())),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn report(&self) {
        let handed = self.handed.depths();
        for priority in [Priority::Change, Priority::Resync] {
            let depth = self.queue.depth(priority) + handed[priority.index()];
            self.depth_gauges[priority.index()].set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        self.requeues_size.set(self.queue.timers());
    }
}

impl<R: Resource + Clone + 'static> Stream for Feeder<R>
where
    R::DynamicType: Eq + Hash + Clone + Unpin,
{
    type Item = ObjectRef<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let now = Instant::now();
        // The triggers never end while the controller runs; kube stops polling on shutdown.
        while let Poll::Ready(Some(trigger)) = this.triggers.poll_next_unpin(cx) {
            match trigger {
                Trigger::Reconcile(object, priority) => {
                    tracing::trace!(%object, ?priority, "queued");
                    this.queue.push(object, priority, now);
                }
                Trigger::Gone(object) => this.queue.forget(&object),
            }
        }
        while let Poll::Ready(Some((object, after))) = this.requeues.poll_recv(cx) {
            // An object deleted while its reconcile ran gets no timer: it is gone from the store.
            let after = after.filter(|_| this.store.get(&object).is_some());
            this.queue.set_timer(object, after, now);
        }
        if let Some(at) = this.queue.expire(now) {
            if this.timer.deadline() != at {
                this.timer.as_mut().reset(at);
            }
            // Registers the wake-up for the next periodic requeue.
            if this.timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        this.handed.room.register(cx.waker());
        while this.handed.len() < this.handed.room(this.limit) {
            let handed = &this.handed;
            let running =
                |object: &ObjectRef<R>| handed.is_running(&(object.namespace.clone(), object.name.clone()));
            let Some((object, priority, since)) = this.queue.pop_where(|object| !running(object)) else {
                break;
            };
            // Deleted while it waited: nothing to hand.
            if this.store.get(&object).is_none() {
                continue;
            }
            tracing::trace!(%object, ?priority, waited = ?since.elapsed(), "handed to kube");
            this.handed.hand((object.namespace.clone(), object.name.clone()), priority, since);
            this.report();
            return Poll::Ready(Some(object));
        }
        this.report();
        Poll::Pending
    }
}

/// Splits a reconcile's `Ok` action: the periodic requeue it asks for goes to the feeder (as a
/// resync when it comes due), and kube is told to await a change. An action whose interval
/// cannot be read is left to kube as it is.
pub(crate) fn take_requeue(action: Action) -> (Action, Option<Option<Duration>>) {
    if action == Action::await_change() {
        return (action, Some(None));
    }
    match requeue_interval(&action) {
        Some(after) => (Action::await_change(), Some(Some(after))),
        None => (action, None),
    }
}

/// A failure's retry, as the error policy's `action` asks for it: the interval it goes to the
/// feeder with (as a change), and what kube is told instead (await a change). `None`: an
/// action whose interval cannot be read, left to kube as it is.
pub(crate) fn take_retry(action: &Action) -> Option<Option<Duration>> {
    if *action == Action::await_change() {
        return Some(None);
    }
    requeue_interval(action).map(Some)
}

/// The interval of `Action::requeue(after)`. kube keeps it private; its `Debug` shows it
/// exactly (`Action { requeue_after: Some(1.5s) }`), and a unit test catches a change of that
/// form.
fn requeue_interval(action: &Action) -> Option<Duration> {
    let shown = format!("{action:?}");
    let inner = shown.strip_prefix("Action { requeue_after: Some(")?.strip_suffix(") }")?;
    parse_duration_debug(inner)
}

/// Reads a `Duration` back from its `Debug` form: `1.5s`, `250ms`, `3µs`, `7ns`.
fn parse_duration_debug(shown: &str) -> Option<Duration> {
    let (number, unit_nanos) = [("ns", 1_u128), ("µs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)]
        .into_iter()
        .find_map(|(suffix, nanos)| shown.strip_suffix(suffix).map(|number| (number, nanos)))?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut nanos = whole.parse::<u128>().ok()?.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            return None;
        }
        nanos += u128::from(digit - b'0') * scale;
    }
    let seconds = u64::try_from(nanos / 1_000_000_000).ok()?;
    let subsec = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(seconds, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cold start queues every object at once; once they are handed, the queue's map gives
    /// its room back instead of holding it empty for the life of the process.
    #[test]
    fn a_drained_queue_gives_back_the_room_of_a_burst() {
        let now = Instant::now();
        let mut queue = Queue::new(DEFAULT_AGING);
        for n in 0..10_000 {
            queue.push(n, Priority::Resync, now);
        }
        assert!(queue.waiting.capacity() >= 10_000);
        while queue.pop().is_some() {}
        assert!(queue.waiting.capacity() <= 2 * ROOM_KEPT, "room kept: {}", queue.waiting.capacity());

        for n in 0..10_000 {
            queue.set_timer(n, Some((Duration::from_secs(60), Priority::Resync)), now);
        }
        for n in 0..10_000 {
            queue.forget(&n);
        }
        assert_eq!(queue.timers(), 0);
        assert!(queue.timer_of.capacity() <= 2 * ROOM_KEPT, "room kept: {}", queue.timer_of.capacity());
    }

    #[test]
    fn requeue_intervals_are_read_back_exactly() {
        for after in [
            Duration::ZERO,
            Duration::from_nanos(7),
            Duration::from_micros(3),
            Duration::from_nanos(1_500),
            Duration::from_millis(250),
            Duration::from_millis(1_500),
            Duration::from_secs(300),
            Duration::new(1, 1),
            Duration::new(86_400, 999_999_999),
            Duration::MAX,
        ] {
            assert_eq!(requeue_interval(&Action::requeue(after)), Some(after), "{after:?}");
            assert_eq!(take_requeue(Action::requeue(after)), (Action::await_change(), Some(Some(after))));
        }
        assert_eq!(take_requeue(Action::await_change()), (Action::await_change(), Some(None)));
        assert_eq!(parse_duration_debug("1.s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration_debug("s"), None);
        assert_eq!(parse_duration_debug("1.0000000001s"), None);
    }

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn changes_go_before_resyncs_until_the_resyncs_have_aged() {
        let start = Instant::now();
        let mut queue = Queue::new(Duration::from_secs(30));
        for name in ["r1", "r2", "r3"] {
            queue.push(name, Priority::Resync, start);
        }
        queue.push("c1", Priority::Change, at(start, 1));
        queue.push("c2", Priority::Change, at(start, 29));
        // Arrived after the resyncs aged: behind them.
        queue.push("late", Priority::Change, at(start, 31));
        assert_eq!((queue.depth(Priority::Change), queue.depth(Priority::Resync)), (3, 3));
        let order: Vec<_> =
            std::iter::from_fn(|| queue.pop().map(|(name, priority, _)| (name, priority))).collect();
        assert_eq!(
            order,
            [
                ("c1", Priority::Change),
                ("c2", Priority::Change),
                ("r1", Priority::Resync),
                ("r2", Priority::Resync),
                ("r3", Priority::Resync),
                ("late", Priority::Change),
            ]
        );
        assert_eq!((queue.depth(Priority::Change), queue.depth(Priority::Resync)), (0, 0));
    }

    #[test]
    fn a_waiting_object_waits_once_and_a_change_moves_its_resync_forward() {
        let start = Instant::now();
        let mut queue = Queue::new(Duration::from_secs(30));
        queue.push("a", Priority::Resync, start);
        queue.push("b", Priority::Change, at(start, 1));
        queue.push("a", Priority::Resync, at(start, 2));
        queue.push("b", Priority::Change, at(start, 3));
        assert_eq!((queue.depth(Priority::Change), queue.depth(Priority::Resync)), (1, 1));
        queue.push("a", Priority::Change, at(start, 4));
        assert_eq!((queue.depth(Priority::Change), queue.depth(Priority::Resync)), (2, 0));
        // `a` waited since the start, now as a change, behind `b`.
        assert_eq!(queue.pop(), Some(("b", Priority::Change, at(start, 1))));
        assert_eq!(queue.pop(), Some(("a", Priority::Change, start)));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn periodic_requeues_come_due_as_resyncs_and_leave_with_their_object() {
        let start = Instant::now();
        let mut queue = Queue::new(Duration::from_secs(30));
        let resync = |seconds| Some((Duration::from_secs(seconds), Priority::Resync));
        queue.set_timer("a", resync(10), start);
        queue.set_timer("b", resync(20), start);
        queue.set_timer("gone", resync(5), start);
        // A new reconcile replaces the timer.
        queue.set_timer("b", resync(60), start);
        queue.forget(&"gone");
        assert_eq!(queue.timers(), 2);
        assert_eq!(queue.expire(at(start, 9)), Some(at(start, 10)));
        assert_eq!(queue.expire(at(start, 10)), Some(at(start, 60)));
        assert_eq!(queue.pop(), Some(("a", Priority::Resync, at(start, 10))));
        queue.set_timer("b", None, at(start, 11));
        assert_eq!((queue.timers(), queue.expire(at(start, 100))), (0, None));
        queue.push("c", Priority::Change, start);
        queue.forget(&"c");
        assert_eq!((queue.pop(), queue.depth(Priority::Change)), (None, 0));
        // A failure's retry comes due as a change: before a resync queued earlier.
        queue.push("listed", Priority::Resync, at(start, 100));
        queue.set_timer("failed", Some((Duration::from_secs(5), Priority::Change)), at(start, 100));
        assert_eq!(queue.expire(at(start, 105)), None);
        assert_eq!(queue.pop(), Some(("failed", Priority::Change, at(start, 105))));
        assert_eq!(queue.pop(), Some(("listed", Priority::Resync, at(start, 100))));
    }

    /// The stated bound, simulated: one reconcile a second, a change arriving every second
    /// (the controller's full throughput) on top of 100 resyncs queued at the start. FIFO
    /// would start the last resync at 100 s and every change would wait behind them; here the
    /// changes go first until the resyncs have aged 30 s, and the last resync starts by
    /// `aging + N / μ` = 130 s.
    #[test]
    fn resyncs_finish_within_the_aging_bound_under_a_full_load_of_changes() {
        let start = Instant::now();
        let aging = Duration::from_secs(30);
        let mut queue = Queue::new(aging);
        for resync in 0..100 {
            queue.push(format!("resync-{resync}"), Priority::Resync, start);
        }
        let (mut last_resync, mut change_waits) = (None, Vec::new());
        for second in 0..400_u64 {
            let now = at(start, second);
            queue.push(format!("change-{second}"), Priority::Change, now);
            let (name, priority, since) = queue.pop().unwrap();
            match priority {
                Priority::Resync => last_resync = Some(second),
                Priority::Change => change_waits.push((second, (now - since).as_secs(), name)),
            }
        }
        let last_resync = last_resync.unwrap();
        assert!(last_resync <= 130, "the last resync started at {last_resync} s");
        assert_eq!(queue.depth(Priority::Resync), 0);
        // Changes before the resyncs aged waited for nothing.
        assert!(change_waits.iter().filter(|(second, ..)| *second < 30).all(|(_, waited, _)| *waited == 0));
        // No change waits longer than the aging bound plus the resyncs' run.
        assert!(change_waits.iter().all(|(_, waited, _)| *waited <= 100), "{change_waits:?}");
    }
}
