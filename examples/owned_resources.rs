//! A `StaticSite` owns a ConfigMap with its page, a Deployment that serves it and, when
//! exposed, a Service; it reports `Ready` and `Available` conditions and prunes the Service
//! when the spec drops it. `cargo run --example owned_resources -- demo` shows it, including a
//! child deleted by hand coming back.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::ConfigMapVolumeSource;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::api::core::v1::Volume;
use k8s_openapi::api::core::v1::VolumeMount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use kuberator::prelude::*;

/// A web site of one page.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(group = "kuberator.dev", version = "v1", kind = "StaticSite", namespaced, status = "StaticSiteStatus")]
#[kube(shortname = "site")]
#[serde(rename_all = "camelCase")]
pub struct StaticSiteSpec {
    /// The page, served as `index.html`.
    pub content: String,
    /// How many web servers serve it.
    #[serde(default = "one")]
    pub replicas: i32,
    /// Whether a Service exposes it.
    #[serde(default)]
    pub expose: bool,
}

fn one() -> i32 {
    1
}

/// What the operator reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticSiteStatus {
    /// The generation the status describes.
    pub observed_generation: Option<i64>,
    /// `Ready` (kept by the runtime) and `Available` (set below).
    #[serde(default)]
    pub conditions: Conditions,
}

impl ObserveGeneration for StaticSiteStatus {
    fn add(&mut self, generation: i64) {
        self.observed_generation = Some(generation);
    }
}

/// The operator: its children are ConfigMaps, Deployments and Services.
#[derive(Operator)]
#[kuberator(
    resource = StaticSite,
    finalizer = "staticsites.kuberator.dev/finalizer",
    owns = [ConfigMap, Deployment, Service],
)]
pub struct SiteOperator;

impl SiteOperator {
    async fn handle_apply(&self, site: Arc<StaticSite>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        ctx.apply(&*site, page(&site)?).await?;
        let deployment = ctx.apply(&*site, web_server(&site)?).await?;
        let mut services = Vec::new();
        if site.spec.expose {
            services.push(ctx.apply(&*site, service(&site)?).await?.name_any());
        }
        ctx.prune::<Service>(&site, &services).await?;

        let available = deployment.status.and_then(|status| status.available_replicas).unwrap_or(0);
        let enough = available >= site.spec.replicas;
        let message = format!("{available} of {} web servers available", site.spec.replicas);
        let reason = if enough { "WebServersAvailable" } else { "WebServersStarting" };
        ctx.set_condition(&site, Condition::new("Available", enough, reason, message));
        ctx.update_status(&site, StaticSiteStatus::default()).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, site: Arc<StaticSite>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        // Nothing to do by hand: the garbage collector deletes the children after the site.
        ctx.emit(&site, EventData::normal("Removed", "the site's children go with it")).await;
        Ok(Action::await_change())
    }
}

/// The children's names and labels.
fn meta(site: &StaticSite, suffix: &str) -> kuberator::Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(format!("{}{suffix}", site.try_name()?)),
        labels: Some(selector(site)?),
        ..ObjectMeta::default()
    })
}

fn selector(site: &StaticSite) -> kuberator::Result<BTreeMap<String, String>> {
    Ok(BTreeMap::from([("kuberator.dev/site".to_owned(), site.try_name()?.to_owned())]))
}

/// The ConfigMap `<site>-page` with `index.html`.
///
/// # Errors
///
/// When the site has no name.
pub fn page(site: &StaticSite) -> kuberator::Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: meta(site, "-page")?,
        data: Some(BTreeMap::from([("index.html".to_owned(), site.spec.content.clone())])),
        ..ConfigMap::default()
    })
}

/// The Deployment `<site>`: nginx serving the page.
///
/// # Errors
///
/// When the site has no name.
pub fn web_server(site: &StaticSite) -> kuberator::Result<Deployment> {
    let container = Container {
        name: "nginx".to_owned(),
        image: Some("nginx:1.27-alpine".to_owned()),
        volume_mounts: Some(vec![VolumeMount {
            name: "page".to_owned(),
            mount_path: "/usr/share/nginx/html".to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let volume = Volume {
        name: "page".to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: format!("{}-page", site.try_name()?),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    Ok(Deployment {
        metadata: meta(site, "")?,
        spec: DeploymentSpec {
            replicas: Some(site.spec.replicas),
            selector: LabelSelector { match_labels: Some(selector(site)?), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(selector(site)?), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![volume]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    })
}

/// The Service `<site>` on port 80.
///
/// # Errors
///
/// When the site has no name.
pub fn service(site: &StaticSite) -> kuberator::Result<Service> {
    Ok(Service {
        metadata: meta(site, "")?,
        spec: Some(ServiceSpec {
            selector: Some(selector(site)?),
            ports: Some(vec![ServicePort { port: 80, ..ServicePort::default() }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// A site named `name` in `namespace`.
pub fn sample(name: &str, namespace: &str, expose: bool) -> StaticSite {
    let spec = StaticSiteSpec { content: "<h1>Hello from Kuberator</h1>".to_owned(), replicas: 1, expose };
    let mut site = StaticSite::new(name, spec);
    site.metadata.namespace = Some(namespace.to_owned());
    site
}

/// Whether `site` reports `Ready=True` for its current generation.
pub fn ready(site: &StaticSite) -> bool {
    let current = site.metadata.generation;
    site.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .get("Ready")
            .is_some_and(|ready| ready.is_true() && ready.observed_generation == current)
    })
}

/// The demo, with the operator already running: a site with its children, a child deleted
/// by hand and made again, the Service pruned when the spec drops it, and the site deleted
/// with its children.
///
/// # Errors
///
/// When a step fails or times out, naming it.
#[allow(clippy::print_stdout)]
pub async fn demo(client: Client, namespace: &str) -> anyhow::Result<()> {
    use std::time::Duration;

    use kube::api::DeleteParams;
    use kube::api::Patch;
    use kube::api::PatchParams;
    use kube::api::PostParams;
    use kuberator_test::wait_for;

    let minute = Duration::from_secs(60);
    let sites: Api<StaticSite> = Api::namespaced(client.clone(), namespace);
    let pages: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if sites.get_opt("hello").await?.is_some() {
        sites.delete("hello", &DeleteParams::default()).await?;
        wait_for(&sites, "hello", minute, "the leftover site to go", |site| site.is_none()).await?;
    }

    sites.create(&PostParams::default(), &sample("hello", namespace, true)).await?;
    wait_for(&sites, "hello", minute, "site hello to be Ready", |site| site.is_some_and(ready)).await?;
    let page = pages.get("hello-page").await?;
    println!("site hello is Ready; its children:");
    println!("  ConfigMap hello-page (owner {})", page.owner_references()[0].name);
    println!("  Deployment {}", deployments.get("hello").await?.name_any());
    println!("  Service {}", services.get("hello").await?.name_any());

    pages.delete("hello-page", &DeleteParams::default()).await?;
    println!("deleted ConfigMap hello-page by hand");
    let old_uid = page.uid();
    wait_for(&pages, "hello-page", minute, "hello-page to be made again", |page| {
        page.is_some_and(|page| page.uid() != old_uid)
    })
    .await?;
    println!("ConfigMap hello-page is back");

    let patch = serde_json::json!({ "spec": { "expose": false } });
    sites.patch("hello", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_for(&services, "hello", minute, "Service hello to be pruned", |service| service.is_none()).await?;
    println!("spec.expose is false: Service hello was pruned");

    sites.delete("hello", &DeleteParams::default()).await?;
    wait_for(&sites, "hello", minute, "site hello to go", |site| site.is_none()).await?;
    wait_for(&deployments, "hello", minute, "the garbage collector to delete Deployment hello", |d| {
        d.is_none()
    })
    .await?;
    wait_for(&pages, "hello-page", minute, "the garbage collector to delete hello-page", |p| p.is_none())
        .await?;
    println!("site hello deleted: cleanup ran, and the garbage collector removed its children");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() != Some("demo") {
        return SiteOperator.run().await;
    }
    kuberator_test::init_tracing();
    let (client, _local_control_plane) = kuberator_examples::client().await?;
    kuberator_test::install_crd::<StaticSite>(&client).await?;
    let operator = kuberator_test::Background::spawn({
        let client = client.clone();
        move |shutdown| SiteOperator.into_reconciler(client).start(Some(shutdown))
    });
    let outcome = demo(client, "default").await;
    operator.stop(std::time::Duration::from_secs(30)).await;
    outcome
}
