//! Cost of one `Api` lookup per provider and strategy.
//!
//! `cargo bench -p kuberator --bench api_provider` prints one row per case. The table in the
//! guide's caching chapter (`kuberator::guide::trait_level`) comes from this benchmark; it asserts nothing, since timings on shared machines
//! are noisy.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::BatchSize;
use criterion::Criterion;
use criterion::criterion_group;
use criterion::criterion_main;
use http::Request;
use http::Response;
use kube::Api;
use kube::Client;
use kube::CustomResource;
use kube::client::Body;
use kuberator::cache::CachedApiProvider;
use kuberator::cache::CachingStrategy;
use kuberator::cache::ProvideApi;
use kuberator::cache::StaticApiProvider;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    size: u32,
}

const LISTED: [&str; 4] = ["default", "production", "staging", "team-a"];

fn static_provider(client: &Client, strategy: CachingStrategy) -> StaticApiProvider<Widget> {
    StaticApiProvider::new(client.clone(), LISTED, strategy)
}

/// One lookup as a reconcile does it: get the `Api`, use a reference to it, drop the
/// handle.
#[inline(always)]
fn lookup<P: ProvideApi<Widget>>(provider: &P, namespace: &str) -> *const Api<Widget> {
    &*provider.get(black_box(namespace)).unwrap() as *const Api<Widget>
}

/// Runs `lookup` on another thread, as fast as it can, while `measure` runs.
fn with_contention<P, M>(provider: &Arc<P>, measure: M)
where
    P: ProvideApi<Widget> + 'static,
    M: FnOnce(),
{
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let provider = Arc::clone(provider);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut lookups = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                black_box(lookup(&*provider, "production"));
                lookups += 1;
            }
            lookups
        })
    };
    measure();
    stop.store(true, Ordering::Relaxed);
    let lookups = hammer.join().unwrap();
    assert!(lookups > 0, "the second thread did look up");
}

fn lookups(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    // A client on a mock service that is kept open and never answers: no request is sent.
    let (service, _server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let mut group = c.benchmark_group("api_provider");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));

    group.bench_function("Api::namespaced (baseline)", |b| {
        b.iter(|| Api::<Widget>::namespaced(client.clone(), black_box("team-b")));
    });

    let strict = static_provider(&client, CachingStrategy::Strict);
    group.bench_function("Strict hit", |b| b.iter(|| lookup(&strict, "production")));

    let adhoc = static_provider(&client, CachingStrategy::Adhoc);
    group.bench_function("Adhoc hit", |b| b.iter(|| lookup(&adhoc, "production")));
    group.bench_function("Adhoc miss", |b| b.iter(|| lookup(&adhoc, "team-b")));

    let extendable = Arc::new(static_provider(&client, CachingStrategy::Extendable));
    group.bench_function("Extendable hit", |b| {
        b.iter(|| lookup(&*extendable, "production"));
    });
    extendable.get("team-b").unwrap();
    group.bench_function("Extendable hit (discovered namespace)", |b| {
        b.iter(|| lookup(&*extendable, "team-b"));
    });
    with_contention(&extendable, || {
        group.bench_function("Extendable hit, second thread hammering", |b| {
            b.iter(|| lookup(&*extendable, "production"));
        });
    });
    group.bench_function("Extendable miss (first use of a namespace)", |b| {
        b.iter_batched(
            || static_provider(&client, CachingStrategy::Extendable),
            |provider| {
                black_box(lookup(&provider, "team-b"));
                provider
            },
            BatchSize::SmallInput,
        );
    });

    let cached = Arc::new(CachedApiProvider::<Widget>::with_namespaces(client.clone(), LISTED));
    group.bench_function("CachedApiProvider hit", |b| {
        b.iter(|| lookup(&*cached, "production"));
    });
    with_contention(&cached, || {
        group.bench_function("CachedApiProvider hit, second thread hammering", |b| {
            b.iter(|| lookup(&*cached, "production"));
        });
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
