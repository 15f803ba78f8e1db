//! Handlers of a derived operator may return any error: `anyhow::Result`, `Result<Action, E>`
//! for a `std::error::Error`, or `kuberator::Result`; `?` works on all of them, and the
//! runtime sees the error as a Kuberator error, terminal errors included.

use kuberator::prelude::*;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Task", namespaced)]
/// A task that counts.
pub struct TaskSpec {
    /// How many, as text.
    pub count: String,
}

#[derive(Operator)]
#[kuberator(resource = Task, namespaces = ["default"])]
struct TaskOperator;

impl TaskOperator {
    async fn handle_apply(&self, task: Arc<Task>, _ctx: &Ctx<Self>) -> anyhow::Result<Action> {
        let count: u32 = task.spec.count.parse()?;
        if count > 10 {
            return Err(kuberator::Error::terminal(anyhow::anyhow!("count {count} is over 10")).into());
        }
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, task: Arc<Task>, _ctx: &Ctx<Self>) -> Result<Action, std::io::Error> {
        std::fs::read_to_string(format!("/nonexistent/kuberator/{}", task.spec.count))?;
        Ok(Action::await_change())
    }
}

fn task(count: &str) -> Arc<Task> {
    let mut task = Task::new("demo", TaskSpec { count: count.into() });
    task.metadata.namespace = Some("default".into());
    Arc::new(task)
}

#[tokio::test]
async fn handler_errors_of_any_type_become_kuberator_errors() {
    // No request is made: the handlers are called directly.
    let config = kube::Config::new("https://127.0.0.1:9".parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let (_, _, ctx) = TaskOperator.into_reconciler(client).destruct();

    ctx.handle_apply(task("3")).await.unwrap();
    let error = ctx.handle_apply(task("three")).await.unwrap_err();
    assert!(matches!(error, kuberator::Error::Anyhow(_)), "{error:?}");
    assert_eq!(error.report(), "invalid digit found in string");
    assert!(!error.is_terminal());

    let error = ctx.handle_apply(task("11")).await.unwrap_err();
    assert!(error.is_terminal(), "a terminal error survives the trip through anyhow: {error:?}");
    assert_eq!(error.report(), "count 11 is over 10");

    let error = ctx.handle_cleanup(task("3")).await.unwrap_err();
    assert!(error.report().starts_with("No such file or directory"), "{}", error.report());
}
