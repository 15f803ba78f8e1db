//! The benchmarks of a process of several controllers: one shared cache against a cache per
//! process (`--shared`), and the failover of a warm standby against a cold one
//! (`--failover`). Both run the Kuberator contender only, on a fresh control plane per run,
//! and read what the API server itself counts from its `/metrics`.

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::discovery::ApiResource;
use kuberator_test::ControlPlane;
use serde::Deserialize;
use serde::Serialize;

use crate::Contender;
use crate::run::NAMESPACE;
use crate::run::Observer;
use crate::run::Process;
use crate::run::Workload;
use crate::run::create_all;
use crate::run::name;

/// One run of the shared-cache benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedRun {
    /// `one process` (both controllers, one watch of `Bench`) or `two processes`.
    pub(crate) layout: String,
    pub(crate) round: usize,
    pub(crate) objects: usize,
    /// Watches of `benches` open at the API server once every controller synced, less the
    /// driver's own.
    pub(crate) watches: f64,
    /// LIST requests for `benches` the API server served, less the driver's.
    pub(crate) lists: f64,
    /// Summed over the processes: RSS with no object, and once settled with every object.
    pub(crate) idle_rss_mib: f64,
    pub(crate) steady_rss_mib: f64,
}

impl SharedRun {
    /// Memory per cached `Bench`, over every process of the layout.
    pub(crate) fn kib_per_object(&self) -> f64 {
        (self.steady_rss_mib - self.idle_rss_mib) * 1024.0 / self.objects as f64
    }
}

/// One run of the failover benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FailoverRun {
    /// `warm` or `cold`.
    pub(crate) standby: String,
    pub(crate) round: usize,
    pub(crate) objects: usize,
    /// From the leader's kill -9: the standby holds the Lease, ran its first reconcile, and
    /// has reconciled every object.
    pub(crate) lease_seconds: f64,
    pub(crate) first_reconcile_seconds: f64,
    pub(crate) all_reconciled_seconds: f64,
    /// Watches of `benches` open at the API server with a leader and a standby, less the
    /// driver's own.
    pub(crate) watches: f64,
    /// Bytes the API server sent in watch events for `benches` while every object changed
    /// once, leader and standby running (the driver's watch included, the same in both).
    pub(crate) watch_bytes: f64,
}

/// One run of the sharding benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShardingRun {
    pub(crate) replicas: usize,
    /// `server` (each replica's watch filtered by the API server) or `client` (each replica
    /// receives every object and keeps its shards').
    pub(crate) filter: String,
    pub(crate) round: usize,
    pub(crate) objects: usize,
    /// How long each handler waits, as for an external call.
    pub(crate) handler_ms: u64,
    /// From the first create until every object is reconciled.
    pub(crate) seconds: f64,
    /// Each replica's RSS once its shards are held and no object exists, and once every
    /// object is reconciled and it settled.
    pub(crate) idle_rss_mib: Vec<f64>,
    pub(crate) steady_rss_mib: Vec<f64>,
    /// Each replica's CPU time (user + system) from its start until it settled.
    pub(crate) cpu_seconds: Vec<f64>,
    /// Bytes of watch events for `benches` the API server sent during the run (every replica's
    /// watch and the driver's).
    pub(crate) watch_bytes: f64,
}

impl ShardingRun {
    /// Objects reconciled per second.
    pub(crate) fn throughput(&self) -> f64 {
        self.objects as f64 / self.seconds
    }

    /// The median replica's memory for its cached objects (steady less idle), in MiB.
    pub(crate) fn cache_mib(&self) -> f64 {
        let grown = self.steady_rss_mib.iter().zip(&self.idle_rss_mib).map(|(steady, idle)| steady - idle);
        middle(grown.collect()).unwrap_or(f64::NAN)
    }

    /// The median replica's CPU time, in seconds.
    pub(crate) fn median_cpu_seconds(&self) -> f64 {
        middle(self.cpu_seconds.clone()).unwrap_or(f64::NAN)
    }
}

/// The value in the middle of `values` once sorted (the upper one of an even count).
pub(crate) fn middle(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The shared-cache, failover and sharding results, as `benchmarks/multi.json` keeps them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MultiResults {
    pub(crate) shared: Vec<SharedRun>,
    pub(crate) failover: Vec<FailoverRun>,
    #[serde(default)]
    pub(crate) sharding: Vec<ShardingRun>,
}

/// The shards the sharding benchmark splits the objects into: equal shares for 1, 2 and 3
/// replicas.
const SHARDS: usize = 12;
const SHARD_GROUP: &str = "bench-shards";

/// The lease timing both replicas run with: short, so that a run takes seconds, and the
/// same for warm and cold.
const LEASE: [(&str, &str); 3] = [
    ("KUBERATOR_LEASE_DURATION", "4s"),
    ("KUBERATOR_RENEW_DEADLINE", "3s"),
    ("KUBERATOR_RETRY_PERIOD", "500ms"),
];

const LEASE_NAME: &str = "bench-failover";

/// A fresh control plane with the benchmark's CRDs and namespace; `run` on it, then stopped.
async fn on_fresh_control_plane<T>(
    crds: &[CustomResourceDefinition],
    run: impl AsyncFnOnce(&ControlPlane, Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let control_plane = ControlPlane::start().await.context("starting a control plane")?;
    let prepared = async {
        let client: Client = control_plane.client().await?;
        for crd in crds {
            kuberator_test::install_crd_object(&client, crd).await?;
        }
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": NAMESPACE } }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .context("creating the namespace")?;
        anyhow::Ok(client)
    };
    let result = tokio::select! {
        result = async { run(&control_plane, prepared.await?).await } => result,
        signal = crate::run::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    control_plane.stop();
    result
}

fn benches(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(kuberator_bench::GROUP, "v1", "Bench"));
    Api::namespaced_with(client.clone(), NAMESPACE, &resource)
}

/// The sum of the API server's samples of `metric` for `benches` whose labels hold every
/// one of `labels`.
async fn api_server_metric(client: &Client, metric: &str, labels: &[&str]) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await.context("reading the API server's metrics")?;
    let prefix = format!("{metric}{{");
    Ok(text
        .lines()
        .filter(|line| line.starts_with(&prefix) && line.contains("resource=\"benches\""))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn open_watches(client: &Client) -> anyhow::Result<f64> {
    api_server_metric(client, "apiserver_longrunning_requests", &["verb=\"WATCH\""]).await
}

async fn lists(client: &Client) -> anyhow::Result<f64> {
    api_server_metric(client, "apiserver_request_total", &["verb=\"LIST\""]).await
}

/// One shared-cache run of `layout` with `objects` Benches and one BenchAudit naming the
/// first of them.
pub(crate) async fn shared(
    contender: &Contender,
    crds: &[CustomResourceDefinition],
    workload: &Workload,
    layout: &str,
    round: usize,
    logs: &Path,
) -> anyhow::Result<SharedRun> {
    on_fresh_control_plane(crds, async |control_plane, client| {
        let pairs: Vec<Vec<(&str, String)>> = match layout {
            "one process" => vec![vec![("BENCH_PAIR", "both".to_owned())]],
            _ => vec![vec![], vec![("BENCH_PAIR", "audit".to_owned())]],
        };
        let log =
            |i: usize, phase: &str| logs.join(format!("shared-{}-{round}-{i}-{phase}.log", pairs.len()));
        let start = |phase: &str| -> anyhow::Result<Vec<Process>> {
            pairs
                .iter()
                .enumerate()
                .map(|(i, env)| Process::spawn_with(contender, control_plane, workload, &log(i, phase), env))
                .collect()
        };
        let idle = start("idle")?;
        tokio::time::sleep(workload.settle).await;
        let idle_rss_mib = idle.iter().map(|p| p.now().map(|s| s.rss_mib)).sum::<anyhow::Result<f64>>()?;
        for process in idle {
            process.stop().await;
        }

        let api = benches(&client);
        create_all(&api, (0..workload.objects).map(name)).await?;
        let audit = ApiResource::from_gvk(&GroupVersionKind::gvk(kuberator_bench::GROUP, "v1", "BenchAudit"));
        let audits: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &audit);
        let object = serde_json::json!({
            "apiVersion": "bench.kuberator.dev/v1", "kind": "BenchAudit",
            "metadata": { "name": "audit", "namespace": NAMESPACE },
            "spec": { "bench": name(0) },
        });
        audits.patch("audit", &PatchParams::apply("bench-driver"), &Patch::Apply(&object)).await?;
        let observer = Observer::start(api).await?;
        let (lists_before, watches_before) = (lists(&client).await?, open_watches(&client).await?);

        let processes = start("run")?;
        observer.with(|seen| seen.begin(1, Instant::now()));
        observer.wait("every Bench to be reconciled", |seen| seen.reconciled == workload.objects).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while audits.get("audit").await?.data["status"]["replicas"].as_i64().is_none() {
            anyhow::ensure!(Instant::now() < deadline, "the BenchAudit was never reconciled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(workload.settle).await;
        let steady_rss_mib =
            processes.iter().map(|p| p.now().map(|s| s.rss_mib)).sum::<anyhow::Result<f64>>()?;
        let watches = open_watches(&client).await? - watches_before;
        let lists = lists(&client).await? - lists_before;
        for process in processes {
            process.stop().await;
        }
        Ok(SharedRun {
            layout: layout.to_owned(),
            round,
            objects: workload.objects,
            watches,
            lists,
            idle_rss_mib,
            steady_rss_mib,
        })
    })
    .await
}

/// One failover run: a leader and a `standby` (`warm` or `cold`) replica, every object
/// reconciled, one change of every object, then the leader killed.
pub(crate) async fn failover(
    contender: &Contender,
    crds: &[CustomResourceDefinition],
    workload: &Workload,
    standby: &str,
    round: usize,
    logs: &Path,
) -> anyhow::Result<FailoverRun> {
    on_fresh_control_plane(crds, async |control_plane, client| {
        let api = benches(&client);
        create_all(&api, (0..workload.objects).map(name)).await?;
        let observer = Observer::start(api.clone()).await?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
        let holder = async || -> anyhow::Result<Option<String>> {
            Ok(leases.get_opt(LEASE_NAME).await?.and_then(|lease| lease.spec?.holder_identity))
        };
        let replica = |identity: &str| {
            let mut env: Vec<(&str, String)> =
                LEASE.iter().map(|(name, value)| (*name, (*value).to_owned())).collect();
            env.push(("KUBERATOR_LEADER_ELECTION", "true".to_owned()));
            env.push(("KUBERATOR_LEASE_NAMESPACE", NAMESPACE.to_owned()));
            env.push(("KUBERATOR_LEASE_NAME", LEASE_NAME.to_owned()));
            env.push(("KUBERATOR_IDENTITY", identity.to_owned()));
            env.push(("KUBERATOR_WARM_STANDBY", (standby == "warm").to_string()));
            let log = logs.join(format!("failover-{standby}-{round}-{identity}.log"));
            Process::spawn_with(contender, control_plane, workload, &log, &env)
        };
        let watches_before = open_watches(&client).await?;
        let leader = replica("leader")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while holder().await?.as_deref() != Some("leader") {
            anyhow::ensure!(Instant::now() < deadline, "the first replica never held the Lease");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut standby_replica = replica("standby")?;
        observer.with(|seen| seen.begin(1, Instant::now()));
        observer.wait("every Bench to be reconciled", |seen| seen.reconciled == workload.objects).await?;
        tokio::time::sleep(workload.settle).await;
        let watches = open_watches(&client).await? - watches_before;

        // What the standby costs while the leader works: one change of every object.
        let bytes_before = api_server_metric(&client, "apiserver_watch_events_sizes_sum", &[]).await?;
        observer.with(|seen| seen.begin(2, Instant::now()));
        crate::run::change_all(&api, workload.objects).await?;
        observer.wait("every change to be reconciled", |seen| seen.reconciled == workload.objects).await?;
        tokio::time::sleep(workload.settle).await;
        let watch_bytes =
            api_server_metric(&client, "apiserver_watch_events_sizes_sum", &[]).await? - bytes_before;

        let killed = Instant::now();
        leader.kill9().await;
        let (mut lease_seconds, mut first_reconcile_seconds) = (None, None);
        let deadline = killed + Duration::from_secs(120);
        let all_reconciled_seconds = loop {
            anyhow::ensure!(Instant::now() < deadline, "the standby never reconciled every object");
            if lease_seconds.is_none() && holder().await?.as_deref() == Some("standby") {
                lease_seconds = Some(killed.elapsed().as_secs_f64());
            }
            let reconciles = standby_replica.reconciles().await?;
            if first_reconcile_seconds.is_none() && reconciles > 0 {
                first_reconcile_seconds = Some(killed.elapsed().as_secs_f64());
            }
            if reconciles >= workload.objects as u64 {
                break killed.elapsed().as_secs_f64();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        standby_replica.stop().await;
        Ok(FailoverRun {
            standby: standby.to_owned(),
            round,
            objects: workload.objects,
            lease_seconds: lease_seconds.unwrap_or(f64::NAN),
            first_reconcile_seconds: first_reconcile_seconds.unwrap_or(f64::NAN),
            all_reconciled_seconds,
            watches,
            watch_bytes,
        })
    })
    .await
}

/// One sharding run: `replicas` replicas of the Kuberator contender with `--shards 12`, each
/// handler waiting `handler_ms`; once the shards are shared out, N objects are created and
/// timed until every one is reconciled.
pub(crate) async fn sharding(
    contender: &Contender,
    crds: &[CustomResourceDefinition],
    workload: &Workload,
    (replicas, filter, handler_ms): (usize, &str, u64),
    round: usize,
    logs: &Path,
) -> anyhow::Result<ShardingRun> {
    on_fresh_control_plane(crds, async |control_plane, client| {
        let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
        let mut processes = Vec::with_capacity(replicas);
        for index in 0..replicas {
            let mut env: Vec<(&str, String)> =
                LEASE.iter().map(|(name, value)| (*name, (*value).to_owned())).collect();
            env.extend([
                ("KUBERATOR_SHARDS", SHARDS.to_string()),
                ("KUBERATOR_SERVER_SIDE_SHARDING", (filter == "server").to_string()),
                ("KUBERATOR_LEASE_NAMESPACE", NAMESPACE.to_owned()),
                ("KUBERATOR_LEASE_NAME", SHARD_GROUP.to_owned()),
                ("KUBERATOR_IDENTITY", format!("replica-{index}")),
                ("BENCH_HANDLER_MS", handler_ms.to_string()),
            ]);
            let log = logs.join(format!("sharding-{replicas}-{filter}-{round}-{index}.log"));
            processes.push(Process::spawn_with(contender, control_plane, workload, &log, &env)?);
        }
        // Every shard held, each replica holding its equal share.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let held = leases
                .list(
                    &kube::api::ListParams::default()
                        .labels(&format!("kuberator.io/shard-group={SHARD_GROUP}")),
                )
                .await?;
            let mut per_replica = std::collections::BTreeMap::<String, usize>::new();
            for lease in held
                .items
                .iter()
                .filter(|lease| lease.metadata.name.as_deref().is_some_and(|name| name.contains("-shard-")))
            {
                if let Some(holder) = lease.spec.as_ref().and_then(|spec| spec.holder_identity.clone()) {
                    *per_replica.entry(holder).or_default() += 1;
                }
            }
            if per_replica.len() == replicas && per_replica.values().all(|held| *held == SHARDS / replicas) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the shards were not shared out in 60 s: {per_replica:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(workload.settle).await;
        let idle_rss_mib =
            processes.iter().map(|p| p.now().map(|s| s.rss_mib)).collect::<anyhow::Result<Vec<_>>>()?;
        let bytes_before = api_server_metric(&client, "apiserver_watch_events_sizes_sum", &[]).await?;

        let api = benches(&client);
        let observer = Observer::start(api.clone()).await?;
        observer.with(|seen| seen.begin(1, Instant::now()));
        let started = Instant::now();
        create_all(&api, (0..workload.objects).map(name)).await?;
        observer.wait("every Bench to be reconciled", |seen| seen.reconciled == workload.objects).await?;
        let seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(workload.settle).await;
        let settled = processes.iter().map(Process::now).collect::<anyhow::Result<Vec<_>>>()?;
        let watch_bytes =
            api_server_metric(&client, "apiserver_watch_events_sizes_sum", &[]).await? - bytes_before;
        for process in processes {
            process.stop().await;
        }
        Ok(ShardingRun {
            replicas,
            filter: filter.to_owned(),
            round,
            objects: workload.objects,
            handler_ms,
            seconds,
            idle_rss_mib,
            steady_rss_mib: settled.iter().map(|sample| sample.rss_mib).collect(),
            cpu_seconds: settled.iter().map(|sample| sample.cpu_seconds).collect(),
            watch_bytes,
        })
    })
    .await
}
