//! [`run`]: the entry point of a derived operator, with its command line.

use std::io::Write as _;

use anyhow::Context as _;
use std::time::Duration;

use clap::ArgAction;
use clap::Args;
use clap::CommandFactory as _;
use clap::FromArgMatches as _;
use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use kube::Client;

use std::sync::Arc;

use super::Operator;
use super::Settings;
use super::group::Runnable;
use super::group::Unit;
use super::group::start_all;
use super::manifests;
use super::manifests::Part;
use crate::leader;
use crate::leader::LeaderElection;
use crate::shard::ShardFilter;
use crate::shard::ShardKey;
use crate::shard::Sharding;
use crate::shared::Caches;
use crate::shutdown::Shutdown;

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

    /// Namespaces to watch, comma-separated; overrides the `namespaces` of #[kuberator(...)]
    #[arg(long, env = "KUBERATOR_NAMESPACES", value_delimiter = ',', global = true)]
    namespaces: Vec<String>,

    /// Reconciles at a time (0: no limit); overrides the `concurrency` of #[kuberator(...)].
    /// In a process of several controllers, `NAME=N` sets it for the controller NAME only
    /// (comma-separated or repeated; a bare N is for the others)
    #[arg(
        long,
        env = "KUBERATOR_CONCURRENCY",
        value_delimiter = ',',
        value_name = "[NAME=]N",
        global = true
    )]
    concurrency: Vec<Scoped<usize>>,

    /// The longest one reconcile may run before it is cancelled and retried as an error (0s:
    /// no limit); overrides the `reconcile_timeout_seconds` of #[kuberator(...)] [default: 5m].
    /// `NAME=DURATION` for one controller of several, as --concurrency
    #[arg(
        long,
        env = "KUBERATOR_RECONCILE_TIMEOUT",
        value_delimiter = ',',
        value_name = "[NAME=]DURATION",
        global = true
    )]
    reconcile_timeout: Vec<Scoped<CliDuration>>,

    /// After SIGTERM or SIGINT, how long reconciles in flight may finish before they are
    /// cancelled and the process exits with an error (below Kubernetes' 30s grace period)
    #[arg(long, env = "KUBERATOR_DRAIN_DEADLINE", default_value_t = CliDuration(DEFAULT_DRAIN_DEADLINE), global = true)]
    drain_deadline: CliDuration,

    /// Log format
    #[arg(long, env = "KUBERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,

    /// What to log, as a tracing filter: a level (`debug`) or per crate
    /// (`info,kube_runtime=warn,kube_client=warn`); Kuberator's own lines keep the overall
    /// level unless a `kuberator=...` directive says otherwise
    #[arg(long, env = "KUBERATOR_LOG", default_value = "info", global = true)]
    log: String,

    /// Reconcile as usual, but send every write with dryRun=All (finalizers, status, child
    /// applies and prunes; Events become log lines) and print what it would change, per
    /// object; change nothing. No leader election, sharding, metrics or probes; ends once
    /// nothing was sent for 5 s
    #[arg(long, env = "KUBERATOR_DRY_RUN", global = true)]
    dry_run: bool,

    #[command(flatten)]
    election: ElectionArgs,

    #[command(flatten)]
    sharding: ShardArgs,

    #[command(flatten)]
    telemetry: TelemetryArgs,

    #[command(flatten)]
    webhooks: WebhookArgs,
}

/// Webhooks: served only by an operator with `webhooks = [...]` in its attribute.
#[derive(Debug, Args)]
#[command(next_help_heading = "Webhooks")]
struct WebhookArgs {
    /// Where to serve the webhooks, over HTTPS
    #[arg(long, env = "KUBERATOR_WEBHOOK_ADDRESS", default_value = "0.0.0.0:9443", global = true)]
    webhook_address: std::net::SocketAddr,

    /// The base URL the API server calls the webhooks at, such as https://127.0.0.1:9443, for an
    /// operator run outside the cluster [default: the Service <name>-webhook in the operator's
    /// namespace, port 443, as `manifests` prints it]
    #[arg(long, env = "KUBERATOR_WEBHOOK_URL", global = true)]
    webhook_url: Option<String>,

    /// A directory with tls.crt, tls.key and ca.crt (a mounted cert-manager Secret), read again
    /// when it changes [default: a CA kept in the Secret <name>-webhook-ca, shared by the
    /// replicas, and a certificate per replica; both renewed before they expire]
    #[arg(long, env = "KUBERATOR_WEBHOOK_CERT_DIR", global = true)]
    webhook_cert_dir: Option<std::path::PathBuf>,
}

impl WebhookArgs {
    /// Serves the webhooks of `running` (none if none has any), as the flags say.
    async fn serve(
        &self,
        name: &str,
        running: &[(&'static str, Arc<dyn Runnable>)],
        client: &Client,
    ) -> anyhow::Result<Option<crate::webhook::WebhookServer>> {
        use crate::webhook::Certificates;
        use crate::webhook::Endpoint;
        let namespace = client.default_namespace().to_owned();
        let endpoint = match &self.webhook_url {
            Some(url) => Endpoint::Url(url.clone()),
            None => Endpoint::Service {
                namespace: namespace.clone(),
                name: crate::webhook::service_name(name),
                port: 443,
            },
        };
        let certificates = match &self.webhook_cert_dir {
            Some(dir) => Certificates::from_dir(dir),
            None => Certificates::shared(namespace, crate::webhook::ca_secret_name(name)),
        };
        let mut webhooks = crate::webhook::Webhooks::new(name, endpoint).certificates(certificates);
        for (_, controller) in running {
            if let Some(route) = controller.admission() {
                webhooks = webhooks.with_route(route);
            }
        }
        if webhooks.is_empty() {
            return Ok(None);
        }
        let served = webhooks.serve(self.webhook_address, client.clone()).await.with_context(|| {
            format!(
                "check --webhook-address ({}), --webhook-url and --webhook-cert-dir",
                self.webhook_address
            )
        })?;
        Ok(Some(served))
    }
}

/// Metrics and probes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Metrics and probes")]
struct TelemetryArgs {
    /// Where to serve /metrics: over HTTPS, to callers the API server authenticates and that
    /// may get the non-resource URL /metrics
    #[arg(long, env = "KUBERATOR_METRICS_ADDRESS", default_value = "0.0.0.0:8443", global = true)]
    metrics_address: std::net::SocketAddr,

    /// Serve /metrics in plain HTTP to anyone who can reach it instead: for local runs
    #[arg(long, env = "KUBERATOR_METRICS_INSECURE", global = true)]
    metrics_insecure: bool,

    /// A directory with tls.crt and tls.key (a mounted TLS Secret) for /metrics [default: a
    /// self-signed certificate made at start, kept in memory]
    #[arg(long, env = "KUBERATOR_METRICS_CERT_DIR", global = true)]
    metrics_cert_dir: Option<std::path::PathBuf>,

    /// Accept on /metrics only tokens meant for this audience (repeat for several), as
    /// kube-rbac-proxy's --auth-token-audiences; the scraper then sends a projected
    /// ServiceAccount token with that audience [default: tokens meant for the API server, which
    /// a Prometheus in the cluster sends]
    #[arg(long, env = "KUBERATOR_METRICS_AUDIENCE", value_delimiter = ',', global = true)]
    metrics_audience: Vec<String>,

    /// Where to serve /healthz and /readyz, in plain HTTP for the kubelet's probes
    #[arg(long, env = "KUBERATOR_HEALTH_ADDRESS", default_value = "0.0.0.0:8081", global = true)]
    health_address: std::net::SocketAddr,
}

impl TelemetryArgs {
    /// Serves the probes, then `/metrics` as the flags say; both stop when dropped.
    async fn serve(
        &self,
        client: &Client,
    ) -> anyhow::Result<(crate::telemetry::Telemetry, crate::telemetry::Telemetry)> {
        use crate::telemetry::MetricsAccess;
        use crate::telemetry::SecureMetrics;
        use crate::telemetry::TlsIdentity;
        let health = crate::telemetry::serve_health(self.health_address).await.with_context(|| {
            format!(
                "serving /healthz and /readyz on {} (change it with --health-address)",
                self.health_address
            )
        })?;
        let access = if self.metrics_insecure {
            MetricsAccess::Open
        } else {
            let identity = match &self.metrics_cert_dir {
                Some(dir) => TlsIdentity::from_dir(dir).context("check --metrics-cert-dir")?,
                None => TlsIdentity::self_signed()?,
            };
            MetricsAccess::Secure(
                SecureMetrics::new(client.clone(), identity).audiences(self.metrics_audience.iter().cloned()),
            )
        };
        let metrics =
            crate::telemetry::serve_metrics(self.metrics_address, access).await.with_context(|| {
                format!("serving /metrics on {} (change it with --metrics-address)", self.metrics_address)
            })?;
        Ok((health, metrics))
    }
}

/// Leader election: one replica reconciles, the others stand by.
#[derive(Debug, Args)]
#[command(next_help_heading = "Leader election")]
struct ElectionArgs {
    /// Reconcile only while holding a Lease, so that of several replicas exactly one does
    #[arg(
        long,
        env = "KUBERATOR_LEADER_ELECTION",
        default_value_t = true,
        action = ArgAction::Set,
        value_name = "true|false",
        global = true
    )]
    leader_election: bool,

    /// Name of the Lease [default: the controller name]
    #[arg(long, env = "KUBERATOR_LEASE_NAME", global = true)]
    lease_name: Option<String>,

    /// Namespace of the Lease [default: the pod's namespace in a cluster, else the kubeconfig's;
    /// for `rbac` and `manifests`, their --namespace]
    #[arg(long, env = "KUBERATOR_LEASE_NAMESPACE", global = true)]
    lease_namespace: Option<String>,

    /// This replica's name in the Lease [default: $POD_NAME or $HOSTNAME, with a random suffix]
    #[arg(long, env = "KUBERATOR_IDENTITY", global = true)]
    identity: Option<String>,

    /// While not holding the Lease, keep every watch and cache synced (and write nothing), so
    /// that on winning it the controllers start from synced caches
    #[arg(
        long,
        env = "KUBERATOR_WARM_STANDBY",
        default_value_t = true,
        action = ArgAction::Set,
        value_name = "true|false",
        global = true
    )]
    warm_standby: bool,

    /// How long a Lease that is no longer renewed keeps the standbys out
    #[arg(long, env = "KUBERATOR_LEASE_DURATION", default_value_t = CliDuration(leader::DEFAULT_LEASE_DURATION), global = true)]
    lease_duration: CliDuration,

    /// How long the leader keeps trying to renew before it stops reconciling
    #[arg(long, env = "KUBERATOR_RENEW_DEADLINE", default_value_t = CliDuration(leader::DEFAULT_RENEW_DEADLINE), global = true)]
    renew_deadline: CliDuration,

    /// How often the leader renews and a standby looks
    #[arg(long, env = "KUBERATOR_RETRY_PERIOD", default_value_t = CliDuration(leader::DEFAULT_RETRY_PERIOD), global = true)]
    retry_period: CliDuration,
}

/// Sharding: each of several replicas reconciles a share of the objects.
#[derive(Debug, Args)]
#[command(next_help_heading = "Sharding")]
struct ShardArgs {
    /// Split the objects into this many shards, shared out among the live replicas through
    /// Leases (each replica reconciles only its shards'); 0: off, one replica reconciles
    /// everything (leader election picks which). Use a multiple of the replica count
    /// [default: the attribute's `shards`, else 0]
    #[arg(long, env = "KUBERATOR_SHARDS", value_name = "N", global = true)]
    shards: Option<u32>,

    /// What places an object in a shard: `uid` (an even spread) or `namespace` (a namespace
    /// and everything in it on one replica; the children's watch is sharded too)
    #[arg(long, env = "KUBERATOR_SHARD_KEY", default_value_t = ShardKey::Uid, value_name = "uid|namespace", global = true)]
    shard_key: ShardKey,

    /// Ask the API server to send each replica only its shards' objects (Kubernetes 1.36 or
    /// later with the ShardedListAndWatch feature gate; used only where the server honours
    /// it). Without it, each replica receives every object and keeps only its own
    #[arg(
        long,
        env = "KUBERATOR_SERVER_SIDE_SHARDING",
        default_value_t = true,
        action = ArgAction::Set,
        value_name = "true|false",
        global = true
    )]
    server_side_sharding: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile until SIGINT or SIGTERM (the default)
    Run,
    /// Print the CustomResourceDefinitions as YAML
    Crd,
    /// Print the Roles (or ClusterRole) and bindings with exactly the permissions the operator uses
    Rbac {
        /// Namespace of the operator's ServiceAccount (and of its Lease, unless --lease-namespace)
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Write every object of each kind with other versions (`versions = [...]`) again, so that it
    /// is stored in the storage version, and record that only that version is stored; run it
    /// after an upgrade changed the storage version, before an old version leaves the CRD
    MigrateStorage,
    /// Print CRD, ServiceAccount, RBAC and Deployment, ready for `kubectl apply -f -`
    Manifests {
        /// Namespace to run the operator in
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Container image of the operator
        #[arg(long)]
        image: String,
        /// Replicas of the Deployment (more than one needs --shards, or they stand by)
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// CPU the container requests
        #[arg(long, default_value = manifests::DEFAULT_CPU_REQUEST)]
        cpu_request: String,
        /// Memory the container requests
        #[arg(long, default_value = manifests::DEFAULT_MEMORY_REQUEST)]
        memory_request: String,
        /// CPU the container may use at most
        #[arg(long, default_value = manifests::DEFAULT_CPU_LIMIT)]
        cpu_limit: String,
        /// Memory the container may use at most
        #[arg(long, default_value = manifests::DEFAULT_MEMORY_LIMIT)]
        memory_limit: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines
    Pretty,
    /// One JSON object per line
    Json,
}

/// A duration on the command line: `500ms`, `15s`, `1.5s` or `2m`; shown in `--help` the
/// way it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CliDuration(Duration);

impl std::str::FromStr for CliDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            _ => return Err(format!("`{text}` is not a duration: write it like 500ms, 15s or 2m")),
        };
        number
            .parse::<f64>()
            .ok()
            .and_then(|number| Duration::try_from_secs_f64(number * scale).ok())
            .map(CliDuration)
            .ok_or_else(|| format!("`{text}` is not a duration: write it like 500ms, 15s or 2m"))
    }
}

impl std::fmt::Display for CliDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.as_secs(), self.0.subsec_millis()) {
            (seconds, 0) => write!(f, "{seconds}s"),
            _ => write!(f, "{}ms", self.0.as_millis()),
        }
    }
}

/// A value on the command line for every controller (`4`), or for the one named (`backup=4`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scoped<T> {
    controller: Option<String>,
    value: T,
}

impl<T: std::str::FromStr<Err: std::fmt::Display>> std::str::FromStr for Scoped<T> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (controller, value) = match text.split_once('=') {
            Some((controller, value)) => (Some(controller.trim().to_owned()), value),
            None => (None, text),
        };
        let value = value.trim().parse().map_err(|error: T::Err| error.to_string())?;
        Ok(Self { controller, value })
    }
}

/// The value `values` give `controller`: its own (the last), else the last for every one.
fn pick<T: Copy>(values: &[Scoped<T>], controller: &str) -> Option<T> {
    let own = values.iter().rev().find(|scoped| scoped.controller.as_deref() == Some(controller));
    own.or_else(|| values.iter().rev().find(|scoped| scoped.controller.is_none())).map(|scoped| scoped.value)
}

impl Cli {
    /// Refuses a `NAME=` that names none of `controllers`.
    fn check_scoped(&self, controllers: &[&str]) -> anyhow::Result<()> {
        let named =
            self.concurrency.iter().map(|scoped| ("--concurrency", &scoped.controller)).chain(
                self.reconcile_timeout.iter().map(|scoped| ("--reconcile-timeout", &scoped.controller)),
            );
        for (flag, controller) in named {
            if let Some(controller) = controller
                && !controllers.contains(&controller.as_str())
            {
                anyhow::bail!(
                    "{flag}: no controller is named `{controller}`; this process runs {}",
                    controllers.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(())
    }

    /// The namespaces to watch: `--namespaces`, else the attribute's.
    fn watched(&self, settings: &Settings) -> anyhow::Result<Vec<String>> {
        if self.namespaces.is_empty() {
            return Ok(settings.namespaces.clone());
        }
        if let Some(bad) = self.namespaces.iter().find(|ns| !is_dns_label(ns)) {
            anyhow::bail!(
                "--namespaces: `{bad}` is not a namespace name (lower-case letters, digits and `-`, at most 63)"
            );
        }
        Ok(self.namespaces.clone())
    }

    /// The settings to run with: the operator's, with `--namespaces` and `--concurrency`.
    fn settings(&self, settings: &Settings) -> anyhow::Result<Settings> {
        let mut settings = settings.clone();
        settings.namespaces = self.watched(&settings)?;
        if let Some(limit) = pick(&self.concurrency, settings.controller_name) {
            settings.concurrency = (limit > 0).then_some(limit);
        }
        if let Some(CliDuration(limit)) = pick(&self.reconcile_timeout, settings.controller_name) {
            settings.reconcile_timeout = (!limit.is_zero()).then_some(limit);
        }
        Ok(settings)
    }

    /// The shard count, once resolved (`shard_count`); 0: not sharded.
    fn shards(&self) -> u32 {
        self.sharding.shards.unwrap_or(0)
    }

    /// Where the process is installed: in `namespace`, with the flags' Lease and `/metrics`
    /// access. (What each controller watches is its [`Part`]'s.)
    fn placement(&self, namespace: &str) -> manifests::Placement {
        let lease_namespace = self.election.lease_namespace.clone().unwrap_or_else(|| namespace.to_owned());
        manifests::Placement {
            namespace: namespace.to_owned(),
            watched: Vec::new(),
            lease_namespace: (self.election.leader_election || self.shards() > 0).then_some(lease_namespace),
            sharding: (self.shards() > 0)
                .then_some(manifests::ShardPlacement { shards: self.shards(), key: self.sharding.shard_key }),
            metrics_auth: !self.telemetry.metrics_insecure,
        }
    }
}

/// The shard count of the process: `--shards` (or `KUBERATOR_SHARDS`), else the one its
/// controllers' attributes say (`shards = N`), else 0 (not sharded).
fn shard_count(flag: Option<u32>, settings: &[Settings]) -> anyhow::Result<u32> {
    if let Some(shards) = flag {
        return Ok(shards);
    }
    let said: Vec<(u32, &str)> =
        settings.iter().filter_map(|settings| Some((settings.shards?, settings.controller_name))).collect();
    match said.split_first() {
        None => Ok(0),
        Some((first, rest)) => match rest.iter().find(|other| other.0 != first.0) {
            None => Ok(first.0),
            Some(other) => anyhow::bail!(
                "the controllers `{}` (shards = {}) and `{}` (shards = {}) of one process must split the objects alike: \
                 write the same `shards` in both #[kuberator(...)] attributes, or pass --shards",
                first.1,
                first.0,
                other.1,
                other.0
            ),
        },
    }
}

/// How long reconciles in flight may finish after the first signal, unless `--drain-deadline`
/// says otherwise: below the 30 s that Kubernetes waits between SIGTERM and SIGKILL.
pub(crate) const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(25);

/// Why `--namespaces` makes no sense for a process whose controllers all reconcile
/// cluster-scoped kinds (`kinds`), when some are given.
fn all_cluster_scoped(kinds: &[String], namespaces: &[String]) -> Option<String> {
    (!namespaces.is_empty()).then(|| {
        let (kinds, are) = match kinds {
            [only] => (only.clone(), "is"),
            several => (several.join(", "), "are"),
        };
        format!(
            "--namespaces: {kinds} {are} cluster-scoped, so its objects live in no namespace and the operator \
             watches them all; remove --namespaces (and KUBERATOR_NAMESPACES)"
        )
    })
}

fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// How long a dry run waits with nothing sent before it ends.
const DRY_RUN_QUIET: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `operator` as a program; `--help` lists the subcommands (`run`, `crd`, `rbac`,
/// `manifests`) and the flags, each with an environment variable.
///
/// `run` sets up logging, connects to the cluster in `KUBECONFIG` (or in-cluster), serves
/// metrics and probes, and reconciles until SIGINT or SIGTERM; with leader election (on
/// unless `--leader-election=false`) only while it holds the Lease ([`crate::leader`]).
/// Several controllers in one process: [`Operators`](super::Operators).
///
/// # Errors
///
/// When no cluster can be reached, a flag is invalid, the Lease may not be used, or the
/// output cannot be written.
pub async fn run<O: Operator>(operator: O, program: Program) -> anyhow::Result<()> {
    super::Operators::new().with(operator).run(program).await
}

/// The program that runs `units` as the process `name`: [`run`] for one or several.
pub(super) async fn run_units(
    units: Vec<Box<dyn Unit>>,
    name: &'static str,
    program: Program,
) -> anyhow::Result<()> {
    let about =
        if program.about.is_empty() { "A Kubernetes operator built with Kuberator" } else { program.about };
    let matches = Cli::command().name(program.name).version(program.version).about(about).get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let controllers: Vec<&str> = units.iter().map(|unit| unit.settings().controller_name).collect();
    cli.check_scoped(&controllers)?;
    if units.iter().all(|unit| !unit.namespaced()) {
        let kinds: Vec<String> = units.iter().map(|unit| unit.kind()).collect();
        if let Some(refused) = all_cluster_scoped(&kinds, &cli.namespaces) {
            anyhow::bail!(refused);
        }
    }
    // Each controller's settings: `--namespaces` for the namespaced ones; the scoped flags.
    let mut resolved = Vec::with_capacity(units.len());
    for unit in &units {
        let mut settings = cli.settings(unit.settings())?;
        if !unit.namespaced() {
            settings.namespaces = Vec::new();
        }
        resolved.push(settings);
    }
    cli.sharding.shards = Some(shard_count(cli.sharding.shards, &resolved)?);
    let parts: Vec<Part> = units.iter().zip(&resolved).map(|(unit, settings)| unit.part(settings)).collect();
    let print = |text: String| std::io::stdout().write_all(text.as_bytes()).context("writing to stdout");
    match &cli.command {
        Some(Command::Crd) => {
            let crds: Vec<serde_json::Value> = parts.iter().filter_map(|part| part.crd.clone()).collect();
            return print(manifests::to_yaml(&crds));
        }
        Some(Command::Rbac { namespace }) => {
            return print(manifests::to_yaml(&manifests::rbac_of(name, &parts, &cli.placement(namespace))));
        }
        Some(Command::Manifests {
            namespace,
            image,
            replicas,
            cpu_request,
            memory_request,
            cpu_limit,
            memory_limit,
        }) => {
            let workload = manifests::Workload {
                image: image.clone(),
                replicas: *replicas,
                metrics_port: cli.telemetry.metrics_address.port(),
                health_port: cli.telemetry.health_address.port(),
                webhook_port: cli.webhooks.webhook_address.port(),
                resources: manifests::Resources {
                    cpu_request: cpu_request.clone(),
                    memory_request: memory_request.clone(),
                    cpu_limit: cpu_limit.clone(),
                    memory_limit: memory_limit.clone(),
                },
            };
            // `--namespaces` reaches the pod when it changes what some controller watches.
            let changed = units
                .iter()
                .zip(&resolved)
                .any(|(unit, settings)| unit.settings().namespaces != settings.namespaces);
            let namespaces = changed.then(|| cli.namespaces.clone());
            return print(manifests::to_yaml(&manifests::manifests_of(
                name,
                &parts,
                &cli.placement(namespace),
                &workload,
                namespaces,
            )));
        }
        Some(Command::MigrateStorage) => {
            init_tracing(cli.log_format, &cli.log)?;
            let client =
                Client::try_default().await.context("no Kubernetes cluster reachable: set KUBECONFIG")?;
            let mut migrated = false;
            for unit in &units {
                let Some(migration) = unit.migrate(client.clone()) else { continue };
                let kind = unit.kind();
                let rewritten = migration.await.with_context(|| {
                    format!(
                        "migrating {kind}: it takes list and update on it and patch on \
                         customresourcedefinitions/status; run it again once fixed (what was written stays)"
                    )
                })?;
                print(format!(
                    "{kind}: wrote {rewritten} objects again; only the storage version is stored now\n"
                ))?;
                migrated = true;
            }
            if !migrated {
                anyhow::bail!("no controller of this operator serves other versions (`versions = [...]`)");
            }
            return Ok(());
        }
        Some(Command::Run) | None => {}
    }
    let election = &cli.election;
    init_tracing(cli.log_format, &cli.log)?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes cluster reachable: set KUBECONFIG, or run in a pod with a service account")?;
    // A dry run writes nothing, Leases included: one process, everything, no election.
    let dry_run = cli.dry_run.then(|| crate::dry_run::DryRun::new(client.clone()));
    let client = dry_run.as_ref().map_or(client, crate::dry_run::DryRun::client);
    if dry_run.is_some() {
        tracing::info!(process = name, "dry run: every write is sent with dryRun=All, nothing is changed");
        cli.sharding.shards = Some(0);
    }
    let lease_namespace =
        election.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let group = election.lease_name.as_deref().unwrap_or(name);
    let timing = (election.lease_duration.0, election.renew_deadline.0, election.retry_period.0);
    let identity = election.identity.clone().unwrap_or_else(leader::default_identity);
    let sharding = (cli.shards() > 0).then(|| {
        Sharding::new(group, lease_namespace.clone(), cli.shards())
            .key(cli.sharding.shard_key)
            .timing(timing.0, timing.1, timing.2)
            .identity(identity.clone())
    });
    if let Some(sharding) = &sharding {
        sharding
            .validate()
            .context("check --shards, --lease-name, --lease-duration, --renew-deadline and --retry-period")?;
    }
    // Sharding replaces leader election: every replica reconciles its share.
    let leader_election = (election.leader_election && sharding.is_none() && dry_run.is_none()).then(|| {
        LeaderElection::new(group, lease_namespace.clone())
            .timing(timing.0, timing.1, timing.2)
            .identity(identity.clone())
    });
    if let Some(lease) = &leader_election {
        lease.validate().context("check --lease-duration, --renew-deadline and --retry-period")?;
    }
    let _telemetry = match dry_run {
        Some(_) => None,
        None => Some(cli.telemetry.serve(&client).await?),
    };
    for settings in &resolved {
        tracing::info!(
            controller = settings.controller_name,
            finalizer = settings.finalizer,
            namespaces = ?settings.namespaces,
            caching = %settings.caching,
            concurrency = ?settings.concurrency,
            "starting"
        );
    }
    if let Some(lease) = &leader_election {
        tracing::info!(process = name, lease = %lease.lease(), identity = %lease.identity, "electing a leader");
    }
    let running: Arc<Vec<(&'static str, Arc<dyn Runnable>)>> = Arc::new(
        units
            .into_iter()
            .zip(resolved)
            .map(|(unit, settings)| (settings.controller_name, unit.build(client.clone(), settings)))
            .collect(),
    );
    // Served by every replica, the standing-by ones too, before anything reconciles: the
    // operator's own writes (its finalizer) go through its webhooks.
    let _webhooks = match dry_run {
        Some(_) => None,
        None => cli.webhooks.serve(name, &running, &client).await?,
    };
    // One watch per kind for the whole process, kept across leadership terms.
    let caches = Caches::new(running.iter().map(|(name, _)| *name));
    if leader_election.is_some() && election.warm_standby {
        for (_, controller) in running.iter() {
            controller.warm(&caches);
        }
    }
    let (signalled, first_signal) = tokio::sync::oneshot::channel();
    let idle = dry_run.clone();
    let shutdown = async move {
        match idle {
            Some(dry_run) => tokio::select! {
                () = crate::shutdown::signal() => {}
                () = dry_run.idle(DRY_RUN_QUIET) => {}
            },
            None => crate::shutdown::signal().await,
        }
        crate::telemetry::shutting_down();
        let _ = signalled.send(());
    };
    let server_side = match &sharding {
        Some(sharding) if cli.sharding.server_side_sharding => sharding.server_filters(client.clone()).await,
        _ => false,
    };
    let running = async {
        if let Some(sharding) = &sharding {
            let names: Vec<&'static str> = running.iter().map(|(name, _)| *name).collect();
            let work = move |range, stop| {
                let caches = Caches::sharded(names.clone(), ShardFilter { range, server_side });
                start_all(&running, stop, &caches)
            };
            sharding.clone().run(client.clone(), shutdown, work).await?;
            return anyhow::Ok(());
        }
        match &leader_election {
            Some(lease) => {
                let work = move |stop| start_all(&running, stop, &caches);
                lease.clone().run(client.clone(), shutdown, work).await?;
            }
            None => start_all(&running, Shutdown::new(shutdown), &caches).await,
        }
        anyhow::Ok(())
    };
    let drain = cli.drain_deadline.0;
    let out_of_time = async move {
        if first_signal.await.is_err() {
            return std::future::pending().await;
        }
        tokio::select! {
            () = tokio::time::sleep(drain) => format!("the drain deadline of {drain:?} passed"),
            () = crate::shutdown::signal() => "a second signal came".to_owned(),
        }
    };
    // Boxed, so that dropping it below really cancels the work before the Lease is released.
    let mut running = Box::pin(running);
    let why = tokio::select! {
        finished = &mut running => {
            if let Some(dry_run) = &dry_run {
                crate::dry_run::say(&format!("{}\n", dry_run.summary()));
            }
            return finished;
        }
        why = out_of_time => why,
    };
    // What still runs is cancelled with `running`.
    let cancelled = crate::controller::in_flight();
    drop(running);
    tracing::error!(objects = ?cancelled, "{why} while reconciles were in flight; they were cancelled");
    if let Some(lease) = &leader_election {
        let released = tokio::time::timeout(lease.retry_period, lease.release(client.clone())).await;
        if matches!(released, Ok(Ok(()))) {
            tracing::info!(lease = %lease.lease(), "released the lease");
        } else {
            let lease = lease.lease();
            tracing::warn!(%lease, "could not release the lease; a standby takes over once it expires");
        }
    }
    let cancelled = if cancelled.is_empty() { "none left".to_owned() } else { cancelled.join(", ") };
    anyhow::bail!("shut down before the reconciles in flight finished ({why}); cancelled: {cancelled}")
}

fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter = log_filter(filter)?;
    let ansi = colour(std::io::stdout().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    // An application that set up tracing itself keeps its own.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

/// Whether log lines carry colours: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>). A file or a pipe gets plain text.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// The tracing filter for `--log`. Filters match target prefixes, so a directive meant for kube's
/// crates (`kube=warn`) would also silence `kuberator::...`; unless the filter names
/// `kuberator` itself, Kuberator's lines keep the filter's overall level.
fn log_filter(filter: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let directives: Vec<&str> = filter.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let target = |directive: &str| directive.split(['=', '[']).next().unwrap_or_default().to_owned();
    let level = directives.iter().rev().find(|directive| !directive.contains(['=', '[']));
    let shadows_ours = directives.iter().any(|directive| {
        let target = target(directive);
        directive.contains('=')
            && !target.is_empty()
            && "kuberator".starts_with(&target)
            && target != "kuberator"
    });
    let names_ours = directives.iter().any(|directive| target(directive).starts_with("kuberator"));
    let mut effective = directives.join(",");
    if let (true, false, Some(level)) = (shadows_ours, names_ours, level) {
        effective.push_str(&format!(",kuberator={level}"));
    }
    tracing_subscriber::EnvFilter::try_new(&effective)
        .with_context(|| format!("invalid --log filter `{filter}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a file or a pipe");
    }

    /// What `filter` lets through of an INFO line of Kuberator and of kube's runtime.
    fn logged(filter: &str) -> (bool, bool) {
        use tracing_subscriber::layer::SubscriberExt as _;

        let filter = log_filter(filter).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let writer = {
            let seen = std::sync::Arc::clone(&seen);
            move || Capture(std::sync::Arc::clone(&seen))
        };
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false))
            .with(filter);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "kuberator::controller", "ours");
            tracing::info!(target: "kube_runtime::controller", "theirs");
        });
        let lines = seen.lock().unwrap().concat();
        (lines.contains("ours"), lines.contains("theirs"))
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn documented_log_filters_keep_kuberators_own_lines() {
        // The default, and the documented per-crate example.
        assert_eq!(logged("info"), (true, true));
        assert_eq!(logged("info,kube_runtime=warn,kube_client=warn"), (true, false));
        // `kube` is a prefix of `kuberator`: meant for kube, it must not silence Kuberator.
        assert_eq!(logged("info,kube=warn"), (true, false));
        // Naming kuberator is obeyed.
        assert_eq!(logged("info,kube=warn,kuberator=warn"), (false, false));
        assert_eq!(logged("warn"), (false, false));
    }

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
            "--namespaces",
            "a,b",
            "--leader-election=false",
        ])
        .unwrap();
        assert!(matches!(cli.log_format, LogFormat::Json));
        assert_eq!(cli.concurrency, [Scoped { controller: None, value: 4 }]);
        assert_eq!(cli.namespaces, ["a", "b"]);
        assert!(!cli.election.leader_election);
        assert!(matches!(&cli.command, Some(Command::Rbac { namespace }) if namespace == "ops"));
        let defaults =
            super::super::OperatorConfig::default().resolve::<crate::cache::test_support::Widget>();
        assert_eq!(defaults.concurrency, Some(1));
        let settings = cli.settings(&defaults).unwrap();
        assert_eq!(settings.concurrency, Some(4));
        assert_eq!(settings.namespaces, ["a", "b"]);
        let unlimited =
            Cli::try_parse_from(["op", "--concurrency", "0"]).unwrap().settings(&defaults).unwrap();
        assert_eq!(unlimited.concurrency, None);
        let error = Cli::try_parse_from(["op", "manifests"]).unwrap_err();
        assert!(error.to_string().contains("--image"), "{error}");
        let webhooks = Cli::try_parse_from([
            "op",
            "migrate-storage",
            "--webhook-address",
            "127.0.0.1:9444",
            "--webhook-url",
            "https://127.0.0.1:9444",
            "--webhook-cert-dir",
            "/certs",
        ])
        .unwrap();
        assert!(matches!(webhooks.command, Some(Command::MigrateStorage)));
        assert_eq!(webhooks.webhooks.webhook_address.port(), 9444);
        assert_eq!(webhooks.webhooks.webhook_url.as_deref(), Some("https://127.0.0.1:9444"));
        assert_eq!(webhooks.webhooks.webhook_cert_dir.as_deref(), Some(std::path::Path::new("/certs")));
    }

    #[test]
    fn concurrency_and_timeout_are_set_for_all_controllers_or_for_one_by_name() {
        let named = |name| super::super::OperatorConfig { controller_name: Some(name), ..Default::default() };
        let backup = named("backup").resolve::<crate::cache::test_support::Widget>();
        let database = named("database").resolve::<crate::cache::test_support::Widget>();
        let cli = Cli::try_parse_from([
            "op",
            "--concurrency",
            "4,backup=2",
            "--reconcile-timeout",
            "database=30s",
            "--reconcile-timeout",
            "0s",
        ])
        .unwrap();
        cli.check_scoped(&["backup", "database"]).unwrap();
        let (backup, database) = (cli.settings(&backup).unwrap(), cli.settings(&database).unwrap());
        assert_eq!((backup.concurrency, database.concurrency), (Some(2), Some(4)));
        assert_eq!(backup.reconcile_timeout, None, "the bare 0s is for every other controller");
        assert_eq!(database.reconcile_timeout, Some(Duration::from_secs(30)));

        let error = cli.check_scoped(&["backup"]).unwrap_err().to_string();
        assert_eq!(
            error,
            "--reconcile-timeout: no controller is named `database`; this process runs `backup`"
        );
        let error = Cli::try_parse_from(["op", "--concurrency", "backup=many"]).unwrap_err().to_string();
        assert!(error.contains("invalid digit"), "{error}");
    }

    #[test]
    fn the_shard_count_is_the_flags_else_the_attributes_which_must_agree() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let with = |name: &'static str, shards: Option<u32>| {
            super::super::OperatorConfig { controller_name: Some(name), shards, ..Default::default() }
                .resolve::<ConfigMap>()
        };
        assert_eq!(shard_count(None, &[with("a", None)]).unwrap(), 0);
        assert_eq!(shard_count(None, &[with("a", Some(12)), with("b", None)]).unwrap(), 12);
        assert_eq!(shard_count(Some(6), &[with("a", Some(12))]).unwrap(), 6, "the flag wins");
        assert_eq!(shard_count(None, &[with("a", Some(0))]).unwrap(), 0, "0 is not sharded");
        let error = shard_count(None, &[with("a", Some(12)), with("b", Some(6))]).unwrap_err().to_string();
        assert!(error.contains("`a` (shards = 12) and `b` (shards = 6)"), "{error}");
        let cli = Cli::try_parse_from(["op", "--shards", "12", "--shard-key", "namespace"]).unwrap();
        assert_eq!((cli.sharding.shards, cli.sharding.shard_key), (Some(12), ShardKey::Namespace));
        assert!(cli.sharding.server_side_sharding);
        let error = Cli::try_parse_from(["op", "--shard-key", "name"]).unwrap_err().to_string();
        assert!(error.contains("write `uid` or `namespace`"), "{error}");
    }

    #[test]
    fn leader_election_is_on_with_client_go_timing_unless_told_otherwise() {
        let cli = Cli::try_parse_from(["op"]).unwrap();
        assert!(cli.election.leader_election);
        assert_eq!(cli.election.lease_duration.0, Duration::from_secs(15));
        assert_eq!(cli.election.renew_deadline.0, Duration::from_secs(10));
        assert_eq!(cli.election.retry_period.0, Duration::from_secs(2));
        let help = Cli::command().render_long_help().to_string();
        for default in ["[default: 15s]", "[default: 10s]", "[default: 2s]"] {
            assert!(help.contains(default), "{default} in\n{help}");
        }
        let cli = Cli::try_parse_from(["op", "--retry-period", "500ms", "--lease-duration", "1m"]).unwrap();
        assert_eq!(cli.election.retry_period.0, Duration::from_millis(500));
        assert_eq!(cli.election.retry_period.to_string(), "500ms");
        assert_eq!(cli.election.lease_duration.0, Duration::from_secs(60));
        let error = Cli::try_parse_from(["op", "--renew-deadline", "10"]).unwrap_err();
        assert!(error.to_string().contains("write it like 500ms, 15s or 2m"), "{error}");
    }

    #[test]
    fn namespaces_are_refused_for_a_cluster_scoped_resource() {
        use k8s_openapi::Resource as _;
        use k8s_openapi::api::core::v1::Namespace;

        let kind = |kind: &str| kind.to_owned();
        let refused = all_cluster_scoped(&[Namespace::KIND.to_owned()], &["team-a".to_owned()]).unwrap();
        assert!(refused.starts_with("--namespaces: Namespace is cluster-scoped"), "{refused}");
        assert_eq!(all_cluster_scoped(&[kind("Namespace")], &[]), None);
        let refused = all_cluster_scoped(&[kind("Zone"), kind("Region")], &["team-a".to_owned()]).unwrap();
        assert!(refused.starts_with("--namespaces: Zone, Region are cluster-scoped"), "{refused}");
    }

    #[test]
    fn namespaces_from_the_command_line_replace_the_attributes_and_are_checked() {
        let config = super::super::OperatorConfig { namespaces: &["default"], ..Default::default() }
            .resolve::<crate::cache::test_support::Widget>();
        let cli = Cli::try_parse_from(["op"]).unwrap();
        assert_eq!(cli.watched(&config).unwrap(), ["default"]);
        let cli = Cli::try_parse_from(["op", "--namespaces", "team-a,team-b"]).unwrap();
        assert_eq!(cli.watched(&config).unwrap(), ["team-a", "team-b"]);
        let cli = Cli::try_parse_from(["op", "--namespaces", "Team_A"]).unwrap();
        let error = cli.watched(&config).unwrap_err().to_string();
        assert!(error.contains("`Team_A` is not a namespace name"), "{error}");
        let placement = Cli::try_parse_from(["op", "--lease-namespace", "locks"]).unwrap().placement("ops");
        assert_eq!(placement.lease_namespace.as_deref(), Some("locks"));
    }
}
