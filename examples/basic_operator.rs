//! The seed README's operator: a custom resource, a context with `handle_apply` and
//! `handle_cleanup`, the generic `K8sRepository`, and a reconciler.
//!
//! `cargo run --example basic_operator -- crd | demo`; no argument runs it until Ctrl-C.
use std::sync::Arc;

use async_trait::async_trait;
use kube::Api;
use kube::Client;
use kube::CustomResource;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kuberator::Context;
use kuberator::Reconcile;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::error::Result as KubeResult;
use kuberator::events::EmitEvent;
use kuberator::events::EventData;
use kuberator::events::EventRecorder;
use kuberator::k8s::K8sRepository;
use kuberator_examples::Command;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

/// A greeting that the operator logs when it appears and when it goes.
#[derive(CustomResource, Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
#[kube(group = "examples.kuberator.dev", version = "v1", kind = "Greeting", plural = "greetings", namespaced)]
pub struct GreetingSpec {
    /// What to say.
    pub message: String,
}

type GreetingRepo = K8sRepository<Greeting, StaticApiProvider<Greeting>>;

pub(crate) struct GreetingContext {
    repo: Arc<GreetingRepo>,
    events: EventRecorder,
}

#[async_trait]
impl Context<Greeting, GreetingRepo, StaticApiProvider<Greeting>> for GreetingContext {
    fn k8s_repository(&self) -> Arc<GreetingRepo> {
        Arc::clone(&self.repo)
    }

    fn finalizer(&self) -> &'static str {
        "greetings.examples.kuberator.dev/finalizer"
    }

    async fn handle_apply(&self, greeting: Arc<Greeting>) -> KubeResult<Action> {
        tracing::info!(name = %greeting.name_any(), message = %greeting.spec.message, "greeting applied");
        self.events
            .emit(&*greeting, EventData::normal("Greeted", format!("said {:?}", greeting.spec.message)))
            .await;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, greeting: Arc<Greeting>) -> KubeResult<Action> {
        tracing::info!(name = %greeting.name_any(), "greeting cleaned up");
        Ok(Action::await_change())
    }
}

pub(crate) struct GreetingReconciler {
    context: Arc<GreetingContext>,
    api: Api<Greeting>,
}

impl Reconcile<Greeting, GreetingContext, GreetingRepo, StaticApiProvider<Greeting>> for GreetingReconciler {
    fn destruct(self) -> (Api<Greeting>, Config, Arc<GreetingContext>) {
        (self.api, Config::default(), self.context)
    }
}

/// The operator, watching `namespace`.
pub(crate) fn reconciler(client: Client, namespace: &str) -> GreetingReconciler {
    let provider = StaticApiProvider::new(client.clone(), vec![namespace], CachingStrategy::Strict);
    let context = GreetingContext {
        repo: Arc::new(K8sRepository::new(provider)),
        events: EventRecorder::new(client.clone(), "greeting-operator"),
    };
    GreetingReconciler { context: Arc::new(context), api: Api::namespaced(client, namespace) }
}

/// The object the demo creates in `namespace`.
pub(crate) fn sample(namespace: &str) -> Greeting {
    Greeting {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: GreetingSpec { message: "Hello from Kuberator".into() },
    }
}

/// Whether the demo's object shows that the operator reconciled it.
pub(crate) fn reconciled(greeting: &Greeting) -> bool {
    greeting.finalizers().iter().any(|f| f == "greetings.examples.kuberator.dev/finalizer")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kuberator_test::init_tracing();
    let command = Command::from_args()?;
    kuberator_examples::serve(command, sample("default"), reconciled, |client, shutdown| {
        reconciler(client, "default").start(Some(shutdown))
    })
    .await
}
