//! Objects an operator's objects name without owning them: a `Database` that names its
//! credentials Secret in `spec.credentialsSecret` is reconciled when that Secret is created,
//! changed or deleted, and its handler reads the Secret from a cache.
//!
//! # Expected flow
//!
//! Declare each referenced kind with the way to read the names from a parent
//! ([`Referenced::by`]; the derive's `references(Secret = spec.credentials_secret)` writes it),
//! give the [`References`] to the controller, and read a referenced object in a handler with
//! [`References::get`] (`ctx.referenced::<Secret>(&db)` in a derived operator).
//!
//! # Guarantees
//!
//! - A change of a referenced object (created, changed, deleted; also while the watch was
//!   down, seen when it lists again) reconciles exactly the parents that name it now: an
//!   index from names to parents is kept as parents change, nothing scans every parent.
//! - A name that no object has yet is honoured when the object appears.
//! - Referenced objects are watched and cached in the namespaces the controller watches,
//!   and looked up in the parent's own namespace (cluster-wide for a cluster-scoped kind).
//!   [`References::get`] waits for the cache's first list, so a handler never reads an
//!   empty cache as "missing".
//! - The index holds one entry per parent that names something; it leaves with the parent
//!   (its Delete event, or the relist that no longer shows it). Its size is the
//!   `kuberator_remembered_objects{map="references"}` gauge.
//!
//! # Caveats
//!
//! Each controller watches its referenced kinds itself: two controllers that reference one
//! kind hold two watches of it.

use std::any::Any;
use std::any::TypeId;
use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::RwLock;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use kube::Client;
use kube::Resource;
use kube::ResourceExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::children::Child;
use crate::children::OwnedKind;
use crate::error::Error;
use crate::error::Result;
use crate::object::ScopeKind;
use crate::object::api_of;
use crate::object::describe;
use crate::object::is_namespaced;
use crate::shared::Caches;
use crate::shared::Change;
use crate::shared::Synced;

/// The names a parent's field gives: a name, an optional one, or a list.
pub trait Names {
    /// The names, empty ones left out.
    fn names(&self) -> Vec<String>;
}

impl Names for String {
    fn names(&self) -> Vec<String> {
        self.as_str().names()
    }
}

impl Names for str {
    fn names(&self) -> Vec<String> {
        if self.is_empty() { Vec::new() } else { vec![self.to_owned()] }
    }
}

impl<N: Names + ?Sized> Names for &N {
    fn names(&self) -> Vec<String> {
        (**self).names()
    }
}

impl<N: Names> Names for Option<N> {
    fn names(&self) -> Vec<String> {
        self.as_ref().map(Names::names).unwrap_or_default()
    }
}

impl<N: Names> Names for Vec<N> {
    fn names(&self) -> Vec<String> {
        self.iter().flat_map(Names::names).collect()
    }
}

/// Reads the names of the objects a parent references.
type NamesOf = Arc<dyn Fn(&dyn Any) -> Vec<String> + Send + Sync>;

/// One referenced kind and how a parent names its objects: [`Referenced::by`].
#[derive(Clone)]
pub struct Referenced {
    type_id: fn() -> TypeId,
    kind: fn() -> OwnedKind,
    watch: fn(&References, &Caches, Option<&str>) -> Triggers,
    /// How the names are read, for messages (`spec.credentials_secret`).
    from: &'static str,
    names: NamesOf,
}

impl Referenced {
    /// Objects of kind `K` that a parent `P` names, as `names` reads them (a field of the
    /// spec, most often: `|db: &Database| db.spec.credentials_secret.clone()`); `from` says
    /// where, for messages.
    pub fn by<K, P, N>(from: &'static str, names: impl Fn(&P) -> N + Send + Sync + 'static) -> Self
    where
        K: Child,
        P: Resource + 'static,
        N: Names,
    {
        let names: NamesOf = Arc::new(move |parent: &dyn Any| {
            parent.downcast_ref::<P>().map(|parent| names(parent).names()).unwrap_or_default()
        });
        Self { type_id: TypeId::of::<K>, kind: OwnedKind::of::<K>, watch: triggers::<K>, from, names }
    }

    /// What the kind is called in the API: for RBAC rules and messages.
    pub fn kind(&self) -> OwnedKind {
        (self.kind)()
    }

    /// Where a parent names its objects.
    pub fn from(&self) -> &'static str {
        self.from
    }
}

impl PartialEq for Referenced {
    fn eq(&self, other: &Self) -> bool {
        (self.type_id)() == (other.type_id)() && self.from == other.from
    }
}

impl Eq for Referenced {}

impl fmt::Debug for Referenced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Referenced({} from {})", self.kind().kind, self.from)
    }
}

/// One object of a referenced kind: the kind, its namespace (none for a cluster-scoped kind)
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    kind: TypeId,
    namespace: Option<String>,
    name: String,
}

/// A parent: its namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ParentKey {
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

/// The parents to reconcile, as the referenced kinds' watches report them.
pub(crate) type Triggers = BoxStream<'static, ParentKey>;

/// Which parents name which objects, both ways.
#[derive(Default)]
struct Index {
    parents: HashMap<Target, HashSet<ParentKey>>,
    targets: HashMap<ParentKey, Vec<Target>>,
}

impl Index {
    fn set(&mut self, parent: ParentKey, targets: Vec<Target>) {
        self.remove(&parent);
        if targets.is_empty() {
            return;
        }
        for target in &targets {
            self.parents.entry(target.clone()).or_default().insert(parent.clone());
        }
        self.targets.insert(parent, targets);
    }

    fn remove(&mut self, parent: &ParentKey) {
        for target in self.targets.remove(parent).unwrap_or_default() {
            if let Some(parents) = self.parents.get_mut(&target) {
                parents.remove(parent);
                if parents.is_empty() {
                    self.parents.remove(&target);
                }
            }
        }
    }
}

/// The referenced kinds of one controller: their watches and caches, and the index from
/// the objects they name to the parents that name them. Cheap to clone; clones share all.
#[derive(Clone)]
pub struct References {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    referenced: Vec<Referenced>,
    /// A `Store<K>` per referenced `K`, replaced each time the watches start.
    stores: RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    index: Mutex<Index>,
    size: crate::telemetry::Remembered,
}

impl fmt::Debug for References {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("References").field("referenced", &self.inner.referenced).finish_non_exhaustive()
    }
}

impl References {
    /// The kinds in `referenced`, watched once the controller named `controller` runs.
    pub fn new(client: Client, controller: &str, referenced: &[Referenced]) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                referenced: referenced.to_vec(),
                stores: RwLock::default(),
                index: Mutex::default(),
                size: crate::telemetry::Remembered::new(controller, "references"),
            }),
        }
    }

    /// The referenced kinds.
    pub fn referenced(&self) -> &[Referenced] {
        &self.inner.referenced
    }

    /// The object of kind `K` that `parent` names (the first, when it names several), from
    /// the cache; `None` when no such object exists (yet). Waits for the cache's first list.
    ///
    /// # Errors
    ///
    /// When `K` is not among the referenced kinds, or the controller does not run (no cache).
    pub async fn get<K: Child, P: crate::children::Parent + 'static>(
        &self,
        parent: &P,
    ) -> Result<Option<Arc<K>>> {
        Ok(self.get_all::<K, P>(parent).await?.into_iter().next())
    }

    /// Every object of kind `K` that `parent` names and that exists, from the cache.
    ///
    /// # Errors
    ///
    /// As [`References::get`].
    pub async fn get_all<K: Child, P: crate::children::Parent + 'static>(
        &self,
        parent: &P,
    ) -> Result<Vec<Arc<K>>> {
        let of_kind: Vec<&Referenced> = self
            .inner
            .referenced
            .iter()
            .filter(|referenced| (referenced.type_id)() == TypeId::of::<K>())
            .collect();
        if of_kind.is_empty() {
            return Err(Error::NotReferenced {
                kind: K::kind(&()).into_owned(),
                parent: describe(parent).into(),
                referenced: self
                    .inner
                    .referenced
                    .iter()
                    .map(|r| r.kind().kind)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let targets: Vec<Target> =
            of_kind.into_iter().flat_map(|referenced| targets_of(referenced, parent)).collect();
        let (store, synced) = self.store::<K>().ok_or_else(|| Error::NoCache {
            kind: K::kind(&()).into_owned(),
            parent: describe(parent).into(),
        })?;
        synced.wait().await;
        Ok(targets
            .into_iter()
            .filter_map(|target| {
                let reference = ObjectRef::<K>::new(&target.name);
                let reference = match target.namespace {
                    Some(namespace) => reference.within(&namespace),
                    None => reference,
                };
                store.get(&reference)
            })
            .collect())
    }

    fn store<K: Child>(&self) -> Option<(Store<K>, Synced)> {
        let stores = self.inner.stores.read().unwrap_or_else(PoisonError::into_inner);
        stores.get(&TypeId::of::<K>())?.downcast_ref::<(Store<K>, Synced)>().cloned()
    }

    fn set_store<K: Child>(&self, store: Store<K>, synced: Synced) {
        let mut stores = self.inner.stores.write().unwrap_or_else(PoisonError::into_inner);
        stores.insert(TypeId::of::<K>(), Box::new((store, synced)));
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.inner.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `parent` is as it is now: index what it names.
    pub(crate) fn parent_changed<P: Resource + 'static>(&self, parent: &P) {
        let targets =
            self.inner.referenced.iter().flat_map(|referenced| targets_of(referenced, parent)).collect();
        let mut index = self.index();
        index.set(key_of(parent), targets);
        self.inner.size.set(index.targets.len());
    }

    /// `parent` is gone: it names nothing.
    pub(crate) fn parent_gone<P: Resource>(&self, parent: &P) {
        let mut index = self.index();
        index.remove(&key_of(parent));
        self.inner.size.set(index.targets.len());
    }

    /// After a relist of the parents: only those in `live` name anything.
    pub(crate) fn retain_parents(&self, live: &HashSet<ParentKey>) {
        let mut index = self.index();
        let gone: Vec<ParentKey> =
            index.targets.keys().filter(|parent| !live.contains(*parent)).cloned().collect();
        for parent in &gone {
            index.remove(parent);
        }
        self.inner.size.set(index.targets.len());
    }

    /// The parents that name the object `K` `namespace/name`.
    fn parents_of<K: 'static>(&self, namespace: Option<String>, name: String) -> Vec<ParentKey> {
        let target = Target { kind: TypeId::of::<K>(), namespace, name };
        self.index().parents.get(&target).map(|parents| parents.iter().cloned().collect()).unwrap_or_default()
    }

    /// Starts the watches of the referenced kinds in `namespace` (all when `None`).
    pub(crate) fn watch(&self, caches: &Caches, namespace: Option<&str>) -> Vec<Triggers> {
        self.inner.referenced.iter().map(|referenced| (referenced.watch)(self, caches, namespace)).collect()
    }
}

pub(crate) fn key_of<P: Resource>(parent: &P) -> ParentKey {
    ParentKey {
        namespace: parent.meta().namespace.clone(),
        name: parent.meta().name.clone().unwrap_or_default(),
    }
}

/// The objects `parent` names through `referenced`: in its namespace, unless the kind is
/// cluster-scoped.
fn targets_of<P: Resource + 'static>(referenced: &Referenced, parent: &P) -> Vec<Target> {
    let namespace = referenced.kind().namespaced.then(|| parent.meta().namespace.clone()).flatten();
    (referenced.names)(parent)
        .into_iter()
        .map(|name| Target { kind: (referenced.type_id)(), namespace: namespace.clone(), name })
        .collect()
}

/// Watches `K` in `namespace` (all when `None`) through the process's shared watch (see
/// [`crate::shared`]), keeps its cache, and yields the parents that name an object that was
/// created, changed or deleted, including what a relist shows changed or gone since the store
/// last saw it.
fn triggers<K: Child>(references: &References, caches: &Caches, namespace: Option<&str>) -> Triggers {
    let namespace = namespace.filter(|_| is_namespaced::<K>());
    let api = api_of::<K>(references.inner.client.clone(), namespace);
    let subscription =
        caches.subscribe(&api, watcher::Config::default(), false, crate::shared::Sharded::Whole);
    references.set_store(subscription.store, subscription.synced);
    let references = references.clone();
    subscription
        .changes
        .flat_map(move |change| {
            let touched: Vec<(Option<String>, String)> = match change {
                Change::Applied { object, new: true, .. } | Change::Deleted(object) => {
                    vec![(object.namespace(), object.name_any())]
                }
                Change::Listed { gone } => {
                    gone.iter().map(|gone| (gone.namespace(), gone.name_any())).collect()
                }
                _ => Vec::new(),
            };
            let parents: Vec<ParentKey> = touched
                .into_iter()
                .flat_map(|(namespace, name)| references.parents_of::<K>(namespace, name))
                .collect();
            futures::stream::iter(parents)
        })
        .boxed()
}

/// The reconcile requests for parents of kind `R` among `triggers`.
pub(crate) fn parents<R>(triggers: Vec<Triggers>) -> BoxStream<'static, ObjectRef<R>>
where
    R: Resource<Scope: ScopeKind> + 'static,
    R::DynamicType: Default,
{
    let namespaced = is_namespaced::<R>();
    futures::stream::select_all(triggers)
        .map(move |parent| {
            let reference = ObjectRef::<R>::new(&parent.name);
            match parent.namespace {
                Some(namespace) if namespaced => reference.within(&namespace),
                _ => reference,
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::core::v1::Secret;

    use super::*;

    fn map(name: &str, secret: Option<&str>) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(name.into());
        map.metadata.namespace = Some("team-a".into());
        map.data = secret.map(|secret| [("secret".to_owned(), secret.to_owned())].into());
        map
    }

    fn by_secret() -> Referenced {
        Referenced::by::<Secret, ConfigMap, _>("data.secret", |map: &ConfigMap| {
            map.data.as_ref().and_then(|data| data.get("secret").cloned())
        })
    }

    #[test]
    fn names_come_from_a_name_an_option_or_a_list_and_empty_ones_are_left_out() {
        assert_eq!("a".names(), ["a"]);
        assert!(String::new().names().is_empty());
        assert_eq!(Some("b".to_owned()).names(), ["b"]);
        assert!(None::<String>.names().is_empty());
        assert_eq!(vec!["c".to_owned(), String::new(), "d".to_owned()].names(), ["c", "d"]);
    }

    #[tokio::test]
    async fn the_index_follows_what_each_parent_names_and_forgets_parents_that_go() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let references = References::new(client, "test", &[by_secret()]);
        references.parent_changed(&map("one", Some("creds")));
        references.parent_changed(&map("two", Some("creds")));
        references.parent_changed(&map("three", None));
        let mut parents = references.parents_of::<Secret>(Some("team-a".into()), "creds".into());
        parents.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<_> = parents.iter().map(|parent| parent.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(
            references.parents_of::<Secret>(Some("team-b".into()), "creds".into()).is_empty(),
            "another namespace"
        );
        assert!(
            references.parents_of::<ConfigMap>(Some("team-a".into()), "creds".into()).is_empty(),
            "another kind"
        );

        // "one" now names another Secret; "two" goes; a relist shows only "one".
        references.parent_changed(&map("one", Some("other")));
        references.parent_gone(&map("two", None));
        assert!(references.parents_of::<Secret>(Some("team-a".into()), "creds".into()).is_empty());
        assert_eq!(references.index().targets.len(), 1);
        references.retain_parents(&HashSet::new());
        assert_eq!(references.index().targets.len(), 0);
        assert!(references.index().parents.is_empty());
    }
}
