//! The watches of owned kinds: each fills the kind's cache and maps a child's change to its
//! parent through the child's controller ownerReference.

use futures::StreamExt as _;
use futures::stream::BoxStream;
use kube::Resource;
use kube::ResourceExt as _;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Child;
use super::Children;
use super::MANAGED_BY;
use super::Own;
use crate::decode::Watched;
use crate::object::ScopeKind;
use crate::object::api_of;
use crate::object::is_namespaced;
use crate::shared::Caches;
use crate::shared::Change;

/// The parents to reconcile, as the children's watches report them.
pub(crate) type Triggers = BoxStream<'static, Trigger>;

/// A child's controller, as its ownerReference names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    api_version: String,
    kind: String,
    name: String,
    /// The child's namespace; the parent's too, when the parent is namespaced.
    namespace: Option<String>,
}

/// Watches `K`'s children of this operator in `namespace` (all when `None`) through the
/// process's shared watch (see [`crate::shared`]), keeps the cache of `K`, and yields the
/// parent of every child that someone other than the operator changed or deleted: including
/// children a (re)list shows changed since the operator wrote them, and children a relist no
/// longer shows (deleted while the watch was down).
///
/// Nothing here waits: a child whose change may be the echo of an apply still in flight is
/// decided when that apply's answer comes, beside the stream, so one slow apply never holds
/// up another child's event (or the cache).
pub(super) fn triggers<K: Child>(children: &Children, caches: &Caches, namespace: Option<&str>) -> Triggers {
    let namespace = namespace.filter(|_| is_namespaced::<K>());
    let api = api_of::<K>(children.inner.client.clone(), namespace);
    let manager = children.inner.manager.clone();
    let config = watcher::Config::default().labels(&caches.children_selector(MANAGED_BY, &manager));
    let subscription = caches.subscribe(&api, config, false, crate::shared::Sharded::Children);
    let store = subscription.store.clone();
    children.set_store(subscription.store, subscription.synced);
    let (decided, later) = futures::channel::mpsc::unbounded::<Trigger>();
    let children = children.clone();
    // Children of the process's other controllers share the watch, not the decisions.
    let mine = move |child: &K| child.labels().get(MANAGED_BY) == Some(&manager);
    let events = subscription
        .changes
        .map(move |change| {
            let mut triggers = Vec::new();
            match change {
                Change::Applied { object: Watched::Decoded(child), .. } if mine(&child) => {
                    match children.own_write(&child, false) {
                        Own::Yes => {}
                        Own::No => triggers.extend(controller_of(&child)),
                        Own::Pending(own) => {
                            let (trigger, decided) = (controller_of(&child), decided.clone());
                            tokio::spawn(async move {
                                if let (false, Some(trigger)) = (own.await, trigger) {
                                    let _ = decided.unbounded_send(trigger);
                                }
                            });
                        }
                    }
                }
                Change::Deleted(Watched::Decoded(child)) if mine(&child) => {
                    if matches!(children.own_write(&child, true), Own::No) {
                        triggers.extend(controller_of(&child));
                    }
                    children.forget::<K>(child.namespace(), child.name_any());
                }
                // What the relist did not show went while the watch was down.
                Change::Listed { gone } => {
                    for child in gone.iter().filter(|child| mine(child)) {
                        let (namespace, name) = (child.namespace(), child.name_any());
                        if !children.pruned::<K>(namespace.clone(), name.clone()) {
                            triggers.extend(controller_of(&**child));
                        }
                        children.forget::<K>(namespace, name);
                    }
                    // Applied, never shown (its creation was lost with the watch), and gone.
                    for (namespace, owner) in children.applied_unlisted::<K>(&store) {
                        triggers.push(Trigger {
                            api_version: owner.api_version,
                            kind: owner.kind,
                            name: owner.name,
                            namespace,
                        });
                    }
                }
                _ => {}
            }
            futures::stream::iter(triggers)
        })
        .flatten();
    futures::stream::select(events, later).boxed()
}

fn controller_of<K: Resource>(child: &K) -> Option<Trigger> {
    let controller = child.owner_references().iter().find(|reference| reference.controller == Some(true))?;
    Some(Trigger {
        api_version: controller.api_version.clone(),
        kind: controller.kind.clone(),
        name: controller.name.clone(),
        namespace: child.namespace(),
    })
}

/// The reconcile requests for parents of kind `R` among `triggers`; children controlled by
/// other kinds are none of this operator's business.
pub(crate) fn parents<R>(triggers: Vec<Triggers>) -> BoxStream<'static, ObjectRef<R>>
where
    R: Resource<Scope: ScopeKind> + 'static,
    R::DynamicType: Default,
{
    let dynamic = R::DynamicType::default();
    let (api_version, kind) = (R::api_version(&dynamic).into_owned(), R::kind(&dynamic).into_owned());
    let namespaced = is_namespaced::<R>();
    futures::stream::select_all(triggers)
        .filter_map(move |trigger| {
            let ours = trigger.api_version == api_version && trigger.kind == kind;
            let parent = ours.then(|| {
                let parent = ObjectRef::<R>::new(&trigger.name);
                match trigger.namespace {
                    Some(namespace) if namespaced => parent.within(&namespace),
                    _ => parent,
                }
            });
            futures::future::ready(parent)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn owned_by(kind: &str, api_version: &str, controller: bool) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.name = Some("child".into());
        map.metadata.namespace = Some("team-a".into());
        map.metadata.owner_references = Some(vec![OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "parent".into(),
            uid: "1234".into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }]);
        map
    }

    #[tokio::test]
    async fn a_child_triggers_its_controller_of_the_operators_kind_only() {
        let triggers: Vec<Triggers> = vec![
            futures::stream::iter(
                [
                    owned_by("Deployment", "apps/v1", true),
                    owned_by("Deployment", "apps/v1", false),
                    owned_by("Deployment", "v1", true),
                ]
                .iter()
                .filter_map(controller_of)
                .collect::<Vec<_>>(),
            )
            .boxed(),
        ];
        let parents: Vec<ObjectRef<Deployment>> = parents::<Deployment>(triggers).collect().await;
        assert_eq!(parents, vec![ObjectRef::new("parent").within("team-a")]);
    }
}
