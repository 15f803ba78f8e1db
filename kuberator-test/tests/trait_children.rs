//! Owned children through the trait-level API: a hand-written `Context` that holds a
//! `Children`, and a `Reconcile` that returns it, so the child kind is watched and a child
//! deleted by hand is made again.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kuberator::Context;
use kuberator::Reconcile;
use kuberator::TryResource as _;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::children::Children;
use kuberator::children::Owned;
use kuberator::error::Result;
use kuberator::k8s::K8sRepository;
use kuberator_test::Background;
use kuberator_test::wait_for;
use support::Probe;
use support::ProbeSpec;

type Repository = K8sRepository<Probe, StaticApiProvider<Probe>>;

struct ChildContext {
    repository: std::sync::Arc<Repository>,
    children: Children,
}

#[async_trait]
impl Context<Probe, Repository, StaticApiProvider<Probe>> for ChildContext {
    fn k8s_repository(&self) -> std::sync::Arc<Repository> {
        std::sync::Arc::clone(&self.repository)
    }

    fn finalizer(&self) -> &'static str {
        support::FINALIZER
    }

    async fn handle_apply(&self, probe: std::sync::Arc<Probe>) -> Result<Action> {
        let child = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-child", probe.try_name()?)),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("message".to_owned(), probe.spec.message.clone())])),
            ..ConfigMap::default()
        };
        self.children.apply(&*probe, child).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _probe: std::sync::Arc<Probe>) -> Result<Action> {
        Ok(Action::await_change())
    }
}

struct ChildReconciler {
    api: Api<Probe>,
    context: std::sync::Arc<ChildContext>,
}

impl Reconcile<Probe, ChildContext, Repository, StaticApiProvider<Probe>> for ChildReconciler {
    fn destruct(self) -> (Api<Probe>, Config, std::sync::Arc<ChildContext>) {
        (self.api, Config::default(), self.context)
    }

    fn children(&self) -> Option<Children> {
        Some(self.context.children.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_context_owns_children_too() {
    let (client, namespace) = kuberator_test::test_env("trait-children").await;
    kuberator_test::install_crd::<Probe>(&client).await.unwrap();
    let provider = StaticApiProvider::new(client.clone(), [namespace.as_str()], CachingStrategy::Strict);
    let children = Children::new(client.clone(), "trait-children", &[Owned::of::<ConfigMap>()]);
    let context = ChildContext { repository: std::sync::Arc::new(K8sRepository::new(provider)), children };
    let reconciler = ChildReconciler {
        api: Api::namespaced(client.clone(), &namespace),
        context: std::sync::Arc::new(context),
    };
    let operator = Background::spawn(move |shutdown| reconciler.start(Some(shutdown)));

    let probes: Api<Probe> = Api::namespaced(client.clone(), &namespace);
    let spec = ProbeSpec { message: "from a trait".into(), ..ProbeSpec::default() };
    probes.create(&PostParams::default(), &Probe::new("owner", spec)).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let minute = Duration::from_secs(60);
    let child =
        wait_for(&maps, "owner-child", minute, "the child", |map| map.is_some()).await.unwrap().unwrap();
    assert_eq!(
        child.labels().get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("trait-children")
    );

    maps.delete("owner-child", &DeleteParams::default()).await.unwrap();
    wait_for(&maps, "owner-child", minute, "the child to be made again", |made| {
        made.is_some_and(|made| made.uid() != child.uid())
    })
    .await
    .unwrap();

    probes.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for(&maps, "owner-child", minute, "the garbage collector to delete the child", |map| map.is_none())
        .await
        .unwrap();
    operator.stop(Duration::from_secs(30)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
