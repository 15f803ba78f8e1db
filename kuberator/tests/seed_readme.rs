//! The examples of the seed README (the user's own README, which fixes Kuberator's API),
//! compiled as written.
//!
//! Three places of the seed do not compile as written, and are changed here, each marked
//! `SEED FIX`:
//!
//! 1. `reconciler.start(None)` is error E0283: the type of the shutdown future that is
//!    never given cannot be inferred. The seed authors' own examples write
//!    `start::<futures::future::Ready<()>>(None)`; Kuberator also offers
//!    `start(None::<NoShutdown>)` and `run()`. `tests/ui/start_none.rs` keeps the error.
//! 2. The graceful-shutdown snippet uses `futures::select!` on Tokio's signal futures, which
//!    are neither fused nor `Unpin`; `tokio::select!` works.
//! 3. One `WithStatusError` impl is written for `AtlasClusterStatus`, a type the snippet
//!    never defines; it means `MyStatus`.
#![allow(dead_code, missing_docs, clippy::print_stdout, unreachable_pub)]

/// "Usage", with Option 1: the generic `K8sRepository`.
mod usage_with_k8s_repository {
    use std::sync::Arc;

    use async_trait::async_trait;
    use kube::Api;
    use kube::Client;
    use kube::CustomResource;
    use kube::runtime::controller::Action;
    use kube::runtime::watcher::Config;
    use kuberator::Context;
    use kuberator::Finalize;
    use kuberator::Reconcile;
    use kuberator::cache::CachingStrategy;
    use kuberator::cache::StaticApiProvider;
    use kuberator::error::Result as KubeResult;
    use kuberator::k8s::K8sRepository;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde::Serialize;

    // First, we need to define a custom resource that the operator will manage.
    #[derive(CustomResource, Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
    #[kube(
        group = "commercetools.com",
        version = "v1",
        kind = "MyCrd",
        plural = "mycrds",
        shortname = "mc",
        derive = "PartialEq",
        namespaced
    )]
    pub struct MySpec {
        pub my_property: String,
    }

    // Option 1: Use the generic K8sRepository (recommended for simple cases)
    type MyK8sRepo = K8sRepository<MyCrd, StaticApiProvider<MyCrd>>;

    struct MyContext {
        repo: Arc<MyK8sRepo>,
    }

    #[async_trait]
    impl Context<MyCrd, MyK8sRepo, StaticApiProvider<MyCrd>> for MyContext {
        fn k8s_repository(&self) -> Arc<MyK8sRepo> {
            Arc::clone(&self.repo)
        }

        fn finalizer(&self) -> &'static str {
            "mycrds.commercetools.com/finalizers"
        }

        async fn handle_apply(&self, object: Arc<MyCrd>) -> KubeResult<Action> {
            // do whatever you want with your custom resource object
            println!("My property is: {}", object.spec.my_property);
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, object: Arc<MyCrd>) -> KubeResult<Action> {
            // do whatever you want with your custom resource object
            println!("My property is: {}", object.spec.my_property);
            Ok(Action::await_change())
        }
    }

    struct MyReconciler {
        context: Arc<MyContext>,
        crd_api: Api<MyCrd>,
    }

    #[async_trait]
    impl Reconcile<MyCrd, MyContext, MyK8sRepo, StaticApiProvider<MyCrd>> for MyReconciler {
        fn destruct(self) -> (Api<MyCrd>, Config, Arc<MyContext>) {
            (self.crd_api, Config::default(), self.context)
        }
    }

    #[tokio::main]
    async fn main() -> anyhow::Result<()> {
        let client = Client::try_default().await?;

        // Using the generic K8sRepository:
        let api_provider = StaticApiProvider::new(client.clone(), vec!["default"], CachingStrategy::Strict);
        let k8s_repo = K8sRepository::new(api_provider);

        let context = MyContext { repo: Arc::new(k8s_repo) };

        let reconciler =
            MyReconciler { context: Arc::new(context), crd_api: Api::namespaced(client, "default") };

        // Start the reconciler, which will handle the reconciliation loop synchronously.
        // SEED FIX 1: the seed writes `reconciler.start(None).await;`, which is E0283.
        reconciler.start::<futures::future::Ready<()>>(None).await;

        // If you want to run the reconciler asynchronously, you can use the `start_concurrent` method.
        // reconciler.start_concurrent(Some(10), None).await;

        Ok(())
    }

    /// The same main with the concurrent start, and the forms that need no turbofish.
    async fn other_starts(reconciler: MyReconciler, other: MyReconciler, third: MyReconciler) {
        reconciler.start_concurrent::<futures::future::Ready<()>>(Some(10), None).await;
        other.start(None::<kuberator::NoShutdown>).await;
        third.run().await;
    }

    /// `Finalize` is implemented by the alias, so `update_status` is one call away.
    fn repository_is_finalize(repo: &MyK8sRepo) -> &StaticApiProvider<MyCrd> {
        repo.api_provider()
    }
}

/// "Usage", with Option 2: a custom repository.
mod usage_with_custom_repository {
    use std::sync::Arc;

    use async_trait::async_trait;
    use kube::Api;
    use kube::Client;
    use kube::CustomResource;
    use kube::runtime::controller::Action;
    use kube::runtime::watcher::Config;
    use kuberator::Context;
    use kuberator::Finalize;
    use kuberator::Reconcile;
    use kuberator::cache::CachingStrategy;
    use kuberator::cache::StaticApiProvider;
    use kuberator::error::Result as KubeResult;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde::Serialize;

    #[derive(CustomResource, Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
    #[kube(
        group = "commercetools.com",
        version = "v1",
        kind = "MyCrd",
        plural = "mycrds",
        shortname = "mc",
        derive = "PartialEq",
        namespaced
    )]
    pub struct MySpec {
        pub my_property: String,
    }

    // Option 2: Create a custom repository (if you need custom state or methods)
    struct MyK8sRepo {
        api_provider: StaticApiProvider<MyCrd>,
    }

    impl Finalize<MyCrd, StaticApiProvider<MyCrd>> for MyK8sRepo {
        fn api_provider(&self) -> &StaticApiProvider<MyCrd> {
            &self.api_provider
        }
    }

    struct MyContext {
        repo: Arc<MyK8sRepo>,
    }

    #[async_trait]
    impl Context<MyCrd, MyK8sRepo, StaticApiProvider<MyCrd>> for MyContext {
        fn k8s_repository(&self) -> Arc<MyK8sRepo> {
            Arc::clone(&self.repo)
        }

        fn finalizer(&self) -> &'static str {
            "mycrds.commercetools.com/finalizers"
        }

        async fn handle_apply(&self, object: Arc<MyCrd>) -> KubeResult<Action> {
            println!("My property is: {}", object.spec.my_property);
            Ok(Action::await_change())
        }

        async fn handle_cleanup(&self, object: Arc<MyCrd>) -> KubeResult<Action> {
            println!("My property is: {}", object.spec.my_property);
            Ok(Action::await_change())
        }
    }

    struct MyReconciler {
        context: Arc<MyContext>,
        crd_api: Api<MyCrd>,
    }

    #[async_trait]
    impl Reconcile<MyCrd, MyContext, MyK8sRepo, StaticApiProvider<MyCrd>> for MyReconciler {
        fn destruct(self) -> (Api<MyCrd>, Config, Arc<MyContext>) {
            (self.crd_api, Config::default(), self.context)
        }
    }

    #[tokio::main]
    async fn main() -> anyhow::Result<()> {
        let client = Client::try_default().await?;

        // Or if using custom repository:
        let k8s_repo = MyK8sRepo {
            api_provider: StaticApiProvider::new(client.clone(), vec!["default"], CachingStrategy::Strict),
        };

        let context = MyContext { repo: Arc::new(k8s_repo) };

        let reconciler =
            MyReconciler { context: Arc::new(context), crd_api: Api::namespaced(client, "default") };

        // SEED FIX 1, as above.
        reconciler.start::<futures::future::Ready<()>>(None).await;

        Ok(())
    }
}

/// "Caching Strategies": the three one-liners.
mod caching_strategies {
    use kube::Client;
    use kuberator::cache::CachingStrategy;
    use kuberator::cache::StaticApiProvider;

    use super::usage_with_k8s_repository::MyCrd;

    fn strict(client: Client) -> StaticApiProvider<MyCrd> {
        StaticApiProvider::new(client, vec!["default", "production"], CachingStrategy::Strict)
    }

    fn adhoc(client: Client) -> StaticApiProvider<MyCrd> {
        // Pre-cache common namespaces, allow others dynamically
        StaticApiProvider::new(client, vec!["default", "production"], CachingStrategy::Adhoc)
    }

    fn extendable(client: Client) -> StaticApiProvider<MyCrd> {
        StaticApiProvider::new(client, vec!["default"], CachingStrategy::Extendable)
    }
}

/// "Graceful Shutdown".
mod graceful_shutdown {
    use kuberator::Reconcile;
    use tokio::signal;

    async fn start_with_signal(reconciler: super::usage_with_k8s_repository_reconciler::Reconciler) {
        let shutdown_signal = async {
            let interrupt = signal::ctrl_c();
            let mut terminate = signal::unix::signal(signal::unix::SignalKind::terminate())
                .expect("Failed to install SIGTERM handler");

            // SEED FIX 2: the seed uses `futures::select!`, which needs fused, `Unpin` futures.
            tokio::select! {
                _ = interrupt => tracing::info!("Received SIGINT, shutting down"),
                _ = terminate.recv() => tracing::info!("Received SIGTERM, shutting down"),
            }
        };

        reconciler.start(Some(shutdown_signal)).await;
    }
}

/// A reconciler type the graceful-shutdown snippet can start.
mod usage_with_k8s_repository_reconciler {
    use std::sync::Arc;

    use async_trait::async_trait;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use kube::runtime::controller::Action;
    use kube::runtime::watcher::Config;
    use kuberator::Context;
    use kuberator::Reconcile;
    use kuberator::cache::StaticApiProvider;
    use kuberator::k8s::K8sRepository;

    type Repo = K8sRepository<ConfigMap, StaticApiProvider<ConfigMap>>;

    pub struct Ctx(Arc<Repo>);

    #[async_trait]
    impl Context<ConfigMap, Repo, StaticApiProvider<ConfigMap>> for Ctx {
        fn k8s_repository(&self) -> Arc<Repo> {
            Arc::clone(&self.0)
        }
        fn finalizer(&self) -> &'static str {
            "configmaps.example.com/finalizer"
        }
        async fn handle_apply(&self, _: Arc<ConfigMap>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
        async fn handle_cleanup(&self, _: Arc<ConfigMap>) -> kuberator::Result<Action> {
            Ok(Action::await_change())
        }
    }

    pub struct Reconciler(Api<ConfigMap>, Arc<Ctx>);

    impl Reconcile<ConfigMap, Ctx, Repo, StaticApiProvider<ConfigMap>> for Reconciler {
        fn destruct(self) -> (Api<ConfigMap>, Config, Arc<Ctx>) {
            (self.0, Config::default(), self.1)
        }
    }
}

/// "Error Handling": the user's `error.rs`.
mod error_handling {
    use std::fmt::Debug;

    use kuberator::error::Error as KubeError;
    use thiserror::Error as ThisError;

    pub type Result<T> = std::result::Result<T, Error>;

    #[derive(ThisError, Debug)]
    pub enum Error {
        #[error("Kube error: {0}")]
        Kube(#[from] kube::Error),
    }

    impl From<Error> for KubeError {
        fn from(error: Error) -> KubeError {
            KubeError::Anyhow(anyhow::anyhow!(error))
        }
    }

    #[test]
    fn a_user_error_converts_with_question_mark() {
        fn user_code() -> Result<()> {
            Err(kube::Error::Api(kube::core::Status::failure("no", "Forbidden").with_code(403).boxed()))?;
            Ok(())
        }
        fn handler() -> kuberator::error::Result<()> {
            user_code()?;
            Ok(())
        }
        let error = handler().unwrap_err();
        assert!(matches!(error, KubeError::Anyhow(_)));
        assert!(error.to_string().starts_with("Kube error: ApiError: no"), "{error}");
    }
}

/// "Status Object Handling": the user's `status.rs`.
mod status_handling {
    use kuberator::ObserveGeneration;

    pub struct MyStatus {
        pub status: State,
        pub observed_generation: Option<i64>,
    }

    pub enum State {
        Created,
        Updated,
        Deleted,
    }

    impl ObserveGeneration for MyStatus {
        fn add(&mut self, observed_generation: i64) {
            self.observed_generation = Some(observed_generation);
        }
    }
}

/// "Status Object Error handling".
mod status_error_handling {
    use kuberator::AsStatusError;
    use kuberator::WithStatusError;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde::Serialize;

    // You have a custom error type
    enum MyError {
        NotFound,
        InvalidInput,
    }

    // Additionally, you have you status object with a specific status error
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
    struct MyStatus {
        pub status: String,
        pub observed_generation: Option<i64>,
        pub error: Option<MyStatusError>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, JsonSchema)]
    pub struct MyStatusError {
        pub message: String,
    }

    // Implement the `AsStatusError` trait for your custom error type
    impl AsStatusError<MyStatusError> for MyError {
        fn as_status_error(&self) -> MyStatusError {
            match self {
                MyError::NotFound => MyStatusError { message: "Resource not found".to_string() },
                MyError::InvalidInput => MyStatusError { message: "Invalid input provided".to_string() },
            }
        }
    }

    // And implement the `WithStatusError` trait that links your error and status error
    // SEED FIX 3: the seed writes `for AtlasClusterStatus`, a type it never defines.
    impl WithStatusError<MyError, MyStatusError> for MyStatus {
        fn add(&mut self, error: MyStatusError) {
            self.error = Some(error);
        }
    }

    #[test]
    fn the_status_error_lands_in_the_status() {
        let mut status = MyStatus { status: "Failed".into(), observed_generation: None, error: None };
        status.add(MyError::InvalidInput.as_status_error());
        assert_eq!(status.error, Some(MyStatusError { message: "Invalid input provided".into() }));
        let _ = MyError::NotFound;
    }
}
