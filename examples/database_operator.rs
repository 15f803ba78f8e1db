//! A database operator of two controllers in one process:
//!
//! - a `Database` owns a ConfigMap (its settings) and a Service (its endpoint), and names a
//!   credentials Secret it does not own (`references(Secret = spec.credentials_secret)`):
//!   its status follows the Secret's rotations, and it is not Ready while the Secret is
//!   missing;
//! - a `Backup` names a `Database` (`references(Database = spec.database)`) and completes
//!   once that database is Ready.
//!
//! `cargo run --example database_operator -- demo` shows a Backup waiting for its Database,
//! the Database waiting for its Secret, both completing when the Secret appears, and a
//! rotation of the Secret reaching the Database's status. Without `demo` it is the operator's
//! command line (`crd`, `rbac`, `manifests`, `run`) for both controllers.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::core::v1::ServiceSpec;
use kube::api::ObjectMeta;
use kuberator::prelude::*;

/// A database: its engine, and the Secret with its credentials.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "kuberator.dev", version = "v1", kind = "Database", namespaced, status = "DatabaseStatus")]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// `postgres`, `mysql`, ...
    pub engine: String,
    /// The Secret (in the database's namespace) with `username` and `password`.
    pub credentials_secret: String,
}

/// What the Database operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The generation the status describes.
    pub observed_generation: Option<i64>,
    /// Where clients connect.
    pub endpoint: Option<String>,
    /// The credentials in use: the Secret's resourceVersion, which changes with each rotation.
    pub credentials_revision: Option<String>,
    /// `Ready`, kept by the runtime.
    #[serde(default)]
    pub conditions: Conditions,
}

impl ObserveGeneration for DatabaseStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

/// A backup of a database, taken once that database is Ready.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "kuberator.dev", version = "v1", kind = "Backup", namespaced, status = "BackupStatus")]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The `Database` (in the backup's namespace) to back up.
    pub database: String,
}

/// What the Backup operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The generation the status describes.
    pub observed_generation: Option<i64>,
    /// `WaitingForDatabase` or `Completed`.
    pub phase: Option<String>,
    /// What the backup waits for, or what it backed up.
    pub message: Option<String>,
}

impl ObserveGeneration for BackupStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

/// Reconciles `Database`s: their settings and endpoint, from their credentials.
#[derive(Operator)]
#[kuberator(
    resource = Database,
    owns = [ConfigMap, Service],
    references(Secret = spec.credentials_secret),
    controller_name = "database-operator"
)]
pub struct DatabaseOperator;

impl DatabaseOperator {
    async fn handle_apply(&self, db: Arc<Database>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let Some(secret) = ctx.referenced::<Secret>(&db).await? else {
            // Not Ready; the Secret's creation reconciles the database again.
            let missing =
                format!("the credentials Secret `{}` does not exist yet", db.spec.credentials_secret);
            return Err(kuberator::Error::terminal(anyhow::anyhow!(missing)));
        };
        let revision = secret.resource_version().unwrap_or_default();
        let settings = BTreeMap::from([
            ("engine".to_owned(), db.spec.engine.clone()),
            ("credentials-revision".to_owned(), revision.clone()),
        ]);
        let config = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{}-settings", db.try_name()?)),
                ..ObjectMeta::default()
            },
            data: Some(settings),
            ..ConfigMap::default()
        };
        ctx.apply(&*db, config).await?;
        let service = Service {
            metadata: ObjectMeta { name: Some(db.try_name()?.to_owned()), ..ObjectMeta::default() },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort { port: 5432, ..ServicePort::default() }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        ctx.apply(&*db, service).await?;
        let endpoint = format!("{}.{}.svc:5432", db.try_name()?, db.namespace().unwrap_or_default());
        let status = DatabaseStatus {
            endpoint: Some(endpoint),
            credentials_revision: Some(revision),
            ..Default::default()
        };
        ctx.update_status(&db, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _db: Arc<Database>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        // The garbage collector deletes the ConfigMap and the Service; the Secret is not ours.
        Ok(Action::await_change())
    }
}

/// Reconciles `Backup`s: each completes once its database is Ready.
#[derive(Operator)]
#[kuberator(resource = Backup, references(Database = spec.database), controller_name = "backup-operator")]
pub struct BackupOperator;

impl BackupOperator {
    async fn handle_apply(&self, backup: Arc<Backup>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let database = ctx.referenced::<Database>(&backup).await?;
        let status = match database.filter(|db| kuberator_examples::is_ready(&**db)) {
            // The database's changes reconcile the backup again: no polling.
            None => BackupStatus {
                phase: Some("WaitingForDatabase".to_owned()),
                message: Some(format!("database `{}` is not Ready yet", backup.spec.database)),
                ..Default::default()
            },
            Some(db) => BackupStatus {
                phase: Some("Completed".to_owned()),
                message: Some(format!(
                    "backed up {} at {}",
                    db.name_any(),
                    db.status.as_ref().and_then(|status| status.endpoint.clone()).unwrap_or_default()
                )),
                ..Default::default()
            },
        };
        ctx.update_status(&backup, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, _backup: Arc<Backup>, _ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        Ok(Action::await_change())
    }
}

/// Both controllers, as one process.
pub fn operators() -> kuberator::Operators {
    kuberator::Operators::new().with(DatabaseOperator).with(BackupOperator)
}

fn phase(backup: Option<&Backup>) -> Option<String> {
    backup?.status.as_ref()?.phase.clone()
}

/// The demo, with the operators already running in `namespace`.
///
/// # Errors
///
/// When a step fails or times out, naming it.
#[allow(clippy::print_stdout)]
pub async fn demo(client: kube::Client, namespace: &str) -> anyhow::Result<()> {
    use std::time::Duration;

    use kube::api::DeleteParams;
    use kube::api::PostParams;
    use kuberator_test::wait_for;

    let minute = Duration::from_secs(60);
    let databases: Api<Database> = Api::namespaced(client.clone(), namespace);
    let backups: Api<Backup> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (kind, gone) in [
        ("backup", backups.delete("nightly", &DeleteParams::default()).await.is_ok()),
        ("database", databases.delete("orders", &DeleteParams::default()).await.is_ok()),
        ("secret", secrets.delete("orders-credentials", &DeleteParams::default()).await.is_ok()),
    ] {
        if gone {
            println!("removed a leftover {kind} of an earlier run");
        }
    }
    wait_for(&databases, "orders", minute, "the leftover database to go", |db| db.is_none()).await?;
    wait_for(&backups, "nightly", minute, "the leftover backup to go", |backup| backup.is_none()).await?;

    let backup = Backup::new("nightly", BackupSpec { database: "orders".to_owned() });
    backups.create(&PostParams::default(), &backup).await?;
    wait_for(&backups, "nightly", minute, "the backup to wait", |backup| {
        phase(backup).as_deref() == Some("WaitingForDatabase")
    })
    .await?;
    println!("backup nightly waits: database orders does not exist");

    let spec =
        DatabaseSpec { engine: "postgres".to_owned(), credentials_secret: "orders-credentials".to_owned() };
    databases.create(&PostParams::default(), &Database::new("orders", spec)).await?;
    let waiting = wait_for(&databases, "orders", minute, "the database to report its missing Secret", |db| {
        db.and_then(|db| db.status.as_ref()?.conditions.get("Ready").cloned())
            .is_some_and(|ready| !ready.is_true())
    })
    .await?
    .expect("it exists");
    let ready = waiting.status.as_ref().and_then(|status| status.conditions.get("Ready").cloned());
    println!("database orders is not Ready: {}", ready.map(|ready| ready.message).unwrap_or_default());

    let secret = |password: &str| Secret {
        metadata: ObjectMeta { name: Some("orders-credentials".to_owned()), ..ObjectMeta::default() },
        string_data: Some(BTreeMap::from([
            ("username".to_owned(), "orders".to_owned()),
            ("password".to_owned(), password.to_owned()),
        ])),
        ..Secret::default()
    };
    let created = secrets.create(&PostParams::default(), &secret("first")).await?;
    let revision = created.resource_version();
    let db = wait_for(&databases, "orders", minute, "the database to be Ready with its Secret", |db| {
        db.is_some_and(|db| {
            kuberator_examples::is_ready(db)
                && db.status.as_ref().and_then(|status| status.credentials_revision.clone()) == revision
        })
    })
    .await?
    .expect("it exists");
    let endpoint = db.status.as_ref().and_then(|status| status.endpoint.clone()).unwrap_or_default();
    println!("secret orders-credentials created: database orders is Ready at {endpoint}");
    wait_for(&backups, "nightly", minute, "the backup to complete", |backup| {
        phase(backup).as_deref() == Some("Completed")
    })
    .await?;
    println!("backup nightly completed once its database was Ready");

    let rotated = secrets.replace("orders-credentials", &PostParams::default(), &secret("second")).await?;
    let revision = rotated.resource_version();
    wait_for(&databases, "orders", minute, "the rotation to reach the database", |db| {
        db.and_then(|db| db.status.as_ref()?.credentials_revision.clone()) == revision
    })
    .await?;
    println!(
        "secret rotated: database orders now uses credentials revision {}",
        revision.unwrap_or_default()
    );

    backups.delete("nightly", &DeleteParams::default()).await?;
    databases.delete("orders", &DeleteParams::default()).await?;
    secrets.delete("orders-credentials", &DeleteParams::default()).await?;
    wait_for(&databases, "orders", minute, "the database to go", |db| db.is_none()).await?;
    wait_for(&backups, "nightly", minute, "the backup to go", |backup| backup.is_none()).await?;
    println!("backup, database and secret deleted");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() != Some("demo") {
        return operators().run(kuberator::program!()).await;
    }
    kuberator_test::init_tracing();
    let (client, _local_cluster) = kuberator_examples::client().await?;
    kuberator_test::install_crd::<Database>(&client).await?;
    kuberator_test::install_crd::<Backup>(&client).await?;
    let operator = kuberator_test::Background::spawn({
        let client = client.clone();
        move |shutdown| operators().start(client, Some(shutdown))
    });
    let outcome = demo(client, "default").await;
    operator.stop(std::time::Duration::from_secs(30)).await;
    outcome
}
