//! [`ControlPlane`]: a real kube-apiserver, etcd and kube-controller-manager on loopback, as
//! controller-runtime's envtest starts the first two.
//!
//! # Expected flow
//!
//! [`ControlPlane::shared`] starts one control plane per test binary, on first use, and
//! every test asks it for a [`Client`] and works in a namespace of its own
//! ([`crate::test_namespace`]). [`ControlPlane::start`] starts one that stops when it is
//! dropped.
//!
//! # Guarantees
//!
//! - The binaries are built from source by `control-plane/build.sh` the first time (10 to
//!   20 minutes on 2 cores) and reused from `~/.cache/kuberator/control-plane` after that.
//! - kube-controller-manager runs only its garbage collector and namespace controller: an
//!   object whose owners are all gone is deleted (cascading deletion through
//!   `ownerReferences`), and a deleted namespace is emptied and removed, as in a real
//!   cluster. Nothing else runs: no Deployment makes Pods, no Pod is scheduled.
//! - etcd and kube-apiserver listen on free loopback ports only, with certificates made for
//!   this start: a serving certificate, a client CA, an admin client certificate in group
//!   `system:masters`, and a service-account signer. Authorization is RBAC.
//! - Each process runs under a small shell supervisor that holds a pipe from this process.
//!   When this process drops the control plane, panics, times out or is killed, the pipe
//!   closes, and the supervisor stops its process and removes the temporary directory. A
//!   shared control plane, which lives in a `static` and is never dropped, goes away the
//!   same way when the test binary exits.
//!
//! # Environment
//!
//! - `KUBERATOR_TEST_KUBECONFIG`: use the cluster of this kubeconfig instead of starting
//!   one. Tests then create and delete namespaces there.
//! - `KUBERATOR_CONTROL_PLANE_BIN`: a directory holding `kube-apiserver`,
//!   `kube-controller-manager` and `etcd`, instead of building them.
//!
//! # Errors
//!
//! A control plane that cannot be built or started is an [`Error`] that carries the tail of
//! the failing process's log. Tests must fail on it, never skip.

use std::io;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::ChildStdin;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::Client;
use kube::Config;
use kube::config::KubeConfigOptions;
use kube::config::Kubeconfig;
use tokio::sync::OnceCell;
use tracing::instrument::WithSubscriber as _;
use tracing::subscriber::NoSubscriber;

use crate::certs::Pki;

/// The variable that points the tests at an existing cluster.
pub const KUBECONFIG_ENV: &str = "KUBERATOR_TEST_KUBECONFIG";
/// The variable that names a directory with prebuilt `kube-apiserver`,
/// `kube-controller-manager` and `etcd`.
pub const BIN_ENV: &str = "KUBERATOR_CONTROL_PLANE_BIN";

/// How long kube-apiserver may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Why a control plane could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `control-plane/build.sh` failed.
    #[error(
        "building the control plane (kube-apiserver, kube-controller-manager, etcd, kubectl) failed ({status}); run {script} to see why"
    )]
    Build {
        /// The script.
        script: String,
        /// How it exited.
        status: ExitStatus,
    },
    /// A binary could not be started.
    #[error("could not start {binary}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A process exited while the control plane was starting.
    #[error("{process} exited during start ({status}); the end of its log:\n{log}")]
    Exited {
        /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
        process: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its log.
        log: String,
    },
    /// kube-apiserver did not report ready in time.
    #[error("kube-apiserver not ready after {waited:?}; last answer: {last}; the end of its log:\n{log}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// The last answer of `/readyz`.
        last: String,
        /// The last lines of its log.
        log: String,
    },
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {path} is not usable")]
    Kubeconfig {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Certificates could not be generated.
    #[error("could not generate certificates")]
    Certificates(#[from] rcgen::Error),
    /// What was asked needs a control plane started here, and this is an existing cluster
    /// (`KUBERATOR_TEST_KUBECONFIG`).
    #[error("{what} needs a control plane started by kuberator-test, not an existing cluster")]
    NotLocal {
        /// What was asked.
        what: &'static str,
    },
    /// A test setting is wrong (such as `KUBERATOR_TEST_CLUSTER`).
    #[error("{0}")]
    Setup(String),
    /// A file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A running kube-apiserver, etcd and kube-controller-manager, or an existing cluster named by
/// [`KUBERATOR_TEST_KUBECONFIG`](KUBECONFIG_ENV).
pub struct ControlPlane {
    kubeconfig: String,
    kubeconfig_path: PathBuf,
    server: String,
    processes: Option<Processes>,
}

struct Processes {
    dir: PathBuf,
    binaries: PathBuf,
    apiserver: Supervised,
    /// kube-apiserver's flags, to start it again after [`ControlPlane::restart_apiserver`].
    apiserver_args: Vec<String>,
    etcd: Supervised,
    controller_manager: Supervised,
}

static SHARED: OnceCell<ControlPlane> = OnceCell::const_new();

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("local", &self.processes.is_some())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// The control plane of this test binary: started on first use, shared by every test,
    /// stopped when the binary exits.
    ///
    /// # Errors
    ///
    /// When it cannot be built or started.
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        SHARED.get_or_try_init(Self::start).await
    }

    /// A new control plane (or the cluster of `KUBERATOR_TEST_KUBECONFIG`), stopped when
    /// the value is dropped.
    ///
    /// # Errors
    ///
    /// When it cannot be built or started.
    pub async fn start() -> Result<ControlPlane, Error> {
        if let Some(path) = std::env::var_os(KUBECONFIG_ENV) {
            return Self::existing(PathBuf::from(path)).await;
        }
        let binaries = binaries()?;
        Self::launch(&binaries, &[]).await
    }

    /// A new control plane whose kube-apiserver also gets `flags` (after its own, so a flag
    /// given again wins), such as `--etcd-compaction-interval=2s` or `--feature-gates=...`,
    /// stopped when the value is dropped. With `KUBERATOR_TEST_KUBECONFIG` set it is an
    /// error: an existing cluster's flags cannot be chosen.
    ///
    /// # Errors
    ///
    /// When it cannot be built or started, or `KUBERATOR_TEST_KUBECONFIG` is set.
    pub async fn start_with_apiserver_flags(flags: &[&str]) -> Result<ControlPlane, Error> {
        if std::env::var_os(KUBECONFIG_ENV).is_some() {
            return Err(Error::NotLocal { what: "a control plane with kube-apiserver flags of its own" });
        }
        let binaries = binaries()?;
        Self::launch(&binaries, flags).await
    }

    async fn existing(path: PathBuf) -> Result<ControlPlane, Error> {
        let kubeconfig =
            std::fs::read_to_string(&path).map_err(io_error(format!("reading {}", path.display())))?;
        let server = server_of(&kubeconfig, &path)?;
        tracing::info!(kubeconfig = %path.display(), %server, "using an existing cluster");
        Ok(ControlPlane { kubeconfig, kubeconfig_path: path, server, processes: None })
    }

    async fn launch(binaries: &Path, flags: &[&str]) -> Result<ControlPlane, Error> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("kuberator-control-plane-")
            .tempdir()
            .map_err(io_error("creating a temporary directory"))?
            .keep();
        let pki = Pki::generate()?;
        let file = |name: &str, contents: &str| -> Result<String, Error> {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(io_error(format!("writing {}", path.display())))?;
            Ok(path.display().to_string())
        };
        let ca = file("ca.crt", &pki.ca_cert)?;
        let serving_cert = file("apiserver.crt", &pki.serving_cert)?;
        let serving_key = file("apiserver.key", &pki.serving_key)?;
        let sa_key = file("service-account.key", &pki.service_account_key)?;
        let sa_public = file("service-account.pub", &pki.service_account_public_key)?;

        let [etcd_client, etcd_peer, apiserver_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = Supervised::spawn(
            "etcd",
            &binaries.join("etcd"),
            &dir,
            &[
                "--name=default".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            // etcd's supervisor removes the whole directory once both are asked to stop.
            true,
        )?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = kubeconfig_yaml(&server, &pki);
        let kubeconfig_path = dir.join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig).map_err(io_error("writing the kubeconfig"))?;
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.display()),
            format!("--tls-cert-file={serving_cert}"),
            format!("--tls-private-key-file={serving_key}"),
            format!("--client-ca-file={ca}"),
            format!("--secure-port={apiserver_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--authorization-mode=RBAC".into(),
            // Server-side sharded lists and watches (alpha in 1.36): what `kuberator::shard`
            // asks for, and what the conformance suite checks the in-memory server against.
            "--feature-gates=ShardedListAndWatch=true".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={sa_public}"),
            format!("--service-account-signing-key-file={sa_key}"),
        ]
        .into_iter()
        .chain(flags.iter().map(|flag| (*flag).to_owned()))
        .collect::<Vec<_>>();
        let apiserver = Supervised::spawn(
            "kube-apiserver",
            &binaries.join("kube-apiserver"),
            &dir,
            &apiserver_args,
            false,
        )?;

        // It waits for the API server on its own; only the garbage collector and the namespace
        // controller run, with the admin identity, serving nothing.
        let controller_manager = Supervised::spawn(
            "kube-controller-manager",
            &binaries.join("kube-controller-manager"),
            &dir,
            &[
                format!("--kubeconfig={}", kubeconfig_path.display()),
                "--controllers=garbage-collector-controller,namespace-controller".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--secure-port=0".into(),
                "--concurrent-gc-syncs=5".into(),
                "--concurrent-namespace-syncs=5".into(),
            ],
            false,
        )?;
        let mut control_plane = ControlPlane {
            kubeconfig,
            kubeconfig_path,
            server,
            processes: Some(Processes {
                dir,
                binaries: binaries.to_owned(),
                apiserver,
                apiserver_args,
                etcd,
                controller_manager,
            }),
        };
        control_plane.wait_ready().await?;
        tracing::info!(server = %control_plane.server, took = ?started.elapsed(), "control plane ready");
        Ok(control_plane)
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.client().await?;
        let started = Instant::now();
        loop {
            if let Some(processes) = &mut self.processes {
                for process in
                    [&mut processes.etcd, &mut processes.apiserver, &mut processes.controller_manager]
                {
                    if let Some(status) = process.exited() {
                        return Err(Error::Exited { process: process.name, status, log: process.log_tail() });
                    }
                }
            }
            let request = http::Request::get("/readyz").body(Vec::new()).expect("a static request is valid");
            // kube logs a refused request as an ERROR; while starting, a 500 from /readyz is
            // expected, so the poll runs unheard and only a timeout says what went wrong.
            let answer = client.request_text(request).with_subscriber(NoSubscriber::default()).await;
            let last = match answer {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(error) => error.to_string(),
            };
            if started.elapsed() > READY_TIMEOUT {
                let log = self.processes.as_ref().map(|p| p.apiserver.log_tail()).unwrap_or_default();
                return Err(Error::NotReady { waited: READY_TIMEOUT, last, log });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A new client with the admin identity (group `system:masters`), or the kubeconfig's
    /// current context for an existing cluster.
    ///
    /// Each test should take its own: a client is tied to the Tokio runtime it was made in.
    ///
    /// # Errors
    ///
    /// When the kubeconfig is not usable.
    pub async fn client(&self) -> Result<Client, Error> {
        let config = self.config().await?;
        Client::try_from(config).map_err(|source| self.kubeconfig_error(source))
    }

    /// The client configuration, for building clients with other identities.
    ///
    /// # Errors
    ///
    /// When the kubeconfig is not usable.
    pub async fn config(&self) -> Result<Config, Error> {
        let kubeconfig =
            Kubeconfig::from_yaml(&self.kubeconfig).map_err(|source| self.kubeconfig_error(source))?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|source| self.kubeconfig_error(source))
    }

    fn kubeconfig_error(&self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Kubeconfig { path: self.kubeconfig_path.display().to_string(), source: Box::new(source) }
    }

    /// The kubeconfig, as YAML.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Where the kubeconfig is on disk (inside the control plane's temporary directory,
    /// gone when it stops).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes the kubeconfig to `path`, readable by the owner only.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        write_private(path, &self.kubeconfig).map_err(io_error(format!("writing {}", path.display())))
    }

    /// The kubeconfig, as YAML, with `token` as the only credential instead of the admin's
    /// client certificate: for running an operator as a ServiceAccount
    /// ([`service_account_token`](crate::service_account_token)).
    ///
    /// # Errors
    ///
    /// When the kubeconfig cannot be read back.
    pub fn kubeconfig_with_token(&self, token: &str) -> Result<String, Error> {
        let mut kubeconfig =
            Kubeconfig::from_yaml(&self.kubeconfig).map_err(|source| self.kubeconfig_error(source))?;
        for named in &mut kubeconfig.auth_infos {
            named.auth_info = Some(kube::config::AuthInfo {
                token: Some(token.to_owned().into()),
                ..kube::config::AuthInfo::default()
            });
        }
        serde_yaml_ng::to_string(&kubeconfig).map_err(|source| self.kubeconfig_error(source))
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The `kubectl` built beside the control plane, if this one was started here.
    pub fn kubectl(&self) -> Option<PathBuf> {
        let processes = self.processes.as_ref()?;
        let kubectl = processes.binaries.join("kubectl");
        kubectl.exists().then_some(kubectl)
    }

    /// Runs `kubectl` with `args` against this cluster (the `kubectl` built beside the control
    /// plane, or the one on `PATH` for an existing cluster) and returns what it printed.
    ///
    /// # Errors
    ///
    /// When `kubectl` cannot be started or fails; the error carries its output.
    pub async fn run_kubectl(&self, args: &[&str]) -> io::Result<String> {
        run_kubectl(&self.kubectl().unwrap_or_else(|| "kubectl".into()), &self.kubeconfig_path, args).await
    }

    /// Kills kube-apiserver with SIGKILL, as a crashed or evicted API server goes, keeps it
    /// down for `down`, then starts it again with the same flags, port and etcd (so every
    /// object is still there), and waits until it is ready. Clients made before keep
    /// working: they reconnect once it is back. Returns how long it took from the restart
    /// until ready.
    ///
    /// Only for a control plane of the test's own ([`ControlPlane::start`]): the shared one
    /// is not `mut`, because other tests use it at the same time.
    ///
    /// # Errors
    ///
    /// [`Error::NotLocal`] for an existing cluster; otherwise when it cannot be started
    /// again or does not become ready.
    pub async fn restart_apiserver(&mut self, down: Duration) -> Result<Duration, Error> {
        let Some(processes) = &mut self.processes else {
            return Err(Error::NotLocal { what: "restarting kube-apiserver" });
        };
        processes.apiserver.kill();
        tracing::info!(?down, "killed kube-apiserver");
        tokio::time::sleep(down).await;
        let binary = processes.binaries.join("kube-apiserver");
        processes.apiserver =
            Supervised::spawn("kube-apiserver", &binary, &processes.dir, &processes.apiserver_args, false)?;
        let restarted = Instant::now();
        self.wait_ready().await?;
        tracing::info!(took = ?restarted.elapsed(), "kube-apiserver ready again");
        Ok(restarted.elapsed())
    }

    /// The process ids of kube-apiserver, etcd and kube-controller-manager, by name, to read
    /// their memory and CPU from `/proc`; empty for an existing cluster.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let Some(processes) = &self.processes else { return Vec::new() };
        [&processes.apiserver, &processes.etcd, &processes.controller_manager]
            .into_iter()
            .filter_map(|supervised| Some((supervised.name, supervised.pid()?)))
            .collect()
    }

    /// Whether this is a control plane started here (not an existing cluster).
    pub fn is_local(&self) -> bool {
        self.processes.is_some()
    }

    /// Stops the processes now and removes the temporary directory; what dropping does.
    pub fn stop(mut self) {
        if let Some(processes) = self.processes.take() {
            processes.stop();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(processes) = self.processes.take() {
            processes.stop();
        }
    }
}

impl Processes {
    fn stop(mut self) {
        // The controller manager first, then the API server: without etcd it would hang on
        // its way out.
        self.controller_manager.wait();
        self.apiserver.wait();
        self.etcd.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `contents` to `path`, readable by the owner only: a kubeconfig holds credentials.
pub(crate) fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// The binaries' directory: `KUBERATOR_CONTROL_PLANE_BIN`, or what `build.sh` builds.
/// Runs `kubectl` (the binary `kubectl`) with `args` against the cluster of `kubeconfig`,
/// and returns what it printed; the error carries its output.
pub(crate) async fn run_kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> io::Result<String> {
    let mut command = Command::new(kubectl);
    command.arg("--kubeconfig").arg(kubeconfig).args(args).stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await.map_err(io::Error::other)??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!(
            "kubectl {} failed ({}): {stdout}{stderr}",
            args.join(" "),
            output.status
        )));
    }
    Ok(stdout)
}

/// A `kubectl`: the one built beside the control plane (built now if it is not yet, which
/// needs Go), or else the one on `PATH`. Found once per process: finding it runs the build
/// script.
pub(crate) fn kubectl_binary() -> PathBuf {
    static KUBECTL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KUBECTL
        .get_or_init(|| match binaries() {
            Ok(dir) if dir.join("kubectl").exists() => dir.join("kubectl"),
            _ => PathBuf::from("kubectl"),
        })
        .clone()
}

fn binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/build.sh");
    // Progress goes to our stderr, so a cold build shows what it is doing.
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn { binary: script.display().to_string(), source })?;
    if !output.status.success() {
        return Err(Error::Build { script: script.display().to_string(), status: output.status });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(PathBuf::from(stdout.lines().last().unwrap_or_default().trim()))
}

fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    // Hold every listener until all ports are picked, so the N are distinct.
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_error("finding free loopback ports"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(io_error("finding free loopback ports"))?.port();
    }
    Ok(ports)
}

fn kubeconfig_yaml(server: &str, pki: &Pki) -> String {
    let ca = BASE64.encode(&pki.ca_cert);
    let cert = BASE64.encode(&pki.admin_cert);
    let key = BASE64.encode(&pki.admin_key);
    let user = crate::certs::ADMIN_USER;
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kuberator-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: kuberator-test
  context:
    cluster: kuberator-test
    user: {user}
    namespace: default
current-context: kuberator-test
"
    )
}

fn server_of(kubeconfig: &str, path: &Path) -> Result<String, Error> {
    let error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let parsed = Kubeconfig::from_yaml(kubeconfig).map_err(|source| error(Box::new(source)))?;
    let context = parsed.current_context.as_deref().unwrap_or_default();
    let cluster = parsed
        .contexts
        .iter()
        .find(|named| named.name == context)
        .and_then(|named| named.context.as_ref())
        .map(|context| context.cluster.clone())
        .unwrap_or_default();
    Ok(parsed
        .clusters
        .iter()
        .find(|named| named.name == cluster)
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.clone())
        .unwrap_or_else(|| "(unknown server)".into()))
}

/// The shell supervisor of one process: it stops the process, and removes `$remove` when
/// asked to, once its standard input closes.
const SUPERVISOR: &str = r#"
log=$1; remove=$2; shift 2
"$@" >>"$log" 2>&1 </dev/null &
child=$!
finish() {
  kill -TERM "$child" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$child" 2>/dev/null
  wait "$child" 2>/dev/null
  if [ -n "$remove" ]; then rm -rf "$remove"; fi
  exit 0
}
trap finish TERM INT
while kill -0 "$child" 2>/dev/null; do
  read -r -t 1 line
  # 0: a line, 1: end of input; both mean the parent is done, and the line `kill` means
  # at once, with SIGKILL. Over 128: the timeout.
  if [ $? -le 128 ]; then
    if [ "$line" = kill ]; then kill -KILL "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0; fi
    finish
  fi
done
wait "$child"
"#;

struct Supervised {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Supervised {
    fn spawn(
        name: &'static str,
        binary: &Path,
        dir: &Path,
        args: &[String],
        remove_dir: bool,
    ) -> Result<Self, Error> {
        if !binary.exists() {
            return Err(Error::Spawn {
                binary: binary.display().to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
            });
        }
        let log = dir.join(format!("{name}.log"));
        let remove = if remove_dir { dir.display().to_string() } else { String::new() };
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("supervisor")
            .arg(&log)
            .arg(remove)
            .arg(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn { binary: binary.display().to_string(), source })?;
        let stdin = child.stdin.take();
        Ok(Self { name, child, stdin, log })
    }

    /// The supervised process's id: the supervisor's child.
    fn pid(&self) -> Option<u32> {
        let supervisor = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn close(&mut self) {
        self.stdin.take();
    }

    /// Kills the process with SIGKILL and waits for its supervisor to exit.
    fn kill(&mut self) {
        if let Some(stdin) = &mut self.stdin {
            let _ = stdin.write_all(b"kill\n").and_then(|()| stdin.flush());
        }
        self.wait();
    }

    fn wait(&mut self) {
        self.close();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(process = self.name, "did not stop in 30 s; killing its supervisor");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
