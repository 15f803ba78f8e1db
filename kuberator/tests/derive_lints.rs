//! The code `#[derive(Operator)]` generates is clean under `deny(warnings)` and clippy's
//! default and pedantic lints (run by `cargo clippy --all-targets`), so it never adds a
//! warning to a user's build.
#![deny(warnings, clippy::all, clippy::pedantic)]
#![allow(missing_docs, clippy::unused_async)]

use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Lint", namespaced)]
pub struct LintSpec {
    pub value: u32,
    pub secret: Option<String>,
}

/// Every option set.
#[derive(Operator)]
#[kuberator(
    resource = Lint,
    finalizer = "lints.example.com/finalizer",
    caching = Adhoc,
    namespaces = ["default", "production"],
    concurrency = 0,
    requeue_after_error_seconds = 5,
    labels = "app=lint",
    controller_name = "lint-operator",
    references(
        k8s_openapi::api::core::v1::Secret = spec.secret,
        k8s_openapi::api::core::v1::ConfigMap = |lint: &Lint| vec![format!("lint-{}", lint.spec.value)],
    ),
)]
pub struct FullOperator {
    pub greeting: String,
}

impl FullOperator {
    async fn handle_apply(&self, _lint: Arc<Lint>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _lint: Arc<Lint>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

/// Every default.
#[derive(Operator)]
#[kuberator(resource = Lint)]
pub struct MinimalOperator;

impl MinimalOperator {
    async fn handle_apply(&self, _lint: Arc<Lint>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _lint: Arc<Lint>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

#[test]
fn the_derive_says_what_the_attribute_says_and_the_runtime_fills_in_the_defaults() {
    use kuberator::operator::Operator as _;
    assert_eq!(MinimalOperator::config(), kuberator::operator::OperatorConfig::default());
    let settings = MinimalOperator::settings();
    assert_eq!(settings.finalizer, "lints.example.com/finalizer");
    assert_eq!(settings.controller_name, "lint-operator");
    assert_eq!(settings.caching, CachingStrategy::Extendable);
    assert_eq!(settings.concurrency, Some(1));
    assert_eq!(settings.requeue_after_error, std::time::Duration::from_mins(1));
    assert_eq!(settings.error_backoff_base, std::time::Duration::from_secs(1));
    assert!(settings.namespaces.is_empty());

    let settings = FullOperator::settings();
    assert_eq!(settings.namespaces, ["default", "production"]);
    assert_eq!(settings.caching, CachingStrategy::Adhoc);
    assert_eq!(settings.concurrency, None);
    assert_eq!(settings.requeue_after_error, std::time::Duration::from_secs(5));
    assert_eq!(settings.labels, Some("app=lint"));
    let _ = FullOperator { greeting: String::new() }.greeting;
}

/// A repository of the user's own, named in the attribute.
pub struct AuditedRepository {
    provider: StaticApiProvider<Lint>,
}

impl From<StaticApiProvider<Lint>> for AuditedRepository {
    fn from(provider: StaticApiProvider<Lint>) -> Self {
        Self { provider }
    }
}

impl Finalize<Lint, StaticApiProvider<Lint>> for AuditedRepository {
    fn api_provider(&self) -> &StaticApiProvider<Lint> {
        &self.provider
    }
}

/// With a custom repository.
#[derive(Operator)]
#[kuberator(resource = Lint, namespaces = ["default"], repository = AuditedRepository)]
pub struct CustomRepositoryOperator;

impl CustomRepositoryOperator {
    async fn handle_apply(&self, _lint: Arc<Lint>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let _: &AuditedRepository = ctx.repository();
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _lint: Arc<Lint>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}
