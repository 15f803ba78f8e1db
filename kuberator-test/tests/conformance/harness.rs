//! What the scenarios share: raw requests (so a scenario sees the exact status code and
//! body), a raw watch, and the test CRDs.

use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use anyhow::bail;
use anyhow::ensure;
use http_body_util::BodyExt as _;
use kube::Client;
use serde_json::Value;
use serde_json::json;

pub(crate) const GROUP: &str = "conformance.kuberator.dev";

/// What one scenario gets: a client, a namespace of its own, and which server it is.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) namespace: String,
}

/// An answer: status code and JSON body (or the text, as a JSON string, when not JSON).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) code: u16,
    pub(crate) body: Value,
}

impl Answer {
    /// Checks the code, and for errors the `Status` reason.
    pub(crate) fn expect(&self, code: u16, reason: &str) -> anyhow::Result<&Self> {
        ensure!(
            self.code == code && (reason.is_empty() || self.body["reason"] == reason),
            "expected {code} {reason}, got {} {}: {}",
            self.code,
            self.body["reason"],
            self.body["message"]
        );
        Ok(self)
    }

    pub(crate) fn ok(&self) -> anyhow::Result<&Value> {
        ensure!((200..300).contains(&self.code), "expected success, got {}: {}", self.code, self.body);
        Ok(&self.body)
    }

    pub(crate) fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

impl Ctx {
    pub(crate) fn widgets(&self) -> String {
        format!("/apis/{GROUP}/v1/namespaces/{}/widgets", self.namespace)
    }

    pub(crate) fn widget(&self, name: &str) -> String {
        format!("{}/{name}", self.widgets())
    }

    pub(crate) fn core(&self, plural: &str) -> String {
        format!("/api/v1/namespaces/{}/{plural}", self.namespace)
    }

    pub(crate) fn leases(&self) -> String {
        format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", self.namespace)
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = http::Request::builder().method(method).uri(path);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let bytes = body.map(|body| serde_json::to_vec(body).expect("JSON")).unwrap_or_default();
        let request = request.body(kube::client::Body::from(bytes))?;
        let response = self.client.send(request).await.with_context(|| format!("{method} {path}"))?;
        let code = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok(Answer { code, body })
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call("GET", path, "", None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call("POST", path, "application/json", Some(body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call("PUT", path, "application/json", Some(body)).await
    }

    pub(crate) async fn merge(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call("PATCH", path, "application/merge-patch+json", Some(body)).await
    }

    pub(crate) async fn json_patch(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call("PATCH", path, "application/json-patch+json", Some(body)).await
    }

    pub(crate) async fn strategic(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.call("PATCH", path, "application/strategic-merge-patch+json", Some(body)).await
    }

    pub(crate) async fn apply(
        &self,
        path: &str,
        manager: &str,
        force: bool,
        body: &Value,
    ) -> anyhow::Result<Answer> {
        let path = format!("{path}?fieldManager={manager}{}", if force { "&force=true" } else { "" });
        self.call("PATCH", &path, "application/apply-patch+yaml", Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str, options: Option<&Value>) -> anyhow::Result<Answer> {
        self.call("DELETE", path, if options.is_some() { "application/json" } else { "" }, options).await
    }

    /// Creates a Widget named `name` with `spec` (and `labels`), and returns it.
    pub(crate) async fn widget_with(&self, name: &str, spec: Value, labels: Value) -> anyhow::Result<Value> {
        let answer = self.post(&self.widgets(), &widget_body(name, spec, labels)).await?;
        Ok(answer.expect(201, "")?.body.clone())
    }

    pub(crate) async fn new_widget(&self, name: &str) -> anyhow::Result<Value> {
        self.widget_with(name, json!({"size": 1}), json!({})).await
    }

    /// Polls `path` until `until` holds for the answer, for 60 seconds.
    pub(crate) async fn eventually(
        &self,
        path: &str,
        what: &str,
        until: impl Fn(&Answer) -> bool,
    ) -> anyhow::Result<Answer> {
        let started = Instant::now();
        loop {
            let answer = self.get(path).await?;
            if until(&answer) {
                return Ok(answer);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{what}: not within 60 s; last answer {} {}", answer.code, answer.body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn gone(&self, path: &str) -> anyhow::Result<()> {
        self.eventually(path, &format!("{path} to be gone"), |answer| answer.code == 404).await.map(|_| ())
    }

    pub(crate) async fn watch(&self, path_with_query: &str) -> anyhow::Result<Watch> {
        let separator = if path_with_query.contains('?') { '&' } else { '?' };
        let uri = format!("{path_with_query}{separator}watch=true");
        let request =
            http::Request::builder().method("GET").uri(&uri).body(kube::client::Body::from(Vec::new()))?;
        let response = self.client.send(request).await.with_context(|| format!("watch {uri}"))?;
        Ok(Watch { code: response.status().as_u16(), body: response.into_body(), buffer: Vec::new() })
    }
}

pub(crate) fn widget_body(name: &str, spec: Value, labels: Value) -> Value {
    let mut body = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "Widget",
        "metadata": {"name": name},
    });
    body["spec"] = spec;
    if labels.as_object().is_some_and(|labels| !labels.is_empty()) {
        body["metadata"]["labels"] = labels;
    }
    body
}

/// A raw watch: events as the server sends them.
pub(crate) struct Watch {
    pub(crate) code: u16,
    body: kube::client::Body,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the stream ends or `wait` passes.
    pub(crate) async fn next(&mut self, wait: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            let frame = match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Ok(None),
                Ok(None) => return Ok(None),
                Ok(Some(frame)) => frame?,
            };
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    /// The next event that is not a BOOKMARK.
    pub(crate) async fn next_change(&mut self, wait: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(event) if event["type"] == "BOOKMARK" => continue,
                Some(event) => return Ok(event),
                None => bail!("no event within {wait:?}"),
            }
        }
    }
}

/// The Widget CRD: a namespaced kind with a status subresource and a schema that uses the
/// common keywords.
pub(crate) fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 0, "maximum": 100},
                                "color": {"type": "string", "enum": ["red", "green", "blue"], "default": "red"},
                                "title": {"type": "string", "maxLength": 10},
                                "tags": {"type": "array", "items": {"type": "string"}},
                                "nested": {"type": "object", "properties": {"a": {"type": "string", "default": "x"}, "b": {"type": "integer"}}},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "notes": {"type": "object", "additionalProperties": {"type": "string"}},
                                "ratio": {"type": "number"},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {"phase": {"type": "string"}, "count": {"type": "integer"}},
                        },
                    },
                }},
            }],
        },
    })
}

/// A cluster-scoped kind without a status subresource.
pub(crate) fn gadget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "scope": "Cluster",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    })
}

/// Installs a CRD (by apply) and waits until it is served.
pub(crate) async fn install(client: &Client, crd: &Value) -> anyhow::Result<()> {
    let ctx = Ctx { client: client.clone(), namespace: "default".into() };
    let name = crd["metadata"]["name"].as_str().expect("named");
    let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
    ctx.apply(&path, "conformance", true, crd).await?.ok()?;
    ctx.eventually(&path, "the CRD to be established", |answer| {
        answer.body["status"]["conditions"].as_array().is_some_and(|conditions| {
            conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True")
        })
    })
    .await?;
    let plural = crd["spec"]["names"]["plural"].as_str().expect("plural");
    let served = format!("/apis/{GROUP}/v1/{plural}");
    ctx.eventually(&served, "the CRD's resource to be served", |answer| answer.code == 200).await?;
    Ok(())
}

pub(crate) fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse().ok()).unwrap_or_default()
}

pub(crate) fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"].as_i64().unwrap_or_default()
}
