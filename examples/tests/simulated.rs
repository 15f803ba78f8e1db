//! Every example operator in the deterministic simulator (`kuberator_test::sim`): crashes at
//! writes, lost answers, conflicts, cut and coalesced watches, relists, and a user who
//! creates, edits and deletes objects and deletes their children by hand. Each test runs 10
//! seeds; the full count is
//! `KUBERATOR_SIM_SEEDS=1000 cargo test --release -p kuberator-examples --test simulated -- --nocapture`,
//! which prints each operator's seeds per second.
#![allow(missing_docs)]
#![allow(clippy::print_stderr)] // each test reports its seeds per second and what they reached

use k8s_openapi::api::core::v1::ConfigMap;
use kube::CustomResourceExt as _;
use kube::ResourceExt as _;
use kuberator::Reconcile as _;
use kuberator_test::sim::Simulation;
use kuberator_test::sim::Workload;
use kuberator_test::sim::World;
use serde_json::json;

#[allow(dead_code, unreachable_pub)]
#[path = "../basic_operator.rs"]
mod basic_operator;

#[allow(dead_code, unreachable_pub)]
#[path = "../with_status.rs"]
mod with_status;

#[allow(dead_code, unreachable_pub)]
#[path = "../error_handling.rs"]
mod error_handling;

#[allow(dead_code, unreachable_pub)]
#[path = "../derive_operator.rs"]
mod derive_operator;

#[allow(dead_code, unreachable_pub)]
#[path = "../owned_resources.rs"]
mod owned_resources;

#[allow(dead_code, unreachable_pub)]
#[path = "../database_operator.rs"]
mod database_operator;

const NAMESPACE: &str = "sim";

/// Runs the CI's seeds of `simulation` and reports them.
fn check(simulation: &Simulation) {
    let summary = simulation.check(0..10);
    eprintln!("{summary}");
}

/// `name-<index>` in the simulation's namespace, with `spec`.
fn named<K: kube::Resource<DynamicType = ()>>(mut object: K, index: usize) -> K {
    let kind = K::kind(&()).to_lowercase();
    object.meta_mut().name = Some(format!("{kind}-{index}"));
    object.meta_mut().namespace = Some(NAMESPACE.to_owned());
    object
}

/// Every object of `K` satisfies `holds`, or the message `holds` gave for it.
fn each<K>(world: &World, holds: impl Fn(&K) -> Result<(), String>) -> Result<(), String>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    world.list::<K>().iter().try_for_each(|object| {
        holds(object).map_err(|message| format!("{} {}: {message}", K::kind(&()), object.name_any()))
    })
}

#[test]
fn basic_operator_in_the_simulator() {
    use basic_operator::Greeting;
    use basic_operator::GreetingSpec;
    let finalizer = "greetings.examples.kuberator.dev/finalizer";
    check(
        &Simulation::new("basic_operator_in_the_simulator")
            .crd(Greeting::crd())
            .process(|client| {
                basic_operator::reconciler(client, NAMESPACE).start(None::<std::future::Pending<()>>)
            })
            .workload(
                Workload::of(NAMESPACE, |index| {
                    named(Greeting::new("", GreetingSpec { message: format!("hello {index}") }), index)
                })
                .edit(|greeting, draw| greeting["spec"]["message"] = json!(format!("m{}", draw % 3))),
            )
            // A Greeting has no status.
            .without_status()
            .at_rest("each Greeting carries the finalizer", move |world| {
                each::<Greeting>(world, |greeting| {
                    greeting
                        .finalizers()
                        .iter()
                        .any(|f| f == finalizer)
                        .then_some(())
                        .ok_or("no finalizer".into())
                })
            }),
    );
}

#[test]
fn with_status_in_the_simulator() {
    use with_status::Echo;
    use with_status::EchoSpec;
    check(
        &Simulation::new("with_status_in_the_simulator")
            .crd(Echo::crd())
            .process(|client| {
                with_status::reconciler(client, NAMESPACE)
                    .start_concurrent(Some(4), None::<std::future::Pending<()>>)
            })
            .workload(
                Workload::of(NAMESPACE, |index| {
                    named(Echo::new("", EchoSpec { message: format!("hello {index}") }), index)
                })
                .edit(|echo, draw| echo["spec"]["message"] = json!(format!("m{}", draw % 3))),
            )
            .at_rest("each Echo echoes its message", |world| {
                each::<Echo>(world, |echo| {
                    let echoed = echo.status.as_ref().and_then(|status| status.echoed.as_ref());
                    (echoed == Some(&echo.spec.message)).then_some(()).ok_or(format!("echoed {echoed:?}"))
                })
            }),
    );
}

#[test]
fn error_handling_in_the_simulator() {
    use error_handling::Bucket;
    use error_handling::BucketSpec;
    let size = |draw: u64| if draw.is_multiple_of(2) { 50 } else { 500 };
    check(
        &Simulation::new("error_handling_in_the_simulator")
            .crd(Bucket::crd())
            .process(|client| {
                error_handling::reconciler(client, NAMESPACE).start(None::<std::future::Pending<()>>)
            })
            .workload(
                Workload::of(NAMESPACE, move |index| {
                    let mut bucket = Bucket::new("", BucketSpec { size_gib: size(index as u64) });
                    bucket.status = None;
                    named(bucket, index)
                })
                .edit(move |bucket, draw| bucket["spec"]["sizeGib"] = json!(size(draw))),
            )
            .at_rest("a bucket within its quota is Ready, one above it Failed with its error", |world| {
                each::<Bucket>(world, |bucket| {
                    let status = bucket.status.clone().unwrap_or_default();
                    let expected = if bucket.spec.size_gib <= 100 { "Ready" } else { "Failed" };
                    let right = status.phase.as_deref() == Some(expected)
                        && status.error.is_some() == (expected == "Failed");
                    right.then_some(()).ok_or(format!("{} GiB, status {status:?}", bucket.spec.size_gib))
                })
            }),
    );
}

#[test]
fn derive_operator_in_the_simulator() {
    use derive_operator::Shout;
    use derive_operator::ShoutOperator;
    use derive_operator::ShoutSpec;
    // The operator watches `default` only.
    check(
        &Simulation::new("derive_operator_in_the_simulator")
            .crd(Shout::crd())
            .process(|client| {
                kuberator::Operators::new()
                    .with(ShoutOperator)
                    .start(client, None::<std::future::Pending<()>>)
            })
            .workload(
                Workload::of("default", |index| {
                    let mut shout =
                        named(Shout::new("", ShoutSpec { message: format!("hello {index}") }), index);
                    shout.metadata.namespace = Some("default".to_owned());
                    shout
                })
                .edit(|shout, draw| shout["spec"]["message"] = json!(format!("m{}", draw % 3))),
            )
            .at_rest("each Shout is Ready and shouts its message", |world| {
                each::<Shout>(world, |shout| {
                    let shouted = shout.status.as_ref().and_then(|status| status.shouted.clone());
                    let right = shouted == Some(shout.spec.message.to_uppercase())
                        && kuberator_examples::is_ready(shout);
                    right.then_some(()).ok_or(format!("shouted {shouted:?}, status {:?}", shout.status))
                })
            }),
    );
}

#[test]
fn owned_resources_in_the_simulator() {
    use owned_resources::SiteOperator;
    use owned_resources::StaticSite;
    check(
        &Simulation::new("owned_resources_in_the_simulator")
            .crd(StaticSite::crd())
            .process(|client| {
                kuberator::Operators::new().with(SiteOperator).start(client, None::<std::future::Pending<()>>)
            })
            .workload(
                Workload::of(NAMESPACE, |index| {
                    named(owned_resources::sample("", NAMESPACE, index % 2 == 0), index)
                })
                .edit(|site, draw| {
                    site["spec"]["content"] = json!(format!("<p>{}</p>", draw % 3));
                    site["spec"]["expose"] = json!(draw.is_multiple_of(2));
                }),
            )
            .at_rest("each site's page says its content, and a Service exists when it is exposed", |world| {
                let maps = world.list::<ConfigMap>();
                let services = world.list::<k8s_openapi::api::core::v1::Service>();
                each::<StaticSite>(world, |site| {
                    let name = site.name_any();
                    let page = maps.iter().find(|map| map.name_any() == format!("{name}-page"));
                    let content = page.and_then(|map| map.data.as_ref()?.get("index.html"));
                    if content != Some(&site.spec.content) {
                        return Err(format!("its page says {content:?}"));
                    }
                    let exposed = services.iter().any(|service| service.name_any() == name);
                    if exposed != site.spec.expose {
                        return Err(format!("expose is {}, its Service exists: {exposed}", site.spec.expose));
                    }
                    Ok(())
                })
            }),
    );
}

#[test]
fn database_operator_in_the_simulator() {
    use database_operator::Backup;
    use database_operator::BackupSpec;
    use database_operator::Database;
    use database_operator::DatabaseSpec;
    // Two controllers in one process, the Backups following their Databases.
    check(
        &Simulation::new("database_operator_in_the_simulator")
            .crd(Database::crd())
            .crd(Backup::crd())
            .given(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "credentials", "namespace": NAMESPACE},
                "stringData": {"username": "app", "password": "first"},
            }))
            .process(|client| database_operator::operators().start(client, None::<std::future::Pending<()>>))
            .workload(
                Workload::of(NAMESPACE, |index| {
                    let spec = DatabaseSpec {
                        engine: "postgres".to_owned(),
                        credentials_secret: "credentials".to_owned(),
                    };
                    named(Database::new("", spec), index)
                })
                .edit(|db, draw| db["spec"]["engine"] = json!(["postgres", "mysql"][(draw % 2) as usize])),
            )
            .workload(
                Workload::of(NAMESPACE, |index| {
                    named(Backup::new("", BackupSpec { database: format!("database-{index}") }), index)
                })
                .edit(|backup, draw| backup["spec"]["database"] = json!(format!("database-{}", draw % 3))),
            )
            .at_rest(
                "each Database is Ready at its endpoint; a Backup completes when its Database is Ready",
                |world| {
                    let databases = world.list::<Database>();
                    each::<Database>(world, |db| {
                        let endpoint = db.status.as_ref().and_then(|status| status.endpoint.clone());
                        let right = endpoint == Some(format!("{}.{NAMESPACE}.svc:5432", db.name_any()))
                            && kuberator_examples::is_ready(db);
                        right.then_some(()).ok_or(format!("status {:?}", db.status))
                    })?;
                    each::<Backup>(world, |backup| {
                        let ready = databases.iter().any(|db| {
                            db.name_any() == backup.spec.database && kuberator_examples::is_ready(db)
                        });
                        let phase = backup.status.as_ref().and_then(|status| status.phase.clone());
                        let expected = if ready { "Completed" } else { "WaitingForDatabase" };
                        (phase.as_deref() == Some(expected))
                            .then_some(())
                            .ok_or(format!("its database is ready: {ready}, its phase {phase:?}"))
                    })
                },
            ),
    );
}
