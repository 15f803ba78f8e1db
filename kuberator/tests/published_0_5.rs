//! Code written against the published `kuberator` 0.5.0 (the seed's later revision) compiles
//! here unchanged: operators in the shape of its three examples (`basic_operator`,
//! `with_status`, `error_handling`), written from its public API. They are compiled, and the
//! parts that need no cluster run.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::Client;
use kube::CustomResource;
use kube::runtime::controller::Action;
use kube::runtime::watcher::Config;
use kuberator::AsStatusError;
use kuberator::Context;
use kuberator::Finalize;
use kuberator::ObserveGeneration;
use kuberator::Reconcile;
use kuberator::TryResource;
use kuberator::WithStatusError;
use kuberator::cache::CachingStrategy;
use kuberator::cache::StaticApiProvider;
use kuberator::error::Result as KubeResult;
use kuberator::k8s::K8sRepository;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::Serialize;

/// `basic_operator`: a ConfigMap operator whose handlers read the name and namespace with
/// `try_name()?` and `try_namespace()?`.
mod basic {
    use super::*;

    pub(crate) type Repo = K8sRepository<ConfigMap, StaticApiProvider<ConfigMap>>;

    pub(crate) struct Logic {
        pub(crate) repo: Arc<Repo>,
    }

    #[async_trait]
    impl Context<ConfigMap, Repo, StaticApiProvider<ConfigMap>> for Logic {
        fn k8s_repository(&self) -> Arc<Repo> {
            Arc::clone(&self.repo)
        }

        fn finalizer(&self) -> &'static str {
            "configmaps.example.io/basic"
        }

        async fn handle_apply(&self, object: Arc<ConfigMap>) -> KubeResult<Action> {
            let name = object.try_name()?;
            let namespace = object.try_namespace()?;
            tracing::info!("applying {namespace}/{name}");
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, object: Arc<ConfigMap>) -> KubeResult<Action> {
            let (_, _) = (object.try_name()?, object.try_namespace()?);
            Ok(Action::await_change())
        }
    }

    pub(crate) struct Reconciler {
        pub(crate) context: Arc<Logic>,
        pub(crate) api: Api<ConfigMap>,
    }

    #[async_trait]
    impl Reconcile<ConfigMap, Logic, Repo, StaticApiProvider<ConfigMap>> for Reconciler {
        fn destruct(self) -> (Api<ConfigMap>, Config, Arc<Logic>) {
            (self.api, Config::default(), self.context)
        }
    }

    #[allow(dead_code)]
    pub(crate) async fn main(client: Client) {
        let provider = StaticApiProvider::new(client.clone(), vec!["default"], CachingStrategy::Strict);
        let context = Logic { repo: Arc::new(K8sRepository::new(provider)) };
        let reconciler = Reconciler { context: Arc::new(context), api: Api::namespaced(client, "default") };
        reconciler.start_concurrent(Some(2), Some(async {})).await;
    }
}

/// `with_status` and `error_handling`: a custom resource with a status that observes the
/// generation and carries an error of the operator's own, converted into
/// `kuberator::error::Error::Anyhow`.
mod with_status {
    #![allow(dead_code, reason = "compiled to show that it compiles")]

    use super::*;

    #[derive(CustomResource, Serialize, Deserialize, Debug, Clone, JsonSchema)]
    #[kube(group = "example.io", version = "v1", kind = "MyApp", namespaced, status = "MyAppStatus")]
    pub(crate) struct MyAppSpec {
        pub replicas: i32,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, Default, JsonSchema)]
    pub(crate) struct MyAppStatus {
        pub phase: String,
        pub observed_generation: Option<i64>,
        pub error: Option<MyStatusError>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, JsonSchema)]
    pub(crate) struct MyStatusError {
        pub message: String,
    }

    #[derive(Debug, thiserror::Error)]
    pub enum MyAppError {
        #[error("too many replicas: {0}")]
        TooMany(i32),
    }

    impl From<MyAppError> for kuberator::error::Error {
        fn from(error: MyAppError) -> kuberator::error::Error {
            kuberator::error::Error::Anyhow(anyhow::anyhow!(error))
        }
    }

    impl AsStatusError<MyStatusError> for MyAppError {
        fn as_status_error(&self) -> MyStatusError {
            MyStatusError { message: self.to_string() }
        }
    }

    impl ObserveGeneration for MyAppStatus {
        fn add(&mut self, observed_generation: i64) {
            self.observed_generation = Some(observed_generation);
        }
    }

    impl WithStatusError<MyAppError, MyStatusError> for MyAppStatus {
        fn add(&mut self, error: MyStatusError) {
            self.error = Some(error);
        }
    }

    pub(crate) type Repo = K8sRepository<MyApp, StaticApiProvider<MyApp>>;

    pub(crate) struct Logic {
        pub(crate) repo: Arc<Repo>,
    }

    #[async_trait]
    impl Context<MyApp, Repo, StaticApiProvider<MyApp>> for Logic {
        fn k8s_repository(&self) -> Arc<Repo> {
            Arc::clone(&self.repo)
        }

        fn finalizer(&self) -> &'static str {
            "myapps.example.io/finalizer"
        }

        async fn handle_apply(&self, object: Arc<MyApp>) -> KubeResult<Action> {
            let _ = (object.try_name()?, object.try_namespace()?);
            if object.spec.replicas > 10 {
                let error = MyAppError::TooMany(object.spec.replicas);
                let status = MyAppStatus { phase: "Failed".into(), ..Default::default() };
                self.repo.update_status_with_error(&object, status, Some(&error)).await?;
                return Err(error.into());
            }
            let status = MyAppStatus { phase: "Running".into(), ..Default::default() };
            self.repo.update_status(&object, status).await?;
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, _object: Arc<MyApp>) -> KubeResult<Action> {
            Ok(Action::await_change())
        }
    }
}

#[test]
fn try_resource_reads_what_code_for_0_5_reads() {
    let mut map = ConfigMap::default();
    map.metadata.name = Some("settings".into());
    assert_eq!(map.try_name().unwrap(), "settings");
    let error = map.try_namespace().unwrap_err();
    assert_eq!(
        error.to_string(),
        "ConfigMap settings has no metadata.namespace, but ConfigMap is namespaced"
    );
    map.metadata.namespace = Some("team-a".into());
    assert_eq!(map.try_namespace().unwrap(), "team-a");

    let app = with_status::MyApp::new("demo", with_status::MyAppSpec { replicas: 1 });
    assert_eq!(app.try_name().unwrap(), "demo");
    assert!(app.try_namespace().is_err());

    let error: kuberator::error::Error = with_status::MyAppError::TooMany(11).into();
    assert_eq!(error.report(), "too many replicas: 11");
}
