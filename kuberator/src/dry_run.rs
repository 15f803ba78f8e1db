//! `run --dry-run`: what a version of the operator would do to a live cluster, without doing
//! it.
//!
//! The operator runs as usual: it lists and watches, and its handlers run on every object.
//! Every write it sends goes to the API server with `dryRun=All`, so the server validates and
//! admits it (schema, RBAC, admission webhooks) and answers with the object as it would be
//! stored, and stores nothing: finalizers, status writes, child applies and prunes, Leases.
//! Events are not sent at all: each is a log line. For each write, the object as it is and
//! the object the server answered are compared, and the difference is printed:
//!
//! ```text
//! dry run: Database shop/orders would change (PATCH status):
//!   + status.endpoint: "orders.shop.svc:5432"
//!   ~ status.conditions[0].status: "False" -> "True"
//! dry run: ConfigMap shop/orders-settings would be created:
//!   + data.engine: "postgres"
//! ```
//!
//! The process ends once it has sent nothing for 5 seconds after its caches synced (or on
//! SIGINT or SIGTERM), with a summary line. It needs the operator's own RBAC and no more: a
//! dry-run write is authorized as the write itself, and the reads before it are `get`s on
//! the same objects.
//!
//! Nothing reaches the cluster, but your handlers run: what they do outside the API server
//! (a cloud API, a database) happens unless they ask [`active`] and skip it.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether this process is a dry run (`run --dry-run`): handlers skip their effects outside
/// the API server when it is.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

#[cfg(feature = "app")]
pub(crate) use self::client::DryRun;
#[cfg(feature = "app")]
pub(crate) use self::client::say;

#[cfg(feature = "app")]
mod client {
    use std::fmt::Write as _;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::PoisonError;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    use std::task::Context;
    use std::task::Poll;
    use std::time::Duration;

    use http::Method;
    use http::Request;
    use http::Response;
    use http_body_util::BodyExt as _;
    use kube::client::Body;
    use serde_json::Value;

    /// At most this many lines of difference per write; the rest is counted.
    const LINES_PER_WRITE: usize = 40;

    /// Metadata the server fills in: not a change the operator makes.
    const SERVER_FIELDS: [&str; 6] =
        ["resourceVersion", "managedFields", "uid", "creationTimestamp", "generation", "selfLink"];

    /// A client whose writes are dry runs; what they would change is printed.
    #[derive(Clone)]
    pub(crate) struct DryRun {
        inner: kube::Client,
        tally: Arc<Tally>,
    }

    /// What the dry run has done so far.
    #[derive(Default)]
    struct Tally {
        /// Writes sent (as dry runs) and Events logged.
        writes: AtomicU64,
        changes: AtomicU64,
        events: AtomicU64,
        /// When the last request other than a watch was sent.
        last: Mutex<Option<tokio::time::Instant>>,
        objects: Mutex<std::collections::BTreeSet<String>>,
    }

    impl DryRun {
        /// `client`, with every write made a dry run.
        pub(crate) fn new(client: kube::Client) -> Self {
            super::ACTIVE.store(true, Ordering::Relaxed);
            Self { inner: client, tally: Arc::default() }
        }

        /// A `kube::Client` that sends through this.
        pub(crate) fn client(&self) -> kube::Client {
            let default_namespace = self.inner.default_namespace().to_owned();
            kube::Client::new(self.clone(), default_namespace)
        }

        /// Waits until nothing was sent for `quiet` (after something was).
        pub(crate) async fn idle(&self, quiet: Duration) {
            loop {
                tokio::time::sleep(quiet / 5).await;
                let last = *self.tally.last.lock().unwrap_or_else(PoisonError::into_inner);
                if last.is_some_and(|last| last.elapsed() >= quiet) {
                    return;
                }
            }
        }

        /// `dry run: 3 writes to 2 objects, 2 would change them; 1 Event`.
        pub(crate) fn summary(&self) -> String {
            let objects = self.tally.objects.lock().unwrap_or_else(PoisonError::into_inner).len();
            format!(
                "dry run: {} writes to {objects} objects, {} would change them; {} Events; nothing was changed",
                self.tally.writes.load(Ordering::Relaxed),
                self.tally.changes.load(Ordering::Relaxed),
                self.tally.events.load(Ordering::Relaxed),
            )
        }

        async fn send(&self, request: Request<Body>) -> kube::Result<Response<Body>> {
            let watch = request
                .uri()
                .query()
                .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"));
            if !watch {
                *self.tally.last.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(tokio::time::Instant::now());
            }
            if matches!(*request.method(), Method::GET | Method::HEAD) {
                return self.inner.send(request).await;
            }
            let (mut parts, body) = request.into_parts();
            let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
            let path = parts.uri.path().to_owned();
            if is_event(&path) {
                self.tally.events.fetch_add(1, Ordering::Relaxed);
                log_event(&body);
                let answer = Response::builder()
                    .status(if parts.method == Method::POST { 201 } else { 200 })
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .map_err(|error| kube::Error::Service(error.into()))?;
                return Ok(answer);
            }
            self.tally.writes.fetch_add(1, Ordering::Relaxed);
            let before = self.current(&parts.method, &path).await;
            let query = match parts.uri.query() {
                Some(query) if !query.is_empty() => format!("{query}&dryRun=All"),
                _ => "dryRun=All".to_owned(),
            };
            parts.uri = format!("{path}?{query}")
                .parse()
                .map_err(|error: http::uri::InvalidUri| kube::Error::Service(error.into()))?;
            let method = parts.method.clone();
            let answer = self.inner.send(Request::from_parts(parts, Body::from(body))).await?;
            let (parts, body) = answer.into_parts();
            let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
            if parts.status.is_success() {
                self.report(&method, &path, before.as_ref(), &body);
            } else {
                say(&format!(
                    "dry run: {method} {path} would be refused: {}\n",
                    String::from_utf8_lossy(&body)
                ));
            }
            Ok(Response::from_parts(parts, Body::from(body)))
        }

        /// The object a write to `path` changes, as it is now (`None`: there is none, or a
        /// create). Read with a list of its collection by name: an operator may list and watch
        /// its kinds, and need not be allowed to `get` them.
        async fn current(&self, method: &Method, path: &str) -> Option<Value> {
            if *method == Method::POST {
                return None;
            }
            let object = path.strip_suffix("/status").unwrap_or(path);
            let (collection, name) = object.rsplit_once('/')?;
            let uri = format!("{collection}?fieldSelector=metadata.name%3D{name}");
            let request = Request::get(uri).body(Body::from(Vec::new())).ok()?;
            let answer = self.inner.send(request).await.ok()?;
            if !answer.status().is_success() {
                return None;
            }
            let body = answer.into_body().collect().await.ok()?.to_bytes();
            let list: Value = serde_json::from_slice(&body).ok()?;
            let mut item = list["items"].as_array()?.first()?.clone();
            // A list leaves out each item's kind and apiVersion; the answer has them.
            if let (Some(fields), Some(kind)) = (item.as_object_mut(), list["kind"].as_str()) {
                fields.insert("kind".to_owned(), Value::from(kind.trim_end_matches("List")));
                fields.insert("apiVersion".to_owned(), list["apiVersion"].clone());
            }
            Some(item)
        }

        fn report(&self, method: &Method, path: &str, before: Option<&Value>, answer: &[u8]) {
            let Ok(after) = serde_json::from_slice::<Value>(answer) else { return };
            let object = describe(&after, path);
            self.tally.objects.lock().unwrap_or_else(PoisonError::into_inner).insert(object.clone());
            let what =
                if path.ends_with("/status") { format!("{method} status") } else { method.to_string() };
            let mut out = String::new();
            if *method == Method::DELETE {
                self.tally.changes.fetch_add(1, Ordering::Relaxed);
                let _ = writeln!(out, "dry run: {object} would be deleted");
            } else {
                let mut lines = Vec::new();
                diff("", before.map(strip).as_ref(), Some(&strip(&after)), &mut lines);
                if lines.is_empty() {
                    let _ = writeln!(out, "dry run: {object} would not change ({what})");
                } else {
                    self.tally.changes.fetch_add(1, Ordering::Relaxed);
                    let verb = if before.is_none() { "be created" } else { "change" };
                    let _ = writeln!(out, "dry run: {object} would {verb} ({what}):");
                    for line in lines.iter().take(LINES_PER_WRITE) {
                        let _ = writeln!(out, "  {line}");
                    }
                    if lines.len() > LINES_PER_WRITE {
                        let _ = writeln!(out, "  ... and {} more", lines.len() - LINES_PER_WRITE);
                    }
                }
            }
            say(&out);
        }
    }

    impl tower::Service<Request<Body>> for DryRun {
        type Response = Response<Body>;
        type Error = kube::Error;
        type Future = Pin<Box<dyn Future<Output = kube::Result<Response<Body>>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move { this.send(request).await })
        }
    }

    /// Writes `text` to standard output, whole: the dry run's report, beside the log.
    pub(crate) fn say(text: &str) {
        use std::io::Write as _;
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }

    /// Whether `path` is of core or `events.k8s.io` Events.
    fn is_event(path: &str) -> bool {
        let Some(rest) =
            path.strip_prefix("/api/v1/").or_else(|| path.strip_prefix("/apis/events.k8s.io/v1/"))
        else {
            return false;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let resource = match segments.as_slice() {
            ["namespaces", _, resource, ..] => resource,
            [resource, ..] => resource,
            [] => return false,
        };
        *resource == "events"
    }

    fn log_event(body: &[u8]) {
        let event: Value = serde_json::from_slice(body).unwrap_or_default();
        let regarding = &event["regarding"];
        let object = format!(
            "{} {}/{}",
            regarding["kind"].as_str().unwrap_or_default(),
            regarding["namespace"].as_str().unwrap_or_default(),
            regarding["name"].as_str().unwrap_or_default()
        );
        tracing::info!(
            target: "kuberator::dry_run",
            %object,
            r#type = event["type"].as_str().unwrap_or_default(),
            reason = event["reason"].as_str().unwrap_or_default(),
            note = event["note"].as_str().unwrap_or_default(),
            "dry run: an Event, not sent"
        );
    }

    /// `Kind namespace/name`, from the answer (or the path, when it names no object).
    fn describe(object: &Value, path: &str) -> String {
        let metadata = &object["metadata"];
        match (object["kind"].as_str(), metadata["name"].as_str()) {
            (Some(kind), Some(name)) => match metadata["namespace"].as_str() {
                Some(namespace) => format!("{kind} {namespace}/{name}"),
                None => format!("{kind} {name}"),
            },
            _ => path.to_owned(),
        }
    }

    /// The object without what the server fills in.
    fn strip(object: &Value) -> Value {
        let mut object = object.clone();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in SERVER_FIELDS {
                metadata.remove(field);
            }
        }
        object
    }

    /// One line per leaf that differs: `+ path: new`, `- path: old`, `~ path: old -> new`.
    fn diff(path: &str, before: Option<&Value>, after: Option<&Value>, lines: &mut Vec<String>) {
        let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
        match (before, after) {
            (Some(Value::Object(before)), Some(Value::Object(after))) => {
                let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
                for key in keys {
                    diff(&join(key), before.get(key), after.get(key), lines);
                }
            }
            (None, Some(Value::Object(after))) => {
                for (key, value) in after {
                    diff(&join(key), None, Some(value), lines);
                }
            }
            (Some(Value::Object(before)), None) => {
                for (key, value) in before {
                    diff(&join(key), Some(value), None, lines);
                }
            }
            (Some(Value::Array(before)), Some(Value::Array(after))) => {
                for index in 0..before.len().max(after.len()) {
                    diff(&format!("{path}[{index}]"), before.get(index), after.get(index), lines);
                }
            }
            (None, Some(Value::Array(after))) => {
                for (index, value) in after.iter().enumerate() {
                    diff(&format!("{path}[{index}]"), None, Some(value), lines);
                }
            }
            (Some(Value::Array(before)), None) => {
                for (index, value) in before.iter().enumerate() {
                    diff(&format!("{path}[{index}]"), Some(value), None, lines);
                }
            }
            (Some(before), Some(after)) if before == after => {}
            (Some(before), Some(after)) => lines.push(format!("~ {path}: {before} -> {after}")),
            (None, Some(after)) => lines.push(format!("+ {path}: {after}")),
            (Some(before), None) => lines.push(format!("- {path}: {before}")),
            (None, None) => {}
        }
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        use super::*;

        #[test]
        fn a_diff_names_each_changed_leaf_and_leaves_out_what_the_server_fills_in() {
            let before = json!({
                "metadata": {"name": "a", "resourceVersion": "1", "finalizers": ["x"]},
                "status": {"phase": "Old", "gone": 1},
            });
            let after = json!({
                "metadata": {"name": "a", "resourceVersion": "2", "finalizers": ["x", "y"]},
                "status": {"phase": "New", "endpoint": "e"},
            });
            let mut lines = Vec::new();
            diff("", Some(&strip(&before)), Some(&strip(&after)), &mut lines);
            assert_eq!(
                lines,
                [
                    "+ metadata.finalizers[1]: \"y\"",
                    "+ status.endpoint: \"e\"",
                    "- status.gone: 1",
                    "~ status.phase: \"Old\" -> \"New\"",
                ]
            );
            let mut created = Vec::new();
            diff(
                "",
                None,
                Some(&strip(&json!({"metadata": {"name": "b", "uid": "u"}, "data": {"k": "v"}}))),
                &mut created,
            );
            assert_eq!(created, ["+ data.k: \"v\"", "+ metadata.name: \"b\""]);
        }

        /// Every write reaches the server as a dry run, an Event not at all, and a read as it
        /// was sent.
        #[tokio::test]
        async fn writes_go_as_dry_runs_and_events_stay_in_the_process() {
            let seen = Arc::new(Mutex::new(Vec::<String>::new()));
            let server = {
                let seen = Arc::clone(&seen);
                tower::service_fn(move |request: Request<Body>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        seen.lock().unwrap().push(format!("{} {}", request.method(), request.uri()));
                        let object = json!({"kind": "ConfigMap", "apiVersion": "v1",
                            "metadata": {"name": "a", "namespace": "n"}, "data": {"k": "new"}});
                        let list =
                            request.method() == Method::GET && request.uri().path().ends_with("/configmaps");
                        let body = if list {
                            json!({"kind": "ConfigMapList", "apiVersion": "v1", "items": [
                                {"metadata": {"name": "a", "namespace": "n"}, "data": {"k": "old"}}]})
                        } else {
                            object
                        };
                        Ok::<_, std::convert::Infallible>(Response::new(Body::from(
                            body.to_string().into_bytes(),
                        )))
                    }
                })
            };
            let dry = DryRun::new(kube::Client::new(server, "n"));
            let client = dry.client();
            let maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(client.clone(), "n");
            let patch = json!({"data": {"k": "new"}});
            maps.patch("a", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
                .await
                .unwrap();
            maps.list(&kube::api::ListParams::default()).await.unwrap();
            use crate::events::EmitEvent as _;
            let recorder = crate::events::EventRecorder::new(client, "dry");
            let map = maps.get("a").await.unwrap();
            recorder.try_emit(&map, crate::events::EventData::normal("Tried", "a dry run")).await.unwrap();
            assert_eq!(
                *seen.lock().unwrap(),
                [
                    "GET /api/v1/namespaces/n/configmaps?fieldSelector=metadata.name%3Da",
                    "PATCH /api/v1/namespaces/n/configmaps/a?dryRun=All",
                    "GET /api/v1/namespaces/n/configmaps?",
                    "GET /api/v1/namespaces/n/configmaps/a",
                ]
            );
            assert!(crate::dry_run::active());
            assert_eq!(
                dry.summary(),
                "dry run: 1 writes to 1 objects, 1 would change them; 1 Events; nothing was changed"
            );
        }

        #[test]
        fn events_are_told_by_their_path() {
            assert!(is_event("/apis/events.k8s.io/v1/namespaces/a/events"));
            assert!(is_event("/apis/events.k8s.io/v1/namespaces/a/events/e.123"));
            assert!(is_event("/api/v1/namespaces/a/events"));
            assert!(!is_event("/api/v1/namespaces/events/configmaps/a"));
            assert!(!is_event("/apis/example.com/v1/namespaces/a/widgets/events"));
        }
    }
}
