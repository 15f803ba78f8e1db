//! Cost of decoding one watched object of about 2.5 KB (managedFields included, as the API
//! server sends it) into the operator's type, three ways, side by side:
//!
//! - `kuberator` — what the controller does now: the JSON text into the type once, per
//!   object, so that one undecodable object cannot fail a list page;
//! - `via DynamicObject` — what it did before: into a `DynamicObject`, then `to_value` and
//!   `from_value` into the type (two decodes);
//! - `kube typed` — kube's typed watcher: the JSON text into the type, no isolation (the
//!   floor).
//!
//! `cargo bench -p kuberator --bench decode` prints a table: medians and min–max over rounds
//! whose order alternates, and ratios. It asserts nothing: timings on shared machines are
//! noisy; read the ratios. CI runs it as a smoke test, unoptimized and with
//! `KUBERATOR_BENCH_DECODES=100`, so that it keeps working; those figures mean nothing.
#![allow(missing_docs, clippy::print_stdout)] // a benchmark prints its table

use std::hint::black_box;

use std::time::Instant;

use kube::CustomResource;
use kube::api::DynamicObject;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "bench.kuberator.dev", version = "v1", kind = "Site", namespaced, status = "SiteStatus")]
#[serde(rename_all = "camelCase")]
pub struct SiteSpec {
    title: String,
    replicas: u32,
    pages: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    observed_generation: Option<i64>,
    message: Option<String>,
}

/// An object as a watch event carries it: spec, status and the managedFields of two
/// managers, about 2.5 KB.
fn object() -> Vec<u8> {
    let pages: Vec<String> = (0..12).map(|i| format!("/docs/section-{i}/index.html")).collect();
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..8).map(|i| (format!("example.com/label-{i}"), format!("value-{i}").into())).collect();
    let fields = serde_json::json!({
        "f:metadata": { "f:finalizers": { ".": {}, "v:\"sites.bench.kuberator.dev/finalizer\"": {} } },
        "f:spec": { ".": {}, "f:title": {}, "f:replicas": {}, "f:pages": {}, "f:labels": { ".": {} } },
    });
    let object = serde_json::json!({
        "apiVersion": "bench.kuberator.dev/v1",
        "kind": "Site",
        "metadata": {
            "name": "site-0042",
            "namespace": "bench",
            "uid": "0b6a1c9e-5a3f-4d8e-9c1b-2f7e8d9a0b1c",
            "resourceVersion": "123456",
            "generation": 3,
            "creationTimestamp": "2026-11-25T10:00:00Z",
            "finalizers": ["sites.bench.kuberator.dev/finalizer"],
            "labels": { "app.kubernetes.io/name": "site", "team": "web" },
            "managedFields": [
                { "manager": "kubectl", "operation": "Apply", "apiVersion": "bench.kuberator.dev/v1",
                  "time": "2026-11-25T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields },
                { "manager": "site-operator", "operation": "Update", "apiVersion": "bench.kuberator.dev/v1",
                  "time": "2026-11-25T10:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
                  "fieldsV1": { "f:status": { ".": {}, "f:observedGeneration": {}, "f:message": {} } } },
            ],
        },
        "spec": { "title": "The documentation site", "replicas": 3, "pages": pages, "labels": labels },
        "status": { "observedGeneration": 3, "message": "serving 12 pages on 3 replicas" },
    });
    serde_json::to_vec(&object).unwrap()
}

type Contender = (&'static str, fn(&[u8]) -> Site);

const CONTENDERS: [Contender; 3] = [
    ("kuberator", |json| kuberator::__bench::decode_watched::<Site>(json).unwrap()),
    ("via DynamicObject", |json| {
        let dynamic: DynamicObject = serde_json::from_slice(json).unwrap();
        serde_json::from_value(serde_json::to_value(&dynamic).unwrap()).unwrap()
    }),
    ("kube typed", |json| serde_json::from_slice::<Site>(json).unwrap()),
];

/// Rounds, the order of the contenders reversed every other round.
const ROUNDS: usize = 9;

fn main() {
    // Decodes per round and contender; CI's smoke run sets a few, so that this cannot rot.
    let decodes: u32 =
        std::env::var("KUBERATOR_BENCH_DECODES").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let json = object();
    let mut per_decode: Vec<Vec<f64>> = vec![Vec::new(); CONTENDERS.len()];
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..CONTENDERS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let (_, decode) = CONTENDERS[index];
            let started = Instant::now();
            for _ in 0..decodes {
                black_box(decode(black_box(&json)));
            }
            per_decode[index].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(decodes));
        }
    }
    println!(
        "decode one {} B object; {ROUNDS} rounds of {decodes}, order alternated; µs per object",
        json.len()
    );
    println!("| contender | median | min–max | vs kuberator |");
    println!("| --- | --- | --- | --- |");
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let medians: Vec<f64> = per_decode.iter_mut().map(median).collect();
    for (index, (name, _)) in CONTENDERS.iter().enumerate() {
        let times = &per_decode[index];
        println!(
            "| {name} | {:.2} | {:.2}–{:.2} | {:.2}x |",
            medians[index],
            times[0],
            times[times.len() - 1],
            medians[index] / medians[0]
        );
    }
}
