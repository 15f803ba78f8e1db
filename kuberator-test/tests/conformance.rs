//! The conformance suite: the same scenarios against the in-memory API server and the real
//! control plane. Each scenario states what the real server does (status codes, reasons,
//! messages, watch event sequences, generation and resourceVersion behaviour); a scenario
//! that passes on the real server and fails on the in-memory one is a divergence to fix or
//! to list in `kuberator-test/IN_MEMORY.md`.
//!
//! `cargo test -p kuberator-test --test conformance -- --nocapture` prints the counts.
#![allow(clippy::print_stderr)]

#[path = "conformance/harness.rs"]
mod harness;
#[path = "conformance/scenarios.rs"]
mod scenarios;

use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use kuberator_test::TestCluster;

use harness::Ctx;

/// Runs every scenario on `cluster`; returns the failures, and prints the count.
async fn run(cluster: &TestCluster) -> Vec<String> {
    kuberator_test::init_tracing();
    let client = cluster.client().await.expect("a client");
    harness::install(&client, &harness::widget_crd()).await.expect("the Widget CRD installs");
    harness::install(&client, &harness::gadget_crd()).await.expect("the Gadget CRD installs");
    let all = scenarios::all();
    let total = all.len();
    let started = Instant::now();
    let outcomes: Vec<(&str, Result<(), String>, Duration)> = futures::stream::iter(all)
        .map(|(name, scenario)| {
            let client = client.clone();
            async move {
                let began = Instant::now();
                let prefix =
                    format!("conf-{}", &name[..name.len().min(20)].replace('_', "-").trim_end_matches('-'));
                let namespace = match kuberator_test::test_namespace(&client, &prefix).await {
                    Ok(namespace) => namespace,
                    Err(error) => return (name, Err(format!("no namespace: {error}")), began.elapsed()),
                };
                let ctx = Ctx { client: client.clone(), namespace: namespace.clone() };
                let outcome = match tokio::time::timeout(Duration::from_secs(120), scenario(ctx)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(format!("{error:#}")),
                    Err(_) => Err("timed out after 120 s".into()),
                };
                let _ = kuberator_test::delete_namespace(&client, &namespace).await;
                (name, outcome, began.elapsed())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|(name, outcome, _)| outcome.as_ref().err().map(|error| format!("{name}: {error}")))
        .collect();
    let mut slowest: Vec<&(&str, Result<(), String>, Duration)> = outcomes.iter().collect();
    slowest.sort_by_key(|(_, _, took)| std::cmp::Reverse(*took));
    eprintln!(
        "conformance on the {} server: {}/{total} scenarios passed in {:.1} s (slowest: {})",
        cluster.kind(),
        total - failures.len(),
        started.elapsed().as_secs_f64(),
        slowest
            .iter()
            .take(3)
            .map(|(name, _, took)| format!("{name} {:.1} s", took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for failure in &failures {
        eprintln!("  FAILED on {}: {failure}", cluster.kind());
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_of_the_in_memory_server() {
    let failures = run(&TestCluster::in_memory()).await;
    assert!(
        failures.is_empty(),
        "{} scenarios failed on the in-memory server:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_of_the_real_control_plane() {
    let cluster = TestCluster::real().await.expect("the control plane must start (tests never skip)");
    let failures = run(&cluster).await;
    assert!(
        failures.is_empty(),
        "{} scenarios failed on the real control plane:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn there_are_at_least_sixty_scenarios() {
    assert!(scenarios::all().len() >= 60, "{} scenarios", scenarios::all().len());
}
