//! The endpoints: `/healthz` and `/readyz` in plain HTTP for the kubelet, and `/metrics`,
//! either in plain HTTP to anyone ([`serve`], [`MetricsAccess::Open`]) or over HTTPS to the
//! callers the API server vouches for ([`MetricsAccess::Secure`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use http_body_util::Full;
use hyper::Request;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authentication::v1::TokenReviewSpec;
use k8s_openapi::api::authorization::v1::NonResourceAttributes;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec;
use kube::Api;
use kube::Client;
use kube::api::PostParams;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A running endpoint; it stops when dropped.
#[derive(Debug)]
pub struct Telemetry {
    address: SocketAddr,
    task: JoinHandle<()>,
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
pub enum MetricsAccess {
    /// Anyone who can reach the port, in plain HTTP: for a local run, or behind a proxy of
    /// your own.
    Open,
    /// Over HTTPS, only callers whose bearer token the API server authenticates
    /// (TokenReview) and who may `get` the non-resource URL `/metrics`
    /// (SubjectAccessReview): the way controller-runtime's secure metrics filter works.
    /// Answers are remembered for a minute per token, so a scrape every few seconds costs the
    /// API server two calls a minute.
    Secure {
        /// To ask the API server; the operator's own client. It needs `create` on
        /// `tokenreviews` (group `authentication.k8s.io`) and `subjectaccessreviews` (group
        /// `authorization.k8s.io`); the derived operator's `rbac` subcommand prints them.
        client: Client,
        /// The certificate it serves.
        identity: TlsIdentity,
    },
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("Open"),
            Self::Secure { identity, .. } => {
                f.debug_struct("Secure").field("identity", identity).finish_non_exhaustive()
            }
        }
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
        let file = |name: &str| dir.join(name).display().to_string();
        let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| TlsError::File { path: file("tls.crt"), reason: error.to_string() })?;
        if chain.is_empty() {
            return Err(TlsError::File { path: file("tls.crt"), reason: "no certificate in it".to_owned() });
        }
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))
            .map_err(|error| TlsError::File { path: file("tls.key"), reason: error.to_string() })?;
        Ok(Self { chain, key })
    }

    fn acceptor(self) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
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
        MetricsAccess::Secure { client, identity } => Endpoint {
            paths: METRICS,
            tls: Some(identity.acceptor().map_err(io::Error::other)?),
            reviewer: Some(Reviewer { client, remembered: Mutex::default() }),
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
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let scheme = if endpoint.tls.is_some() { "https" } else { "http" };
    let access = if endpoint.reviewer.is_some() { "to authorized callers" } else { "to anyone" };
    tracing::info!(%address, paths = %endpoint.paths.join(", "), "serving over {scheme} {access}");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let endpoint = Arc::clone(&endpoint);
            tokio::spawn(async move {
                match &endpoint.tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => serve_connection(stream, endpoint).await,
                        Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                    },
                    None => serve_connection(stream, endpoint).await,
                }
            });
        }
    });
    Ok(Telemetry { address, task })
}

async fn serve_connection<S>(stream: S, endpoint: Arc<Endpoint>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let endpoint = Arc::clone(&endpoint);
        async move { Ok::<_, Infallible>(endpoint.answer(&request).await) }
    });
    if let Err(error) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
        tracing::debug!(%error, "telemetry connection ended with an error");
    }
}

impl Endpoint {
    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !self.paths.contains(&path) {
            let hint = format!("not found: try {}", self.paths.join(" or "));
            return response(StatusCode::NOT_FOUND, "text/plain", hint);
        }
        if let Some(reviewer) = &self.reviewer {
            let authorization = request.headers().get(hyper::header::AUTHORIZATION);
            let refused = match reviewer.verdict(authorization.and_then(|value| value.to_str().ok())).await {
                Ok(Verdict::Allowed) => None,
                Ok(Verdict::Unauthenticated) => Some((
                    StatusCode::UNAUTHORIZED,
                    "send `Authorization: Bearer <token>` with a token that the Kubernetes API server accepts, \
                     such as a ServiceAccount's"
                        .to_owned(),
                )),
                Ok(Verdict::Forbidden { user }) => Some((
                    StatusCode::FORBIDDEN,
                    format!(
                        "{user} may not get /metrics: grant it `get` on the non-resource URL /metrics (the \
                         operator's `rbac` subcommand prints a ClusterRole `<operator>-metrics-reader` that does)"
                    ),
                )),
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

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response of static parts is valid")
}

/// How long an answer about a token is remembered.
const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// At most this many tokens are remembered; expired answers go first.
const REMEMBER_AT_MOST: usize = 1024;

/// What the API server said about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// No token, or one the API server does not accept.
    Unauthenticated,
    /// Authenticated as `user`, and not allowed to get `/metrics`.
    Forbidden {
        user: String,
    },
}

/// Asks the API server who a bearer token belongs to and whether they may get `/metrics`,
/// and remembers the answer for a while.
struct Reviewer {
    client: Client,
    /// Per token: the verdict, and when it was given. Tokens stay in this process's memory
    /// only, and are never logged.
    remembered: Mutex<HashMap<String, (Verdict, Instant)>>,
}

impl Reviewer {
    async fn verdict(&self, authorization: Option<&str>) -> Result<Verdict, kube::Error> {
        let token = authorization
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        let Some(token) = token else { return Ok(Verdict::Unauthenticated) };
        if let Some((verdict, at)) = self.remembered().get(token)
            && at.elapsed() < REMEMBER_FOR
        {
            return Ok(verdict.clone());
        }
        let verdict = self.review(token).await?;
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBER_AT_MOST {
            remembered.retain(|_, (_, at)| at.elapsed() < REMEMBER_FOR);
            if remembered.len() >= REMEMBER_AT_MOST {
                remembered.clear();
            }
        }
        remembered.insert(token.to_owned(), (verdict.clone(), Instant::now()));
        Ok(verdict)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Verdict, Instant)>> {
        self.remembered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), ..TokenReviewSpec::default() },
            ..TokenReview::default()
        };
        let reviewed =
            Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            tracing::debug!("a /metrics caller's token was not accepted by the API server");
            return Ok(Verdict::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".to_owned()),
                    verb: Some("get".to_owned()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let username = user.username.unwrap_or_default();
        if decided.status.is_some_and(|status| status.allowed) {
            tracing::debug!(user = %username, "allowed to get /metrics");
            Ok(Verdict::Allowed)
        } else {
            tracing::debug!(user = %username, "not allowed to get /metrics");
            Ok(Verdict::Forbidden { user: username })
        }
    }
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

    #[tokio::test]
    async fn a_caller_without_a_bearer_token_is_not_authenticated_and_nothing_is_asked() {
        let reviewer =
            Reviewer { client: crate::cache::test_support::offline_client(), remembered: Mutex::default() };
        for header in [None, Some(""), Some("Basic dXNlcjpwYXNz"), Some("Bearer "), Some("Bearer")] {
            assert_eq!(reviewer.verdict(header).await.unwrap(), Verdict::Unauthenticated, "{header:?}");
        }
        assert!(reviewer.remembered().is_empty());
    }
}
