//! The finalizer flow and status writes, checked request by request against a mock API
//! server: what is sent, in which order, and what the handlers see.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use http::Method;
use http::Request;
use http::Response;
use http_body_util::BodyExt;
use kube::Client;
use kube::CustomResource;
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use kuberator::AsStatusError;
use kuberator::Context;
use kuberator::Finalize;
use kuberator::ObserveGeneration;
use kuberator::WithStatusError;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::error::Error;
use kuberator::k8s::K8sRepository;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use serde_json::json;
use tower_test::mock::Handle;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Bucket", namespaced, status = "BucketStatus")]
pub struct BucketSpec {
    pub size: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    pub phase: Option<String>,
    pub observed_generation: Option<i64>,
    pub error: Option<String>,
}

impl ObserveGeneration for BucketStatus {
    fn add(&mut self, observed_generation: i64) {
        self.observed_generation = Some(observed_generation);
    }
}

#[derive(Debug)]
struct QuotaExceeded(u32);

impl AsStatusError<String> for QuotaExceeded {
    fn as_status_error(&self) -> String {
        format!("quota of {} exceeded", self.0)
    }
}

impl WithStatusError<QuotaExceeded, String> for BucketStatus {
    fn add(&mut self, error: String) {
        self.error = Some(error);
    }
}

const FINALIZER: &str = "buckets.example.com/cleanup";

type Repo = K8sRepository<Bucket, StaticApiProvider<Bucket>>;

/// A context that records which handler ran, and can be told to fail.
struct Recording {
    repo: Arc<Repo>,
    calls: Mutex<Vec<String>>,
    fail_cleanup: bool,
}

#[async_trait]
impl Context<Bucket, Repo, StaticApiProvider<Bucket>> for Recording {
    fn k8s_repository(&self) -> Arc<Repo> {
        Arc::clone(&self.repo)
    }

    fn finalizer(&self) -> &'static str {
        FINALIZER
    }

    async fn handle_apply(&self, object: Arc<Bucket>) -> kuberator::Result<Action> {
        self.calls.lock().unwrap().push(format!("apply {}", object.metadata.name.as_deref().unwrap()));
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, object: Arc<Bucket>) -> kuberator::Result<Action> {
        self.calls.lock().unwrap().push(format!("cleanup {}", object.metadata.name.as_deref().unwrap()));
        if self.fail_cleanup {
            return Err(anyhow::anyhow!("bucket still holds 3 objects").into());
        }
        Ok(Action::await_change())
    }
}

type ApiServer = Handle<Request<Body>, Response<Body>>;

fn setup(fail_cleanup: bool) -> (Arc<Recording>, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let provider = StaticApiProvider::new(client, vec!["team-a"], CachingStrategy::Strict);
    let context = Recording {
        repo: Arc::new(K8sRepository::new(provider)),
        calls: Mutex::new(Vec::new()),
        fail_cleanup,
    };
    (Arc::new(context), handle)
}

fn bucket(finalizers: &[&str], deleting: bool) -> Bucket {
    Bucket {
        metadata: ObjectMeta {
            name: Some("photos".into()),
            namespace: Some("team-a".into()),
            generation: Some(3),
            resource_version: Some("41".into()),
            finalizers: (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            deletion_timestamp: deleting.then_some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            ..ObjectMeta::default()
        },
        spec: BucketSpec { size: 10 },
        status: None,
    }
}

/// A request as the API server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    content_type: String,
    body: Value,
}

/// Answers the next request with `answer` and returns what it was.
async fn answer_next(server: &mut ApiServer, answer: &Bucket) -> Seen {
    let (request, respond) = server.next_request().await.expect("a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let seen = Seen {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() },
    };
    respond.send_response(Response::builder().body(Body::from(serde_json::to_vec(answer).unwrap())).unwrap());
    seen
}

#[tokio::test]
async fn a_new_object_gets_the_finalizer_then_is_applied_in_the_same_reconcile() {
    let (context, mut server) = setup(false);
    let reconcile = tokio::spawn({
        let context = Arc::clone(&context);
        async move { context.handle_reconciliation(Arc::new(bucket(&[], false))).await }
    });

    let seen = answer_next(&mut server, &bucket(&[FINALIZER], false)).await;
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.path, "/apis/example.com/v1/namespaces/team-a/buckets/photos");
    assert_eq!(seen.content_type, "application/json-patch+json");
    let ops = seen.body.as_array().unwrap();
    assert!(
        ops.iter().any(|op| op["op"] == "add"
            && op["path"] == "/metadata/finalizers"
            && op["value"] == json!([FINALIZER])),
        "adds the finalizer: {}",
        seen.body
    );

    // Apply runs at once on the object as the patch returned it, not on a second reconcile.
    reconcile.await.unwrap().unwrap();
    assert_eq!(*context.calls.lock().unwrap(), ["apply photos"]);
}

#[tokio::test]
async fn an_object_with_the_finalizer_is_applied_without_requests() {
    let (context, _server) = setup(false);
    context.handle_reconciliation(Arc::new(bucket(&[FINALIZER], false))).await.unwrap();
    assert_eq!(*context.calls.lock().unwrap(), ["apply photos"]);
}

#[tokio::test]
async fn deletion_runs_cleanup_then_removes_the_finalizer() {
    let (context, mut server) = setup(false);
    let reconcile = tokio::spawn({
        let context = Arc::clone(&context);
        async move { context.handle_reconciliation(Arc::new(bucket(&["other/keep", FINALIZER], true))).await }
    });

    let seen = answer_next(&mut server, &bucket(&["other/keep"], true)).await;
    assert_eq!(*context.calls.lock().unwrap(), ["cleanup photos"], "cleanup ran before the patch");
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.content_type, "application/json-patch+json");
    let ops = seen.body.as_array().unwrap();
    assert!(
        ops.iter().any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/1"),
        "removes exactly our finalizer: {}",
        seen.body
    );
    reconcile.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failing_cleanup_keeps_the_finalizer_and_names_the_object() {
    let (context, mut server) = setup(true);
    let error = context.handle_reconciliation(Arc::new(bucket(&[FINALIZER], true))).await.unwrap_err();

    assert_eq!(*context.calls.lock().unwrap(), ["cleanup photos"]);
    assert!(matches!(error, Error::CleanupFailed { .. }), "{error:?}");
    assert_eq!(
        error.report(),
        "handle_cleanup failed for Bucket team-a/photos; the finalizer stays until cleanup succeeds: \
         bucket still holds 3 objects"
    );
    // No request was sent: the finalizer was not touched.
    drop(context);
    assert!(server.next_request().await.is_none());
}

#[tokio::test]
async fn an_unlisted_namespace_is_an_error_naming_it_and_nothing_runs() {
    let (context, _server) = setup(false);
    let mut other = bucket(&[FINALIZER], false);
    other.metadata.namespace = Some("team-b".into());
    let error = context.handle_reconciliation(Arc::new(other)).await.unwrap_err();
    assert!(matches!(error, Error::UncachedNamespace { ref namespace, .. } if namespace == "team-b"));
    assert!(context.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn update_status_merge_patches_the_status_subresource_with_the_generation() {
    let (context, mut server) = setup(false);
    let repo = context.k8s_repository();
    let object = bucket(&[FINALIZER], false);
    let write = tokio::spawn(async move {
        let status = BucketStatus { phase: Some("Ready".into()), ..BucketStatus::default() };
        repo.update_status(&object, status).await
    });

    let seen = answer_next(&mut server, &bucket(&[FINALIZER], false)).await;
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.path, "/apis/example.com/v1/namespaces/team-a/buckets/photos/status");
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(
        seen.body,
        json!({ "status": { "phase": "Ready", "observedGeneration": 3, "error": null } }),
        "a merge patch whose null clears a stale error"
    );
    write.await.unwrap().unwrap();
}

#[tokio::test]
async fn update_status_with_error_puts_the_error_into_the_status() {
    let (context, mut server) = setup(false);
    let repo = context.k8s_repository();
    let object = bucket(&[FINALIZER], false);
    let write = tokio::spawn(async move {
        let status = BucketStatus { phase: Some("Failed".into()), ..BucketStatus::default() };
        repo.update_status_with_error(&object, status, Some(&QuotaExceeded(10))).await
    });

    let seen = answer_next(&mut server, &bucket(&[FINALIZER], false)).await;
    assert!(seen.path.ends_with("/status"));
    assert_eq!(
        seen.body,
        json!({ "status": { "phase": "Failed", "observedGeneration": 3, "error": "quota of 10 exceeded" } })
    );
    write.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_refused_status_write_names_the_object() {
    let (context, mut server) = setup(false);
    let repo = context.k8s_repository();
    let object = bucket(&[FINALIZER], false);
    let write = tokio::spawn(async move { repo.update_status(&object, BucketStatus::default()).await });

    let (_, respond) = server.next_request().await.unwrap();
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
        "message": "buckets.example.com \"photos\" not found"
    });
    respond.send_response(
        Response::builder().status(404).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap(),
    );
    let error = write.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::UpdateStatus { .. }));
    assert!(
        error.report().starts_with("could not update the status of Bucket team-a/photos: "),
        "{}",
        error.report()
    );
    assert!(error.report().contains("not found"), "{}", error.report());
}
