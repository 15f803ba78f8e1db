//! Testing toolkit for Kuberator operators.
//!
//! - [`TestCluster`]: the cluster of a test, picked with one word: [`TestCluster::in_memory`]
//!   or [`TestCluster::real`] ([`TestCluster::shared`] reads `KUBERATOR_TEST_CLUSTER`).
//! - [`memory::MemoryServer`]: an in-memory Kubernetes API server, in-process for a
//!   `kube::Client` and over loopback HTTPS for `kubectl`, with faults for tests. What it
//!   does and where it differs from the real server: `kuberator-test/IN_MEMORY.md`.
//! - [`ControlPlane`]: a real kube-apiserver and etcd (with kube-controller-manager for garbage
//!   collection and namespace deletion), built from their published Go
//!   modules and started on loopback with generated certificates and RBAC on, like
//!   controller-runtime's envtest. `cargo run -p kuberator-test --bin control-plane` starts
//!   one for people.
//! - Helpers: [`test_env`] (the opening of a test: logs, control plane, client, namespace),
//!   [`install_crd`], [`test_namespace`], [`wait_for`], [`events_for`],
//!   [`Background`] to run an operator in a test and stop it, and [`http_get`] and
//!   [`metric`] to read an operator's `/metrics`, `/healthz` and `/readyz`.
//! - Faults: [`Proxy`], a loopback TCP proxy that cuts or blocks an operator's connections.
//! - [`sim`]: a deterministic simulator that runs an operator through crashes, lost answers,
//!   stale caches and relists, each run decided by a seed and replayed from it.
//!
//! ```no_run
//! use kuberator_test::ControlPlane;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let control_plane = ControlPlane::shared().await?;
//! let client = control_plane.client().await?;
//! let namespace = kuberator_test::test_namespace(&client, "my-test").await?;
//! # Ok(())
//! # }
//! ```

/// The guide's chapter on testing an operator: on the in-memory server, in the simulator, on
/// a real control plane, with faults, and its Events in a unit test.
#[doc = include_str!("../guide/testing.md")]
pub mod guide {}

mod certs;
mod cluster;
mod control_plane;
mod helpers;
pub mod memory;
mod proxy;
pub mod sim;

pub use crate::cluster::CLUSTER_ENV;
pub use crate::cluster::TestCluster;
pub use crate::control_plane::BIN_ENV;
pub use crate::control_plane::ControlPlane;
pub use crate::control_plane::Error;
pub use crate::control_plane::KUBECONFIG_ENV;
pub use crate::helpers::Background;
pub use crate::helpers::HelperError;
pub use crate::helpers::admin_client;
pub use crate::helpers::delete_namespace;
pub use crate::helpers::events_for;
pub use crate::helpers::http_get;
pub use crate::helpers::https_get;
pub use crate::helpers::install_crd;
pub use crate::helpers::install_crd_object;
pub use crate::helpers::metric;
pub use crate::helpers::service_account_token;
pub use crate::helpers::test_env;
pub use crate::helpers::test_namespace;
pub use crate::helpers::wait_for;
pub use crate::helpers::wait_for_event;
pub use crate::proxy::Proxy;
/// The in-memory [`EmitEvent`](kuberator::events::EmitEvent) for unit tests of handlers.
pub use kuberator::events::MockEventRecorder;
/// An Event a [`MockEventRecorder`] kept.
pub use kuberator::events::RecordedEvent;

/// Logs to stderr for tests and tools, at `info` or as `RUST_LOG` says, in colour only on a
/// terminal and without `NO_COLOR`; calling it again does nothing.
pub fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi =
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_test_writer()
        .try_init();
}
