//! [`run`]: the entry point of a derived operator.

use std::io::Write as _;

use anyhow::Context as _;
use kube::Client;
use kube::CustomResourceExt;

use super::Operator;

/// Runs `operator` as a program: `crd` as the first argument prints the CRD as YAML;
/// otherwise it sets up logging (`RUST_LOG`, default `info`), connects to the cluster in
/// `KUBECONFIG` (or in-cluster), and reconciles until SIGINT or SIGTERM.
///
/// # Errors
///
/// When no cluster can be reached, or the CRD cannot be printed.
pub async fn run<O: Operator>(operator: O) -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("crd") => {
            let yaml = serde_yaml_ng::to_string(&O::Resource::crd()).context("serializing the CRD")?;
            std::io::stdout().write_all(yaml.as_bytes()).context("writing the CRD")?;
            return Ok(());
        }
        Some("run") | None => {}
        Some(other) => anyhow::bail!("unknown command `{other}`; usage: [run | crd]"),
    }
    init_tracing();
    let client = Client::try_default()
        .await
        .context("no Kubernetes cluster reachable: set KUBECONFIG, or run in a pod with a service account")?;
    let config = O::config();
    tracing::info!(
        controller = config.controller_name,
        finalizer = config.finalizer,
        namespaces = ?config.namespaces,
        caching = %config.caching,
        "starting"
    );
    operator.into_reconciler(client).start_configured(Some(crate::shutdown::signal())).await;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}
