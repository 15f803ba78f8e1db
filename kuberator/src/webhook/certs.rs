//! The webhook port's certificates: made by the operator and renewed before they expire, or
//! read from a mounted Secret in cert-manager's layout and read again when it changes.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;
use std::time::SystemTime;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use rustls_pki_types::PrivateKeyDer;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::ClientHello;
use tokio_rustls::rustls::server::ResolvesServerCert;
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::telemetry::TlsError;

/// How long a generated CA is valid unless [`Certificates::validity`] says otherwise.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a generated serving certificate is valid unless [`Certificates::validity`] says
/// otherwise.
pub const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a mounted certificate directory is read again.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Where the webhook port's certificate comes from.
///
/// - [`Certificates::generated`] (the default of a derived operator): a CA and a serving
///   certificate made at start, in memory only. The serving certificate is renewed when two
///   thirds of its life have passed; the CA too, and then the new CA goes into the CA bundle
///   (next to the old one, until the old one expires) before any certificate it signed is
///   served, so the API server trusts every certificate the port serves. Nothing restarts.
/// - [`Certificates::from_dir`]: `tls.crt`, `tls.key` and `ca.crt` from a directory, the
///   layout of a cert-manager Secret mounted as a volume; read again every 10 s, so a
///   certificate cert-manager renews is served within seconds. The CA bundle is `ca.crt`.
#[derive(Debug, Clone)]
pub struct Certificates {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Generated { ca: Duration, serving: Duration, shared: Option<(String, String)> },
    Dir(PathBuf),
}

impl Certificates {
    /// A CA and serving certificate made at start and renewed before they expire, the CA in
    /// memory only: for one replica. See the type.
    pub fn generated() -> Self {
        Self {
            source: Source::Generated {
                ca: DEFAULT_CA_VALIDITY,
                serving: DEFAULT_SERVING_VALIDITY,
                shared: None,
            },
        }
    }

    /// Like [`Certificates::generated`], with the CA kept in the Secret `namespace/name`
    /// (`ca.crt`, `ca.key`, and the CA before it while it is valid), so that every replica's
    /// certificate comes from one CA and the bundle they write is the same: the derived
    /// operator's default, in its own namespace, as `<process>-webhook-ca`. The first replica
    /// creates it; the one that finds the CA due renews it (the others see the conflict and
    /// read the new one). Each replica makes its own serving certificate and key, which never
    /// leave it.
    pub fn shared(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let shared = Some((namespace.into(), name.into()));
        Self {
            source: Source::Generated { ca: DEFAULT_CA_VALIDITY, serving: DEFAULT_SERVING_VALIDITY, shared },
        }
    }

    /// `tls.crt`, `tls.key` and `ca.crt` (PEM) from `dir`, read again when they change.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Self {
        Self { source: Source::Dir(dir.into()) }
    }

    /// How long generated certificates are valid: the CA, and the serving certificate (never
    /// past its CA). Each is renewed when two thirds of its life have passed. Without effect
    /// on [`Certificates::from_dir`].
    #[must_use]
    pub fn validity(mut self, ca: Duration, serving: Duration) -> Self {
        if let Source::Generated { ca: ca_validity, serving: serving_validity, .. } = &mut self.source {
            *ca_validity = ca.max(Duration::from_secs(3));
            *serving_validity = serving.max(Duration::from_secs(3)).min(*ca_validity);
        }
        self
    }

    /// Makes or reads the first certificate: the server starts serving it, and `renew` keeps
    /// it current.
    pub(super) async fn start(
        &self,
        names: &[String],
        client: &kube::Client,
    ) -> Result<(Served, Renewal), TlsError> {
        match &self.source {
            Source::Generated { ca, serving, shared } => {
                let store = shared.as_ref().map(|(namespace, name)| {
                    Box::new(Store {
                        secrets: kube::Api::namespaced(client.clone(), namespace),
                        name: name.clone(),
                    })
                });
                let mut renewal = Renewal::Generated {
                    names: names.to_vec(),
                    authority: None,
                    previous: None,
                    ca: *ca,
                    serving: *serving,
                    store,
                };
                // Due since ever: the first certificate is made now.
                let served = renewal.renew(SystemTime::UNIX_EPOCH).await?.expect("a due certificate is made");
                Ok((served, renewal))
            }
            Source::Dir(dir) => {
                let (served, stamp) = read_dir(dir)?;
                Ok((served, Renewal::Dir { dir: dir.clone(), stamp }))
            }
        }
    }
}

/// What the port serves now: its certificate and key, and the CAs the API server must trust.
#[derive(Clone)]
pub(super) struct Served {
    pub(super) key: Arc<CertifiedKey>,
    /// PEM; empty when the Secret has no `ca.crt` (cert-manager's CA injector fills the
    /// configurations in then).
    pub(super) bundle: String,
    /// When it should be renewed.
    pub(super) renew_at: SystemTime,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").field("renew_at", &self.renew_at).finish_non_exhaustive()
    }
}

/// Where a shared CA is kept.
pub(super) struct Store {
    secrets: kube::Api<Secret>,
    name: String,
}

/// How the served certificate is kept current.
pub(super) enum Renewal {
    Generated {
        names: Vec<String>,
        authority: Option<Box<Authority>>,
        /// The CA before this one, with when it expires, while it does not.
        previous: Option<(String, SystemTime)>,
        ca: Duration,
        serving: Duration,
        store: Option<Box<Store>>,
    },
    Dir {
        dir: PathBuf,
        stamp: Vec<u8>,
    },
}

impl Renewal {
    /// When to look again, from what is served now.
    pub(super) fn next_check(&self, served: &Served) -> Duration {
        match self {
            Renewal::Generated { .. } => {
                served.renew_at.duration_since(SystemTime::now()).unwrap_or_default()
            }
            Renewal::Dir { .. } => RELOAD_EVERY,
        }
    }

    /// A new certificate when one is due (a generated one from `due_at` on; a read one when
    /// the directory changed); `None` otherwise. The bundle of a renewed CA holds the new CA
    /// and the old one while the old one is valid.
    pub(super) async fn renew(&mut self, due_at: SystemTime) -> Result<Option<Served>, TlsError> {
        match self {
            Renewal::Generated { names, authority, previous, ca, serving, store } => {
                let now = SystemTime::now();
                if now < due_at {
                    return Ok(None);
                }
                match store {
                    Some(store) => {
                        let (current, before) = store.authority(*ca).await?;
                        *authority = Some(Box::new(current));
                        *previous = before;
                    }
                    None => {
                        let due = authority.as_ref().is_none_or(|current| now >= current.renew_at);
                        if due {
                            let next = Authority::new(*ca)?;
                            *previous = authority.take().map(|old| (old.pem, old.not_after));
                            *authority = Some(Box::new(next));
                        }
                    }
                }
                if previous.as_ref().is_some_and(|(_, expires)| now >= *expires) {
                    *previous = None;
                }
                let current = authority.as_ref().expect("an authority was made or read above");
                let mut issued = current.issue(names, *serving)?;
                issued.renew_at = issued.renew_at.min(current.renew_at);
                if let Some((pem, expires)) = previous {
                    issued.bundle.push_str(pem);
                    // Renewed when the old CA expires, so that the bundle is written without it.
                    issued.renew_at = issued.renew_at.min(*expires);
                }
                Ok(Some(issued))
            }
            Renewal::Dir { dir, stamp } => {
                let now = stamp_of(dir);
                if now == *stamp {
                    return Ok(None);
                }
                let (served, read) = read_dir(dir)?;
                *stamp = read;
                Ok(Some(served))
            }
        }
    }
}

impl Store {
    /// The CA in the Secret, made (or renewed, when due) first if need be, and the one before
    /// it; a conflict with another replica doing the same is resolved by reading again.
    async fn authority(
        &self,
        validity: Duration,
    ) -> Result<(Authority, Option<(String, SystemTime)>), TlsError> {
        let failed = |error: kube::Error| TlsError::File {
            path: format!("Secret {}/{}", self.secrets.namespace().unwrap_or_default(), self.name),
            reason: format!(
                "{error}; the operator needs `get`, `update` and `create` on it (the `rbac` subcommand prints them)"
            ),
        };
        for _ in 0..5 {
            let stored = self.secrets.get_opt(&self.name).await.map_err(failed)?;
            let now = SystemTime::now();
            let Some(mut secret) = stored else {
                let made = Authority::new(validity)?;
                let secret = Secret {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    data: Some(made.data(None)),
                    type_: Some("Opaque".to_owned()),
                    ..Secret::default()
                };
                match self.secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => return Ok((made, None)),
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(error) => return Err(failed(error)),
                }
            };
            let data = secret.data.clone().unwrap_or_default();
            let previous =
                text(&data, "previous.crt").zip(text(&data, "previous.notAfter").and_then(|at| seconds(&at)));
            match Authority::stored(&data, validity) {
                Some(stored) if now < stored.renew_at => return Ok((stored, previous)),
                stored => {
                    let made = Authority::new(validity)?;
                    let before = stored.filter(|old| now < old.not_after).map(|old| (old.pem, old.not_after));
                    secret.data = Some(made.data(before.as_ref()));
                    match self.secrets.replace(&self.name, &PostParams::default(), &secret).await {
                        Ok(_) => {
                            tracing::info!(secret = %self.name, "renewed the webhook CA");
                            return Ok((made, before));
                        }
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(error) => return Err(failed(error)),
                    }
                }
            }
        }
        Err(TlsError::File {
            path: format!("Secret {}", self.name),
            reason: "five writes in a row conflicted with other replicas; trying again later".to_owned(),
        })
    }
}

/// The value of `key` in a Secret's data, if it is there and is text.
fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key).and_then(|value| String::from_utf8(value.0.clone()).ok())
}

fn seconds(text: &str) -> Option<SystemTime> {
    text.trim().parse::<u64>().ok().map(|seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

fn unix(time: SystemTime) -> String {
    time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs().to_string()
}

/// A CA made by the operator.
pub(super) struct Authority {
    key: KeyPair,
    params: CertificateParams,
    pem: String,
    not_after: SystemTime,
    renew_at: SystemTime,
}

impl Authority {
    /// What a CA's certificate says, and what signing with it needs: the same for a CA made
    /// now and one read back from its Secret.
    fn params(not_before: SystemTime, not_after: SystemTime) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "kuberator webhook CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        Ok(params)
    }

    /// The CA a Secret holds, if it holds one that reads.
    fn stored(data: &BTreeMap<String, ByteString>, validity: Duration) -> Option<Self> {
        let not_after = seconds(&text(data, "ca.notAfter")?)?;
        let key = KeyPair::from_pem(&text(data, "ca.key")?).ok()?;
        let params = Self::params(not_after - validity, not_after).ok()?;
        let renew_at = not_after.checked_sub(validity / 3).unwrap_or(not_after);
        Some(Self { pem: text(data, "ca.crt")?, key, params, not_after, renew_at })
    }

    /// This CA as a Secret's data, with the CA before it when given.
    fn data(&self, previous: Option<&(String, SystemTime)>) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |key: &str, value: String| data.insert(key.to_owned(), ByteString(value.into_bytes()));
        put("ca.crt", self.pem.clone());
        put("ca.key", self.key.serialize_pem());
        put("ca.notAfter", unix(self.not_after));
        if let Some((pem, expires)) = previous {
            put("previous.crt", pem.clone());
            put("previous.notAfter", unix(*expires));
        }
        data
    }

    fn new(validity: Duration) -> Result<Self, TlsError> {
        let now = SystemTime::now();
        // A minute back, for clocks a little behind this one.
        let params = Self::params(now - Duration::from_secs(60), now + validity)?;
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            pem: certificate.pem(),
            key,
            params,
            not_after: now + validity,
            renew_at: now + validity * 2 / 3,
        })
    }

    /// A serving certificate for `names`, valid for `validity` or until the CA expires.
    fn issue(&self, names: &[String], validity: Duration) -> Result<Served, TlsError> {
        let now = SystemTime::now();
        let not_after = (now + validity).min(self.not_after);
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or("webhook", String::as_str));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = not_after.into();
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer)?;
        let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|reason| TlsError::File {
            path: "(generated key)".to_owned(),
            reason: reason.to_owned(),
        })?;
        let certified = CertifiedKey::from_der(vec![certificate.der().clone()], der, &provider())?;
        let life = not_after.duration_since(now).unwrap_or_default();
        Ok(Served { key: Arc::new(certified), bundle: self.pem.clone(), renew_at: now + life * 2 / 3 })
    }
}

fn provider() -> rustls::crypto::CryptoProvider {
    (*crate::telemetry::crypto_provider()).clone()
}

/// What the files in `dir` are now: their sizes and modification times.
fn stamp_of(dir: &Path) -> Vec<u8> {
    let mut stamp = Vec::new();
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        if let Ok(meta) = std::fs::metadata(dir.join(name)) {
            stamp.extend_from_slice(&meta.len().to_le_bytes());
            let modified =
                meta.modified().ok().and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok());
            stamp.extend_from_slice(&modified.unwrap_or_default().as_nanos().to_le_bytes());
        }
    }
    stamp
}

fn read_dir(dir: &Path) -> Result<(Served, Vec<u8>), TlsError> {
    let stamp = stamp_of(dir);
    let (chain, key) = crate::telemetry::server::read_pair(dir)?;
    let bundle = match std::fs::read_to_string(dir.join("ca.crt")) {
        Ok(pem) => pem,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(TlsError::File {
                path: dir.join("ca.crt").display().to_string(),
                reason: error.to_string(),
            });
        }
    };
    let key = CertifiedKey::from_der(chain, key, &provider())?;
    Ok((Served { key: Arc::new(key), bundle, renew_at: SystemTime::now() + RELOAD_EVERY }, stamp))
}

/// Hands every TLS handshake the certificate served now.
#[derive(Debug)]
pub(super) struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    pub(super) fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self(RwLock::new(key)))
    }

    pub(super) fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// A TLS acceptor that serves whatever `current` holds.
pub(super) fn acceptor(current: Arc<Current>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::telemetry::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Writes a CA bundle where the API server reads it.
pub(super) type WriteBundle =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Keeps `current` up to date until dropped: renews when due; a new CA bundle is written with
/// `write` before any certificate it vouches for is served. A failure is logged and tried again
/// a minute later; the served certificate stays until then.
pub(super) async fn keep_current(
    mut renewal: Renewal,
    mut served: Served,
    current: Arc<Current>,
    write: WriteBundle,
) {
    loop {
        tokio::time::sleep(renewal.next_check(&served).max(Duration::from_millis(100))).await;
        let next = match renewal.renew(served.renew_at).await {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(%error, "could not renew the webhook port's certificate; trying again in a minute");
                served.renew_at = SystemTime::now() + Duration::from_secs(60);
                continue;
            }
        };
        if next.bundle != served.bundle
            && !next.bundle.is_empty()
            && let Err(error) = write(next.bundle.clone()).await
        {
            tracing::error!(%error, "could not write the webhook's new CA bundle; trying again in a minute");
            served.renew_at = SystemTime::now() + Duration::from_secs(60);
            if let Renewal::Dir { stamp, .. } = &mut renewal {
                stamp.clear();
            }
            continue;
        }
        current.set(Arc::clone(&next.key));
        tracing::info!("renewed the webhook port's certificate");
        served = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificates(pem: &str) -> usize {
        pem.matches("BEGIN CERTIFICATE").count()
    }

    #[tokio::test]
    async fn a_due_certificate_is_renewed_and_a_renewed_ca_shares_the_bundle_with_the_old_one() {
        let mut renewal = Renewal::Generated {
            names: vec!["localhost".to_owned()],
            authority: None,
            previous: None,
            ca: Duration::from_secs(3600),
            serving: Duration::from_secs(600),
            store: None,
        };
        let first = renewal.renew(SystemTime::UNIX_EPOCH).await.unwrap().unwrap();
        assert_eq!(certificates(&first.bundle), 1);
        assert!(renewal.renew(first.renew_at).await.unwrap().is_none(), "nothing due");

        let due = SystemTime::now() - Duration::from_secs(1);
        let second = renewal.renew(due).await.unwrap().unwrap();
        assert_eq!(second.bundle, first.bundle, "the CA is not due: the same bundle");
        assert_ne!(second.key.cert, first.key.cert, "a new serving certificate");

        if let Renewal::Generated { authority: Some(authority), .. } = &mut renewal {
            authority.renew_at = SystemTime::now() - Duration::from_secs(1);
        }
        let third = renewal.renew(due).await.unwrap().unwrap();
        assert_eq!(certificates(&third.bundle), 2, "the new CA and the old one");
        assert!(third.bundle.ends_with(&first.bundle), "the old CA stays while it is valid");
        assert!(third.renew_at <= SystemTime::now() + Duration::from_secs(400), "renewed at 2/3 of 600 s");
    }

    #[test]
    fn a_mounted_directory_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("kuberator-webhook-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str| {
            let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
            std::fs::write(dir.join("tls.crt"), made.cert.pem()).unwrap();
            std::fs::write(dir.join("tls.key"), made.signing_key.serialize_pem()).unwrap();
            std::fs::write(dir.join("ca.crt"), made.cert.pem()).unwrap();
            made.cert.pem()
        };
        let ca = write("first.example");
        let (served, stamp) = read_dir(&dir).unwrap();
        assert_eq!(served.bundle, ca);
        let mut renewal = Renewal::Dir { dir: dir.clone(), stamp };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(runtime.block_on(renewal.renew(served.renew_at)).unwrap().is_none(), "unchanged");
        std::thread::sleep(Duration::from_millis(20));
        let ca = write("second.example.with.a.longer.name");
        let renewed = runtime.block_on(renewal.renew(served.renew_at)).unwrap().unwrap();
        assert_eq!(renewed.bundle, ca);
        std::fs::write(dir.join("tls.key"), "not a key").unwrap();
        let error = runtime.block_on(renewal.renew(renewed.renew_at)).unwrap_err().to_string();
        assert!(error.contains("tls.key") && !error.contains("not a key"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
