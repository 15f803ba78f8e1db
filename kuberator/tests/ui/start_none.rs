// The seed README's `reconciler.start(None)`: the shutdown future's type cannot be inferred
// (E0283). Write `start(None::<kuberator::NoShutdown>)`, or `run()`.
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kube::Api;
use kuberator::cache::StaticApiProvider;
use kuberator::k8s::K8sRepository;
use kuberator::Context;
use kuberator::Reconcile;

type Repo = K8sRepository<ConfigMap, StaticApiProvider<ConfigMap>>;

struct Ctx(Arc<Repo>);

#[async_trait]
impl Context<ConfigMap, Repo, StaticApiProvider<ConfigMap>> for Ctx {
    fn k8s_repository(&self) -> Arc<Repo> {
        Arc::clone(&self.0)
    }
    fn finalizer(&self) -> &'static str {
        "configmaps.example.com/finalizer"
    }
    async fn handle_apply(&self, _: Arc<ConfigMap>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
    async fn handle_cleanup(&self, _: Arc<ConfigMap>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

struct Reconciler(Api<ConfigMap>, Arc<Ctx>);

impl Reconcile<ConfigMap, Ctx, Repo, StaticApiProvider<ConfigMap>> for Reconciler {
    fn destruct(self) -> (Api<ConfigMap>, Config, Arc<Ctx>) {
        (self.0, Config::default(), self.1)
    }
}

async fn start(reconciler: Reconciler) {
    reconciler.start(None).await;
}

fn main() {}
