//! The operator benchmark: one workload, four contenders, each in its own process.
//!
//! - `bench-kuberator`: a derived Kuberator operator, as the README teaches it;
//! - `bench-kube`: a hand-written kube-rs `Controller` with kube's `finalizer()` helper;
//! - `controller-runtime/`: a controller-runtime operator in Go (built by the driver);
//! - `bench-floor`: a plain client with no watch and no cache, doing the same writes.
//!
//! Each reconciles the `Bench` custom resource (group [`GROUP`]): it adds [`FINALIZER`],
//! writes status with `observedGeneration` and a `Ready` condition, and on deletion removes
//! the finalizer. The driver (`kuberator-bench`, `src/main.rs`) starts a control plane,
//! creates the objects, starts one contender, and measures it from the outside.
//!
//! What a contender reads from its environment: `KUBECONFIG`, [`NAMESPACE_ENV`] and
//! [`CONCURRENCY_ENV`]; a line `count` on its stdin is answered on its stdout with the number
//! of reconciles it has run so far ([`answer_counts`]).

use std::future::Future;

use tokio::io::AsyncBufReadExt as _;
use tokio::io::AsyncWriteExt as _;

/// The custom resource's API group.
pub const GROUP: &str = "bench.kuberator.dev";

/// The finalizer every contender adds and removes.
pub const FINALIZER: &str = "benches.bench.kuberator.dev/finalizer";

/// The one namespace a contender watches.
pub const NAMESPACE_ENV: &str = "BENCH_NAMESPACE";

/// How many reconciles (or, for the floor, writes) a contender runs at a time.
pub const CONCURRENCY_ENV: &str = "BENCH_CONCURRENCY";

/// Reads an environment variable the driver always sets.
///
/// # Errors
///
/// When it is not set: the contender was started by hand.
pub fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow::anyhow!("{name} is not set: the benchmark driver sets it"))
}

/// The concurrency from [`CONCURRENCY_ENV`].
///
/// # Errors
///
/// When it is not set or not a number.
pub fn concurrency() -> anyhow::Result<usize> {
    let value = env(CONCURRENCY_ENV)?;
    value.parse().map_err(|_| anyhow::anyhow!("{CONCURRENCY_ENV}={value:?} is not a number"))
}

/// Answers each `count` line on stdin with `count()` on a line of stdout, until stdin closes.
pub fn answer_counts<F, Fut>(count: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdout = tokio::io::stdout();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "count" {
                let answer = format!("{}\n", count().await);
                if stdout.write_all(answer.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                    break;
                }
            }
        }
    });
}
