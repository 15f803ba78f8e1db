//! The webhook port: HTTPS, its certificate kept current, each review routed to its operator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use http_body_util::Full;
use http_body_util::Limited;
use hyper::Method;
use hyper::Request;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::body::Incoming;
use kube::Client;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::Endpoint;
use super::Hooked;
use super::admission::Admit;
use super::admission::Question;
use super::certs::Certificates;
use super::certs::Current;
use crate::operator::Operator;
use crate::operator::OperatorReconciler;
use crate::telemetry::Telemetry;
use crate::telemetry::TlsError;
use crate::telemetry::server::Answer;
use crate::telemetry::server::response;

const MIB: usize = 1024 * 1024;
/// The largest admission review read: an update's object and old object, each at most the API
/// server's 3 MiB request limit, with room for the rest.
const ADMISSION_LIMIT: usize = 8 * MIB;
/// The largest conversion review read: a page of a list read through another version (kubectl
/// pages by 500) fits many times over.
const CONVERSION_LIMIT: usize = 32 * MIB;
/// How long a review's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The review bodies held at once, in MiB: each takes its declared length (its limit when it
/// declares none), rounded up; more wait for room.
const BODIES_AT_ONCE_MIB: usize = 64;

/// The webhooks of one process: its operators' `validate` and `set_defaults`, and where the API
/// server reaches them. The derived operator's `run` builds and serves this; build it yourself
/// to serve them next to a controller you start by hand.
pub struct Webhooks {
    name: String,
    endpoint: Endpoint,
    certificates: Certificates,
    routes: Vec<Arc<dyn Admit>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field(
                "kinds",
                &self.routes.iter().map(|route| route.hooked().plural.clone()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why the webhooks could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The port could not be bound.
    #[error("serving the webhooks on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate could not be made or read.
    #[error("the webhook port's certificate: {0}")]
    Tls(#[from] TlsError),
    /// A webhook configuration could not be written.
    #[error(
        "writing the {kind} {name} with the CA bundle: {source}; the operator needs `get` and `patch` on it \
         (the `rbac` subcommand prints them), and it must exist unless the operator may create it \
         (`kubectl apply` the output of `manifests`)"
    )]
    Register {
        /// `ValidatingWebhookConfiguration` or `MutatingWebhookConfiguration`.
        kind: String,
        /// Its name.
        name: String,
        /// Why.
        source: kube::Error,
    },
}

impl Webhooks {
    /// No webhooks yet, for the process `name` (the configurations' name), reached at
    /// `endpoint`, with [`Certificates::generated`].
    pub fn new(name: impl Into<String>, endpoint: Endpoint) -> Self {
        Self { name: name.into(), endpoint, certificates: Certificates::generated(), routes: Vec::new() }
    }

    /// Where the certificate comes from.
    #[must_use]
    pub fn certificates(mut self, certificates: Certificates) -> Self {
        self.certificates = certificates;
        self
    }

    /// Adds the webhooks `reconciler`'s operator names in `webhooks = [...]`; none if it names
    /// none.
    #[must_use]
    pub fn with<O: Operator>(mut self, reconciler: &OperatorReconciler<O>) -> Self {
        if let Some(route) = reconciler.admission() {
            self.routes.push(route);
        }
        self
    }

    pub(crate) fn with_route(mut self, route: Arc<dyn Admit>) -> Self {
        self.routes.push(route);
        self
    }

    /// The kinds of its routes, and their webhooks.
    fn hooked(&self) -> Vec<Hooked> {
        self.routes.iter().map(|route| route.hooked().clone()).collect()
    }

    /// Whether any operator added has a webhook.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The ValidatingWebhookConfiguration and MutatingWebhookConfiguration (those needed),
    /// trusting `bundle` (PEM) when given: what `manifests` prints, without the bundle.
    pub fn configurations(&self, bundle: Option<&str>) -> Vec<Value> {
        super::config::configurations(&self.name, &self.endpoint, &self.hooked(), bundle)
    }

    /// Serves the webhooks on `address` until the returned value is dropped: makes (or reads)
    /// the certificate, writes the configurations with its CA bundle with `client` (server-side
    /// apply, as the field manager `<name>`), and keeps the certificate current, writing each
    /// new CA bundle before serving a certificate it vouches for.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound, the certificate cannot be had, or a configuration
    /// cannot be written.
    pub async fn serve(self, address: SocketAddr, client: Client) -> Result<WebhookServer, WebhookError> {
        let (served, renewal) = self.certificates.start(&self.endpoint.names(), &client).await?;
        let current = Current::new(Arc::clone(&served.key));
        let acceptor = super::certs::acceptor(Arc::clone(&current))?;
        let registration = Arc::new(Registration {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            hooked: self.hooked(),
        });
        let bundle = (!served.bundle.is_empty()).then_some(served.bundle.as_str());
        registration.write(&client, bundle).await?;
        let write: super::certs::WriteBundle = Arc::new(move |bundle: String| {
            let (client, registration) = (client.clone(), Arc::clone(&registration));
            Box::pin(async move {
                registration.write(&client, Some(&bundle)).await.map_err(|error| error.to_string())
            })
        });
        let port = Arc::new(Port {
            routes: self.routes,
            room: Semaphore::new(BODIES_AT_ONCE_MIB),
            body_timeout: BODY_TIMEOUT,
        });
        let what = format!("the webhooks of {}", self.name);
        let telemetry = crate::telemetry::server::listen_with(address, Some(acceptor), port, &what)
            .await
            .map_err(|source| WebhookError::Bind { address, source })?;
        let renewal = tokio::spawn(super::certs::keep_current(renewal, served, current, write));
        Ok(WebhookServer { port: telemetry, renewal })
    }
}

/// What the configurations are made of.
struct Registration {
    name: String,
    endpoint: Endpoint,
    hooked: Vec<Hooked>,
}

impl Registration {
    /// Server-side applies each configuration with `bundle`, as the field manager `<name>`, and
    /// points the conversion of each CRD it converts at the port.
    async fn write(&self, client: &Client, bundle: Option<&str>) -> Result<(), WebhookError> {
        let configurations = super::config::configurations(&self.name, &self.endpoint, &self.hooked, bundle);
        register(client, &self.name, configurations).await?;
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
        for hooked in self.hooked.iter().filter(|hooked| hooked.convert) {
            let conversion =
                serde_json::json!({"spec": {"conversion": hooked.conversion(&self.endpoint, bundle)}});
            let patch = kube::api::Patch::Merge(&conversion);
            crds.patch(&hooked.crd_name(), &kube::api::PatchParams::default(), &patch).await.map_err(
                |source| WebhookError::Register {
                    kind: "CustomResourceDefinition".to_owned(),
                    name: hooked.crd_name(),
                    source,
                },
            )?;
        }
        Ok(())
    }
}

/// Server-side applies each configuration.
async fn register(client: &Client, manager: &str, configurations: Vec<Value>) -> Result<(), WebhookError> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use kube::api::DynamicObject;
    use kube::api::Patch;
    use kube::api::PatchParams;
    use kube::discovery::ApiResource;
    for configuration in configurations {
        let kind = configuration["kind"].as_str().unwrap_or_default().to_owned();
        let name = configuration["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let resource = if kind.starts_with("Validating") {
            ApiResource::erase::<ValidatingWebhookConfiguration>(&())
        } else {
            ApiResource::erase::<MutatingWebhookConfiguration>(&())
        };
        let api: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &resource);
        api.patch(&name, &PatchParams::apply(manager).force(), &Patch::Apply(&configuration))
            .await
            .map_err(|source| WebhookError::Register { kind, name, source })?;
    }
    Ok(())
}

/// A running webhook port; it stops when dropped.
#[derive(Debug)]
pub struct WebhookServer {
    port: Telemetry,
    renewal: JoinHandle<()>,
}

impl WebhookServer {
    /// Where it listens (with the port the system chose, if `:0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.port.address()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

struct Port {
    routes: Vec<Arc<dyn Admit>>,
    /// MiB of review bodies that may be held now.
    room: Semaphore,
    body_timeout: Duration,
}

impl Answer for Port {
    fn answer(&self, request: Request<Incoming>) -> BoxFuture<'_, Response<Full<Bytes>>> {
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            let route = self.routes.iter().find_map(|route| {
                let hooked = route.hooked();
                if hooked.validate && path == hooked.validate_path() {
                    Some((route, Some(Question::Validate)))
                } else if hooked.set_defaults && path == hooked.mutate_path() {
                    Some((route, Some(Question::SetDefaults)))
                } else if hooked.convert && path == hooked.convert_path() {
                    Some((route, None))
                } else {
                    None
                }
            });
            let Some((route, question)) = route else {
                return response(StatusCode::NOT_FOUND, "text/plain", format!("no webhook at {path}"));
            };
            if request.method() != Method::POST {
                return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "send a POST".to_owned());
            }
            let declared = request
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
            let limit = if question.is_some() { ADMISSION_LIMIT } else { CONVERSION_LIMIT };
            if declared.is_some_and(|length| length > limit as u64) {
                let said = format!("a review is at most {} MiB", limit / MIB);
                return response(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", said);
            }
            let size = declared.map_or(limit, |length| usize::try_from(length).unwrap_or(limit));
            let mebibytes = u32::try_from(size.div_ceil(MIB).max(1)).unwrap_or(u32::MAX);
            let Ok(_room) = self.room.acquire_many(mebibytes).await else {
                return response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down".to_owned());
            };
            let body = Limited::new(request.into_body(), limit).collect();
            let body = match tokio::time::timeout(self.body_timeout, body).await {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(error)) => {
                    let status = if error.is::<http_body_util::LengthLimitError>() {
                        StatusCode::PAYLOAD_TOO_LARGE
                    } else {
                        StatusCode::BAD_REQUEST
                    };
                    return response(status, "text/plain", format!("reading the review: {error}"));
                }
                Err(_) => {
                    let said = format!("the review did not arrive within {:?}", self.body_timeout);
                    return response(StatusCode::REQUEST_TIMEOUT, "text/plain", said);
                }
            };
            let review: Value = match serde_json::from_slice(&body) {
                Ok(review) => review,
                Err(error) => {
                    let said = format!("not an AdmissionReview: {error}");
                    return response(StatusCode::BAD_REQUEST, "text/plain", said);
                }
            };
            let Some(request) = review.get("request").cloned() else {
                let said = "a review with no request".to_owned();
                return response(StatusCode::BAD_REQUEST, "text/plain", said);
            };
            let Some(question) = question else {
                // A ConversionReview: a CPU-bound loop over its objects, off the port's threads.
                let route = Arc::clone(route);
                let converted =
                    tokio::task::spawn_blocking(move || route.convert(&request).to_string()).await;
                return match converted {
                    Ok(review) => response(StatusCode::OK, "application/json", review),
                    Err(error) => {
                        let said = format!("the conversion failed: {error}");
                        response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", said)
                    }
                };
            };
            let request: super::admission::Request = match serde_json::from_value(request) {
                Ok(request) => request,
                Err(error) => {
                    let said = format!("not an AdmissionReview request: {error}");
                    return response(StatusCode::BAD_REQUEST, "text/plain", said);
                }
            };
            let uid = request.uid.clone();
            let answer = route.answer(question, request).await;
            response(StatusCode::OK, "application/json", answer.review(&uid).to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;

    use super::super::admission;
    use super::*;

    /// Allows everything it is asked about.
    struct Allows(Hooked);

    impl Admit for Allows {
        fn hooked(&self) -> &Hooked {
            &self.0
        }

        fn answer(
            &self,
            _question: Question,
            _request: admission::Request,
        ) -> BoxFuture<'_, admission::Answer> {
            Box::pin(async { admission::Answer::Allow })
        }

        fn convert(&self, request: &Value) -> Value {
            serde_json::json!({"response": {"uid": request["uid"], "result": {"status": "Success"}}})
        }
    }

    async fn port(room_mib: usize) -> Telemetry {
        let hooked = Hooked { convert: true, ..Hooked::example() };
        let port = Port {
            routes: vec![Arc::new(Allows(hooked))],
            room: Semaphore::new(room_mib),
            body_timeout: Duration::from_millis(300),
        };
        let address = "127.0.0.1:0".parse().unwrap();
        crate::telemetry::server::listen_with(address, None, Arc::new(port), "test webhooks").await.unwrap()
    }

    /// Sends `head` then `body`, and reads the answer's status line.
    async fn send(port: &Telemetry, head: &str, body: &[u8]) -> String {
        let mut stream = TcpStream::connect(port.address()).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut answer = vec![0; 4096];
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
        String::from_utf8_lossy(&answer[..read]).lines().next().unwrap_or_default().to_owned()
    }

    fn post(path: &str, length: usize) -> String {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n")
    }

    #[tokio::test]
    async fn a_hostile_caller_is_answered_without_being_read_further() {
        let port = port(BODIES_AT_ONCE_MIB).await;
        let review = br#"{"request": {"uid": "u", "operation": "CREATE", "object": {}}}"#;
        let path = "/validate/example.com/volumes";
        assert_eq!(send(&port, &post(path, review.len()), review).await, "HTTP/1.1 200 OK");
        // Too large: refused from its length, before a byte of it is read.
        assert_eq!(send(&port, &post(path, 64 * 1024 * 1024), b"").await, "HTTP/1.1 413 Payload Too Large");
        // A body that trickles: cut off.
        assert_eq!(send(&port, &post(path, 100), b"{\"req").await, "HTTP/1.1 408 Request Timeout");
        assert_eq!(send(&port, &post(path, 5), b"hello").await, "HTTP/1.1 400 Bad Request");
        assert_eq!(send(&port, &post(path, 2), b"{}").await, "HTTP/1.1 400 Bad Request");
        assert_eq!(
            send(&port, &post("/mutate/example.com/volumes", 2), b"{}").await,
            "HTTP/1.1 404 Not Found"
        );
        // A conversion review may be larger, not without bound.
        let convert = "/convert/example.com/volumes";
        assert_eq!(send(&port, &post(convert, 40 * MIB), b"").await, "HTTP/1.1 413 Payload Too Large");
        assert_eq!(send(&port, &post(convert, 20 * MIB), b"{").await, "HTTP/1.1 408 Request Timeout");
        let get = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(send(&port, &get, b"").await, "HTTP/1.1 405 Method Not Allowed");
    }

    #[tokio::test]
    async fn reviews_past_the_room_wait_for_it() {
        let port = port(1).await;
        let path = "/validate/example.com/volumes";
        // One review holds the only place while its body trickles in...
        let mut holder = TcpStream::connect(port.address()).await.unwrap();
        holder.write_all(post(path, 100).as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so a second one waits until it is cut off, then is answered.
        let review = br#"{"request": {"uid": "u", "operation": "CREATE", "object": {}}}"#;
        let started = std::time::Instant::now();
        assert_eq!(send(&port, &post(path, review.len()), review).await, "HTTP/1.1 200 OK");
        assert!(started.elapsed() >= Duration::from_millis(200), "it waited: {:?}", started.elapsed());
    }
}
