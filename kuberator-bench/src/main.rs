//! The operator benchmark's driver: Kuberator against a hand-written kube-rs controller,
//! controller-runtime and a plain-client floor, on the project's real control plane.
//!
//! Run it through `scripts/bench`, which builds every contender first (`cargo run` would
//! build only this driver and start stale contenders): the whole suite takes about an hour
//! on 2 cores and writes `BENCHMARKS.md` and its plots; `scripts/bench --smoke` runs a few
//! objects once through every contender, as CI does, and checks only that each finished.
//! `BENCHMARKS.md` says what is measured and how.

mod multi;
mod plot;
mod report;
mod run;

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize as _;

/// A contender: a process the driver starts.
#[derive(Debug, Clone)]
pub(crate) struct Contender {
    pub(crate) name: String,
    pub(crate) binary: PathBuf,
    /// Whether it watches (the floor polls, so it has no latency to speak of).
    pub(crate) watches: bool,
}

/// The contenders, in the order of the table.
pub(crate) const CONTENDERS: [&str; 4] = ["kuberator", "kube-rs", "controller-runtime", "floor"];

#[derive(Debug, Parser)]
#[command(about = "Kuberator against kube-rs, controller-runtime and a plain-client floor")]
struct Args {
    /// Object counts, one cold start each per contender and round
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    objects: Vec<usize>,
    /// Rounds; contenders alternate (A B C D, then D C B A, ...)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Reconciles (or, for the floor, writes) at a time
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Objects created one at a time to measure latency, per run
    #[arg(long, default_value_t = 100)]
    latency_samples: usize,
    /// Above this many objects, a run stops after the cold start and the steady RSS (no spec
    /// change, latency or delete); the default runs every step at both default counts
    #[arg(long, default_value_t = 10000)]
    full_up_to: usize,
    /// Only these contenders
    #[arg(long, value_delimiter = ',', default_values_t = CONTENDERS.map(str::to_owned))]
    contenders: Vec<String>,
    /// Where BENCHMARKS.md goes (its plots go into `benchmarks/` beside it)
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// A few objects, one round: checks that every contender still works (CI runs this)
    #[arg(long)]
    smoke: bool,
    /// Instead of the four contenders: Kuberator's two controllers in one process (one shared
    /// cache) against the same two in two processes (`--objects` 1000 unless told)
    #[arg(long)]
    shared: bool,
    /// Instead of the four contenders: Kuberator's failover from a killed leader to a warm
    /// standby against a cold one (`--objects` 1000 unless told)
    #[arg(long)]
    failover: bool,
    /// Instead of the four contenders: Kuberator sharded over 1, 2 and 3 replicas (`--shards
    /// 12`), each handler waiting 100 ms as for an external call, the API server filtering each
    /// replica's watch, and over 2 and 3 replicas filtering in the replicas instead
    /// (`--objects` 2000 unless told)
    #[arg(long)]
    sharding: bool,
    /// Instead of the four contenders: Kuberator alone at `--objects` (100000 unless told), one
    /// cold start on the real control plane, into `benchmarks/scale.json`
    #[arg(long)]
    scale: bool,
    /// Run nothing: write BENCHMARKS.md and the plots again from `benchmarks/results.json`
    #[arg(long)]
    report_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.objects = vec![20];
        args.rounds = 1;
        args.latency_samples = 3;
        args.out = std::env::temp_dir().join(format!("kuberator-bench-smoke-{}", std::process::id()));
    }
    let plots = args.out.join("benchmarks");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let raw = plots.join("results.json");
    if args.report_only {
        let text = std::fs::read_to_string(&raw).with_context(|| format!("reading {}", raw.display()))?;
        let mut results: Vec<run::Measured> =
            serde_json::from_str(&text).with_context(|| format!("reading {}", raw.display()))?;
        results.iter_mut().for_each(run::Measured::thin);
        std::fs::write(&raw, serde_json::to_string(&results)?)
            .with_context(|| format!("writing {}", raw.display()))?;
        return rewrite_report(&args, &raw);
    }
    if args.shared || args.failover || args.sharding {
        return several(&args, &raw).await;
    }
    if args.scale {
        return scale(&args, &raw).await;
    }
    let logs = tempdir("kuberator-bench-logs")?;
    let contenders =
        args.contenders.iter().map(|name| contender(name)).collect::<anyhow::Result<Vec<_>>>()?;
    let crd = crd(&contenders)?;
    say(&format!(
        "{} contenders, objects {:?}, {} rounds, concurrency {}; contender logs in {}",
        contenders.len(),
        args.objects,
        args.rounds,
        args.concurrency,
        logs.display()
    ));

    let mut results = Vec::new();
    for &objects in &args.objects {
        let workload = run::Workload {
            objects,
            concurrency: args.concurrency,
            latency_samples: args.latency_samples,
            cold_only: objects > args.full_up_to,
            settle: std::time::Duration::from_secs(if args.smoke { 1 } else { 3 }),
        };
        for round in 0..args.rounds {
            let mut order: Vec<&Contender> = contenders.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for contender in order {
                say(&format!("round {}/{}, {objects} objects: {}", round + 1, args.rounds, contender.name));
                let measured =
                    run::measure(contender, &workload, round, &crd, &logs).await.with_context(|| {
                        format!("{} with {objects} objects, round {}", contender.name, round + 1)
                    })?;
                say(&format!(
                    "  cold start {:.2} s, {} reconciles, fresh change {:.0} ms, spec change {:.2} s, delete {:.2} s, steady RSS {:.1} MiB",
                    measured.cold_start_seconds,
                    measured.cold_reconciles,
                    measured.fresh_ms.unwrap_or(f64::NAN),
                    measured.spec_change_seconds,
                    measured.delete_seconds,
                    measured.steady_rss_mib
                ));
                results.push(measured);
            }
        }
    }
    results.iter_mut().for_each(run::Measured::thin);
    std::fs::write(&raw, serde_json::to_string(&results)?)
        .with_context(|| format!("writing {}", raw.display()))?;
    let names: Vec<String> = contenders.iter().map(|c| c.name.clone()).collect();
    write_report(&args, &results, &names)?;
    if args.smoke {
        std::fs::remove_dir_all(&args.out).ok();
        std::fs::remove_dir_all(&logs).ok();
    }
    Ok(())
}

/// How long each handler of the sharding benchmark waits, as for an external call.
const SHARDING_HANDLER_MS: u64 = 100;
/// Reconciles at a time per replica in the sharding benchmark.
const SHARDING_CONCURRENCY: usize = 4;

/// `--shared`, `--failover` and `--sharding`: their runs, alternating layouts, into `benchmarks/multi.json`
/// (the other one's figures kept); then BENCHMARKS.md again from both files.
async fn several(args: &Args, raw: &Path) -> anyhow::Result<()> {
    let logs = tempdir("kuberator-bench-logs")?;
    let kuberator = contender("kuberator")?;
    let crds = pair_crds(&kuberator)?;
    let default = if args.sharding { 2000 } else { 1000 };
    let objects = if args.objects == [1000, 10000] { default } else { args.objects[0] };
    let workload = run::Workload {
        objects,
        concurrency: args.concurrency,
        latency_samples: 0,
        cold_only: true,
        settle: std::time::Duration::from_secs(if args.smoke { 1 } else { 3 }),
    };
    // Each replica's concurrency is its ceiling when handlers wait: 4 at a time, so that the
    // handlers' waits, not the API server on two cores, bound one replica.
    let sharded = run::Workload { concurrency: SHARDING_CONCURRENCY, ..workload.clone() };
    let path = args.out.join("benchmarks").join("multi.json");
    let mut results = read_multi(&path);
    if args.shared {
        results.shared.clear();
    }
    if args.failover {
        results.failover.clear();
    }
    if args.sharding {
        results.sharding.clear();
    }
    say(&format!("{objects} objects, {} rounds; logs in {}", args.rounds, logs.display()));
    for round in 0..args.rounds {
        let flip = |mut pair: [&'static str; 2]| {
            if round % 2 == 1 {
                pair.reverse();
            }
            pair
        };
        if args.shared {
            for layout in flip(["one process", "two processes"]) {
                say(&format!("round {}/{}: shared cache, {layout}", round + 1, args.rounds));
                let run = multi::shared(&kuberator, &crds, &workload, layout, round, &logs).await?;
                say(&format!(
                    "  {} watches, {} lists, {:.1} KiB per object",
                    run.watches,
                    run.lists,
                    run.kib_per_object()
                ));
                results.shared.push(run);
            }
        }
        if args.sharding {
            let mut configs = vec![(1, "server"), (2, "server"), (3, "server"), (2, "client"), (3, "client")];
            if round % 2 == 1 {
                configs.reverse();
            }
            for (replicas, filter) in configs {
                say(&format!(
                    "round {}/{}: sharding, {replicas} replicas, {filter}-side",
                    round + 1,
                    args.rounds
                ));
                let config = (replicas, filter, SHARDING_HANDLER_MS);
                let run = multi::sharding(&kuberator, &crds, &sharded, config, round, &logs).await?;
                say(&format!(
                    "  {:.2} s, {:.0} objects/s, cache {:.1} MiB per replica (median)",
                    run.seconds,
                    run.throughput(),
                    run.cache_mib()
                ));
                results.sharding.push(run);
            }
        }
        if args.failover {
            for standby in flip(["warm", "cold"]) {
                say(&format!("round {}/{}: failover, {standby} standby", round + 1, args.rounds));
                let run = multi::failover(&kuberator, &crds, &workload, standby, round, &logs).await?;
                say(&format!(
                    "  lease {:.2} s, first reconcile {:.2} s, all {:.2} s",
                    run.lease_seconds, run.first_reconcile_seconds, run.all_reconciled_seconds
                ));
                results.failover.push(run);
            }
        }
    }
    if args.smoke {
        std::fs::remove_dir_all(&logs).ok();
        return Ok(());
    }
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    rewrite_report(args, raw)
}

/// `--scale`: one cold start of Kuberator alone at a large N, into `benchmarks/scale.json`
/// (runs at other counts kept); then BENCHMARKS.md again.
async fn scale(args: &Args, raw: &Path) -> anyhow::Result<()> {
    let logs = tempdir("kuberator-bench-logs")?;
    let kuberator = contender("kuberator")?;
    let crd = crd(std::slice::from_ref(&kuberator))?;
    let objects = if args.objects == [1000, 10000] { 100_000 } else { args.objects[0] };
    let workload = run::Workload {
        objects,
        concurrency: args.concurrency,
        latency_samples: 0,
        cold_only: true,
        settle: std::time::Duration::from_secs(if args.smoke { 1 } else { 10 }),
    };
    say(&format!("Kuberator alone, {objects} objects, one cold start; logs in {}", logs.display()));
    let measured = run::measure(&kuberator, &workload, 0, &crd, &logs).await?;
    say(&format!(
        "  cold start {:.1} s, steady RSS {:.1} MiB, CPU {:.1} s",
        measured.cold_start_seconds, measured.steady_rss_mib, measured.cold_cpu_seconds
    ));
    if args.smoke {
        std::fs::remove_dir_all(&logs).ok();
        return Ok(());
    }
    let path = args.out.join("benchmarks").join("scale.json");
    let mut runs = read_scale(&path);
    runs.retain(|run| run.objects != objects);
    let mut measured = measured;
    measured.thin();
    runs.push(measured);
    runs.sort_by_key(|run| run.objects);
    std::fs::write(&path, serde_json::to_string(&runs)?)
        .with_context(|| format!("writing {}", path.display()))?;
    rewrite_report(args, raw)
}

/// BENCHMARKS.md and the plots again, from the four contenders' `results.json` (and the
/// `--shared`, `--failover` and `--scale` files beside it).
fn rewrite_report(args: &Args, raw: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(raw).with_context(|| format!("reading {}", raw.display()))?;
    let results: Vec<run::Measured> =
        serde_json::from_str(&text).with_context(|| format!("reading {}", raw.display()))?;
    let names: Vec<String> = CONTENDERS
        .iter()
        .filter(|name| results.iter().any(|m| m.contender == **name))
        .map(|name| (*name).to_owned())
        .collect();
    write_report(args, &results, &names)
}

/// `benchmarks/scale.json`, or nothing yet.
fn read_scale(path: &Path) -> Vec<run::Measured> {
    std::fs::read_to_string(path).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

/// `benchmarks/multi.json`, or nothing yet.
fn read_multi(path: &Path) -> multi::MultiResults {
    std::fs::read_to_string(path).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

/// The `Bench` and `BenchAudit` CRDs, as the Kuberator contender prints them.
fn pair_crds(kuberator: &Contender) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let output = std::process::Command::new(&kuberator.binary)
        .arg("crd")
        .env("BENCH_PAIR", "both")
        .output()
        .context("printing the CRDs")?;
    anyhow::ensure!(output.status.success(), "`crd` failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout)?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| CustomResourceDefinition::deserialize(document).context("reading a CRD"))
        .collect()
}

/// BENCHMARKS.md and the plots, from `results`.
fn write_report(args: &Args, results: &[run::Measured], names: &[String]) -> anyhow::Result<()> {
    let plots = args.out.join("benchmarks");
    plot::all(results, names, &plots)?;
    let several = read_multi(&plots.join("multi.json"));
    plot::sharding(&several.sharding, &plots)?;
    let scaled = read_scale(&plots.join("scale.json"));
    let markdown =
        report::markdown(results, names, &args_line(args), smoke_note(args.smoke), &several, &scaled);
    let path = args.out.join("BENCHMARKS.md");
    std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
    say(&format!("wrote {} and its plots in {}", path.display(), plots.display()));
    Ok(())
}

fn smoke_note(smoke: bool) -> Option<&'static str> {
    smoke.then_some("A smoke run: too small to say anything about speed.")
}

fn args_line(args: &Args) -> String {
    format!(
        "--objects {} --rounds {} --concurrency {} --latency-samples {} --full-up-to {}",
        args.objects.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        args.rounds,
        args.concurrency,
        args.latency_samples,
        args.full_up_to
    )
}

/// Progress, on stderr.
#[allow(clippy::print_stderr)]
pub(crate) fn say(line: &str) {
    eprintln!("kuberator-bench: {line}");
}

fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The contender `name`: a binary beside the driver's, or the Go one, built now.
fn contender(name: &str) -> anyhow::Result<Contender> {
    let beside = |binary: &str| -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe()?;
        let path = exe.with_file_name(binary);
        anyhow::ensure!(
            path.exists(),
            "{} is missing: run the suite through scripts/bench, which builds every contender",
            path.display()
        );
        Ok(path)
    };
    let (binary, watches) = match name {
        "kuberator" => (beside("bench-kuberator")?, true),
        "kube-rs" => (beside("bench-kube")?, true),
        "floor" => (beside("bench-floor")?, false),
        "controller-runtime" => (build_go()?, true),
        other => anyhow::bail!("no contender {other:?}; there are {}", CONTENDERS.join(", ")),
    };
    Ok(Contender { name: name.to_owned(), binary, watches })
}

/// Builds the controller-runtime contender from its Go module into the cache (Go's own build
/// cache makes a second build quick).
fn build_go() -> anyhow::Result<PathBuf> {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("controller-runtime");
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?
        .join("kuberator/bench");
    std::fs::create_dir_all(&cache)?;
    let binary = cache.join("bench-controller-runtime");
    say("building the controller-runtime contender (go build; the first time takes minutes)");
    let status = std::process::Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&module)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=readonly -buildvcs=false")
        .status()
        .context("running `go build` for the controller-runtime contender (is Go 1.26 installed?)")?;
    anyhow::ensure!(status.success(), "`go build` in {} failed: {status}", module.display());
    Ok(binary)
}

/// The CRD, as the Kuberator contender prints it (`bench-kuberator crd`), whichever
/// contenders run.
fn crd(contenders: &[Contender]) -> anyhow::Result<CustomResourceDefinition> {
    let printer = match contenders.iter().find(|c| c.name == "kuberator") {
        Some(kuberator) => kuberator.binary.clone(),
        None => contender("kuberator")?.binary,
    };
    let output = std::process::Command::new(&printer).arg("crd").output().context("printing the CRD")?;
    anyhow::ensure!(
        output.status.success(),
        "`{} crd` failed: {}",
        printer.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml_ng::from_slice(&output.stdout).context("reading the CRD")
}
