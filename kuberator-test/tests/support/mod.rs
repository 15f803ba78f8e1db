//! An instrumented operator for the end-to-end tests: it counts what its handlers do, can be
//! told through its spec to fail or to take its time, and records how many reconciles ran
//! at once.
#![allow(dead_code, unreachable_pub)]

pub mod baton;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use async_trait::async_trait;
use kube::Api;
use kube::Client;
use kube::CustomResource;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kuberator::AsStatusError;
use kuberator::Context;
use kuberator::Finalize;
use kuberator::ObserveGeneration;
use kuberator::Reconcile;
use kuberator::WithStatusError;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::error::Error;
use kuberator::events::EmitEvent;
use kuberator::events::EventData;
use kuberator::events::EventRecorder;
use kuberator::k8s::K8sRepository;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

pub const FINALIZER: &str = "probes.test.kuberator.dev/finalizer";

/// What the operator should do with this object.
#[derive(CustomResource, Serialize, Deserialize, Debug, PartialEq, Clone, Default, JsonSchema)]
#[kube(group = "test.kuberator.dev", version = "v1", kind = "Probe", namespaced, status = "ProbeStatus")]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    pub message: String,
    /// `handle_apply` fails with this message.
    #[serde(default)]
    pub fail_apply: Option<String>,
    /// `handle_cleanup` fails this many times before it succeeds.
    #[serde(default)]
    pub fail_cleanup_times: u32,
    /// `handle_apply` sleeps this long.
    #[serde(default)]
    pub apply_millis: u64,
    /// `handle_apply` fails with a terminal error with this message.
    #[serde(default)]
    pub terminal: Option<String>,
    /// `handle_apply` panics with this message.
    #[serde(default)]
    pub panic_apply: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    pub message: Option<String>,
    pub observed_generation: Option<i64>,
    pub error: Option<ProbeStatusError>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
pub struct ProbeStatusError {
    pub message: String,
}

impl ObserveGeneration for ProbeStatus {
    fn add(&mut self, observed_generation: i64) {
        self.observed_generation = Some(observed_generation);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("apply refused: {0}")]
pub struct ProbeError(String);

pub fn probe_error(reason: &str) -> ProbeError {
    ProbeError(reason.to_owned())
}

impl AsStatusError<ProbeStatusError> for ProbeError {
    fn as_status_error(&self) -> ProbeStatusError {
        ProbeStatusError { message: self.to_string() }
    }
}

impl WithStatusError<ProbeError, ProbeStatusError> for ProbeStatus {
    fn add(&mut self, error: ProbeStatusError) {
        self.error = Some(error);
    }
}

/// What happened, as the tests read it.
#[derive(Default, Debug)]
pub struct Journal {
    /// Per object name: the generations `handle_apply` ran for.
    pub applies: HashMap<String, Vec<i64>>,
    /// Per object name: how often `handle_cleanup` ran.
    pub cleanups: HashMap<String, u32>,
    /// Applies that ran on an object without the finalizer (must stay empty).
    pub applies_without_finalizer: Vec<String>,
    /// Per object name: reconciles running now, and the most ever at once.
    pub running: HashMap<String, u32>,
    pub most_at_once_per_object: HashMap<String, u32>,
    /// All objects: reconciles running now, and the most ever at once.
    pub running_total: u32,
    pub most_at_once: u32,
    /// Errors the error handler saw, as reports.
    pub errors: Vec<String>,
    /// Per object name: when each apply started.
    pub apply_starts: HashMap<String, Vec<Instant>>,
    /// When each apply started and ended.
    pub apply_windows: Vec<(String, Instant, Instant)>,
    /// Applies that were handed `metadata.managedFields` or the last-applied annotation.
    pub applies_with_managed_fields: Vec<String>,
}

type Repo = K8sRepository<Probe, StaticApiProvider<Probe>>;

pub struct ProbeContext {
    repo: Arc<Repo>,
    events: EventRecorder,
    pub journal: Arc<Mutex<Journal>>,
}

impl ProbeContext {
    fn enter(&self, name: &str) {
        let mut journal = self.journal.lock().unwrap();
        let running = journal.running.entry(name.to_owned()).or_default();
        *running += 1;
        let now = *running;
        let most = journal.most_at_once_per_object.entry(name.to_owned()).or_default();
        *most = (*most).max(now);
        journal.running_total += 1;
        journal.most_at_once = journal.most_at_once.max(journal.running_total);
    }

    fn leave(&self, name: &str) {
        let mut journal = self.journal.lock().unwrap();
        *journal.running.get_mut(name).unwrap() -= 1;
        journal.running_total -= 1;
    }
}

#[async_trait]
impl Context<Probe, Repo, StaticApiProvider<Probe>> for ProbeContext {
    fn k8s_repository(&self) -> Arc<Repo> {
        Arc::clone(&self.repo)
    }

    fn finalizer(&self) -> &'static str {
        FINALIZER
    }

    async fn handle_apply(&self, probe: Arc<Probe>) -> kuberator::Result<Action> {
        let name = probe.name_any();
        if let Some(message) = &probe.spec.panic_apply {
            self.journal.lock().unwrap().applies.entry(name.clone()).or_default().push(-1);
            panic!("{message}");
        }
        let started = Instant::now();
        self.enter(&name);
        {
            let mut journal = self.journal.lock().unwrap();
            journal.apply_starts.entry(name.clone()).or_default().push(started);
            journal.applies.entry(name.clone()).or_default().push(probe.metadata.generation.unwrap_or(-1));
            if !probe.finalizers().iter().any(|f| f == FINALIZER) {
                journal.applies_without_finalizer.push(name.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(probe.spec.apply_millis)).await;
        if let Some(reason) = &probe.spec.terminal {
            self.leave(&name);
            return Err(Error::terminal(anyhow::anyhow!("{reason}")));
        }
        let result = match &probe.spec.fail_apply {
            Some(reason) => {
                let error = ProbeError(reason.clone());
                let status = ProbeStatus { message: None, ..ProbeStatus::default() };
                self.repo.update_status_with_error(&probe, status, Some(&error)).await?;
                Err(Error::Anyhow(anyhow::anyhow!(error)))
            }
            None => {
                let status =
                    ProbeStatus { message: Some(probe.spec.message.clone()), ..ProbeStatus::default() };
                self.repo.update_status(&probe, status).await?;
                self.events
                    .emit(&*probe, EventData::normal("Applied", format!("applied {:?}", probe.spec.message)))
                    .await;
                Ok(Action::await_change())
            }
        };
        self.leave(&name);
        self.journal.lock().unwrap().apply_windows.push((name, started, Instant::now()));
        result
    }

    async fn handle_cleanup(&self, probe: Arc<Probe>) -> kuberator::Result<Action> {
        cleanup(&self.journal, &probe)
    }

    fn handle_error(&self, probe: Arc<Probe>, error: &Error, requeue: Option<Duration>) -> Action {
        self.journal.lock().unwrap().errors.push(error.report());
        tracing::warn!(object = %probe.name_any(), error = %error.report(), "reconcile failed");
        requeue.map_or_else(Action::await_change, Action::requeue)
    }
}

pub struct ProbeReconciler {
    context: Arc<ProbeContext>,
    api: Api<Probe>,
    config: Config,
}

impl Reconcile<Probe, ProbeContext, Repo, StaticApiProvider<Probe>> for ProbeReconciler {
    fn destruct(self) -> (Api<Probe>, Config, Arc<ProbeContext>) {
        (self.api, self.config, self.context)
    }

    // Fast retries, so the tests see them: 100 ms, doubling, at most 1 s.
    fn requeue_after_error_seconds() -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn error_backoff_base() -> Duration {
        Duration::from_millis(100)
    }
}

/// A client, a namespace of its own, and the Probe CRD installed.
pub struct Setup {
    pub client: Client,
    pub namespace: String,
    pub api: Api<Probe>,
}

pub async fn setup(prefix: &str) -> Setup {
    kuberator_test::init_tracing();
    // The real control plane, or the in-memory server with KUBERATOR_TEST_CLUSTER=in-memory.
    let cluster =
        kuberator_test::TestCluster::shared().await.expect("the cluster must start (tests never skip)");
    let client = cluster.client().await.unwrap();
    kuberator_test::install_crd::<Probe>(&client).await.unwrap();
    let namespace = kuberator_test::test_namespace(&client, prefix).await.unwrap();
    let api = Api::namespaced(client.clone(), &namespace);
    Setup { client, namespace, api }
}

impl Setup {
    /// An operator watching this test's namespace, with a Strict provider of it.
    pub fn operator(&self) -> (ProbeReconciler, Arc<Mutex<Journal>>) {
        self.operator_with(
            Api::namespaced(self.client.clone(), &self.namespace),
            Config::default(),
            &[&self.namespace],
        )
    }

    pub fn operator_with(
        &self,
        api: Api<Probe>,
        config: Config,
        listed: &[&str],
    ) -> (ProbeReconciler, Arc<Mutex<Journal>>) {
        let provider = StaticApiProvider::new(self.client.clone(), listed.to_vec(), CachingStrategy::Strict);
        let journal = Arc::new(Mutex::new(Journal::default()));
        let context = ProbeContext {
            repo: Arc::new(K8sRepository::new(provider)),
            events: EventRecorder::new(self.client.clone(), "probe-operator"),
            journal: Arc::clone(&journal),
        };
        (ProbeReconciler { context: Arc::new(context), api, config }, journal)
    }

    pub async fn create(&self, name: &str, spec: ProbeSpec) -> Probe {
        let probe = Probe {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        };
        self.api.create(&PostParams::default(), &probe).await.unwrap()
    }

    pub async fn cleanup(self) {
        kuberator_test::delete_namespace(&self.client, &self.namespace).await.unwrap();
    }
}

/// Waits until `name`'s status describes its current generation.
pub async fn wait_observed(api: &Api<Probe>, name: &str) -> Probe {
    kuberator_test::wait_for(
        api,
        name,
        Duration::from_secs(30),
        "status.observedGeneration to match",
        |probe| {
            probe.is_some_and(|p| {
                p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
            })
        },
    )
    .await
    .unwrap()
    .unwrap()
}

/// What both Probe operators do on cleanup: count the attempt, and fail as often as the
/// spec says.
pub fn cleanup(journal: &Mutex<Journal>, probe: &Probe) -> kuberator::Result<Action> {
    let name = probe.name_any();
    let attempt = {
        let mut journal = journal.lock().unwrap();
        let count = journal.cleanups.entry(name.clone()).or_default();
        *count += 1;
        *count
    };
    if attempt <= probe.spec.fail_cleanup_times {
        return Err(anyhow::anyhow!("cleanup attempt {attempt} of {name} failed on purpose").into());
    }
    Ok(Action::await_change())
}

/// `crd` with a spec the API server does not check: schema drift, as when a newer CRD version
/// is installed under an older operator, so that an object of the wrong shape gets stored.
pub fn accept_any_spec(
    crd: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    let schema = crd.spec.versions[0].schema.as_mut().unwrap().open_api_v3_schema.as_mut().unwrap();
    schema.properties.as_mut().unwrap().insert(
        "spec".into(),
        JSONSchemaProps {
            type_: Some("object".into()),
            x_kubernetes_preserve_unknown_fields: Some(true),
            ..JSONSchemaProps::default()
        },
    );
}
