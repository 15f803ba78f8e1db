//! One API for the two servers a test can run against: the in-memory one and the real
//! control plane.

use std::sync::OnceLock;

use kube::Client;

use crate::ControlPlane;
use crate::memory::MemoryServer;

/// The environment variable that picks the server of [`TestCluster::shared`] (and so of
/// [`admin_client`](crate::admin_client) and [`test_env`](crate::test_env)):
/// `in-memory`, or `real` (the default).
pub const CLUSTER_ENV: &str = "KUBERATOR_TEST_CLUSTER";

/// A cluster for a test: the in-memory API server or the real control plane. Switching is
/// one word: `TestCluster::in_memory()` or `TestCluster::real().await?`.
#[derive(Clone)]
pub enum TestCluster {
    /// The in-memory API server ([`MemoryServer`]).
    InMemory(MemoryServer),
    /// The real kube-apiserver, etcd and kube-controller-manager ([`ControlPlane::shared`]).
    Real(&'static ControlPlane),
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.kind())
    }
}

impl TestCluster {
    /// A new, empty in-memory API server of the test's own.
    pub fn in_memory() -> Self {
        TestCluster::InMemory(MemoryServer::new())
    }

    /// The process's shared real control plane, started (and built) on first use.
    ///
    /// # Errors
    ///
    /// When the control plane cannot be built or started.
    pub async fn real() -> Result<Self, crate::Error> {
        Ok(TestCluster::Real(ControlPlane::shared().await?))
    }

    /// The cluster [`CLUSTER_ENV`] names, shared by the whole test process: one in-memory
    /// server, or the shared control plane.
    ///
    /// # Errors
    ///
    /// When the real control plane is asked for and does not start, or the variable holds
    /// something else than `in-memory` or `real`.
    pub async fn shared() -> Result<Self, crate::Error> {
        static SERVER: OnceLock<MemoryServer> = OnceLock::new();
        match std::env::var(CLUSTER_ENV).as_deref() {
            Ok("in-memory") => Ok(TestCluster::InMemory(SERVER.get_or_init(MemoryServer::new).clone())),
            Ok("real") | Err(std::env::VarError::NotPresent) => Self::real().await,
            Ok(other) => {
                Err(crate::Error::Setup(format!("{CLUSTER_ENV}={other:?}: use `in-memory` or `real`")))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(crate::Error::Setup(format!("{CLUSTER_ENV} is not UTF-8")))
            }
        }
    }

    /// An admin client for it.
    ///
    /// # Errors
    ///
    /// When the real control plane's kubeconfig does not load.
    pub async fn client(&self) -> Result<Client, crate::Error> {
        match self {
            TestCluster::InMemory(server) => Ok(server.client()),
            TestCluster::Real(control_plane) => control_plane.client().await,
        }
    }

    /// The in-memory server, for its faults; `None` on the real control plane.
    pub fn in_memory_server(&self) -> Option<&MemoryServer> {
        match self {
            TestCluster::InMemory(server) => Some(server),
            TestCluster::Real(_) => None,
        }
    }

    /// Runs `kubectl` with `args` against this cluster and returns what it printed. The
    /// in-memory server is served over HTTPS for it (once, for as long as the server
    /// lives); `kubectl` is the one built beside the control plane, or the one on `PATH`.
    ///
    /// # Errors
    ///
    /// When `kubectl` cannot be started or fails; the error carries its output.
    pub async fn run_kubectl(&self, args: &[&str]) -> std::io::Result<String> {
        match self {
            TestCluster::Real(control_plane) => control_plane.run_kubectl(args).await,
            TestCluster::InMemory(server) => {
                let served = server.https().await?;
                let kubectl = tokio::task::spawn_blocking(crate::control_plane::kubectl_binary)
                    .await
                    .map_err(std::io::Error::other)?;
                crate::control_plane::run_kubectl(&kubectl, served.kubeconfig_path(), args).await
            }
        }
    }

    /// The watches of `plural` (of any group) the server holds open now: its own count
    /// (`apiserver_longrunning_requests{verb="WATCH"}` on the real control plane, so every
    /// test's watches of that resource count: use a resource only one test watches).
    ///
    /// # Errors
    ///
    /// When the real server's metrics cannot be read.
    pub async fn open_watches(&self, plural: &str) -> Result<usize, crate::Error> {
        match self {
            TestCluster::InMemory(server) => Ok(server.open_watches(plural)),
            TestCluster::Real(_) => {
                let labels = [format!("resource=\"{plural}\""), "verb=\"WATCH\"".to_owned()];
                Ok(self.api_server_metric("apiserver_longrunning_requests", &labels).await? as usize)
            }
        }
    }

    /// How many PATCH requests to `resource` (`widgets`, or `widgets/status`; of any group)
    /// the server has answered so far: its own count (`apiserver_request_total` on the real
    /// control plane, every test's requests included: use a resource only one test writes).
    ///
    /// # Errors
    ///
    /// When the real server's metrics cannot be read.
    pub async fn patches_of(&self, resource: &str) -> Result<u64, crate::Error> {
        match self {
            TestCluster::InMemory(server) => Ok(server.requests_to(crate::memory::Verb::Patch, resource)),
            TestCluster::Real(_) => {
                let (plural, subresource) = resource.split_once('/').unwrap_or((resource, ""));
                let labels = [
                    format!("resource=\"{plural}\""),
                    format!("subresource=\"{subresource}\""),
                    "verb=\"PATCH\"".to_owned(),
                ];
                let counted = self.api_server_metric("apiserver_request_total", &labels).await?;
                Ok(counted as u64)
            }
        }
    }

    /// The sum of the real API server's samples of `metric` whose labels hold all of
    /// `labels`.
    async fn api_server_metric(&self, metric: &str, labels: &[String]) -> Result<f64, crate::Error> {
        let client = self.client().await?;
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|error| crate::Error::Setup(error.to_string()))?;
        let metrics = client
            .request_text(request)
            .await
            .map_err(|error| crate::Error::Setup(format!("reading the API server's metrics: {error}")))?;
        let prefix = format!("{metric}{{");
        Ok(metrics
            .lines()
            .filter(|line| {
                line.starts_with(&prefix) && labels.iter().all(|label| line.contains(label.as_str()))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// `"in-memory"` or `"real"`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            TestCluster::InMemory(_) => "in-memory",
            TestCluster::Real(_) => "real",
        }
    }
}
