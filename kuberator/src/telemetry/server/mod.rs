//! The endpoints: `/healthz` and `/readyz` in plain HTTP for the kubelet, and `/metrics`,
//! either in plain HTTP to anyone ([`serve`], [`MetricsAccess::Open`]) or over HTTPS to the
//! callers the API server vouches for ([`MetricsAccess::Secure`]).

mod connections;
mod review;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::Request;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use kube::Client;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use self::connections::AcceptBackoff;
use self::connections::Connections;
use self::connections::Limits;
use self::review::Reviewer;
use self::review::Verdict;

/// A running endpoint; it stops when dropped.
#[derive(Debug)]
pub struct Telemetry {
    address: SocketAddr,
    task: JoinHandle<()>,
    /// Dropped with it: every open connection closes then.
    _stop: tokio::sync::watch::Sender<()>,
}

impl Telemetry {
    /// Where it listens (with the port the system chose, if `:0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who may read `/metrics`.
#[derive(Debug)]
#[non_exhaustive]
pub enum MetricsAccess {
    /// Anyone who can reach the port, in plain HTTP: for a local run, or behind a proxy of
    /// your own.
    Open,
    /// Over HTTPS, only callers whose bearer token the API server authenticates
    /// (TokenReview) and who may `get` the non-resource URL `/metrics`
    /// (SubjectAccessReview): the way controller-runtime's secure metrics filter works.
    Secure(SecureMetrics),
}

/// `/metrics` over HTTPS for the callers the API server vouches for: see
/// [`MetricsAccess::Secure`].
///
/// Answers are remembered for a minute per token (by its SHA-256; the token itself is never
/// kept), so a scrape every few seconds costs the API server two calls a minute. What a
/// hostile caller can make the operator hold or send is bounded:
///
/// - an `Authorization` header over 8 KiB is refused (401) unread, and a request's headers
///   over 16 KiB are answered 431;
/// - tokens the API server refused are remembered apart (at most 4096) from those it
///   authenticated (at most 1024), so strangers cannot push a scraper's answer out;
/// - concurrent requests with one token share one review;
/// - tokens not seen authenticated in the last 15 minutes are reviewed at most 5 a second
///   (bursts of 20); past that the caller gets `429 Too Many Requests` with `Retry-After`.
///   A scraper's token, once authenticated, is never held back by strangers.
///
/// Each port, the probes' included, holds at most 256 connections (a new one takes the
/// place of the one idle longest), closes a connection idle for 90 s, and gives a caller
/// 10 s for its TLS handshake and 10 s for a request's headers; a failed `accept` (out of
/// file descriptors) backs off up to a second instead of spinning.
pub struct SecureMetrics {
    client: Client,
    identity: TlsIdentity,
    audiences: Vec<String>,
}

impl SecureMetrics {
    /// Checks callers with `client`, the operator's own. It needs `create` on `tokenreviews`
    /// (group `authentication.k8s.io`) and `subjectaccessreviews` (group
    /// `authorization.k8s.io`); the derived operator's `rbac` subcommand prints them. Serves
    /// `identity`.
    pub fn new(client: Client, identity: TlsIdentity) -> Self {
        Self { client, identity, audiences: Vec::new() }
    }

    /// Accepts only tokens meant for one of `audiences` (TokenReview `spec.audiences`, as
    /// kube-rbac-proxy's `--auth-token-audiences`). Default: none asked, so the API server
    /// accepts tokens meant for itself, which is what a Prometheus in the cluster sends with
    /// its ServiceAccount token. With an audience, a token sent to `/metrics` cannot be
    /// replayed against the API server, but the scraper must mount a projected
    /// ServiceAccount token for that audience ([how](crate::telemetry#who-may-scrape-and-what-a-hostile-caller-can-do)).
    #[must_use]
    pub fn audiences(mut self, audiences: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }
}

impl std::fmt::Debug for SecureMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureMetrics")
            .field("identity", &self.identity)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, for serving HTTPS.
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind needed.
    #[error("reading {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong (never the file's content).
        reason: String,
    },
    /// A self-signed certificate could not be generated.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate and key do not make a usable TLS configuration.
    #[error("the certificate and key are not usable for TLS: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsIdentity {
    /// A self-signed certificate for `localhost` and this host's name, made now and kept in
    /// memory only (the root filesystem may be read-only). A scraper cannot verify it; give
    /// one of your own ([`TlsIdentity::from_dir`]) when it must.
    ///
    /// # Errors
    ///
    /// When the key cannot be generated.
    pub fn self_signed() -> Result<Self, TlsError> {
        let mut names = vec!["localhost".to_owned()];
        if let Ok(host) = std::env::var("HOSTNAME")
            && !host.is_empty()
        {
            names.push(host);
        }
        let generated = rcgen::generate_simple_self_signed(names)?;
        Ok(Self {
            chain: vec![generated.cert.der().clone()],
            key: PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|reason| {
                TlsError::File { path: "(generated key)".to_owned(), reason: reason.to_owned() }
            })?,
        })
    }

    /// `tls.crt` (the certificate chain) and `tls.key` (its key) in PEM from `dir`: the
    /// layout of a Kubernetes TLS Secret mounted as a volume.
    ///
    /// # Errors
    ///
    /// When a file is missing or holds no certificate or key.
    pub fn from_dir(dir: &Path) -> Result<Self, TlsError> {
        let (chain, key) = read_pair(dir)?;
        Ok(Self { chain, key })
    }

    fn acceptor(self) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// `tls.crt` (a certificate chain) and `tls.key` (its key) in PEM from `dir`, the layout of a
/// mounted TLS Secret; an error names the file, never its content.
pub(crate) fn read_pair(
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let file = |name: &str| dir.join(name).display().to_string();
    let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| TlsError::File { path: file("tls.crt"), reason: error.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::File { path: file("tls.crt"), reason: "no certificate in it".to_owned() });
    }
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))
        .map_err(|error| TlsError::File { path: file("tls.key"), reason: error.to_string() })?;
    Ok((chain, key))
}

/// The application's process-wide rustls provider when it installed one (aws-lc-rs, with
/// post-quantum key exchange, say), else *ring*'s: kube's own TLS already builds on *ring*, so
/// that choice costs no second cryptography library. rustls 0.23.48 deprecates *ring*'s
/// provider for its lack of post-quantum algorithms; install another as the process default
/// (`CryptoProvider::install_default`) to have them here too.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default().cloned().unwrap_or_else(|| {
        #[allow(deprecated)]
        let ring = rustls::crypto::ring::default_provider();
        Arc::new(ring)
    })
}

const ALL: &[&str] = &["/metrics", "/healthz", "/readyz"];
const HEALTH: &[&str] = &["/healthz", "/readyz"];
const METRICS: &[&str] = &["/metrics"];

/// Serves `/metrics`, `/healthz` and `/readyz` in plain HTTP on `address`, to anyone, until
/// the returned value is dropped.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(address: SocketAddr) -> io::Result<Telemetry> {
    listen(address, Arc::new(Endpoint { paths: ALL, tls: None, reviewer: None })).await
}

/// Serves `/healthz` and `/readyz` in plain HTTP on `address`, for the kubelet's probes.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve_health(address: SocketAddr) -> io::Result<Telemetry> {
    listen(address, Arc::new(Endpoint { paths: HEALTH, tls: None, reviewer: None })).await
}

/// Serves `/metrics` on `address` to whom `access` allows.
///
/// # Errors
///
/// When the address cannot be bound, or the certificate is not usable.
pub async fn serve_metrics(address: SocketAddr, access: MetricsAccess) -> io::Result<Telemetry> {
    let endpoint = match access {
        MetricsAccess::Open => Endpoint { paths: METRICS, tls: None, reviewer: None },
        MetricsAccess::Secure(SecureMetrics { client, identity, audiences }) => Endpoint {
            paths: METRICS,
            tls: Some(identity.acceptor().map_err(io::Error::other)?),
            reviewer: Some(Reviewer::new(client, audiences)),
        },
    };
    listen(address, Arc::new(endpoint)).await
}

struct Endpoint {
    paths: &'static [&'static str],
    tls: Option<TlsAcceptor>,
    reviewer: Option<Reviewer>,
}

async fn listen(address: SocketAddr, endpoint: Arc<Endpoint>) -> io::Result<Telemetry> {
    let access = if endpoint.reviewer.is_some() { "to authorized callers" } else { "to anyone" };
    let what = format!("{} {access}", endpoint.paths.join(", "));
    let tls = endpoint.tls.clone();
    listen_with(address, tls, endpoint, &what).await
}

/// What a port answers, a whole request at a time.
pub(crate) trait Answer: Send + Sync + 'static {
    /// The response to `request`.
    fn answer(&self, request: Request<Incoming>) -> BoxFuture<'_, Response<Full<Bytes>>>;
}

/// Serves `answer` on `address` (over TLS when `tls` is given) with the bounds of
/// [`Limits::DEFAULT`], until the returned value is dropped. `what` names the port in the log.
pub(crate) async fn listen_with(
    address: SocketAddr,
    tls: Option<TlsAcceptor>,
    answer: Arc<dyn Answer>,
    what: &str,
) -> io::Result<Telemetry> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, "serving {what} over {scheme}");
    let endpoint = Arc::new(Port { tls, answer });
    let connections = Connections::new(Limits::DEFAULT);
    let (stop, stopped) = tokio::sync::watch::channel(());
    let task = tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    stream
                }
                Err(error) => {
                    let delay = backoff.failed();
                    tracing::warn!(%error, %address, "could not accept a connection; trying again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let Some(admitted) = connections.admit() else {
                tracing::debug!(%address, "every connection is answering a request: a new one is closed");
                continue;
            };
            let endpoint = Arc::clone(&endpoint);
            let limits = connections.limits();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let connection = admitted.connection();
                let served = accept(stream, endpoint, connection, limits);
                tokio::select! {
                    () = served => {}
                    () = admitted.closed() => tracing::debug!("closed an idle telemetry connection"),
                    // The port stopped: the connections it kept open close with it.
                    _ = stopped.changed() => {}
                }
            });
        }
    });
    Ok(Telemetry { address, task, _stop: stop })
}

/// A port: its TLS, if any, and what it answers.
struct Port {
    tls: Option<TlsAcceptor>,
    answer: Arc<dyn Answer>,
}

/// Serves one accepted connection: its TLS handshake first, if the port has TLS.
async fn accept(
    stream: TcpStream,
    endpoint: Arc<Port>,
    connection: Arc<connections::Connection>,
    limits: Limits,
) {
    let Some(acceptor) = &endpoint.tls else {
        return serve_connection(stream, endpoint, connection, limits).await;
    };
    match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_connection(stream, endpoint, connection, limits).await,
        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake took longer than {:?}", limits.handshake),
    }
}

async fn serve_connection<S>(
    stream: S,
    endpoint: Arc<Port>,
    connection: Arc<connections::Connection>,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let endpoint = Arc::clone(&endpoint);
        let busy = connection.request();
        async move {
            let response = endpoint.answer.answer(request).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_header_size(limits.header_bytes)
        .max_buf_size(limits.header_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "telemetry connection ended with an error");
    }
}

impl Answer for Endpoint {
    fn answer(&self, request: Request<Incoming>) -> BoxFuture<'_, Response<Full<Bytes>>> {
        Box::pin(async move { self.respond(&request).await })
    }
}

impl Endpoint {
    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !self.paths.contains(&path) {
            let hint = format!("not found: try {}", self.paths.join(" or "));
            return response(StatusCode::NOT_FOUND, "text/plain", hint);
        }
        if let Some(reviewer) = &self.reviewer {
            let authorization = request.headers().get(hyper::header::AUTHORIZATION);
            let refused = match reviewer.verdict(authorization.map(hyper::header::HeaderValue::as_bytes)).await {
                Ok(Verdict::Allowed) => None,
                Ok(Verdict::Unauthenticated) => Some((
                    StatusCode::UNAUTHORIZED,
                    "send `Authorization: Bearer <token>` with a token that the Kubernetes API server accepts, \
                     such as a ServiceAccount's (at most 8 KiB)"
                        .to_owned(),
                )),
                Ok(Verdict::Forbidden { user }) => Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "{user} may not get /metrics: grant it `get` on the non-resource URL /metrics (the \
                         operator's `rbac` subcommand prints a ClusterRole `<operator>-metrics-reader` that does)"
                    ),
                )),
                Ok(Verdict::Busy) => {
                    let mut answer = response(
                        StatusCode::TOO_MANY_REQUESTS,
                        "text/plain",
                        "too many new tokens to check with the API server; try again in a second".to_owned(),
                    );
                    answer.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
                    return answer;
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error,
                        "could not check a /metrics caller with the API server; the operator needs `create` on \
                         tokenreviews and subjectaccessreviews (its `rbac` subcommand prints them)"
                    );
                    Some((
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "could not check the caller with the Kubernetes API server; see the operator's log".to_owned(),
                    ))
                }
            };
            if let Some((status, reason)) = refused {
                return response(status, "text/plain", reason);
            }
        }
        match path {
            "/metrics" => response(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                super::encode(),
            ),
            "/healthz" => response(StatusCode::OK, "text/plain", "ok".to_owned()),
            _ => match super::readiness() {
                Ok(()) => response(StatusCode::OK, "text/plain", "ok".to_owned()),
                Err(reason) => response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", reason),
            },
        }
    }
}

pub(crate) fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response of static parts is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_directory_is_read_and_a_bad_one_is_named_without_its_content() {
        let dir = std::env::temp_dir().join(format!("kuberator-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("tls.crt"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("tls.key"), generated.signing_key.serialize_pem()).unwrap();
        let identity = TlsIdentity::from_dir(&dir).unwrap();
        assert_eq!(format!("{identity:?}"), "TlsIdentity { certificates: 1, .. }", "never the key");
        identity.acceptor().unwrap();

        std::fs::write(dir.join("tls.key"), "not a key, and secret").unwrap();
        let error = TlsIdentity::from_dir(&dir).unwrap_err().to_string();
        assert!(error.starts_with(&format!("reading {}", dir.join("tls.key").display())), "{error}");
        assert!(!error.contains("secret"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();

        let error = TlsIdentity::from_dir(&dir).unwrap_err().to_string();
        assert!(error.contains("tls.crt"), "{error}");
        TlsIdentity::self_signed().unwrap().acceptor().unwrap();
    }
}
