//! Helpers for operator tests: CRDs, namespaces, waiting, Events, and operators in the
//! background.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authentication::v1::TokenRequestSpec;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;
use kube::CustomResourceExt;
use kube::Resource;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::api::ListParams;
use kube::api::ObjectMeta;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kuberator::shutdown::Shutdown;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

/// A helper that gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelperError {
    /// A condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {what}; last seen:\n{last}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// The object as last seen, as YAML (or `<absent>`).
        last: String,
    },
    /// An API call failed.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> HelperError {
    let what = what.into();
    move |source| HelperError::Api { what, source }
}

/// Installs the CRD of `K` (server-side apply, so it may already exist) and waits until the
/// API server serves it.
///
/// # Errors
///
/// When the apply is refused or the CRD is not established within 30 seconds.
pub async fn install_crd<K: CustomResourceExt>(client: &Client) -> Result<(), HelperError> {
    install_crd_object(client, &K::crd()).await
}

/// Installs `crd` (as printed by an operator's `crd` subcommand, say) like [`install_crd`].
///
/// # Errors
///
/// When the apply is refused or the CRD is not established within 30 seconds.
pub async fn install_crd_object(client: &Client, crd: &CustomResourceDefinition) -> Result<(), HelperError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply("kuberator-test").force(), &Patch::Apply(crd))
        .await
        .map_err(api_error(format!("installing CRD {name}")))?;
    wait_for(&crds, &name, Duration::from_secs(30), &format!("CRD {name} to be established"), |crd| {
        crd.and_then(|crd| crd.status.as_ref()).and_then(|status| status.conditions.as_ref()).is_some_and(
            |conditions| conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"),
        )
    })
    .await?;
    Ok(())
}

/// Polls `name` through `api` every 100 ms until `condition` holds for it (`None` while it
/// does not exist), and returns it as last seen.
///
/// # Errors
///
/// On timeout, with the object's last state as YAML; on an API error other than
/// not-found.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> Result<Option<K>, HelperError>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    let started = Instant::now();
    loop {
        let seen =
            api.get_opt(name).await.map_err(api_error(format!("reading {name} while waiting for {what}")))?;
        if condition(seen.as_ref()) {
            return Ok(seen);
        }
        if started.elapsed() > timeout {
            let last = match &seen {
                Some(object) => serde_yaml_ng::to_string(object).unwrap_or_else(|_| format!("{object:#?}")),
                None => "<absent>".into(),
            };
            return Err(HelperError::Timeout { what: what.into(), timeout, last });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The opening of an integration test: logs ([`crate::init_tracing`]), the
/// [shared](crate::TestCluster::shared) cluster (the real control plane, or the in-memory
/// server with `KUBERATOR_TEST_CLUSTER=in-memory`), and an admin client for it.
///
/// # Panics
///
/// When the control plane does not start or answer: a test never skips.
pub async fn admin_client() -> Client {
    crate::init_tracing();
    let cluster = crate::TestCluster::shared().await.expect("the cluster must start (tests never skip)");
    cluster.client().await.expect("a client for the cluster")
}

/// [`admin_client`], and a namespace of the test's own ([`test_namespace`]).
///
/// # Panics
///
/// When the control plane does not start or the namespace cannot be created.
pub async fn test_env(prefix: &str) -> (Client, String) {
    let client = admin_client().await;
    let namespace = test_namespace(&client, prefix).await.expect("a namespace for the test");
    (client, namespace)
}

/// A token for ServiceAccount `name` in `namespace` (created if missing), valid for an hour,
/// from the TokenRequest API: what a pod running as that ServiceAccount holds. Use it as a
/// bearer token, or in a kubeconfig ([`ControlPlane::kubeconfig_with_token`](crate::ControlPlane::kubeconfig_with_token)).
///
/// # Errors
///
/// When the ServiceAccount cannot be created or the token not issued.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<String, HelperError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(source) => return Err(api_error(format!("creating ServiceAccount {namespace}/{name}"))(source)),
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(api_error(format!("requesting a token for ServiceAccount {namespace}/{name}")))?;
    Ok(issued.status.and_then(|status| status.token).unwrap_or_default())
}

/// A namespace of its own for one test, named `<prefix>-<random>`.
///
/// # Errors
///
/// When the namespace cannot be created.
pub async fn test_namespace(client: &Client, prefix: &str) -> Result<String, HelperError> {
    static CREATED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let count = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let suffix = (clock ^ std::process::id().rotate_left(16)).wrapping_add(count.wrapping_mul(0x9E37_79B9));
    let name = format!("{prefix}-{suffix:08x}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .map_err(api_error(format!("creating namespace {name}")))?;
    Ok(name)
}

/// Deletes a namespace made by [`test_namespace`]; what it held goes with it.
///
/// # Errors
///
/// When the delete is refused.
pub async fn delete_namespace(client: &Client, name: &str) -> Result<(), HelperError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(HelperError::Api { what: format!("deleting namespace {name}"), source }),
    }
}

/// The `events.k8s.io/v1` Events regarding `object`, oldest first: what `kubectl describe`
/// and `kubectl events` show for it.
///
/// # Errors
///
/// When the Events cannot be listed.
pub async fn events_for<K>(client: &Client, object: &K) -> Result<Vec<Event>, HelperError>
where
    K: Resource,
    K::DynamicType: Default,
{
    let namespace = object.namespace().unwrap_or_else(|| "default".into());
    let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let name = object.name_any();
    let uid = object.uid();
    let mut found: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .map_err(api_error(format!("listing Events in {namespace}")))?
        .items
        .into_iter()
        .filter(|event| {
            event.regarding.as_ref().is_some_and(|regarding| {
                regarding.kind.as_deref() == Some(kind.as_str())
                    && regarding.name.as_deref() == Some(name.as_str())
                    && (uid.is_none() || regarding.uid == uid)
            })
        })
        .collect();
    found.sort_by_key(|event| event.event_time.as_ref().map(|time| time.0));
    Ok(found)
}

/// An operator running in the background, stopped through its shutdown future.
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Background {
    /// Spawns `start(shutdown)`; `shutdown` completes when [`Background::stop`] is called or
    /// the value is dropped.
    pub fn spawn<F, Fut>(start: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::new(async move {
            let _ = stopped.await;
        });
        Self { stop: Some(stop), task: Some(tokio::spawn(start(shutdown))) }
    }

    /// Fires the shutdown future and waits for the operator to return.
    ///
    /// # Panics
    ///
    /// When the operator panicked, or did not return within `timeout`.
    pub async fn stop(mut self, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("a running operator has a task");
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the operator task failed: {error}"),
            Err(_) => panic!("the operator did not stop within {timeout:?} of its shutdown signal"),
        }
    }

    /// Whether the operator has returned.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until an `events.k8s.io/v1` Event with `reason` regards the object `name` in
/// `namespace` (of any kind: also one the test holds no type for), and returns the newest.
///
/// # Errors
///
/// When the Events cannot be listed, or none comes within `timeout`.
pub async fn wait_for_event(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<Event, HelperError> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let listed = events
            .list(&ListParams::default())
            .await
            .map_err(api_error(format!("listing Events in {namespace}")))?;
        let newest = listed
            .items
            .into_iter()
            .filter(|event| {
                event.reason.as_deref() == Some(reason)
                    && event.regarding.as_ref().and_then(|regarding| regarding.name.as_deref()) == Some(name)
            })
            .max_by_key(|event| event.event_time.as_ref().map(|time| time.0));
        if let Some(event) = newest {
            return Ok(event);
        }
        if started.elapsed() > timeout {
            return Err(HelperError::Timeout {
                what: format!("an Event {reason} regarding {namespace}/{name}"),
                timeout,
                last: "<absent>".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` over plain HTTP/1.1 from `address` (an operator's `/healthz` or `/readyz`, or
/// its `/metrics` with `--metrics-insecure`): the status code and the body.
///
/// # Errors
///
/// When the connection fails or the answer is not HTTP.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    exchange(stream, address, path, None).await
}

/// `GET path` over HTTPS from `address` (an operator's secure `/metrics`), with `token` as
/// the bearer token if given: the status code and the body.
///
/// It accepts any server certificate, as a scraper configured with `insecure_skip_verify`
/// does: the operator's is self-signed unless it was given one. Only for tests.
///
/// # Errors
///
/// When the connection or the TLS handshake fails, or the answer is not HTTP.
pub async fn https_get(
    address: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let provider = crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    let stream = connector.connect(name, stream).await?;
    exchange(stream, address, path, token).await
}

/// Sends one `GET` and reads the whole answer.
async fn exchange<S>(
    mut stream: S,
    address: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;

    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // TLS may hold the request back until flushed (it did under load, and the server's header
    // timeout then closed the connection).
    stream.flush().await?;
    let mut response = Vec::new();
    // A TLS peer may close without close_notify once it has answered; what came is the answer.
    if let Err(error) = stream.read_to_end(&mut response).await
        && (response.is_empty() || error.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(error);
    }
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {response:?}"))
    })?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A certificate verifier that accepts every server certificate, checking only that the
/// handshake is signed by it.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The value of the series `series` (`name{labels}` exactly as printed) in Prometheus text.
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The process-wide rustls provider when one is installed, else *ring*'s, as kube's own TLS
/// uses (rustls 0.23.48 deprecates it for its lack of post-quantum key exchange; a test
/// client or server has no need of that).
pub(crate) fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default().cloned().unwrap_or_else(|| {
        #[allow(deprecated)]
        let ring = rustls::crypto::ring::default_provider();
        std::sync::Arc::new(ring)
    })
}
