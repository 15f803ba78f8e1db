//! The server's state: objects, resource versions, the change history that watches replay,
//! the open watches, and the controllers the real control plane runs beside the API server
//! (garbage collection, namespace deletion, CRD cleanup), which run here after every write.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::hash::BuildHasher as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use serde_json::Value;
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use super::resources;
use super::resources::ResourceType;
use super::selectors::Scope;

/// Where CustomResourceDefinitions are stored.
pub(crate) const CRDS: &str = "apiextensions.k8s.io/customresourcedefinitions";
/// Where Namespaces are stored.
pub(crate) const NAMESPACES: &str = "/namespaces";

/// How many changes watches can replay: an older `resourceVersion` gets `410 Gone`.
const HISTORY: usize = 10_000;

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One change, as the history keeps it for watches.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) resource_version: u64,
    pub(crate) storage: String,
    pub(crate) kind: ChangeKind,
    /// The object after the change (before it, for a deletion, with the deletion's version).
    pub(crate) object: Value,
    /// The object before the change (for a deletion, as it was stored), to see objects enter
    /// and leave a selector and to rebuild older versions for continued lists.
    pub(crate) old: Option<Value>,
}

/// An open watch.
pub(crate) struct Watcher {
    pub(crate) storage: String,
    pub(crate) scope: Scope,
    pub(crate) resource: ResourceType,
    pub(crate) sender: UnboundedSender<Value>,
}

impl Watcher {
    /// The event this watch sees for `change`, if any: an object entering its selection is
    /// ADDED, one leaving it DELETED, as the real server's watch cache does.
    pub(crate) fn event_for(&self, change: &Change) -> Option<Value> {
        if change.storage != self.storage {
            return None;
        }
        let now = self.scope.selects(&change.object);
        let before = change.old.as_ref().is_some_and(|old| self.scope.selects(old));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Deleted, _, true) => ChangeKind::Deleted,
            (ChangeKind::Added, _, true) => ChangeKind::Added,
            (ChangeKind::Modified, true, true) => ChangeKind::Modified,
            (ChangeKind::Modified, false, true) => ChangeKind::Added,
            (ChangeKind::Modified, true, false) => ChangeKind::Deleted,
            _ => return None,
        };
        Some(json!({"type": kind.as_str(), "object": present(&self.resource, &change.object)}))
    }
}

/// Where an object is stored: ordered as etcd orders `namespace/name`, which is the order
/// the real server lists in (`a-b/x` before `a/y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Key {
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        Key { namespace: namespace.into(), name: name.into() }
    }

    pub(crate) fn of(object: &Value) -> Self {
        let (namespace, name) = key_of(object);
        Key { namespace, name }
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.namespace.bytes().chain(std::iter::once(b'/')).chain(self.name.bytes())
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Objects by storage, then by key.
pub(crate) type Objects = BTreeMap<String, BTreeMap<Key, Value>>;

pub(crate) struct State {
    pub(crate) resource_version: u64,
    pub(crate) types: Vec<ResourceType>,
    pub(crate) objects: Objects,
    pub(crate) history: VecDeque<Change>,
    /// Watches from a version older than this get `410 Gone`.
    pub(crate) oldest_watchable: u64,
    pub(crate) watchers: Vec<Watcher>,
    /// Where each uid is stored.
    places: HashMap<String, Place>,
    /// The objects that name each uid among their owners.
    dependents: HashMap<String, BTreeSet<Place>>,
    /// The objects a write since the last [`State::settle`] may have given the controllers
    /// work.
    due: BTreeSet<Place>,
}

/// Where one object is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    storage: String,
    key: Key,
}

impl State {
    pub(crate) fn new() -> Self {
        let mut state = State {
            resource_version: 1,
            types: resources::builtins(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest_watchable: 1,
            watchers: Vec::new(),
            places: HashMap::new(),
            dependents: HashMap::new(),
            due: BTreeSet::new(),
        };
        let namespaces = state.resource("", "v1", "namespaces").expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let mut namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            initialize(&namespaces, &mut namespace, None);
            state.commit_put(&namespaces, namespace);
        }
        // Like the real server's watch cache, history starts after the cluster came up:
        // a watch from before that is too old.
        state.oldest_watchable = state.resource_version;
        state
    }

    pub(crate) fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|resource| {
                resource.group == group && resource.version == version && resource.plural == plural
            })
            .cloned()
    }

    /// The preferred (first served) version of a storage, for GC and namespace deletion.
    pub(crate) fn resource_of_storage(&self, storage: &str) -> Option<ResourceType> {
        self.types.iter().find(|resource| resource.storage == storage).cloned()
    }

    pub(crate) fn get(&self, storage: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(storage)?.get(&Key::new(namespace, name))
    }

    fn next_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, change: Change) {
        self.watchers.retain(|watcher| match watcher.event_for(&change) {
            Some(event) => watcher.sender.send(event).is_ok(),
            None => !watcher.sender.is_closed(),
        });
        self.history.push_back(change);
        while self.history.len() > HISTORY {
            let dropped = self.history.pop_front().expect("not empty");
            self.oldest_watchable = dropped.resource_version;
        }
    }

    /// Stores `object` (created or changed) at a new resource version; returns it as stored.
    pub(crate) fn commit_put(&mut self, resource: &ResourceType, mut object: Value) -> Value {
        let version = self.next_version();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let key = Key::of(&object);
        let place = Place { storage: resource.storage.clone(), key: key.clone() };
        let old = self.objects.entry(resource.storage.clone()).or_default().insert(key, object.clone());
        if let Some(old) = &old {
            self.unindex(&place, old);
        }
        self.index(&place, &object);
        self.mark_due(&place, &object, false);
        let kind = if old.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(Change {
            resource_version: version,
            storage: resource.storage.clone(),
            kind,
            object: object.clone(),
            old,
        });
        object
    }

    /// Removes an object for good; returns its last state, at the deletion's version.
    pub(crate) fn commit_remove(&mut self, storage: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = Key::new(namespace, name);
        let mut object = self.objects.get_mut(storage)?.remove(&key)?;
        let place = Place { storage: storage.into(), key };
        self.unindex(&place, &object);
        self.mark_due(&place, &object, true);
        let prior = object.clone();
        let version = self.next_version();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.record(Change {
            resource_version: version,
            storage: storage.into(),
            kind: ChangeKind::Deleted,
            object: object.clone(),
            old: Some(prior),
        });
        Some(object)
    }

    /// The objects of `storage` as they were at `version` (which must not be older than the
    /// history): the current ones with every later change undone.
    pub(crate) fn snapshot(&self, storage: &str, version: u64) -> BTreeMap<Key, Value> {
        let mut objects = self.objects.get(storage).cloned().unwrap_or_default();
        for change in self.history.iter().rev().take_while(|change| change.resource_version > version) {
            if change.storage != storage {
                continue;
            }
            match (&change.kind, &change.old) {
                (ChangeKind::Added, _) => {
                    objects.remove(&Key::of(&change.object));
                }
                (ChangeKind::Modified | ChangeKind::Deleted, Some(old)) => {
                    objects.insert(Key::of(old), old.clone());
                }
                (ChangeKind::Modified | ChangeKind::Deleted, None) => {}
            }
        }
        objects
    }

    /// Forgets the history: every watch from a version before now gets `410 Gone`.
    pub(crate) fn expire_history(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.resource_version + 1;
        // The next write gets a version no one has seen, so old ones are surely expired.
        self.resource_version += 1;
    }

    /// Deletes `object` as a controller would: marks it when finalizers hold it, removes it
    /// otherwise.
    pub(crate) fn delete_object(&mut self, storage: &str, object: &Value, now: &str) {
        let Some(resource) = self.resource_of_storage(storage) else { return };
        let (namespace, name) = key_of(object);
        if has_finalizers(object) {
            if object["metadata"]["deletionTimestamp"].is_string() {
                return;
            }
            let mut marked = object.clone();
            mark_deleted(&mut marked, now);
            self.commit_put(&resource, marked);
        } else {
            self.commit_remove(storage, &namespace, &name);
        }
    }

    /// Runs the garbage collector, the namespace controller and CRD cleanup until nothing
    /// changes. Only the objects a write may have given work are looked at (see
    /// [`State::mark_due`]), so a write costs the same with ten objects stored or a hundred
    /// thousand.
    pub(crate) fn settle(&mut self, now: &str) {
        // Each look either changes nothing or moves an object towards its end (a finalizer
        // dropped, a deletion marked, an object removed); the bound only guards against a
        // mistake here turning into a hung test.
        let mut budget = 1_000_000_usize;
        while let Some(place) = self.due.pop_first() {
            budget = budget.saturating_sub(1);
            assert!(budget > 0, "the in-memory server's controllers did not settle");
            let Some(object) = self.objects.get(&place.storage).and_then(|objects| objects.get(&place.key))
            else {
                continue;
            };
            let object = object.clone();
            self.settle_one(&place.storage, &object, now);
        }
    }

    /// What the controllers do about one object: orphan or delete its dependents when it is
    /// being deleted, empty a deleted namespace or CRD, delete it when its owners are gone.
    fn settle_one(&mut self, storage: &str, object: &Value, now: &str) {
        let metadata = &object["metadata"];
        let deleting = metadata["deletionTimestamp"].is_string();
        let finalizers: Vec<&str> =
            metadata["finalizers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let uid = metadata["uid"].as_str().unwrap_or_default();

        // Orphan: let go of the dependents, then of the finalizer.
        if deleting && finalizers.contains(&"orphan") {
            for (dependent_storage, dependent) in &self.dependents_of(uid) {
                let mut freed = dependent.clone();
                if let Some(owners) = freed["metadata"]["ownerReferences"].as_array_mut() {
                    owners.retain(|owner| owner["uid"] != uid);
                    if owners.is_empty()
                        && let Some(metadata) = freed["metadata"].as_object_mut()
                    {
                        metadata.remove("ownerReferences");
                    }
                }
                let resource = self.resource_of_storage(dependent_storage).expect("stored kinds are known");
                self.commit_put(&resource, freed);
            }
            self.drop_finalizer(storage, object, "orphan");
            return;
        }
        // Foreground: delete the dependents first, then let the owner go.
        if deleting && finalizers.contains(&"foregroundDeletion") {
            let dependents = self.dependents_of(uid);
            if dependents.is_empty() {
                self.drop_finalizer(storage, object, "foregroundDeletion");
            } else {
                self.delete_all(&dependents, now);
            }
            return;
        }
        // Namespaces: delete what is in them, then the namespace.
        if storage == NAMESPACES && deleting {
            let name = metadata["name"].as_str().unwrap_or_default();
            let inside: Vec<(String, Value)> = self
                .objects
                .iter()
                .flat_map(|(storage, objects)| {
                    objects
                        .range(Key::new(name, "")..)
                        .take_while(|(key, _)| key.namespace == name)
                        .map(|(_, inner)| (storage.clone(), inner.clone()))
                })
                .collect();
            if inside.is_empty() {
                self.commit_remove(storage, "", name);
            } else {
                self.delete_all(&inside, now);
            }
            return;
        }
        // CRDs: delete every instance, then the definition.
        if storage == CRDS && deleting {
            let group = object["spec"]["group"].as_str().unwrap_or_default();
            let plural = object["spec"]["names"]["plural"].as_str().unwrap_or_default();
            let instances_storage = format!("{group}/{plural}");
            let instances: Vec<(String, Value)> = self
                .objects
                .get(&instances_storage)
                .map(|objects| {
                    objects.values().map(|object| (instances_storage.clone(), object.clone())).collect()
                })
                .unwrap_or_default();
            if instances.is_empty() {
                self.drop_finalizer(storage, object, "customresourcecleanup.apiextensions.k8s.io");
                if self.get(storage, "", metadata["name"].as_str().unwrap_or_default()).is_none() {
                    self.types.retain(|resource| resource.storage != instances_storage);
                }
            } else {
                self.delete_all(&instances, now);
            }
            return;
        }
        // Background: a dependent whose owners are all gone goes too.
        if let Some(owners) = metadata["ownerReferences"].as_array()
            && !owners.is_empty()
            && !deleting
        {
            let alive = owners.iter().any(|owner| {
                owner["uid"].as_str().and_then(|uid| self.by_uid(uid)).is_some_and(|found| {
                    let finalizers = &found["metadata"]["finalizers"];
                    // An owner being deleted in the foreground takes its dependents along.
                    !(found["metadata"]["deletionTimestamp"].is_string()
                        && finalizers.as_array().is_some_and(|f| f.contains(&json!("foregroundDeletion"))))
                })
            });
            if !alive {
                self.delete_object(storage, object, now);
            }
        }
    }

    /// The stored object with `uid`.
    fn by_uid(&self, uid: &str) -> Option<&Value> {
        let place = self.places.get(uid)?;
        self.objects.get(&place.storage)?.get(&place.key)
    }

    /// The objects that name `uid` among their owners, with their storage.
    fn dependents_of(&self, uid: &str) -> Vec<(String, Value)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|place| {
                let object = self.objects.get(&place.storage)?.get(&place.key)?;
                Some((place.storage.clone(), object.clone()))
            })
            .collect()
    }

    /// Records where `object` lives and whom it names as owners.
    fn index(&mut self, place: &Place, object: &Value) {
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.places.insert(uid.to_owned(), place.clone());
        }
        for owner in owner_uids(object) {
            self.dependents.entry(owner.to_owned()).or_default().insert(place.clone());
        }
    }

    /// Forgets what [`State::index`] recorded for `object`.
    fn unindex(&mut self, place: &Place, object: &Value) {
        if let Some(uid) = object["metadata"]["uid"].as_str()
            && self.places.get(uid) == Some(place)
        {
            self.places.remove(uid);
        }
        for owner in owner_uids(object) {
            if let Some(dependents) = self.dependents.get_mut(owner) {
                dependents.remove(place);
                if dependents.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// Marks what a write of `object` (`removed` or stored) may have given the controllers
    /// work: the object itself when it is being deleted or has owners; its dependents when it
    /// is being deleted or gone; its owners when it is gone (a foreground deletion waits for
    /// it); the namespace or CRD it lives in when that is being deleted.
    fn mark_due(&mut self, place: &Place, object: &Value, removed: bool) {
        let metadata = &object["metadata"];
        let deleting = metadata["deletionTimestamp"].is_string();
        if !removed && (deleting || owner_uids(object).next().is_some()) {
            self.due.insert(place.clone());
        }
        if (removed || deleting)
            && let Some(uid) = metadata["uid"].as_str()
            && let Some(dependents) = self.dependents.get(uid)
        {
            self.due.extend(dependents.iter().cloned());
        }
        if removed {
            let owners: Vec<Place> =
                owner_uids(object).filter_map(|owner| self.places.get(owner).cloned()).collect();
            self.due.extend(owners);
        }
        let namespace = place.key.namespace.as_str();
        if !namespace.is_empty()
            && self
                .get(NAMESPACES, "", namespace)
                .is_some_and(|it| it["metadata"]["deletionTimestamp"].is_string())
        {
            self.due.insert(Place { storage: NAMESPACES.into(), key: Key::new("", namespace) });
        }
        if let Some((group, plural)) = place.storage.split_once('/')
            && !group.is_empty()
        {
            let crd = format!("{plural}.{group}");
            if self.get(CRDS, "", &crd).is_some_and(|it| it["metadata"]["deletionTimestamp"].is_string()) {
                self.due.insert(Place { storage: CRDS.into(), key: Key::new("", &crd) });
            }
        }
    }

    /// Deletes each of `objects` (storage, object) as [`State::delete_object`] does.
    fn delete_all(&mut self, objects: &[(String, Value)], now: &str) {
        for (storage, object) in objects {
            self.delete_object(storage, object, now);
        }
    }

    /// Removes `finalizer` from the stored `object`, deleting it when it was the last.
    fn drop_finalizer(&mut self, storage: &str, object: &Value, finalizer: &str) {
        let mut changed = object.clone();
        if let Some(finalizers) = changed["metadata"]["finalizers"].as_array_mut() {
            finalizers.retain(|item| item != finalizer);
        }
        let (namespace, name) = key_of(object);
        if has_finalizers(&changed) {
            let resource = self.resource_of_storage(storage).expect("stored kinds are known");
            self.commit_put(&resource, changed);
        } else {
            self.commit_remove(storage, &namespace, &name);
        }
    }
}

/// The uids `object` names among its owners.
fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|owner| owner["uid"].as_str())
}

pub(crate) fn key_of(object: &Value) -> (String, String) {
    let metadata = &object["metadata"];
    (
        metadata["namespace"].as_str().unwrap_or_default().to_string(),
        metadata["name"].as_str().unwrap_or_default().to_string(),
    )
}

pub(crate) fn has_finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"].as_array().is_some_and(|finalizers| !finalizers.is_empty())
}

/// Sets `deletionTimestamp`, as a delete of an object with finalizers does, and bumps the
/// generation the way the real server does.
pub(crate) fn mark_deleted(object: &mut Value, now: &str) {
    let metadata = &mut object["metadata"];
    metadata["deletionTimestamp"] = json!(now);
    metadata["deletionGracePeriodSeconds"] = json!(0);
    if let Some(generation) = metadata["generation"].as_i64()
        && generation > 0
    {
        metadata["generation"] = json!(generation + 1);
    }
}

/// Fills in what the server sets on create: uid, creation time, generation, and the
/// defaults of some built-in kinds.
pub(crate) fn initialize(resource: &ResourceType, object: &mut Value, now: Option<&str>) {
    let now = now.map_or_else(timestamp, str::to_string);
    let metadata = &mut object["metadata"];
    metadata["uid"] = json!(uid());
    metadata["creationTimestamp"] = json!(now);
    if let Some(fields) = metadata.as_object_mut() {
        fields.remove("deletionTimestamp");
        fields.remove("deletionGracePeriodSeconds");
        fields.remove("resourceVersion");
        if resource.generation {
            fields.insert("generation".into(), json!(1));
        } else {
            fields.remove("generation");
        }
    }
    if resource.storage == NAMESPACES {
        object["spec"] = json!({"finalizers": ["kubernetes"]});
        object["status"] = json!({"phase": "Active"});
        object["metadata"]["labels"]["kubernetes.io/metadata.name"] = object["metadata"]["name"].clone();
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the simulator's thread ([`crate::sim`]): uids, name suffixes and timestamps
    /// from its seed and its virtual clock, so that one seed makes the same objects.
    static DETERMINISTIC: std::cell::RefCell<Option<Deterministic>> = const { std::cell::RefCell::new(None) };
}

/// The simulator's source of the server's random numbers and of its time.
pub(crate) struct Deterministic {
    /// A SplitMix64 state.
    pub(crate) state: u64,
    pub(crate) now: jiff::Timestamp,
}

/// Makes this thread's server draw its random numbers and time from `deterministic`, until
/// [`set_deterministic`] with `None`.
pub(crate) fn set_deterministic(deterministic: Option<Deterministic>) {
    DETERMINISTIC.with(|cell| *cell.borrow_mut() = deterministic);
}

/// Sets this thread's virtual time, if it has one.
pub(crate) fn set_now(now: jiff::Timestamp) {
    DETERMINISTIC.with(|cell| {
        if let Some(deterministic) = cell.borrow_mut().as_mut() {
            deterministic.now = now;
        }
    });
}

/// SplitMix64: the next number of `state`.
pub(crate) fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random number: the simulator's on its thread, else from the standard library's
/// randomly keyed hasher and a counter.
pub(crate) fn random() -> u64 {
    let seeded = DETERMINISTIC
        .with(|cell| cell.borrow_mut().as_mut().map(|deterministic| split_mix(&mut deterministic.state)));
    seeded.unwrap_or_else(|| {
        let state = std::collections::hash_map::RandomState::new();
        state.hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
    })
}

/// A version 4 UUID.
pub(crate) fn uid() -> String {
    let bits = (u128::from(random()) << 64) | u128::from(random());
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The 5 characters the real server appends to a `generateName`.
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut value = random();
    (0..5)
        .map(|_| {
            let character = ALPHABET[(value % ALPHABET.len() as u64) as usize] as char;
            value /= ALPHABET.len() as u64;
            character
        })
        .collect()
}

/// Now, as `metav1.Time` writes it.
pub(crate) fn timestamp() -> String {
    let now = DETERMINISTIC.with(|cell| cell.borrow().as_ref().map(|deterministic| deterministic.now));
    now.unwrap_or_else(jiff::Timestamp::now).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An object as the client sees it through `resource`: its apiVersion, and Events in the
/// shape of `events.k8s.io/v1` when asked that way (they are stored as core Events).
pub(crate) fn present(resource: &ResourceType, object: &Value) -> Value {
    let mut shown = object.clone();
    if resource.group == "events.k8s.io" {
        shown = rename_event_fields(shown, false);
    }
    shown["apiVersion"] = json!(resource.api_version());
    shown["kind"] = json!(resource.kind);
    shown
}

const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Renames an Event's fields between the core shape it is stored in and the
/// `events.k8s.io/v1` shape (`to_core` says which way).
pub(crate) fn rename_event_fields(mut event: Value, to_core: bool) -> Value {
    if let Some(fields) = event.as_object_mut() {
        for (core, new) in EVENT_FIELDS {
            let (from, to) = if to_core { (new, core) } else { (core, new) };
            if let Some(value) = fields.remove(*from) {
                fields.insert((*to).to_string(), value);
            }
        }
    }
    event
}
