//! What the example operators share: their command line, CRD installation, and the demo
//! that shows an object being reconciled and cleaned up.
//!
//! Every example takes one optional argument:
//!
//! - no argument: install the CRD and run the operator until Ctrl-C;
//! - `crd`: print the CRD as YAML and exit (no cluster needed);
//! - `demo`: install the CRD, run the operator, create a sample object, print its status
//!   once reconciled, delete it, wait until cleanup let it go, and exit.
//!
//! The cluster is the one in `KUBECONFIG` (or `~/.kube/config`, or the in-cluster config).
//! When none is configured (or `KUBERATOR_EXAMPLES_LOCAL=1`), the example runs on
//! `kuberator-test`'s in-memory API server, in-process, and says so; with `--real` after the
//! command it starts a real kube-apiserver, etcd and kube-controller-manager on loopback
//! instead, and stops them when it exits.
#![allow(clippy::print_stdout)]

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use kuberator::Reconcile as _;
use kuberator::shutdown::Shutdown;
use kuberator_test::Background;
use kuberator_test::init_tracing;
use kuberator_test::install_crd;
use kuberator_test::wait_for;

use anyhow::Context as _;
use anyhow::bail;
use kube::Api;
use kube::Client;
use kube::CustomResourceExt;
use kube::Resource;
use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::api::PostParams;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What the example was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the operator until Ctrl-C or SIGTERM.
    Run,
    /// Print the CRD as YAML.
    Crd,
    /// Show one object's life: create, reconcile, delete, clean up.
    Demo,
}

impl Command {
    /// The command from the process arguments.
    ///
    /// # Errors
    ///
    /// On an argument that is not a command, with the usage.
    pub fn from_args() -> anyhow::Result<Self> {
        let program = std::env::args().next().unwrap_or_else(|| "example".into());
        match std::env::args().nth(1).as_deref() {
            None | Some("run") => Ok(Command::Run),
            Some("crd") => Ok(Command::Crd),
            Some("demo") => Ok(Command::Demo),
            Some(other) => bail!("unknown command `{other}`; usage: {program} [run | crd | demo]"),
        }
    }
}

/// The CRD of `K` as YAML.
///
/// # Errors
///
/// When the CRD does not serialize, which would be a bug in its schema.
pub fn crd_yaml<K: CustomResourceExt>() -> anyhow::Result<String> {
    serde_yaml_ng::to_string(&K::crd()).context("serializing the CRD")
}

/// Creates `object`, waits until `reconciled` holds for it, prints it, deletes it, and waits
/// until the operator's cleanup let it go. The operator must already run.
///
/// # Errors
///
/// When a step fails or times out, naming the step.
pub async fn demo<K>(api: &Api<K>, object: K, reconciled: impl Fn(&K) -> bool) -> anyhow::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let name = object.name_any();
    let minute = Duration::from_secs(60);
    // A leftover from an interrupted run would make `create` fail.
    if api.get_opt(&name).await?.is_some() {
        api.delete(&name, &DeleteParams::default()).await?;
        wait_for(api, &name, minute, "the leftover object to go", |seen| seen.is_none()).await?;
    }
    api.create(&PostParams::default(), &object).await.with_context(|| format!("creating {name}"))?;
    println!("created {name}");

    let seen =
        wait_for(api, &name, minute, "the object to be reconciled", |seen| seen.is_some_and(&reconciled))
            .await?
            .expect("reconciled objects exist");
    println!("reconciled {name}:");
    println!("  finalizers: {:?}", seen.finalizers());
    if let Some(status) = serde_json::to_value(&seen)?.get("status") {
        println!("  status: {status}");
    }

    api.delete(&name, &DeleteParams::default()).await.with_context(|| format!("deleting {name}"))?;
    println!("deleting {name}: the finalizer holds it until cleanup succeeds");
    wait_for(api, &name, minute, "cleanup to release the object", |seen| seen.is_none()).await?;
    println!("cleaned up and gone: {name}");
    Ok(())
}

/// Runs an example as `command` says: prints the CRD of `K`, or installs it and runs the
/// operator that `start` starts until Ctrl-C, or runs it for the [`demo`] of `sample` and stops it.
///
/// # Errors
///
/// When the CRD cannot be installed or the demo fails.
pub async fn serve<K, S, Fut>(
    command: Command,
    sample: K,
    reconciled: impl Fn(&K) -> bool,
    start: S,
) -> anyhow::Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + CustomResourceExt
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
    K::DynamicType: Default,
    S: FnOnce(Client, Shutdown) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if command == Command::Crd {
        print!("{}", crd_yaml::<K>()?);
        return Ok(());
    }
    let (client, _local_control_plane) = client().await?;
    install_crd::<K>(&client).await?;
    if command == Command::Run {
        start(client, Shutdown::new(kuberator::shutdown::signal())).await;
        return Ok(());
    }

    let operator = Background::spawn(|shutdown| start(client.clone(), shutdown));
    let namespace = sample.namespace().unwrap_or_else(|| "default".into());
    let api: Api<K> = Api::namespaced(client, &namespace);
    let outcome = demo(&api, sample, reconciled).await;
    operator.stop(Duration::from_secs(30)).await;
    outcome
}

/// The cluster an example runs on when none is configured; dropping it stops it.
#[derive(Debug)]
pub enum LocalCluster {
    /// `kuberator-test`'s in-memory API server, in this process.
    InMemory(kuberator_test::memory::MemoryServer),
    /// A real kube-apiserver, etcd and kube-controller-manager on loopback (`--real`).
    Real(Box<kuberator_test::ControlPlane>),
}

/// A client for the cluster in `KUBECONFIG`, or, when no cluster is configured at all, for
/// the in-memory API server, or with `--real` among the arguments for a real control plane
/// started here. The local cluster is returned too: it stops when dropped.
///
/// # Errors
///
/// When the configured cluster is not usable, or the local control plane does not start.
pub async fn client() -> anyhow::Result<(Client, Option<LocalCluster>)> {
    let real = std::env::args().skip(1).any(|argument| argument == "--real");
    if !real && cluster_configured() {
        let client = Client::try_default().await.context("connecting to the cluster in KUBECONFIG")?;
        return Ok((client, None));
    }
    if !real {
        println!(
            "no cluster configured (KUBECONFIG, ~/.kube/config): running on kuberator-test's in-memory API \
             server (add --real for a real kube-apiserver and etcd)"
        );
        let server = kuberator_test::memory::MemoryServer::new();
        return Ok((server.client(), Some(LocalCluster::InMemory(server))));
    }
    println!("--real: starting a local kube-apiserver, etcd and kube-controller-manager");
    println!("(the first run builds them from source, which takes 10 to 20 minutes and needs Go)");
    let control_plane =
        kuberator_test::ControlPlane::start().await.context("starting a local control plane")?;
    println!("local control plane ready at {}", control_plane.server());
    let client = control_plane.client().await?;
    Ok((client, Some(LocalCluster::Real(Box::new(control_plane)))))
}

/// Whether a kubeconfig or an in-cluster configuration is there to use.
/// `KUBERATOR_EXAMPLES_LOCAL=1` ignores them and runs on a local cluster anyway.
fn cluster_configured() -> bool {
    if std::env::var_os("KUBERATOR_EXAMPLES_LOCAL").is_some_and(|value| value == "1") {
        return false;
    }
    let home_config = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".kube/config"))
        .is_some_and(|path| path.exists());
    std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os(kuberator_test::KUBECONFIG_ENV).is_some()
        || home_config
}

/// The README's Rust blocks, compiled and run as doctests of this crate, which depends on
/// everything they use.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Whether `object`'s status has the condition `Ready` with status `True` for its current
/// generation: what `kubectl wait --for=condition=Ready` waits for, and a little more.
pub fn is_ready<K: Serialize>(object: &K) -> bool {
    let Ok(object) = serde_json::to_value(object) else {
        return false;
    };
    let generation = &object["metadata"]["generation"];
    let conditions = object["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conditions.iter().any(|condition| {
        condition["type"] == "Ready"
            && condition["status"] == "True"
            && (generation.is_null() || condition["observedGeneration"] == *generation)
    })
}

/// [`serve`]'s demo for a derived operator: on the cluster in `KUBECONFIG` or a local control
/// plane, create `sample`, wait until `reconciled`, delete it, wait for cleanup.
///
/// # Errors
///
/// When a step fails or times out.
pub async fn demo_operator<O>(
    operator: O,
    sample: O::Resource,
    reconciled: impl Fn(&O::Resource) -> bool,
) -> anyhow::Result<()>
where
    O: kuberator::operator::Operator<Resource: Resource<Scope = k8s_openapi::NamespaceResourceScope>>,
{
    init_tracing();
    serve(Command::Demo, sample, reconciled, |client, shutdown| {
        operator.into_reconciler(client).start(Some(shutdown))
    })
    .await
}
