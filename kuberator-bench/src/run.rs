//! One contender, one workload, on a control plane of its own: what the driver measures.

use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use anyhow::bail;
use futures::StreamExt as _;
use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::Client;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::api::PostParams;
use kube::discovery::ApiResource;
use kube::runtime::watcher;
use kuberator_test::ControlPlane;
use serde::Deserialize;
use serde::Serialize;
use tokio::io::AsyncBufReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

use crate::Contender;

/// The namespace of the objects and of the contender's watch.
pub(crate) const NAMESPACE: &str = "bench";

/// Requests the driver itself has in flight when it creates, changes or deletes objects.
const DRIVER_CONCURRENCY: usize = 32;

/// The object created during every cold start, [`FRESH_AFTER`] after the contender started.
pub(crate) const FRESH: &str = "bench-fresh";

/// When the fresh object is created, counted from the contender's start.
pub(crate) const FRESH_AFTER: Duration = Duration::from_secs(2);

/// The longest any one phase may take before the run is abandoned as failed.
/// (A cold start of 100 000 objects takes about half of it.)
const PHASE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) objects: usize,
    pub(crate) concurrency: usize,
    pub(crate) latency_samples: usize,
    /// Stop after the cold start and the steady RSS: no spec change, latency or delete.
    pub(crate) cold_only: bool,
    /// How long a contender is left alone before its idle or steady memory is read, and
    /// before its reconciles are counted: 3 s, 1 s in a smoke run.
    pub(crate) settle: Duration,
}

/// The process's memory and CPU at one moment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Seconds since the contender was started.
    pub(crate) at: f64,
    pub(crate) rss_mib: f64,
    pub(crate) cpu_seconds: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Measured {
    pub(crate) contender: String,
    pub(crate) objects: usize,
    pub(crate) round: usize,
    /// RSS of the contender with no object, after `Workload::settle`.
    pub(crate) idle_rss_mib: f64,
    /// From process start until every object was reconciled.
    pub(crate) cold_start_seconds: f64,
    pub(crate) cold_cpu_seconds: f64,
    pub(crate) cold_reconciles: u64,
    /// Objects reconciled over time during the cold start: (seconds since start, count).
    pub(crate) cold_progress: Vec<(f64, usize)>,
    /// A new object created [`FRESH_AFTER`] into the cold start, while the N wait: from its
    /// create until its status says it is reconciled. (Runs before this figure existed: none.)
    #[serde(default)]
    pub(crate) fresh_ms: Option<f64>,
    pub(crate) steady_rss_mib: f64,
    pub(crate) peak_rss_mib: f64,
    /// From the first spec change sent until every object's new generation was reconciled.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) spec_change_seconds: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) spec_cpu_seconds: f64,
    pub(crate) spec_reconciles: u64,
    /// One object at a time: from its create until its status says it is reconciled.
    pub(crate) latencies_ms: Vec<f64>,
    /// From the delete until every object was gone.
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) delete_seconds: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub(crate) delete_cpu_seconds: f64,
    pub(crate) delete_reconciles: u64,
    /// Writes (PATCH, PUT, POST) to the objects and their status by the contender over the
    /// whole run, from the API server's `apiserver_request_total` less the driver's own.
    pub(crate) contender_writes: Option<u64>,
    /// kube-apiserver's, etcd's and kube-controller-manager's memory and CPU (since their
    /// start) once the cold start settled, with the N objects stored. (Older runs: none.)
    #[serde(default)]
    pub(crate) control_plane: Vec<ServerUsage>,
    /// Whether the run stopped after the cold start (see `Workload::cold_only`).
    pub(crate) cold_only: bool,
    pub(crate) samples: Vec<Sample>,
}

/// One control-plane process at one moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerUsage {
    pub(crate) name: String,
    pub(crate) rss_mib: f64,
    pub(crate) cpu_seconds: f64,
}

/// What each of `control_plane`'s processes holds and has spent now.
pub(crate) fn server_usage(control_plane: &ControlPlane) -> Vec<ServerUsage> {
    let ticks = clock_ticks();
    control_plane
        .processes()
        .into_iter()
        .filter_map(|(name, pid)| {
            let (rss_mib, cpu_seconds) = read_proc(pid, ticks)?;
            Some(ServerUsage { name: name.to_owned(), rss_mib, cpu_seconds })
        })
        .collect()
}

/// A figure a run did not measure is `NaN`, which JSON writes as `null`.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// At most this many points of each time series are kept in `results.json`.
const KEPT_POINTS: usize = 400;

impl Measured {
    /// Keeps at most [`KEPT_POINTS`] of each time series, evenly spread, the first and the
    /// last among them: enough for the plots, and `results.json` stays small enough to
    /// commit. The figures are computed before, from every point.
    pub(crate) fn thin(&mut self) {
        fn thin<T: Copy>(points: &mut Vec<T>) {
            if points.len() <= KEPT_POINTS {
                return;
            }
            let last = points.len() - 1;
            *points = (0..KEPT_POINTS).map(|i| points[i * last / (KEPT_POINTS - 1)]).collect();
        }
        thin(&mut self.cold_progress);
        thin(&mut self.samples);
    }
}

/// What the driver sees of the objects, through its own watch.
#[derive(Default)]
pub(crate) struct Seen {
    objects: HashMap<String, Observed>,
    /// An object counts as reconciled once its observedGeneration is at least this.
    min_generation: i64,
    pub(crate) reconciled: usize,
    /// When the current phase began, and each change of `reconciled` since.
    phase_start: Option<Instant>,
    progress: Vec<(f64, usize)>,
}

#[derive(Clone, Copy)]
struct Observed {
    generation: i64,
    observed: i64,
    finalized: bool,
}

impl Observed {
    fn of(object: &DynamicObject) -> Self {
        let generation = object.metadata.generation.unwrap_or(0);
        let observed = object.data["status"]["observedGeneration"].as_i64().unwrap_or(0);
        let ready = object.data["status"]["conditions"]
            .as_array()
            .is_some_and(|all| all.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let finalized = object.finalizers().iter().any(|f| f == kuberator_bench::FINALIZER) && ready;
        Self { generation, observed, finalized }
    }

    fn reconciled(self, min_generation: i64) -> bool {
        self.finalized && self.observed == self.generation && self.observed >= min_generation
    }
}

impl Seen {
    fn set(&mut self, name: String, now: Option<Observed>) {
        let before = self.objects.get(&name).is_some_and(|o| o.reconciled(self.min_generation));
        let after = now.is_some_and(|o| o.reconciled(self.min_generation));
        match now {
            Some(now) => self.objects.insert(name, now),
            None => self.objects.remove(&name),
        };
        if before != after {
            if after {
                self.reconciled += 1;
            } else {
                self.reconciled -= 1;
            }
            if let Some(start) = self.phase_start {
                self.progress.push((start.elapsed().as_secs_f64(), self.reconciled));
            }
        }
    }

    pub(crate) fn begin(&mut self, min_generation: i64, start: Instant) {
        self.min_generation = min_generation;
        self.reconciled = self.objects.values().filter(|o| o.reconciled(min_generation)).count();
        self.phase_start = Some(start);
        self.progress = vec![(0.0, self.reconciled)];
    }
}

/// The driver's watch of the objects.
pub(crate) struct Observer {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    pub(crate) async fn start(api: Api<DynamicObject>) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let (synced_tx, synced) = tokio::sync::oneshot::channel();
        let (task_seen, task_changed) = (Arc::clone(&seen), Arc::clone(&changed));
        let task = tokio::spawn(async move {
            let mut synced_tx = Some(synced_tx);
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                {
                    let mut seen = task_seen.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                            let observed = Observed::of(&object);
                            seen.set(object.name_any(), Some(observed));
                        }
                        watcher::Event::Delete(object) => seen.set(object.name_any(), None),
                        watcher::Event::Init => {}
                        watcher::Event::InitDone => {
                            if let Some(tx) = synced_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                }
                task_changed.notify_waiters();
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced)
            .await
            .context("the driver's watch did not sync")??;
        Ok(Self { seen, changed, task })
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until `done` holds for what the watch has seen.
    pub(crate) async fn wait(&self, what: &str, done: impl Fn(&Seen) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let notified = self.changed.notified();
            if self.with(|seen| done(seen)) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {PHASE_TIMEOUT:?} waiting for {what}");
            }
            // A notification can be missed between the check and the wait: look again soon.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A contender's process, sampled every 100 ms.
pub(crate) struct Process {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    /// The answers to `count`, read by a task that also copies every other line of stdout
    /// to the log (a contender blocks when its stdout is not read).
    counts: tokio::sync::mpsc::UnboundedReceiver<u64>,
    drain: tokio::task::JoinHandle<()>,
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    sampler: tokio::task::JoinHandle<()>,
    /// Its process group (the contender's pid, or its wrapper's).
    group: u32,
}

impl Process {
    pub(crate) fn spawn(
        contender: &Contender,
        control_plane: &ControlPlane,
        workload: &Workload,
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(contender, control_plane, workload, log, &[])
    }

    /// As [`spawn`](Self::spawn), with `env` set after (and over) the driver's own.
    pub(crate) fn spawn_with(
        contender: &Contender,
        control_plane: &ControlPlane,
        workload: &Workload,
        log: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let [metrics, health] = [free_port()?, free_port()?];
        let concurrency = workload.concurrency.to_string();
        // `KUBERATOR_BENCH_LOG=debug` turns up the Rust contenders' logs (in the log files).
        let level = std::env::var("KUBERATOR_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // `KUBERATOR_BENCH_WRAPPER=heaptrack` runs each contender under a profiler (whose
        // process the samples then measure: for profiles, not for figures).
        let mut command = match std::env::var("KUBERATOR_BENCH_WRAPPER") {
            Ok(wrapper) if !wrapper.is_empty() => {
                let mut words = wrapper.split_whitespace();
                let mut command = tokio::process::Command::new(words.next().unwrap_or_default());
                command.args(words).arg(&contender.binary);
                command
            }
            _ => tokio::process::Command::new(&contender.binary),
        };
        command
            .env("KUBECONFIG", control_plane.kubeconfig_path())
            .env(kuberator_bench::NAMESPACE_ENV, NAMESPACE)
            .env(kuberator_bench::CONCURRENCY_ENV, &concurrency)
            .env("KUBERATOR_NAMESPACES", NAMESPACE)
            .env("KUBERATOR_CONCURRENCY", &concurrency)
            .env("KUBERATOR_LEADER_ELECTION", "false")
            .env("KUBERATOR_LOG", &level)
            .env("KUBERATOR_METRICS_ADDRESS", format!("127.0.0.1:{metrics}"))
            .env("KUBERATOR_HEALTH_ADDRESS", format!("127.0.0.1:{health}"))
            .env("BENCH_METRICS_ADDRESS", format!("127.0.0.1:{metrics}"))
            .env("RUST_LOG", &level)
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // A process group of its own: a wrapper's child (heaptrack runs the contender as
            // its child) goes with it when the group is signalled.
            .process_group(0)
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child =
            command.spawn().with_context(|| format!("starting {}", contender.binary.display()))?;
        let pid = child.id().context("the contender exited at once")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let (answers, counts) = tokio::sync::mpsc::unbounded_channel();
        let mut copy = tokio::fs::File::from_std(std::fs::OpenOptions::new().append(true).open(log)?);
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                match line.trim().parse::<u64>() {
                    Ok(count) => {
                        let _ = answers.send(count);
                    }
                    Err(_) => {
                        let _ = copy.write_all(format!("{line}\n").as_bytes()).await;
                    }
                }
            }
        });
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampled = Arc::clone(&samples);
        let ticks = clock_ticks();
        let sampler = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let Some((rss_mib, cpu_seconds)) = read_proc(pid, ticks) else { break };
                let at = started.elapsed().as_secs_f64();
                sampled.lock().unwrap_or_else(PoisonError::into_inner).push(Sample {
                    at,
                    rss_mib,
                    cpu_seconds,
                });
            }
        });
        Ok(Self { child, stdin, counts, drain, started, samples, sampler, group: pid })
    }

    /// The latest sample, taken now.
    pub(crate) fn now(&self) -> anyhow::Result<Sample> {
        let pid = self.child.id().context("the contender exited")?;
        let (rss_mib, cpu_seconds) = read_proc(pid, clock_ticks()).context("the contender exited")?;
        Ok(Sample { at: self.started.elapsed().as_secs_f64(), rss_mib, cpu_seconds })
    }

    /// The reconciles the contender counted so far.
    pub(crate) async fn reconciles(&mut self) -> anyhow::Result<u64> {
        self.stdin.write_all(b"count\n").await?;
        self.stdin.flush().await?;
        tokio::time::timeout(Duration::from_secs(10), self.counts.recv())
            .await
            .context("the contender did not answer `count`")?
            .context("the contender closed its stdout")
    }

    /// SIGKILL now, as a node that dies would: no drain, no Lease released.
    pub(crate) async fn kill9(mut self) {
        self.signal_group("-KILL");
        let _ = self.child.kill().await;
        self.sampler.abort();
        self.drain.abort();
    }

    /// SIGTERM, then SIGKILL after 10 s; returns the samples.
    pub(crate) async fn stop(mut self) -> Vec<Sample> {
        self.signal_group("-TERM");
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            self.signal_group("-KILL");
            let _ = self.child.kill().await;
        }
        self.sampler.abort();
        self.drain.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sends `signal` (`-TERM`, `-KILL`) to every process of the contender's group: the
    /// contender, and its own child when it runs under `KUBERATOR_BENCH_WRAPPER`.
    fn signal_group(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{}", self.group)])
            .stderr(Stdio::null())
            .status();
    }
}

/// What a wrapper started may outlive the wrapper: nothing of the group is left.
impl Drop for Process {
    fn drop(&mut self) {
        self.signal_group("-KILL");
    }
}

/// RSS in MiB and CPU seconds (user + system) of a process, from /proc.
fn read_proc(pid: u32, ticks: f64) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((rss_kib / 1024.0, (utime + stime) / ticks))
}

/// Clock ticks per second, for /proc's CPU times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The benchmark's object `name`: about 2 KB, like a small real custom resource.
fn object(name: &str, generation: usize) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..8).map(|i| (format!("label-{i}"), format!("value-{i}-{name}").into())).collect();
    let payload: String =
        format!("{name}-{generation}-").repeat(1500 / (name.len() + 3)).chars().take(1500).collect();
    serde_json::json!({
        "apiVersion": "bench.kuberator.dev/v1",
        "kind": "Bench",
        "metadata": { "name": name, "namespace": NAMESPACE, "labels": { "app": "bench" } },
        "spec": { "replicas": 3, "image": "registry.invalid/bench:1.0", "labels": labels, "payload": payload },
    })
}

pub(crate) fn name(index: usize) -> String {
    format!("bench-{index:05}")
}

pub(crate) async fn create_all(
    api: &Api<DynamicObject>,
    names: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    let params = PatchParams::apply("bench-driver").force();
    futures::stream::iter(names)
        .map(|name| {
            let (api, params) = (api, &params);
            async move {
                let object = object(&name, 1);
                api.patch(&name, params, &Patch::Apply(&object))
                    .await
                    .with_context(|| format!("creating {name}"))
            }
        })
        .buffer_unordered(DRIVER_CONCURRENCY)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
}

/// Changes `spec.payload` of the first `total` objects (to their generation 2 payload), 32
/// at a time.
pub(crate) async fn change_all(api: &Api<DynamicObject>, total: usize) -> anyhow::Result<()> {
    futures::stream::iter((0..total).map(name))
        .map(|name| async move {
            let patch = serde_json::json!({ "spec": { "payload": object(&name, 2)["spec"]["payload"] } });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("changing {name}"))
        })
        .buffer_unordered(DRIVER_CONCURRENCY)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
}

/// Runs `contender` on a fresh control plane; `round` only labels the result.
pub(crate) async fn measure(
    contender: &Contender,
    workload: &Workload,
    round: usize,
    crd: &CustomResourceDefinition,
    logs: &Path,
) -> anyhow::Result<Measured> {
    let control_plane = ControlPlane::start().await.context("starting a control plane")?;
    // Interrupted, the control plane is stopped all the same: nothing is left running.
    let result = tokio::select! {
        result = measure_on(&control_plane, contender, workload, round, crd, logs) => result,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    control_plane.stop();
    result
}

/// SIGINT or SIGTERM.
pub(crate) async fn interrupted() -> &'static str {
    use tokio::signal::unix::SignalKind;
    let Ok(mut terminate) = tokio::signal::unix::signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

async fn measure_on(
    control_plane: &ControlPlane,
    contender: &Contender,
    workload: &Workload,
    round: usize,
    crd: &CustomResourceDefinition,
    logs: &Path,
) -> anyhow::Result<Measured> {
    let client: Client = control_plane.client().await?;
    kuberator_test::install_crd_object(&client, crd).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": NAMESPACE } }))?;
    namespaces.create(&PostParams::default(), &namespace).await.context("creating the namespace")?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(kuberator_bench::GROUP, "v1", "Bench"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let log = |phase: &str| -> PathBuf {
        logs.join(format!("{}-{}-{round}-{phase}.log", contender.name, workload.objects))
    };

    // Idle: no object at all.
    let idle = Process::spawn(contender, control_plane, workload, &log("idle"))?;
    tokio::time::sleep(workload.settle).await;
    let idle_rss_mib = idle.now()?.rss_mib;
    idle.stop().await;

    create_all(&api, (0..workload.objects).map(name)).await?;
    let observer = Observer::start(api.clone()).await?;
    let total = workload.objects;
    if observer.with(|seen| seen.objects.len()) != total {
        bail!("the driver's watch sees {} objects, not {total}", observer.with(|seen| seen.objects.len()));
    }

    // Cold start.
    let mut process = Process::spawn(contender, control_plane, workload, &log("run"))?;
    observer.with(|seen| seen.begin(1, process.started));
    // A user's change while the N wait: one new object, FRESH_AFTER in.
    let fresh = async {
        tokio::time::sleep_until((process.started + FRESH_AFTER).into()).await;
        let created = Instant::now();
        create_all(&api, std::iter::once(FRESH.to_owned())).await?;
        observer
            .wait("the fresh object to be reconciled", |seen| {
                seen.objects.get(FRESH).is_some_and(|o| o.reconciled(1))
            })
            .await?;
        anyhow::Ok(created.elapsed().as_secs_f64() * 1000.0)
    };
    let all = observer.wait("every object to be reconciled", |seen| seen.reconciled == total + 1);
    let (fresh_ms, ()) = tokio::try_join!(fresh, all)?;
    let cold_start_seconds = process.started.elapsed().as_secs_f64();
    let cold_cpu_seconds = process.now()?.cpu_seconds;
    let cold_progress = observer.with(|seen| std::mem::take(&mut seen.progress));
    tokio::time::sleep(workload.settle).await;
    let cold_reconciles = process.reconciles().await?;
    let steady = process.now()?;
    let mut measured = Measured {
        contender: contender.name.clone(),
        objects: total,
        round,
        idle_rss_mib,
        cold_start_seconds,
        cold_cpu_seconds,
        cold_reconciles,
        cold_progress,
        fresh_ms: Some(fresh_ms),
        steady_rss_mib: steady.rss_mib,
        peak_rss_mib: 0.0,
        spec_change_seconds: f64::NAN,
        spec_cpu_seconds: f64::NAN,
        spec_reconciles: 0,
        latencies_ms: Vec::new(),
        delete_seconds: f64::NAN,
        delete_cpu_seconds: f64::NAN,
        delete_reconciles: 0,
        contender_writes: None,
        control_plane: server_usage(control_plane),
        cold_only: workload.cold_only,
        samples: Vec::new(),
    };
    if workload.cold_only {
        measured.contender_writes = writes(&client).await.map(|all| all.saturating_sub(total as u64 + 1));
        measured.samples = process.stop().await;
        measured.peak_rss_mib = measured.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
        return Ok(measured);
    }

    // A spec change of every object.
    let spec_start = Instant::now();
    observer.with(|seen| seen.begin(2, spec_start));
    change_all(&api, total).await?;
    observer.wait("every spec change to be reconciled", |seen| seen.reconciled == total).await?;
    let spec_change_seconds = spec_start.elapsed().as_secs_f64();
    let spec_cpu_seconds = process.now()?.cpu_seconds - steady.cpu_seconds;
    tokio::time::sleep(workload.settle).await;
    let spec_reconciles = process.reconciles().await? - cold_reconciles;

    // Latency: one new object at a time.
    let mut latencies_ms = Vec::new();
    observer.with(|seen| seen.begin(1, Instant::now()));
    if contender.watches {
        for index in 0..workload.latency_samples {
            let name = name(total + index);
            let start = Instant::now();
            create_all(&api, std::iter::once(name.clone())).await?;
            observer
                .wait(&format!("{name} to be reconciled"), |seen| {
                    seen.objects.get(&name).is_some_and(|o| o.reconciled(1))
                })
                .await?;
            latencies_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_delete = process.reconciles().await?;
    let delete_cpu_start = process.now()?.cpu_seconds;

    // Delete every object.
    let delete_start = Instant::now();
    // At N = 10 000 one `deletecollection` can outlast the API server's 60 s request timeout,
    // which cuts it off; the next one goes on (objects already being deleted cost it little).
    let mut attempts = 0;
    loop {
        attempts += 1;
        match api.delete_collection(&DeleteParams::default(), &ListParams::default()).await {
            Ok(_) => break,
            Err(error) if attempts < 10 => {
                crate::say(&format!("  deletecollection cut off ({error}); again"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).context("deleting the objects"),
        }
    }
    observer.wait("every object to be gone", |seen| seen.objects.is_empty()).await?;
    let delete_seconds = delete_start.elapsed().as_secs_f64();
    let delete_cpu_seconds = process.now()?.cpu_seconds - delete_cpu_start;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delete_reconciles = process.reconciles().await? - before_delete;

    // The driver wrote each object once to create it and once to change its spec, and created
    // the fresh one.
    let driver_writes = (2 * total + 1 + latencies_ms.len()) as u64;
    measured.contender_writes = writes(&client).await.map(|all| all.saturating_sub(driver_writes));
    measured.samples = process.stop().await;
    measured.peak_rss_mib = measured.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    Ok(Measured {
        spec_change_seconds,
        spec_cpu_seconds,
        spec_reconciles,
        latencies_ms,
        delete_seconds,
        delete_cpu_seconds,
        delete_reconciles,
        ..measured
    })
}

/// PATCH, APPLY, PUT and POST requests to `benches` (and their status) the API server
/// served so far, by everyone; `None` when its metrics cannot be read.
async fn writes(client: &Client) -> Option<u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let metrics = client.request_text(request).await.ok()?;
    let writes = metrics
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{") && line.contains("resource=\"benches\""))
        .filter(|line| {
            ["PATCH", "APPLY", "PUT", "POST"].iter().any(|verb| line.contains(&format!("verb=\"{verb}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(writes as u64)
}
