//! An operator that writes status with the observed generation: `Echo` objects get their
//! message echoed into `.status.echoed`, and `.status.observedGeneration` tells which spec
//! the status describes.
//!
//! `cargo run --example with_status -- crd | demo`; no argument runs it until Ctrl-C.
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
use kuberator::Finalize;
use kuberator::ObserveGeneration;
use kuberator::Reconcile;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::k8s::K8sRepository;
use kuberator_examples::Command;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

/// A message to echo into status.
#[derive(CustomResource, Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
#[kube(
    group = "examples.kuberator.dev",
    version = "v1",
    kind = "Echo",
    plural = "echoes",
    namespaced,
    status = "EchoStatus",
    printcolumn = r#"{"name":"Echoed","type":"string","jsonPath":".status.echoed"}"#
)]
pub struct EchoSpec {
    /// The message.
    pub message: String,
}

/// What the operator last did, and for which generation of the spec.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EchoStatus {
    /// The message, as the operator saw it.
    pub echoed: Option<String>,
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
}

impl ObserveGeneration for EchoStatus {
    fn add(&mut self, observed_generation: i64) {
        self.observed_generation = Some(observed_generation);
    }
}

type EchoRepo = K8sRepository<Echo, StaticApiProvider<Echo>>;

pub(crate) struct EchoContext {
    repo: Arc<EchoRepo>,
}

#[async_trait]
impl Context<Echo, EchoRepo, StaticApiProvider<Echo>> for EchoContext {
    fn k8s_repository(&self) -> Arc<EchoRepo> {
        Arc::clone(&self.repo)
    }

    fn finalizer(&self) -> &'static str {
        "echoes.examples.kuberator.dev/finalizer"
    }

    async fn handle_apply(&self, echo: Arc<Echo>) -> kuberator::Result<Action> {
        let status = EchoStatus { echoed: Some(echo.spec.message.clone()), ..EchoStatus::default() };
        self.repo.update_status(&echo, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, echo: Arc<Echo>) -> kuberator::Result<Action> {
        tracing::info!(name = %echo.name_any(), "echo removed");
        Ok(Action::await_change())
    }
}

pub(crate) struct EchoReconciler {
    context: Arc<EchoContext>,
    api: Api<Echo>,
}

impl Reconcile<Echo, EchoContext, EchoRepo, StaticApiProvider<Echo>> for EchoReconciler {
    fn destruct(self) -> (Api<Echo>, Config, Arc<EchoContext>) {
        (self.api, Config::default(), self.context)
    }
}

/// The operator, watching `namespace`.
pub(crate) fn reconciler(client: Client, namespace: &str) -> EchoReconciler {
    let provider = StaticApiProvider::new(client.clone(), vec![namespace], CachingStrategy::Strict);
    let context = EchoContext { repo: Arc::new(K8sRepository::new(provider)) };
    EchoReconciler { context: Arc::new(context), api: Api::namespaced(client, namespace) }
}

/// The object the demo creates in `namespace`.
pub(crate) fn sample(namespace: &str) -> Echo {
    Echo {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: EchoSpec { message: "Hello from Kuberator".into() },
        status: None,
    }
}

/// Whether the demo's object shows that the operator reconciled it.
pub(crate) fn reconciled(echo: &Echo) -> bool {
    echo.status.as_ref().and_then(|status| status.observed_generation) == echo.metadata.generation
        && echo.status.as_ref().is_some_and(|status| status.echoed.is_some())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kuberator_test::init_tracing();
    let command = Command::from_args()?;
    kuberator_examples::serve(command, sample("default"), reconciled, |client, shutdown| {
        reconciler(client, "default").start_concurrent(Some(4), Some(shutdown))
    })
    .await
}
