//! An in-memory Kubernetes API server: the semantics operators depend on, with no Go, no
//! etcd and no processes, served in-process to a [`kube::Client`] and over loopback HTTPS to
//! `kubectl`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kuberator_test::memory::MemoryServer;
//! use kuberator_test::memory::Verb;
//!
//! let server = MemoryServer::new();
//! let client = server.client();
//! // The next two patches of widgets fail with 500, as an API server under stress would.
//! server.fail_next(2, Verb::Patch, "widgets", 500);
//! # Ok(())
//! # }
//! ```
//!
//! What it does, and where it differs from the real server, is written down in
//! `kuberator-test/IN_MEMORY.md`; the conformance suite (`tests/conformance.rs`) runs the
//! same scenarios against it and against the real control plane.

mod body;
mod discovery;
mod handler;
mod patch;
mod protobuf;
mod resources;
mod schema;
mod selectors;
mod status;
pub(crate) mod store;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use base64::Engine as _;
use http::Request;
use http::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

pub(crate) use self::body::ResponseBody;
use self::status::ApiError;
use self::store::State;

/// A verb of the Kubernetes API, for faults and refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH, every patch type.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
    /// Any verb.
    Any,
}

impl Verb {
    fn matches(self, verb: Verb) -> bool {
        self == Verb::Any || self == verb
    }

    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Any => "*",
        }
    }
}

struct Failure {
    verb: Verb,
    resource: String,
    remaining: usize,
    code: u16,
    message: Option<String>,
}

#[derive(Default)]
struct Faults {
    failures: Vec<Failure>,
    latency: Duration,
    refused: Vec<(Verb, String)>,
    /// Writes of these objects (by name) are answered this long after they are done, once.
    slow_answers: Vec<(String, Duration)>,
    requests: u64,
    /// Requests by verb and resource (`widgets`, `widgets/status`).
    counted: std::collections::HashMap<(Verb, String), u64>,
}

pub(crate) struct Inner {
    state: Mutex<State>,
    faults: Mutex<Faults>,
    paused: tokio::sync::watch::Sender<bool>,
    drops: tokio::sync::watch::Sender<u64>,
    bookmark_every: Duration,
    served: tokio::sync::OnceCell<Served>,
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

impl Inner {
    /// How long to hold the answer of a write of `name`, once, after the write is done.
    pub(crate) fn answer_delay(&self, verb: Verb, name: Option<&str>) -> Option<Duration> {
        if !matches!(verb, Verb::Create | Verb::Update | Verb::Patch | Verb::Delete) {
            return None;
        }
        let mut faults = self.faults.lock().expect("faults lock");
        let index = faults.slow_answers.iter().position(|(slow, _)| Some(slow.as_str()) == name)?;
        Some(faults.slow_answers.remove(index).1)
    }

    /// Applies the faults a test turned on to one request: waits while paused, waits out
    /// the latency, and answers a refused or failing request.
    async fn faults_for(
        &self,
        verb: Verb,
        resource: &str,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> Option<ApiError> {
        let mut paused = self.paused.subscribe();
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                break;
            }
        }
        let latency = self.faults.lock().expect("faults lock").latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut faults = self.faults.lock().expect("faults lock");
        faults.requests += 1;
        *faults.counted.entry((verb, resource.to_owned())).or_default() += 1;
        let matches = |wanted: &str| wanted == "*" || wanted == resource;
        if faults.refused.iter().any(|(refused, wanted)| refused.matches(verb) && matches(wanted)) {
            let target = name.map(|name| format!(" \"{name}\"")).unwrap_or_default();
            let place = namespace
                .map(|namespace| format!(" in the namespace \"{namespace}\""))
                .unwrap_or_else(|| " at the cluster scope".into());
            return Some(ApiError::forbidden(format!(
                "{resource}{target} is forbidden: User \"kuberator-test\" cannot {} resource \"{resource}\"{place}",
                verb.as_str()
            )));
        }
        let failure = faults.failures.iter_mut().find(|failure| {
            failure.remaining > 0 && failure.verb.matches(verb) && matches(&failure.resource)
        })?;
        failure.remaining -= 1;
        let code = failure.code;
        let message = failure
            .message
            .clone()
            .unwrap_or_else(|| format!("injected fault: {} {resource} answers {code}", verb.as_str()));
        faults.failures.retain(|failure| failure.remaining > 0);
        Some(ApiError::new(code, reason_for(code), message))
    }
}

/// An in-memory Kubernetes API server. Clones share the server.
#[derive(Clone)]
pub struct MemoryServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("MemoryServer").finish_non_exhaustive()
    }
}

impl Default for MemoryServer {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryServer {
    /// An empty server, with the namespaces a new cluster has (`default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`), bookmarks every second on watches that allow them.
    pub fn new() -> Self {
        Self::with_bookmarks_every(Duration::from_secs(1))
    }

    /// [`MemoryServer::new`] with watch bookmarks every `every`.
    pub fn with_bookmarks_every(every: Duration) -> Self {
        MemoryServer {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new()),
                faults: Mutex::new(Faults::default()),
                paused: tokio::sync::watch::channel(false).0,
                drops: tokio::sync::watch::channel(0).0,
                bookmark_every: every,
                served: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// A client that talks to this server in-process: no sockets, no TLS. Needs a Tokio
    /// runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(InProcess(Arc::clone(&self.inner)), "default")
    }

    /// Serves this server over HTTPS on a free loopback port, for `kubectl` and for
    /// processes, until the returned [`Served`] is dropped.
    ///
    /// # Errors
    ///
    /// When no port can be bound or the certificate cannot be made.
    pub async fn serve(&self) -> io::Result<Served> {
        Served::start(&self.inner).await
    }

    /// This server over HTTPS, started on first use and kept as long as the server: what
    /// `kubectl` and other processes use.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn https(&self) -> io::Result<&Served> {
        self.inner.served.get_or_try_init(|| Served::start(&self.inner)).await
    }

    /// Makes the next `count` requests with `verb` on `resource` fail with `code` and the
    /// `Status` reason the real server sends with it. `resource` is a plural as RBAC names
    /// it: `"widgets"` (the object itself), `"widgets/status"`, or `"*"` for every one.
    pub fn fail_next(&self, count: usize, verb: Verb, resource: &str, code: u16) {
        self.push_failure(count, verb, resource, code, None);
    }

    /// [`MemoryServer::fail_next`] with the `Status` message `message`, as an admission
    /// webhook or policy that denies a request would word it.
    pub fn fail_next_with(&self, count: usize, verb: Verb, resource: &str, code: u16, message: &str) {
        self.push_failure(count, verb, resource, code, Some(message.to_string()));
    }

    fn push_failure(&self, count: usize, verb: Verb, resource: &str, code: u16, message: Option<String>) {
        self.inner.faults.lock().expect("faults lock").failures.push(Failure {
            verb,
            resource: resource.into(),
            remaining: count,
            code,
            message,
        });
    }

    /// Delays every request by `latency` (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.inner.faults.lock().expect("faults lock").latency = latency;
    }

    /// Holds the answer to the next write (create, update, patch or delete) of an object named
    /// `name` for `delay` after the write is done: its watch event arrives first, as when the
    /// network between a client and the API server is slow.
    pub fn delay_answer(&self, name: &str, delay: Duration) {
        self.inner.faults.lock().expect("faults lock").slow_answers.push((name.to_owned(), delay));
    }

    /// Refuses `verb` on `resource` (a plural, or `"*"`) with `403 Forbidden`, as RBAC
    /// would; the server allows everything until this is called.
    pub fn refuse(&self, verb: Verb, resource: &str) {
        self.inner.faults.lock().expect("faults lock").refused.push((verb, resource.into()));
    }

    /// Allows everything again and turns off every fault.
    pub fn clear_faults(&self) {
        let mut faults = self.inner.faults.lock().expect("faults lock");
        faults.failures.clear();
        faults.refused.clear();
        faults.slow_answers.clear();
        faults.latency = Duration::ZERO;
        drop(faults);
        self.resume();
    }

    /// Ends every open watch, as a restarting API server or a cut connection would.
    pub fn drop_watches(&self) {
        self.inner.drops.send_modify(|drops| *drops += 1);
        self.inner.state.lock().expect("state lock").watchers.clear();
    }

    /// Forgets the change history: a watch or a `continue` from any resourceVersion handed
    /// out so far gets `410 Gone`, as after etcd compaction. Open watches end too.
    pub fn expire_resource_versions(&self) {
        self.inner.state.lock().expect("state lock").expire_history();
        self.drop_watches();
    }

    /// Holds every request until [`MemoryServer::resume`].
    pub fn pause(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Lets held and new requests through.
    pub fn resume(&self) {
        self.inner.paused.send_replace(false);
    }

    /// How many API requests the server has answered (or failed) so far.
    pub fn requests(&self) -> u64 {
        self.inner.faults.lock().expect("faults lock").requests
    }

    /// The watches of `plural` (of any group) open now, as the real server's
    /// `apiserver_longrunning_requests{verb="WATCH"}` counts them.
    pub fn open_watches(&self, plural: &str) -> usize {
        let state = self.inner.state.lock().expect("state lock");
        state
            .watchers
            .iter()
            .filter(|watcher| watcher.resource.plural == plural && !watcher.sender.is_closed())
            .count()
    }

    /// How many `verb` requests to `resource` (`widgets`, or `widgets/status`; of any group)
    /// the server has answered (or failed) so far, as the real server's
    /// `apiserver_request_total` counts them.
    pub fn requests_to(&self, verb: Verb, resource: &str) -> u64 {
        let faults = self.inner.faults.lock().expect("faults lock");
        faults.counted.get(&(verb, resource.to_owned())).copied().unwrap_or_default()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.state.lock().expect("state lock").resource_version
    }

    /// Answers one request, as the in-process client's would be (the simulator's transport).
    pub(crate) async fn answer(&self, request: Request<bytes::Bytes>) -> Response<ResponseBody> {
        handler::handle_request(Arc::clone(&self.inner), request.map(http_body_util::Full::new)).await
    }

    /// The plural the server serves `kind` of `api_version` under.
    pub(crate) fn plural_of(&self, api_version: &str, kind: &str) -> Option<String> {
        let state = self.inner.state.lock().expect("state lock");
        let resource = state
            .types
            .iter()
            .find(|resource| resource.kind == kind && resource.api_version() == api_version)?;
        Some(resource.plural.clone())
    }

    /// Every stored object as a client sees it (`apiVersion` and `kind` set), by storage and
    /// then namespace and name.
    pub(crate) fn snapshot(&self) -> Vec<serde_json::Value> {
        let state = self.inner.state.lock().expect("state lock");
        let mut objects = Vec::new();
        for (storage, stored) in &state.objects {
            let Some(resource) = state.types.iter().find(|resource| &resource.storage == storage) else {
                continue;
            };
            objects.extend(stored.values().map(|object| store::present(resource, object)));
        }
        objects
    }
}

/// Serves connections while the server exists: the thread holds it weakly, so a server
/// that goes away (with its [`Served`]) stops its thread.
async fn accept(listener: TcpListener, acceptor: TlsAcceptor, inner: std::sync::Weak<Inner>) {
    while let Ok((stream, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        let Some(inner) = inner.upgrade() else { return };
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let inner = Arc::clone(&inner);
                async move { Ok::<_, Infallible>(handler::handle_request(inner, request).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// The in-process `tower::Service` a [`kube::Client`] talks to.
#[derive(Clone)]
struct InProcess(Arc<Inner>);

impl tower::Service<Request<kube::client::Body>> for InProcess {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { Ok(handler::handle_request(inner, request).await) })
    }
}

/// A [`MemoryServer`] served over HTTPS on loopback, from a thread of its own (so it
/// outlives the runtime that asked for it); stops serving when dropped.
pub struct Served {
    address: SocketAddr,
    kubeconfig: String,
    kubeconfig_file: tempfile::NamedTempFile,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Served").field("address", &self.address).finish_non_exhaustive()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Served {
    async fn start(inner: &Arc<Inner>) -> io::Result<Served> {
        let inner = Arc::downgrade(inner);
        let pki = crate::certs::Pki::generate().map_err(io::Error::other)?;
        let chain = CertificateDer::pem_slice_iter(pki.serving_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(io::Error::other)?;
        let key = PrivateKeyDer::from_pem_slice(pki.serving_key.as_bytes()).map_err(io::Error::other)?;
        let mut config = rustls::ServerConfig::builder_with_provider(crate::helpers::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        std::thread::Builder::new().name("kuberator-in-memory-https".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else { return };
                tokio::select! {
                    () = accept(listener, acceptor, inner) => {}
                    _ = stopped => {}
                }
            });
            // Open connections (watches) end with the runtime.
            runtime.shutdown_background();
        })?;
        let kubeconfig = kubeconfig_yaml(&format!("https://{address}"), &pki.ca_cert);
        let mut kubeconfig_file =
            tempfile::Builder::new().prefix("kuberator-in-memory-").suffix(".kubeconfig").tempfile()?;
        io::Write::write_all(&mut kubeconfig_file, kubeconfig.as_bytes())?;
        Ok(Served { address, kubeconfig, kubeconfig_file, stop: Some(stop) })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https://127.0.0.1:port`.
    pub fn server(&self) -> String {
        format!("https://{}", self.address)
    }

    /// A kubeconfig for it, as YAML (any bearer token is accepted).
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Where that kubeconfig is written, for `KUBECONFIG` and `kubectl --kubeconfig`; the
    /// file goes when this value is dropped.
    pub fn kubeconfig_path(&self) -> &Path {
        self.kubeconfig_file.path()
    }

    /// A client that talks to it over HTTPS, as a separate process would.
    ///
    /// # Errors
    ///
    /// When the kubeconfig does not load, which would be a bug here.
    pub async fn client(&self) -> io::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig).map_err(io::Error::other)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(io::Error::other)?;
        kube::Client::try_from(config).map_err(io::Error::other)
    }
}

fn kubeconfig_yaml(server: &str, ca: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kuberator-in-memory
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: kuberator-in-memory
  user:
    token: in-memory
contexts:
- name: kuberator-in-memory
  context:
    cluster: kuberator-in-memory
    user: kuberator-in-memory
    namespace: default
current-context: kuberator-in-memory
"
    )
}
