//! The watches of owned kinds: each fills the kind's cache and maps a child's change to its
//! parent through the child's controller ownerReference.

use futures::StreamExt as _;
use futures::stream::BoxStream;
use kube::Resource;
use kube::ResourceExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Child;
use super::Children;
use super::MANAGED_BY;
use crate::object::ScopeKind;
use crate::object::api_of;
use crate::object::is_namespaced;

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

/// Watches `K`'s children of this operator in `namespace` (all when `None`), fills the cache
/// of `K`, and yields the parent of every child that someone other than the operator changed
/// or deleted, including children a (re)list shows changed since the operator wrote them.
pub(super) fn triggers<K: Child>(children: &Children, namespace: Option<&str>) -> Triggers {
    let namespace = namespace.filter(|_| is_namespaced::<K>());
    let api = api_of::<K>(children.inner.client.clone(), namespace);
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY}={}", children.inner.manager));
    let (reader, writer) = reflector::store();
    children.set_store(reader);
    let children = children.clone();
    watcher::watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .filter_map(move |event| {
            let children = children.clone();
            async move {
                match event {
                    Ok(watcher::Event::Apply(child)) => {
                        let own = children.own_write(&child, false).await;
                        controller_of(&child).filter(|_| !own)
                    }
                    Ok(watcher::Event::Delete(child)) => {
                        let own = children.own_write(&child, true).await;
                        controller_of(&child).filter(|_| !own)
                    }
                    // A (re)list: a child as the operator last wrote it is no news.
                    Ok(watcher::Event::InitApply(child)) => {
                        let own = children.own_write(&child, false).await;
                        controller_of(&child).filter(|_| !own)
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                    Err(error) => {
                        let error = crate::error::report(&error);
                        tracing::warn!(kind = %K::kind(&()), %error, "watch of owned children failed; retrying");
                        None
                    }
                }
            }
        })
        .boxed()
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
