//! A derived operator that kuberator-test's own tests run as several processes (leader
//! election, signals): each object's status says which replica reconciled it, by the
//! replica's `KUBERATOR_IDENTITY`. `baton-operator crd` prints its CRD.
//!
//! With `BATON_RELAY` set, the process runs a second controller beside it (`relay-operator`:
//! each `Relay` gets a child ConfigMap `<name>-relay`), as one process of two controllers
//! ([`kuberator::Operators`]): one Lease, one metrics server, merged RBAC.
//!
//! With `BATON_JOURNAL` set to a file, each replica appends a line there when a handler
//! starts and ends: `<unix ms> <identity> <apply-start|apply-end|cleanup> <ns>/<name>
//! <generation>`, so that a test can audit, across processes and kills, who reconciled
//! what and when.
use std::io::Write as _;

use kuberator::prelude::*;

/// An object that records who reconciled it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "test.kuberator.dev", version = "v1", kind = "Baton", namespaced, status = "BatonStatus")]
#[serde(rename_all = "camelCase")]
struct BatonSpec {
    note: String,
    /// `handle_apply` sleeps this long first: a slow or hung handler.
    #[serde(default)]
    apply_seconds: u64,
}

/// Which replica reconciled the object last.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct BatonStatus {
    reconciled_by: Option<String>,
    observed_generation: Option<i64>,
}

impl ObserveGeneration for BatonStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator)]
#[kuberator(resource = Baton, finalizer = "batons.test.kuberator.dev/finalizer")]
struct BatonOperator;

impl BatonOperator {
    async fn handle_apply(&self, baton: Arc<Baton>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        journal("apply-start", &baton);
        tokio::time::sleep(std::time::Duration::from_secs(baton.spec.apply_seconds)).await;
        ctx.update_status(&baton, BatonStatus { reconciled_by: Some(identity()), ..Default::default() })
            .await?;
        journal("apply-end", &baton);
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, baton: Arc<Baton>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        journal("cleanup", &baton);
        Ok(Action::await_change())
    }
}

fn identity() -> String {
    std::env::var("KUBERATOR_IDENTITY").unwrap_or_else(|_| "unnamed".to_owned())
}

/// Appends one line to `BATON_JOURNAL`, if set; one `write` of a short line to a file opened
/// for appending, so lines of several processes do not interleave.
fn journal(what: &str, baton: &Baton) {
    let Some(path) = std::env::var_os("BATON_JOURNAL") else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let line = format!(
        "{} {} {what} {}/{} {}\n",
        now.as_millis(),
        identity(),
        baton.namespace().unwrap_or_default(),
        baton.name_any(),
        baton.metadata.generation.unwrap_or_default()
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        tracing::error!(path = %path.display(), %error, "could not write the journal");
    }
}

/// An object whose controller gives it a child, in a process of two controllers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "test.kuberator.dev", version = "v1", kind = "Relay", namespaced, status = "RelayStatus")]
struct RelaySpec {
    note: String,
}

/// Which replica relayed the object last.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct RelayStatus {
    relayed_by: Option<String>,
    observed_generation: Option<i64>,
}

impl ObserveGeneration for RelayStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

#[derive(Operator)]
#[kuberator(
    resource = Relay,
    finalizer = "relays.test.kuberator.dev/finalizer",
    owns = [k8s_openapi::api::core::v1::ConfigMap],
    controller_name = "relay-operator"
)]
struct RelayOperator;

impl RelayOperator {
    async fn handle_apply(&self, relay: Arc<Relay>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let child = k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{}-relay", relay.try_name()?)),
                ..Default::default()
            },
            data: Some([("note".to_owned(), relay.spec.note.clone())].into()),
            ..Default::default()
        };
        ctx.apply(&*relay, child).await?;
        ctx.update_status(&relay, RelayStatus { relayed_by: Some(identity()), ..Default::default() }).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _relay: Arc<Relay>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("BATON_RELAY").is_some() {
        return kuberator::Operators::new()
            .with(BatonOperator)
            .with(RelayOperator)
            .run(kuberator::program!())
            .await;
    }
    BatonOperator.run().await
}
