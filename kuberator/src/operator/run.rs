//! [`run`]: the entry point of a derived operator, with its command line.

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap::FromArgMatches as _;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use kube::Client;
use kube::CustomResourceExt;

use super::Operator;
use super::manifests;

/// The operator program's own name for `--help` and `--version`: the derive fills it from
/// the user's crate.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// The binary's name (`CARGO_BIN_NAME`, or the package's name outside a binary).
    pub name: &'static str,
    /// `CARGO_PKG_VERSION` of the operator's crate.
    pub version: &'static str,
    /// `CARGO_PKG_DESCRIPTION` of the operator's crate; may be empty.
    pub about: &'static str,
}

/// The command line of a derived operator.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Reconciles at a time (0: no limit); overrides the `concurrency` of #[kuberator(...)]
    #[arg(long, env = "KUBERATOR_CONCURRENCY", global = true)]
    concurrency: Option<usize>,

    /// Where to serve /metrics, /healthz and /readyz
    #[arg(long, env = "KUBERATOR_METRICS_ADDRESS", default_value = "0.0.0.0:8080", global = true)]
    metrics_address: std::net::SocketAddr,

    /// Log format
    #[arg(long, env = "KUBERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    /// What to log, as a tracing filter: a level (`debug`) or per module (`info,kube=warn`)
    #[arg(long, env = "KUBERATOR_LOG", default_value = "info", global = true)]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile until SIGINT or SIGTERM (the default)
    Run,
    /// Print the CustomResourceDefinition as YAML
    Crd,
    /// Print the Role (or ClusterRole) and binding with exactly the permissions the operator uses
    Rbac {
        /// Namespace of the operator's ServiceAccount
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Print CRD, ServiceAccount, RBAC and Deployment, ready for `kubectl apply -f -`
    Manifests {
        /// Namespace to run the operator in
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Container image of the operator
        #[arg(long)]
        image: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines
    Pretty,
    /// One JSON object per line
    Json,
}

/// Runs `operator` as a program; `--help` lists the subcommands (`run`, `crd`, `rbac`,
/// `manifests`) and the flags, each with an environment variable.
///
/// `run` sets up logging, connects to the cluster in `KUBECONFIG` (or in-cluster), and
/// reconciles until SIGINT or SIGTERM.
///
/// # Errors
///
/// When no cluster can be reached, or the output cannot be written.
pub async fn run<O: Operator>(operator: O, program: Program) -> anyhow::Result<()> {
    let about =
        if program.about.is_empty() { "A Kubernetes operator built with Kuberator" } else { program.about };
    let matches = Cli::command().name(program.name).version(program.version).about(about).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let config = O::config();
    let print = |text: String| std::io::stdout().write_all(text.as_bytes()).context("writing to stdout");
    match cli.command.unwrap_or(Command::Run) {
        Command::Crd => return print(manifests::to_yaml(&[serde_json::to_value(O::Resource::crd())?])),
        Command::Rbac { namespace } => {
            return print(manifests::to_yaml(&manifests::rbac::<O::Resource>(&config, &namespace)));
        }
        Command::Manifests { namespace, image } => {
            return print(manifests::to_yaml(&manifests::manifests::<O::Resource>(
                &config, &namespace, &image,
            )));
        }
        Command::Run => {}
    }
    init_tracing(cli.log_format, &cli.log)?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes cluster reachable: set KUBECONFIG, or run in a pod with a service account")?;
    let concurrency = cli.concurrency.map_or(config.concurrency, |limit| (limit > 0).then_some(limit));
    let _telemetry = crate::telemetry::serve(cli.metrics_address).await.with_context(|| {
        format!("serving metrics on {} (change it with --metrics-address)", cli.metrics_address)
    })?;
    tracing::info!(
        controller = config.controller_name,
        finalizer = config.finalizer,
        namespaces = ?config.namespaces,
        caching = %config.caching,
        ?concurrency,
        "starting"
    );
    operator.into_reconciler(client).start_with(concurrency, Some(crate::shutdown::signal())).await;
    Ok(())
}

fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log filter `{filter}`"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // An application that set up tracing itself keeps its own.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_and_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "op",
            "--log-format",
            "json",
            "--concurrency",
            "4",
            "rbac",
            "--namespace",
            "ops",
        ])
        .unwrap();
        assert!(matches!(cli.log_format, LogFormat::Json));
        assert_eq!(cli.concurrency, Some(4));
        assert!(matches!(cli.command, Some(Command::Rbac { namespace }) if namespace == "ops"));
        let error = Cli::try_parse_from(["op", "manifests"]).unwrap_err();
        assert!(error.to_string().contains("--image"), "{error}");
    }
}
