//! An operator with its own error type: errors convert into Kuberator's with `?`, show up
//! in the object's status through `AsStatusError` / `WithStatusError`, and are reported as
//! a Warning Event and retried.
//!
//! `cargo run --example error_handling -- crd | demo`; no argument runs it until Ctrl-C.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::Api;
use kube::Client;
use kube::CustomResource;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kuberator::AsStatusError;
use kuberator::Context;
use kuberator::Finalize;
use kuberator::ObserveGeneration;
use kuberator::Reconcile;
use kuberator::WithStatusError;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::error::Error as KubeError;
use kuberator::k8s::K8sRepository;
use kuberator_examples::Command;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

/// A storage bucket of some size.
#[derive(CustomResource, Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
#[kube(
    group = "examples.kuberator.dev",
    version = "v1",
    kind = "Bucket",
    namespaced,
    status = "BucketStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct BucketSpec {
    /// Size in GiB; at most 100.
    pub size_gib: u32,
}

/// The bucket's state, and the error that keeps it from being ready.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    /// `Ready` or `Failed`.
    pub phase: Option<String>,
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Why the bucket is not ready.
    pub error: Option<BucketStatusError>,
}

/// An error as it appears in status.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
pub struct BucketStatusError {
    /// A machine-readable reason.
    pub reason: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// This operator's own errors.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The spec asks for more than the quota.
    #[error("bucket {name} asks for {asked} GiB but the quota is {quota} GiB; lower spec.sizeGib")]
    QuotaExceeded {
        /// The bucket.
        name: String,
        /// What the spec asks for.
        asked: u32,
        /// The quota.
        quota: u32,
    },
    /// A Kubernetes API call failed.
    #[error("Kube error: {0}")]
    Kube(#[from] kube::Error),
}

impl From<BucketError> for KubeError {
    fn from(error: BucketError) -> KubeError {
        KubeError::Anyhow(anyhow::anyhow!(error))
    }
}

impl AsStatusError<BucketStatusError> for BucketError {
    fn as_status_error(&self) -> BucketStatusError {
        let reason = match self {
            BucketError::QuotaExceeded { .. } => "QuotaExceeded",
            BucketError::Kube(_) => "ApiError",
        };
        BucketStatusError { reason: reason.into(), message: self.to_string() }
    }
}

impl WithStatusError<BucketError, BucketStatusError> for BucketStatus {
    fn add(&mut self, error: BucketStatusError) {
        self.error = Some(error);
    }
}

impl ObserveGeneration for BucketStatus {
    fn add(&mut self, observed_generation: i64) {
        self.observed_generation = Some(observed_generation);
    }
}

const QUOTA_GIB: u32 = 100;

type BucketRepo = K8sRepository<Bucket, StaticApiProvider<Bucket>>;

pub(crate) struct BucketContext {
    repo: Arc<BucketRepo>,
}

impl BucketContext {
    fn provision(&self, bucket: &Bucket) -> Result<(), BucketError> {
        if bucket.spec.size_gib > QUOTA_GIB {
            return Err(BucketError::QuotaExceeded {
                name: bucket.name_any(),
                asked: bucket.spec.size_gib,
                quota: QUOTA_GIB,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Context<Bucket, BucketRepo, StaticApiProvider<Bucket>> for BucketContext {
    fn k8s_repository(&self) -> Arc<BucketRepo> {
        Arc::clone(&self.repo)
    }

    fn finalizer(&self) -> &'static str {
        "buckets.examples.kuberator.dev/finalizer"
    }

    async fn handle_apply(&self, bucket: Arc<Bucket>) -> kuberator::Result<Action> {
        match self.provision(&bucket) {
            Ok(()) => {
                let status = BucketStatus { phase: Some("Ready".into()), ..BucketStatus::default() };
                self.repo.update_status_with_error(&bucket, status, None::<&BucketError>).await?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            Err(error) => {
                let status = BucketStatus { phase: Some("Failed".into()), ..BucketStatus::default() };
                self.repo.update_status_with_error(&bucket, status, Some(&error)).await?;
                // Returned too, so the controller logs it, publishes a Warning Event and retries.
                Err(error.into())
            }
        }
    }

    async fn handle_cleanup(&self, bucket: Arc<Bucket>) -> kuberator::Result<Action> {
        tracing::info!(name = %bucket.name_any(), "bucket deleted");
        Ok(Action::await_change())
    }
}

pub(crate) struct BucketReconciler {
    context: Arc<BucketContext>,
    api: Api<Bucket>,
}

impl Reconcile<Bucket, BucketContext, BucketRepo, StaticApiProvider<Bucket>> for BucketReconciler {
    fn destruct(self) -> (Api<Bucket>, Config, Arc<BucketContext>) {
        (self.api, Config::default(), self.context)
    }

    fn requeue_after_error_seconds() -> Option<Duration> {
        Some(Duration::from_secs(30))
    }
}

/// The operator, watching `namespace`.
pub(crate) fn reconciler(client: Client, namespace: &str) -> BucketReconciler {
    let provider = StaticApiProvider::new(client.clone(), vec![namespace], CachingStrategy::Strict);
    let context = BucketContext { repo: Arc::new(K8sRepository::new(provider)) };
    BucketReconciler { context: Arc::new(context), api: Api::namespaced(client, namespace) }
}

/// The object the demo creates in `namespace`.
pub(crate) fn sample(namespace: &str) -> Bucket {
    Bucket {
        metadata: ObjectMeta {
            name: Some("too-big".into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: BucketSpec { size_gib: 500 },
        status: None,
    }
}

/// Whether the demo's object shows that the operator reconciled it.
pub(crate) fn reconciled(bucket: &Bucket) -> bool {
    bucket.status.as_ref().is_some_and(|status| status.error.is_some())
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
