//! Owned children: objects an operator makes for each of its objects (ConfigMaps,
//! Deployments, Services, other custom resources), kept as declared, and removed with it.
//!
//! # Expected flow
//!
//! Name the kinds an operator owns (`#[kuberator(owns = [ConfigMap, Deployment])]`, or
//! [`Owned::of`] in a [`Children`] of your own). In `handle_apply`, build each child and
//! [`apply`](Children::apply) it; then [`prune`](Children::prune) the children of a kind
//! that the spec no longer asks for. A derived operator's
//! [`Ctx`](crate::operator::Ctx) has `apply`, `prune` and `get` one call away.
//!
//! # Guarantees
//!
//! - [`apply`](Children::apply) is a server-side apply under the operator's field manager
//!   (its controller name), with `force`, so the operator owns every field it sets. The child
//!   gets a controller ownerReference to its parent (`controller: true`,
//!   `blockOwnerDeletion: true`) and the label `app.kubernetes.io/managed-by=<controller
//!   name>`; a child in the parent's namespace gets that namespace when it names none.
//! - When the parent is deleted, the garbage collector of the cluster deletes its children
//!   (after `handle_cleanup` and the finalizer, since the parent only goes then).
//! - A change or deletion of an owned child, by anyone but the operator itself, schedules a
//!   reconcile of its parent (found through the child's controller ownerReference). The
//!   operator's own applies and prunes are recognised by the resourceVersion they returned
//!   and the uid they deleted, and do not, so a settled object is not reconciled again by
//!   its own writes.
//! - Each owned kind is watched with the label selector
//!   `app.kubernetes.io/managed-by=<controller name>` (in a process of several controllers,
//!   `app.kubernetes.io/managed-by in (<every controller name>)`, one watch shared by all of
//!   them, each controller acting only on its own children) and cached whole: handlers usually read
//!   a child's status (a Deployment's ready replicas) to report their own, and the selector
//!   keeps the cache to the operator's own children, not every ConfigMap of the cluster.
//!   [`get`](Children::get) reads that cache and asks the API server only when the cache has
//!   not synced or lacks the object.
//!
//! # Caveats
//!
//! - A child that someone strips of the managed-by label leaves the cache (its parent is
//!   reconciled, and the next apply puts the label back).
//! - A child deleted while the watch is disconnected is noticed when the watch comes back:
//!   the relist is compared with what the cache held, and with what the operator applied
//!   (a child whose creation the outage swallowed was never in the cache), and the parent of
//!   every child that went (other than the ones the operator pruned) is reconciled.
//! - A prune deletes, besides the children the cache shows, the ones an earlier reconcile of
//!   the same parent applied that the cache does not show yet.
//! - When a watch event outruns the response of the apply that caused it, the watch does not
//!   wait for that response: it goes on with other children's events, and decides about this
//!   one when the response comes (at most 10 s later; a later or failed one counts as someone
//!   else's change, and reconciles the parent once more).
//! - What the operator remembers of its own writes (one entry per child it applied) leaves
//!   when the child is deleted, by anyone, the garbage collector included, or when a relist
//!   no longer shows it: the `kuberator_remembered_objects{map="children"}` gauge.
//!
//! # Errors
//!
//! [`Error::ApplyChild`], [`Error::ChildOwnedByOther`], [`Error::PruneChild`] and
//! [`Error::InvalidChild`] name the child and the parent.

mod watch;

use std::any::Any;
use std::any::TypeId;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::RwLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::Resource;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::Preconditions;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;

pub(crate) use self::watch::parents;
use crate::KubeResource;
use crate::error::Error;
use crate::error::Result;
use crate::object::ScopeKind;
use crate::object::api_of;
use crate::object::describe;
use crate::object::is_namespaced;
use crate::object::label;
use crate::shared::Synced;

/// How long a child's watch waits for the answer of an apply it reported first.
const APPLY_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

/// The label every applied child carries, with the controller name as its value.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// A kind an operator can own: any typed resource, core or custom, namespaced or
/// cluster-scoped. Implemented for every such type; nothing to implement by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an owned child: it is not a typed Kubernetes resource",
    note = "owned kinds are k8s-openapi types (ConfigMap, Deployment, ...) or #[derive(CustomResource)] kinds"
)]
pub trait Child: KubeResource<DynamicType = ()> {}

impl<K: KubeResource<DynamicType = ()>> Child for K {}

/// A parent: the kind an operator reconciles, namespaced or cluster-scoped.
pub trait Parent: Resource<DynamicType = (), Scope: ScopeKind> {}

impl<P> Parent for P where P: Resource<DynamicType = (), Scope: ScopeKind> {}

/// One owned kind, as `owns = [...]` names it: [`Owned::of::<ConfigMap>()`](Owned::of).
#[derive(Clone, Copy)]
pub struct Owned {
    type_id: fn() -> TypeId,
    kind: fn() -> OwnedKind,
    watch: fn(&Children, &crate::shared::Caches, Option<&str>) -> watch::Triggers,
}

impl Owned {
    /// The kind `K`.
    pub const fn of<K: Child>() -> Self {
        Self { type_id: TypeId::of::<K>, kind: OwnedKind::of::<K>, watch: watch::triggers::<K> }
    }

    /// What the kind is called in the API: for RBAC rules and messages.
    pub fn kind(&self) -> OwnedKind {
        (self.kind)()
    }
}

impl PartialEq for Owned {
    fn eq(&self, other: &Self) -> bool {
        (self.type_id)() == (other.type_id)()
    }
}

impl Eq for Owned {}

impl Debug for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind();
        write!(f, "Owned({})", kind.api_version_kind())
    }
}

/// The API names of an owned kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnedKind {
    /// The API group; empty for the core group.
    pub group: String,
    /// The version.
    pub version: String,
    /// The kind.
    pub kind: String,
    /// The resource, as RBAC rules name it.
    pub plural: String,
    /// Whether its objects live in a namespace.
    pub namespaced: bool,
}

impl OwnedKind {
    pub(crate) fn of<K: Child>() -> Self {
        Self {
            group: K::group(&()).into_owned(),
            version: K::version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            namespaced: is_namespaced::<K>(),
        }
    }

    fn api_version_kind(&self) -> String {
        match self.group.as_str() {
            "" => format!("{}/{}", self.version, self.kind),
            group => format!("{group}/{}/{}", self.version, self.kind),
        }
    }
}

/// The children of an operator's objects: [`apply`](Children::apply),
/// [`prune`](Children::prune) and [`get`](Children::get), and the watches of the owned kinds
/// that reconcile a parent when one of its children changes. Cheap to clone; clones share
/// the caches.
#[derive(Clone)]
pub struct Children {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    manager: String,
    owned: Vec<Owned>,
    /// A `Store<K>` per owned `K`, replaced each time the watches start.
    stores: RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// What the operator itself wrote last, per child, to tell its own writes from others'.
    written: dashmap::DashMap<ChildKey, Written>,
    /// How many entries `written` holds, as a metric.
    written_size: crate::telemetry::Remembered,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ChildKey {
    kind: TypeId,
    namespace: Option<String>,
    name: String,
}

#[derive(Debug, Clone)]
enum Written {
    /// An apply is on its way; the channel gets the resourceVersion of its answer, and
    /// closes if it fails.
    Applying(tokio::sync::watch::Receiver<Option<String>>),
    /// Applied for the parent `owner`; the server answered with `version`.
    Applied { version: String, owner: Box<OwnerReference> },
    /// Deleted by a prune; the object had this uid.
    Deleted(String),
}

impl Debug for Children {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Children")
            .field("manager", &self.inner.manager)
            .field("owned", &self.inner.owned)
            .finish_non_exhaustive()
    }
}

impl Children {
    /// Children applied by the field manager `manager` (an operator's controller name),
    /// with the kinds in `owned` watched and cached once the controller runs.
    pub fn new(client: Client, manager: impl Into<String>, owned: &[Owned]) -> Self {
        let mut kinds: Vec<Owned> = Vec::with_capacity(owned.len());
        for kind in owned {
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        let manager = manager.into();
        Self {
            inner: Arc::new(Inner {
                client,
                written_size: crate::telemetry::Remembered::new(&manager, "children"),
                manager,
                owned: kinds,
                stores: RwLock::default(),
                written: dashmap::DashMap::new(),
            }),
        }
    }

    /// The owned kinds.
    pub fn owned(&self) -> &[Owned] {
        &self.inner.owned
    }

    /// The field manager, also the value of the managed-by label.
    pub fn manager(&self) -> &str {
        &self.inner.manager
    }

    /// Server-side applies `child` as a child of `parent` (see the [module docs](self)) and
    /// returns the object as the API server stored it.
    ///
    /// It always forces ownership (kube-rs's `PatchParams::apply(manager).force()`): a field
    /// another manager set is taken over, since a child is the operator's to keep as declared.
    /// Apply with `Api::patch` yourself to share fields without forcing.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidChild`] when ownership is impossible: the parent was never stored
    ///   (no uid), the child has no name, a namespaced parent would own a child in another
    ///   namespace or a cluster-scoped child, or a cluster-scoped parent a namespaced child
    ///   without a namespace.
    /// - [`Error::ChildOwnedByOther`] when an object of that name exists and another
    ///   controller owns it.
    /// - [`Error::ApplyChild`] when the API server refuses the apply (a schema error, a
    ///   webhook, RBAC).
    pub async fn apply<P: Parent, K: Child>(&self, parent: &P, mut child: K) -> Result<K> {
        let (namespace, name) = self.place(parent, &child)?;
        let owner = owner_reference(parent)?;
        let meta = child.meta_mut();
        meta.namespace = namespace.clone();
        meta.owner_references = Some(vec![owner.clone()]);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(MANAGED_BY.to_owned(), self.inner.manager.clone());
        // What the server fills in has no place in an apply.
        meta.managed_fields = None;
        meta.resource_version = None;
        meta.uid = None;
        meta.creation_timestamp = None;
        meta.generation = None;

        let child_label = label(&K::kind(&()), namespace.as_deref(), Some(&name));
        if let Some(existing) = self.get::<K>(namespace.as_deref(), &name).await? {
            let controller =
                existing.owner_references().iter().find(|reference| reference.controller == Some(true));
            if let Some(controller) = controller.filter(|controller| controller.uid != owner.uid) {
                return Err(Error::ChildOwnedByOther {
                    child: child_label,
                    parent: describe(parent).into(),
                    owner: format!("{} {} (uid {})", controller.kind, controller.name, controller.uid).into(),
                });
            }
        }

        let api = api_of::<K>(self.inner.client.clone(), namespace.as_deref());
        let params = PatchParams::apply(&self.inner.manager).force();
        // The watch may report the write before its answer arrives; it waits for the answer.
        let key = ChildKey::of::<K>(namespace, name.clone());
        let (answered, answer) = tokio::sync::watch::channel(None);
        self.inner.written.insert(key.clone(), Written::Applying(answer));
        self.report();
        let applied = api.patch(&name, &params, &Patch::Apply(&child)).await;
        match applied.as_ref().ok().and_then(ResourceExt::resource_version) {
            Some(version) => {
                let applied = Written::Applied { version: version.clone(), owner: Box::new(owner.clone()) };
                self.inner.written.insert(key, applied);
                answered.send_replace(Some(version));
            }
            None => {
                self.inner.written.remove(&key);
                self.report();
            }
        }
        applied.map_err(|source| Error::ApplyChild {
            child: child_label,
            parent: describe(parent),
            source: Box::new(source),
        })
    }

    /// Deletes the children of kind `K` that `parent` controls and whose names are not in
    /// `keep` (the ones applied this time); returns the names it deleted. Each delete is
    /// conditional on the child's uid, so a child of the same name made meanwhile stays.
    ///
    /// # Errors
    ///
    /// [`Error::PruneChild`] when listing or a delete is refused (a child already gone is not
    /// an error); [`Error::InvalidChild`] when the parent was never stored.
    pub async fn prune<P: Parent, K: Child>(
        &self,
        parent: &P,
        keep: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Vec<String>> {
        let owner = owner_reference(parent)?;
        let keep: HashSet<String> = keep.into_iter().map(|name| name.as_ref().to_owned()).collect();
        let namespace = parent.meta().namespace.clone().filter(|_| is_namespaced::<K>());
        let controlled = |child: &K| {
            child
                .owner_references()
                .iter()
                .any(|reference| reference.controller == Some(true) && reference.uid == owner.uid)
        };
        let children: Vec<Arc<K>> = match self.synced_store::<K>() {
            Some(store) => store.state_filter(|child| {
                controlled(child) && (namespace.is_none() || child.meta().namespace == namespace)
            }),
            None => {
                let api = api_of::<K>(self.inner.client.clone(), namespace.as_deref());
                let selector = format!("{MANAGED_BY}={}", self.inner.manager);
                let listed = api.list(&ListParams::default().labels(&selector)).await.map_err(|source| {
                    Error::PruneChild {
                        child: format!("{} children", K::kind(&())),
                        parent: describe(parent),
                        source: Box::new(source),
                    }
                })?;
                listed.items.into_iter().filter(|child| controlled(child)).map(Arc::new).collect()
            }
        };

        let mut deleted =
            self.prune_unseen::<K>(parent, &owner.uid, namespace.as_deref(), &keep, &children).await?;
        for child in children {
            let name = child.name_any();
            if keep.contains(&name) {
                continue;
            }
            let child_namespace = child.meta().namespace.clone();
            let api = api_of::<K>(self.inner.client.clone(), child_namespace.as_deref());
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: child.uid(), resource_version: None }),
                ..DeleteParams::background()
            };
            if let Some(uid) = child.uid() {
                self.inner
                    .written
                    .insert(ChildKey::of::<K>(child_namespace.clone(), name.clone()), Written::Deleted(uid));
                self.report();
            }
            match api.delete(&name, &params).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(source) => {
                    return Err(Error::PruneChild {
                        child: describe(&*child),
                        parent: describe(parent),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(deleted)
    }

    /// The children of kind `K` that an earlier reconcile of `parent` (uid `owner`) applied
    /// and the cache does not show yet (`cached`): deleted too, each on the condition that it
    /// is still as applied (its resourceVersion). Else a prune that runs before the watch
    /// brings such a child would miss it, and its event, the operator's own write, would not
    /// reconcile the parent again: it would stay until the parent's next change.
    async fn prune_unseen<K: Child>(
        &self,
        parent: &impl Parent,
        owner: &str,
        namespace: Option<&str>,
        keep: &HashSet<String>,
        cached: &[Arc<K>],
    ) -> Result<Vec<String>> {
        let mut unseen: Vec<(Option<String>, String, String)> = self
            .inner
            .written
            .iter()
            .filter_map(|entry| {
                let key = entry.key();
                let Written::Applied { version, owner: applied_for } = entry.value() else { return None };
                let mine = key.kind == TypeId::of::<K>()
                    && applied_for.uid == owner
                    && (namespace.is_none() || key.namespace.as_deref() == namespace)
                    && !keep.contains(&key.name);
                let in_cache = cached
                    .iter()
                    .any(|child| child.name_any() == key.name && child.meta().namespace == key.namespace);
                (mine && !in_cache).then(|| (key.namespace.clone(), key.name.clone(), version.clone()))
            })
            .collect();
        // In name order, not the map's: a run is the same run in any process.
        unseen.sort();
        let mut deleted = Vec::new();
        for (child_namespace, name, version) in unseen {
            let api = api_of::<K>(self.inner.client.clone(), child_namespace.as_deref());
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: None, resource_version: Some(version) }),
                ..DeleteParams::background()
            };
            match api.delete(&name, &params).await {
                Ok(gone) => {
                    if let Some(uid) = gone.left().and_then(|child| child.uid()) {
                        let key = ChildKey::of::<K>(child_namespace, name.clone());
                        self.inner.written.insert(key, Written::Deleted(uid));
                        self.report();
                    }
                    deleted.push(name);
                }
                // Gone, or changed since by someone else: that change reconciles the parent.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(source) => {
                    return Err(Error::PruneChild {
                        child: label(&K::kind(&()), child_namespace.as_deref(), Some(&name)),
                        parent: describe(parent),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes every child of kind `K` that `parent` controls: [`prune`](Children::prune)
    /// keeping none, without having to name the type of an empty list.
    ///
    /// # Errors
    ///
    /// As [`prune`](Children::prune).
    pub async fn prune_all<P: Parent, K: Child>(&self, parent: &P) -> Result<Vec<String>> {
        self.prune::<P, K>(parent, std::iter::empty::<&str>()).await
    }

    /// The object `name` of kind `K` (in `namespace`; `None` for a cluster-scoped kind), or
    /// `None` when there is none. An owned kind is read from the cache when it holds the
    /// object, else from the API server.
    ///
    /// kube-rs names the `Option`-returning read `Api::get_opt` (its `get` fails on a missing
    /// object). Here there is only one read, and a child that is not there yet is the usual
    /// case, not an error, so it keeps the short name.
    ///
    /// # Errors
    ///
    /// [`Error::Kube`] when the API server is asked and the read fails.
    pub async fn get<'a, K: Child>(
        &self,
        namespace: impl Into<Option<&'a str>>,
        name: &str,
    ) -> Result<Option<Arc<K>>> {
        let namespace = namespace.into().filter(|_| is_namespaced::<K>());
        if let Some(store) = self.synced_store::<K>() {
            let key = ObjectRef::<K>::new(name);
            let key = match namespace {
                Some(namespace) => key.within(namespace),
                None => key,
            };
            if let Some(cached) = store.get(&key) {
                return Ok(Some(cached));
            }
        }
        let api = api_of::<K>(self.inner.client.clone(), namespace);
        Ok(api.get_opt(name).await.map_err(|error| Error::Kube(Box::new(error)))?.map(Arc::new))
    }

    /// The cache of `K`, once it has listed everything; `None` when `K` is not owned or the
    /// watch has not synced.
    fn synced_store<K: Child>(&self) -> Option<Store<K>> {
        let stores = self.inner.stores.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (store, synced) = stores.get(&TypeId::of::<K>())?.downcast_ref::<(Store<K>, Synced)>()?;
        synced.is_synced().then(|| store.clone())
    }

    fn set_store<K: Child>(&self, store: Store<K>, synced: Synced) {
        let mut stores = self.inner.stores.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.insert(TypeId::of::<K>(), Box::new((store, synced)));
    }

    /// Where `child` goes: its namespace (the parent's by default) and name, or why it
    /// cannot be a child of `parent`.
    fn place<P: Parent, K: Child>(&self, parent: &P, child: &K) -> Result<(Option<String>, String)> {
        let invalid = |why: &'static str| Error::InvalidChild {
            child: label(&K::kind(&()), child.meta().namespace.as_deref(), child.meta().name.as_deref()),
            parent: describe(parent).into(),
            why,
        };
        let name = child.meta().name.clone().ok_or_else(|| invalid("the child has no metadata.name"))?;
        let parent_namespace = parent.meta().namespace.clone().filter(|_| is_namespaced::<P>());
        let namespace = match (is_namespaced::<K>(), parent_namespace) {
            (false, Some(_)) => {
                return Err(invalid(
                    "a cluster-scoped object cannot be owned by a namespaced one (the garbage collector would delete it)",
                ));
            }
            (false, None) => None,
            (true, Some(parent_namespace)) => {
                let namespace = child.meta().namespace.clone().unwrap_or_else(|| parent_namespace.clone());
                if namespace != parent_namespace {
                    return Err(invalid(
                        "an owner and its children must share a namespace; leave metadata.namespace empty or set the parent's",
                    ));
                }
                Some(namespace)
            }
            (true, None) => Some(child.meta().namespace.clone().ok_or_else(|| {
                invalid("a namespaced child of a cluster-scoped parent needs metadata.namespace")
            })?),
        };
        Ok((namespace, name))
    }

    /// Whether the operator itself made this change of a child, as last written by
    /// [`apply`](Children::apply) or [`prune`](Children::prune): yes, no, or not known until
    /// the answer of an apply in flight comes. Never waits.
    fn own_write<K: Child>(&self, child: &K, deleted: bool) -> Own {
        let key = ChildKey::of::<K>(child.meta().namespace.clone(), child.name_any());
        let Some(written) = self.inner.written.get(&key).map(|written| written.clone()) else {
            return Own::No;
        };
        match written {
            Written::Applying(answer) if !deleted => {
                let Some(version) = child.resource_version() else { return Own::No };
                Own::Pending(Box::pin(async move {
                    let mut answer = answer;
                    let answered = tokio::time::timeout(APPLY_ANSWER, answer.wait_for(Option::is_some)).await;
                    // Failed or slow: count it as someone else's change, and reconcile.
                    matches!(answered, Ok(Ok(answered)) if answered.as_deref() == Some(&version))
                }))
            }
            Written::Applying(_) => Own::No,
            Written::Applied { version, .. } => {
                if !deleted && child.resource_version().as_deref() == Some(&version) {
                    Own::Yes
                } else {
                    Own::No
                }
            }
            Written::Deleted(uid) => {
                if deleted && child.uid().as_deref() == Some(&uid) {
                    Own::Yes
                } else {
                    Own::No
                }
            }
        }
    }

    /// The child `K` `namespace/name` is gone: what the operator wrote of it is forgotten,
    /// unless an apply of it is on its way (a new child of that name).
    fn forget<K: Child>(&self, namespace: Option<String>, name: String) {
        let key = ChildKey::of::<K>(namespace, name);
        self.inner.written.remove_if(&key, |_, written| !matches!(written, Written::Applying(_)));
        self.report();
    }

    /// After a relist of `K`: the children the operator applied that `store` (now as listed)
    /// does not hold, and so went while the watch was down, before it ever showed them (a
    /// hand delete during an outage that also swallowed their creation). Each is forgotten;
    /// the child's namespace and its parent are returned, for the parent to be reconciled.
    pub(super) fn applied_unlisted<K: Child>(
        &self,
        store: &Store<K>,
    ) -> Vec<(Option<String>, OwnerReference)> {
        let mut unlisted: Vec<(ChildKey, OwnerReference)> = self
            .inner
            .written
            .iter()
            .filter_map(|entry| {
                let key = entry.key();
                let Written::Applied { owner, .. } = entry.value() else { return None };
                let mut child = ObjectRef::<K>::new(&key.name);
                if let Some(namespace) = &key.namespace {
                    child = child.within(namespace);
                }
                (key.kind == TypeId::of::<K>() && store.get(&child).is_none())
                    .then(|| (key.clone(), (**owner).clone()))
            })
            .collect();
        // In name order, not the map's: a run is the same run in any process.
        unlisted.sort_by(|(a, _), (b, _)| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for (key, _) in &unlisted {
            self.inner.written.remove_if(key, |_, written| matches!(written, Written::Applied { .. }));
        }
        self.report();
        unlisted.into_iter().map(|(key, owner)| (key.namespace, owner)).collect()
    }

    /// Whether the operator itself deleted `K` `namespace/name` (with a prune) and it is not
    /// known to be gone yet.
    fn pruned<K: Child>(&self, namespace: Option<String>, name: String) -> bool {
        let key = ChildKey::of::<K>(namespace, name);
        self.inner.written.get(&key).is_some_and(|written| matches!(*written, Written::Deleted(_)))
    }

    fn report(&self) {
        self.inner.written_size.set(self.inner.written.len());
    }

    /// The trigger streams of every owned kind, watched in `namespace` (every namespace when
    /// `None`), each filling its cache.
    pub(crate) fn watch(
        &self,
        caches: &crate::shared::Caches,
        namespace: Option<&str>,
    ) -> Vec<watch::Triggers> {
        self.inner.owned.iter().map(|owned| (owned.watch)(self, caches, namespace)).collect()
    }
}

/// Whether a child's change is the operator's own write.
enum Own {
    Yes,
    No,
    /// Known when the answer of the apply in flight comes: the future says.
    Pending(futures::future::BoxFuture<'static, bool>),
}

impl ChildKey {
    fn of<K: 'static>(namespace: Option<String>, name: String) -> Self {
        Self { kind: TypeId::of::<K>(), namespace, name }
    }
}

/// The controller ownerReference to `parent`, with `blockOwnerDeletion`.
fn owner_reference<P: Parent>(
    parent: &P,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    let mut reference = parent.controller_owner_ref(&()).ok_or_else(|| Error::InvalidChild {
        child: "a child".to_owned(),
        parent: describe(parent).into(),
        why: "the parent has no metadata.uid; only an object read from the API server can own children",
    })?;
    reference.block_owner_deletion = Some(true);
    Ok(reference)
}
