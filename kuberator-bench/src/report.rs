//! BENCHMARKS.md: the method, the machine, the figures (medians with min–max over the
//! rounds) and Kuberator's ratio to every other contender.

use std::fmt::Write as _;

use crate::multi::FailoverRun;
use crate::multi::MultiResults;
use crate::multi::ShardingRun;
use crate::multi::SharedRun;
use crate::run::Measured;

/// One row of the table.
struct Figure {
    name: &'static str,
    unit: &'static str,
    /// Lower is better for every figure but throughput.
    higher_is_better: bool,
    value: fn(&Measured) -> Option<f64>,
}

fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn per_object(reconciles: u64, objects: usize) -> Option<f64> {
    (objects > 0).then(|| reconciles as f64 / objects as f64)
}

/// The objects a run created: N, the fresh one, and the latency samples.
fn created(m: &Measured) -> usize {
    m.objects + usize::from(m.fresh_ms.is_some()) + m.latencies_ms.len()
}

/// What the control-plane process `name` held and spent after the cold start.
fn server<'m>(m: &'m Measured, name: &str) -> Option<&'m crate::run::ServerUsage> {
    m.control_plane.iter().find(|usage| usage.name == name)
}

/// `value` of a run that went past the cold start.
fn full(m: &Measured, value: f64) -> Option<f64> {
    (!m.cold_only).then_some(value)
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "cold start until all reconciled",
        unit: "s",
        higher_is_better: false,
        value: |m| Some(m.cold_start_seconds),
    },
    Figure {
        name: "reconciles per second (cold start)",
        unit: "/s",
        higher_is_better: true,
        value: |m| Some(m.cold_reconciles as f64 / m.cold_start_seconds),
    },
    Figure {
        name: "CPU until settled",
        unit: "s",
        higher_is_better: false,
        value: |m| Some(m.cold_cpu_seconds),
    },
    Figure {
        name: "CPU per 1000 objects, cold start",
        unit: "s",
        higher_is_better: false,
        value: |m| (m.objects > 0).then(|| m.cold_cpu_seconds * 1000.0 / m.objects as f64),
    },
    Figure {
        name: "CPU per 1000 reconciles",
        unit: "s",
        higher_is_better: false,
        value: |m| {
            let reconciles = m.cold_reconciles + m.spec_reconciles + m.delete_reconciles;
            let cpu = if m.cold_only {
                m.cold_cpu_seconds
            } else {
                m.cold_cpu_seconds + m.spec_cpu_seconds + m.delete_cpu_seconds
            };
            (reconciles > 0).then(|| cpu * 1000.0 / reconciles as f64)
        },
    },
    Figure {
        name: "reconciles per object, cold start",
        unit: "",
        higher_is_better: false,
        value: |m| per_object(m.cold_reconciles, m.objects + usize::from(m.fresh_ms.is_some())),
    },
    Figure {
        name: "spec change of all N observed",
        unit: "s",
        higher_is_better: false,
        value: |m| full(m, m.spec_change_seconds),
    },
    Figure {
        name: "spec change, CPU",
        unit: "s",
        higher_is_better: false,
        value: |m| full(m, m.spec_cpu_seconds),
    },
    Figure {
        name: "reconciles per object, spec change",
        unit: "",
        higher_is_better: false,
        value: |m| full(m, per_object(m.spec_reconciles, m.objects)?),
    },
    Figure { name: "delete all N", unit: "s", higher_is_better: false, value: |m| full(m, m.delete_seconds) },
    Figure {
        name: "delete all N, CPU",
        unit: "s",
        higher_is_better: false,
        value: |m| full(m, m.delete_cpu_seconds),
    },
    Figure {
        name: "reconciles per object, delete",
        unit: "",
        higher_is_better: false,
        value: |m| full(m, per_object(m.delete_reconciles, created(m))?),
    },
    Figure {
        name: "API writes per object by the contender, whole run",
        unit: "",
        higher_is_better: false,
        value: |m| per_object(m.contender_writes?, created(m)),
    },
    Figure {
        name: "fresh change 2 s into the cold start, create → status",
        unit: "ms",
        higher_is_better: false,
        value: |m| m.fresh_ms,
    },
    Figure {
        name: "latency create → status, p50",
        unit: "ms",
        higher_is_better: false,
        value: |m| percentile(&m.latencies_ms, 50.0),
    },
    Figure {
        name: "latency create → status, p99",
        unit: "ms",
        higher_is_better: false,
        value: |m| percentile(&m.latencies_ms, 99.0),
    },
    Figure {
        name: "idle RSS (no objects)",
        unit: "MiB",
        higher_is_better: false,
        value: |m| Some(m.idle_rss_mib),
    },
    Figure { name: "steady RSS", unit: "MiB", higher_is_better: false, value: |m| Some(m.steady_rss_mib) },
    Figure {
        name: "kube-apiserver CPU, its start until the cold start settled",
        unit: "s",
        higher_is_better: false,
        value: |m| server(m, "kube-apiserver").map(|usage| usage.cpu_seconds),
    },
    Figure {
        name: "kube-apiserver RSS after the cold start",
        unit: "MiB",
        higher_is_better: false,
        value: |m| server(m, "kube-apiserver").map(|usage| usage.rss_mib),
    },
    Figure {
        name: "etcd RSS after the cold start",
        unit: "MiB",
        higher_is_better: false,
        value: |m| server(m, "etcd").map(|usage| usage.rss_mib),
    },
    Figure { name: "peak RSS", unit: "MiB", higher_is_better: false, value: |m| Some(m.peak_rss_mib) },
    Figure {
        name: "memory per cached object",
        unit: "KiB",
        higher_is_better: false,
        value: |m| (m.objects > 0).then(|| (m.steady_rss_mib - m.idle_rss_mib) * 1024.0 / m.objects as f64),
    },
];

/// Median, min and max.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    let median = percentile(values, 50.0)?;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // The median of an even count is the mean of the two middle values.
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    } else {
        median
    };
    Some(Spread { median, min: sorted[0], max: sorted[sorted.len() - 1] })
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The spread of `figure` for one contender at one object count.
fn figure_of(results: &[Measured], contender: &str, objects: usize, figure: &Figure) -> Option<Spread> {
    let values: Vec<f64> = results
        .iter()
        .filter(|m| m.contender == contender && m.objects == objects)
        .filter_map(figure.value)
        .filter(|value| value.is_finite())
        .collect();
    spread(&values)
}

/// The tables, one per object count: the figures, then Kuberator's ratios.
pub(crate) fn tables(results: &[Measured], contenders: &[String]) -> String {
    let mut out = String::new();
    let mut counts: Vec<usize> = results.iter().map(|m| m.objects).collect();
    counts.sort_unstable();
    counts.dedup();
    for objects in counts {
        let rounds =
            results.iter().filter(|m| m.objects == objects).map(|m| m.round).max().map_or(0, |r| r + 1);
        let _ = writeln!(out, "### N = {objects} objects ({rounds} rounds; median, min–max)\n");
        let _ = writeln!(out, "| figure | {} |", contenders.join(" | "));
        let _ = writeln!(out, "| --- |{}", " --- |".repeat(contenders.len()));
        for figure in FIGURES {
            let cells: Vec<String> = contenders
                .iter()
                .map(|c| match figure_of(results, c, objects, figure) {
                    Some(s) => {
                        format!("{} {} ({}–{})", number(s.median), figure.unit, number(s.min), number(s.max))
                    }
                    None => "–".to_owned(),
                })
                .collect();
            let _ = writeln!(out, "| {} | {} |", figure.name, cells.join(" | "));
        }
        let others: Vec<&String> = contenders.iter().filter(|c| *c != "kuberator").collect();
        if contenders.iter().any(|c| c == "kuberator") && !others.is_empty() {
            let _ = writeln!(
                out,
                "\nKuberator's median as a multiple of each contender's (below 1 is better for Kuberator, \
                 except for reconciles per second):\n"
            );
            let _ = writeln!(
                out,
                "| figure | {} |",
                others.iter().map(|c| format!("vs {c}")).collect::<Vec<_>>().join(" | ")
            );
            let _ = writeln!(out, "| --- |{}", " --- |".repeat(others.len()));
            for figure in FIGURES {
                let ours = figure_of(results, "kuberator", objects, figure);
                let cells: Vec<String> = others
                    .iter()
                    .map(|c| match (ours, figure_of(results, c, objects, figure)) {
                        (Some(ours), Some(theirs)) if theirs.median.abs() > f64::EPSILON => {
                            format!("{:.2}x", ours.median / theirs.median)
                        }
                        _ => "–".to_owned(),
                    })
                    .collect();
                let better = if figure.higher_is_better { " (higher is better)" } else { "" };
                let _ = writeln!(out, "| {}{better} | {} |", figure.name, cells.join(" | "));
            }
        }
        out.push('\n');
    }
    out
}

/// What the machine is, as far as /proc and the toolchains say.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |l| l.trim_start_matches([' ', '\t', ':']));
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or("unknown".to_owned(), |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0));
    let version = |command: &str, arg: &str| {
        std::process::Command::new(command)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map_or("unknown".to_owned(), |s| s.trim().to_owned())
    };
    let kernel = version("uname", "-r");
    let kubernetes = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kuberator-test/control-plane/go.mod"
    ))
    .ok()
    .and_then(|m| {
        m.lines().find_map(|l| {
            l.trim().strip_prefix("k8s.io/kubernetes ")?.split_whitespace().next().map(str::to_owned)
        })
    })
    .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "- CPU: {cores} × {model}\n- memory: {memory}\n- kernel: Linux {kernel}\n- {}; {}\n\
         - control plane: kube-apiserver {kubernetes} with etcd and kube-controller-manager on loopback \
         (`kuberator-test`), a fresh one for every run\n",
        version("rustc", "--version"),
        version("go", "version"),
    )
}

const METHOD: &str = "\
Every run starts a fresh control plane (kube-apiserver, etcd and kube-controller-manager, \
built from their Go modules by `kuberator-test`), installs the `Bench` CRD, creates the \
namespace `bench`, and then:

1. **Idle.** Starts the contender with no objects, waits 3 s, reads its RSS, stops it.
2. **Cold start.** Creates N objects of about 2 KB each by server-side apply (32 at a time), \
   then starts the contender and waits until the driver's own watch sees every object with \
   the finalizer, a `Ready=True` condition and `status.observedGeneration` equal to \
   `metadata.generation`. After 3 s more, it reads the steady RSS and asks the contender how \
   many reconciles it ran. **Fresh change:** 2 s after the contender started, while the N \
   objects wait, the driver creates one more (`bench-fresh`) and times it from the create \
   request until its status is written: how long a user's change waits behind a restart. \
   The cold start counts it among the objects (N + 1).
3. **Spec change.** Changes `spec.payload` of all N objects (merge patches, 32 at a time) and \
   waits until every new generation is reconciled.
4. **Latency.** Creates objects one at a time, each as soon as the one before is reconciled \
   (plus 20 ms): the time from the create request until the driver's watch sees it \
   reconciled. The floor does not watch, so it has no figure here.
5. **Delete.** Deletes all objects with one `deletecollection` (again if the API server cuts it \
   off at its 60 s request timeout, as it can at N = 10 000) and waits until the last is gone \
   (each contender removes its finalizer).

Above `--full-up-to` objects (10 000 unless told), a run stops after step 2: those tables \
have no spec change, latency or delete figures.

The contender's RSS and CPU time (user + system) are read from `/proc` every 100 ms; the \
driver's own work is not counted. The count of reconciles is the contender's own: \
`kuberator_reconciles_total` for Kuberator, calls of the reconcile function for kube-rs and \
controller-runtime, objects handled for the floor. Contenders run one at a time, in the order \
A B C D in odd rounds and D C B A in even ones.

The contenders (`kuberator-bench/`), each with concurrency 16 and watching one namespace:

- **kuberator**: `src/bin/bench-kuberator.rs`, a `#[derive(Operator)]` operator as the README \
  teaches it, with its defaults (HTTPS metrics, probes, Events) except \
  `KUBERATOR_LEADER_ELECTION=false`, as no other contender elects a leader.
- **kube-rs**: `src/bin/bench-kube.rs`, kube 5's `Controller::new` with `finalizer()`, as in \
  kube-rs's examples; status by merge patch.
- **controller-runtime**: `controller-runtime/main.go`, v0.25 with a typed object, the \
  manager's default cache and `GenerationChangedPredicate`, finalizer and status by `Update` \
  as kubebuilder writes them; client-go's default limit of 20 requests per second is lifted.
- **floor**: `src/bin/bench-floor.rs`, a plain client with no watch and no cache: it lists, \
  does the same writes, and lists again (every 0.5 s when there was nothing to do).
";

/// `median (min–max)` of `values`, or a dash.
fn cell(values: &[f64], unit: &str) -> String {
    match spread(&values.iter().copied().filter(|v| v.is_finite()).collect::<Vec<_>>()) {
        Some(s) if s.min == s.max => format!("{}{unit}", number(s.median)),
        Some(s) => format!("{}{unit} ({}–{})", number(s.median), number(s.min), number(s.max)),
        None => "–".to_owned(),
    }
}

/// The section of a process of several controllers: shared caches and failover.
pub(crate) fn multi(results: &MultiResults) -> String {
    let mut out = String::new();
    if results.shared.is_empty() && results.failover.is_empty() {
        return sharding(&results.sharding);
    }
    let _ = writeln!(
        out,
        "## Several controllers in one process
"
    );
    let _ = writeln!(
        out,
        "Written by `scripts/bench --shared` and `scripts/bench --failover` (Kuberator alone; a \
         fresh control plane per run, layouts alternating). Raw figures: `benchmarks/multi.json`.\n"
    );
    if let Some(first) = results.shared.first() {
        let rounds = results.shared.iter().filter(|r| r.layout == first.layout).count();
        let _ = writeln!(
            out,
            "### One cache per kind: two controllers sharing `Bench` (N = {}, {rounds} rounds; median, min–max)\n",
            first.objects
        );
        let _ = writeln!(
            out,
            "`BenchOperator` reconciles `Bench`; `AuditOperator` reconciles one `BenchAudit`, which \
             references a `Bench` (`references(Bench = spec.bench)`), so both need every `Bench` in \
             the namespace. In one process (`Operators`) they share one watch and one store; in two \
             processes each has its own. Watches and LISTs are the API server's own counts \
             (`apiserver_longrunning_requests`, `apiserver_request_total`) of requests for \
             `benches`; memory is the RSS of every process of the layout, settled with N objects, \
             less its RSS with none, per object.\n"
        );
        let _ = writeln!(
            out,
            "| layout | watches of Bench | LISTs of Bench | RSS idle (MiB) | RSS with N (MiB) | KiB per Bench |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        for layout in ["one process", "two processes"] {
            let runs: Vec<&SharedRun> = results.shared.iter().filter(|r| r.layout == layout).collect();
            let values = |f: fn(&SharedRun) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let _ = writeln!(
                out,
                "| {layout} | {} | {} | {} | {} | {} |",
                cell(&values(|r| r.watches), ""),
                cell(&values(|r| r.lists), ""),
                cell(&values(|r| r.idle_rss_mib), ""),
                cell(&values(|r| r.steady_rss_mib), ""),
                cell(&values(SharedRun::kib_per_object), ""),
            );
        }
        let _ = writeln!(out);
    }
    if let Some(first) = results.failover.first() {
        let rounds = results.failover.iter().filter(|r| r.standby == first.standby).count();
        let _ = writeln!(
            out,
            "### Failover: a warm standby against a cold one (N = {}, {rounds} rounds; median, min–max)\n",
            first.objects
        );
        let _ = writeln!(
            out,
            "Two replicas of the Kuberator contender with leader election (`--lease-duration 4s \
             --renew-deadline 3s --retry-period 500ms`): the leader reconciles every object, every \
             object changes once, then the leader gets kill -9. Times run from the kill: until the \
             standby holds the Lease, until its first reconcile, until it has reconciled all N (its \
             own `kuberator_reconciles_total`); the last two also from the moment it held the Lease, \
             which takes out the wait for the Lease to expire (the same for both, but it varies \
             with when the leader last renewed). A warm standby (`--warm-standby=true`, the default) \
             lists and watches while it waits; a cold one starts its watches when it wins. Its cost \
             to the API server: the watches of `benches` open with leader and standby (the \
             driver's own not counted), and the bytes of watch events for `benches` the API server \
             sent during the change of every object (the leader's and the driver's watches \
             included, the same in both).\n"
        );
        let _ = writeln!(
            out,
            "| standby | Lease held (s) | first reconcile (s) | all N reconciled (s) | first reconcile after the Lease (s) | all N after the Lease (s) | watches of Bench | watch event bytes (MiB) |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for standby in ["warm", "cold"] {
            let runs: Vec<&FailoverRun> = results.failover.iter().filter(|r| r.standby == standby).collect();
            let values = |f: fn(&FailoverRun) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let _ = writeln!(
                out,
                "| {standby} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&values(|r| r.lease_seconds), ""),
                cell(&values(|r| r.first_reconcile_seconds), ""),
                cell(&values(|r| r.all_reconciled_seconds), ""),
                cell(&values(|r| r.first_reconcile_seconds - r.lease_seconds), ""),
                cell(&values(|r| r.all_reconciled_seconds - r.lease_seconds), ""),
                cell(&values(|r| r.watches), ""),
                cell(&values(|r| r.watch_bytes / (1024.0 * 1024.0)), ""),
            );
        }
        let _ = writeln!(out);
    }
    out.push_str(&sharding(&results.sharding));
    out
}

/// The `--sharding` runs: throughput over 1, 2 and 3 replicas, and what each replica holds.
fn sharding(runs: &[ShardingRun]) -> String {
    let mut out = String::new();
    let Some(first) = runs.first() else { return out };
    let rounds = runs.iter().filter(|r| r.replicas == first.replicas && r.filter == first.filter).count();
    let _ = writeln!(
        out,
        "## Sharding across replicas (N = {}, {rounds} rounds; median, min–max)\n",
        first.objects
    );
    let _ = writeln!(
        out,
        "Written by `scripts/bench --sharding` (Kuberator alone, a fresh control plane per run, \
         configurations alternating). Replicas of the Kuberator contender with `--shards 12` \
         (concurrency 4 each, so that the handlers' waits bound a replica rather than the API server on two cores; leases of 4 s), each `handle_apply` waiting {} ms first, as for an \
         external call; once the 12 shards are shared out, the driver creates N objects and times \
         from the first create until every object's status is written. `server`: each replica's \
         watch is filtered by the API server (`shardSelector`, Kubernetes 1.36's \
         `ShardedListAndWatch`); `client`: each replica receives every object and keeps its \
         shards'. Memory is each replica's RSS settled with N objects less its RSS with none \
         (the median replica); watch bytes are the API server's own count of watch event bytes \
         for `benches` during the run (the driver's watch included). \
         Plot: `benchmarks/sharding.png`.\n",
        first.handler_ms
    );
    let _ = writeln!(
        out,
        "| replicas | filter | all N reconciled (s) | objects/s | vs 1 replica | cache per replica (MiB) | CPU per replica (s) | watch event bytes (MiB) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let single: Vec<f64> =
        runs.iter().filter(|r| r.replicas == 1 && r.filter == "server").map(|r| r.seconds).collect();
    let base = spread(&single).map_or(f64::NAN, |s| s.median);
    for (replicas, filter) in [(1, "server"), (2, "server"), (3, "server"), (2, "client"), (3, "client")] {
        let chosen: Vec<&ShardingRun> =
            runs.iter().filter(|r| r.replicas == replicas && r.filter == filter).collect();
        if chosen.is_empty() {
            continue;
        }
        let values = |f: &dyn Fn(&ShardingRun) -> f64| chosen.iter().map(|r| f(r)).collect::<Vec<_>>();
        let _ = writeln!(
            out,
            "| {replicas} | {filter} | {} | {} | {} | {} | {} | {} |",
            cell(&values(&|r| r.seconds), ""),
            cell(&values(&ShardingRun::throughput), ""),
            cell(&values(&|r| base / r.seconds), "x"),
            cell(&values(&ShardingRun::cache_mib), ""),
            cell(&values(&ShardingRun::median_cpu_seconds), ""),
            cell(&values(&|r| r.watch_bytes / (1024.0 * 1024.0)), ""),
        );
    }
    let _ = writeln!(out);
    out
}

/// The `--scale` runs: Kuberator alone at a large N, and what the control plane needed.
fn scale(runs: &[Measured]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "## Kuberator alone at scale\n\n`scripts/bench --scale` (not in CI): one cold start of the \
         Kuberator contender on one replica, concurrency 16, on a fresh control plane; memory per \
         object is the steady RSS less the idle RSS, over N. The control plane's figures are its \
         processes' own, read from `/proc` once the cold start settled (CPU since their start, \
         which includes the driver's creates).\n"
    );
    let _ = writeln!(
        out,
        "| N | all reconciled | reconciles/s | CPU | CPU per 1000 | idle RSS | steady RSS | peak RSS | KiB per object | kube-apiserver RSS, CPU | etcd RSS, CPU |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for run in runs {
        let usage = |name: &str| {
            server(run, name)
                .map_or_else(|| "–".to_owned(), |u| format!("{:.0} MiB, {:.0} s", u.rss_mib, u.cpu_seconds))
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} s | {:.0} | {:.0} s | {:.2} s | {:.1} MiB | {:.0} MiB | {:.0} MiB | {:.2} | {} | {} |",
            run.objects,
            run.cold_start_seconds,
            run.cold_reconciles as f64 / run.cold_start_seconds,
            run.cold_cpu_seconds,
            run.cold_cpu_seconds * 1000.0 / run.objects as f64,
            run.idle_rss_mib,
            run.steady_rss_mib,
            run.peak_rss_mib,
            (run.steady_rss_mib - run.idle_rss_mib) * 1024.0 / run.objects as f64,
            usage("kube-apiserver"),
            usage("etcd"),
        );
    }
    let _ = writeln!(out);
    out
}

/// The whole of BENCHMARKS.md.
pub(crate) fn markdown(
    results: &[Measured],
    contenders: &[String],
    args: &str,
    note: Option<&str>,
    several: &MultiResults,
    scaled: &[Measured],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks: Kuberator against kube-rs, controller-runtime and a plain client\n");
    let _ = writeln!(
        out,
        "Written by the operator benchmark, `scripts/bench {args}`; do not edit by hand: run it \
         again. Raw figures: `benchmarks/results.json`.\n"
    );
    if let Some(note) = note {
        let _ = writeln!(out, "**{note}**\n");
    }
    let _ = writeln!(out, "## Results\n\n{}", tables(results, contenders));
    let _ = writeln!(
        out,
        "## Plots\n\n![Objects reconciled over time during the cold start](benchmarks/cold-start.png)\n\n\
         ![A fresh change 2 s into the cold start, create to status](benchmarks/fresh-change.png)\n\n\
         ![Latency from create to status, CDF](benchmarks/latency-cdf.png)\n\n\
         ![RSS over a whole run](benchmarks/rss.png)\n"
    );
    let _ = write!(out, "{}", multi(several));
    let _ = write!(out, "{}", scale(scaled));
    if let Ok(analysis) = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ANALYSIS.md")) {
        let _ = writeln!(out, "{analysis}");
    }
    let _ = writeln!(out, "## Method\n\n{METHOD}\n## Machine\n\n{}", machine());
    out
}
