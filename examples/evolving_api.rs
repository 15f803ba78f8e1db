//! An API that grows up: `Volume` was `v1alpha1` (a `size`), and is `v1` now (`size` renamed
//! `capacityGib`, and a new `tier` that every `v1` Volume has, filled in from the capacity when
//! left out). The operator reconciles `v1`, serves both, converts between them with `From`
//! impls, and checks and defaults changes with two methods:
//! `cargo run --example evolving_api -- demo --real`.
//!
//! The demo needs an API server that can call the operator on 127.0.0.1: the local one `--real`
//! starts (the in-memory server calls no webhooks).
// The demo tells what happens as it goes.
#![allow(clippy::print_stdout)]

use kuberator::prelude::*;

/// The API as it was.
pub mod v1alpha1 {
    use kuberator::prelude::*;

    /// A volume of `size` GiB.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "kuberator.dev", version = "v1alpha1", kind = "Volume", namespaced)]
    pub struct VolumeSpec {
        /// Its size in GiB.
        pub size: i32,
    }
}

/// The API as it is: what the operator reconciles, and what is stored.
pub mod v1 {
    use kuberator::prelude::*;

    /// A volume of `capacityGib` GiB on a `tier` of storage.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "kuberator.dev", version = "v1", kind = "Volume", namespaced, status = "VolumeStatus")]
    #[serde(rename_all = "camelCase")]
    pub struct VolumeSpec {
        /// Its capacity in GiB (`size` in v1alpha1).
        pub capacity_gib: i32,
        /// `standard` or `premium`; new in v1. Left out, `set_defaults` chooses from the capacity.
        #[serde(default)]
        pub tier: String,
    }

    /// What the operator provisioned.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    #[serde(default, rename_all = "camelCase")]
    pub struct VolumeStatus {
        /// `<capacity>Gi on <tier>`.
        pub provisioned: Option<String>,
        /// The generation provisioned.
        pub observed_generation: Option<i64>,
        /// `Ready`, kept by Kuberator.
        pub conditions: Conditions,
    }

    impl ObserveGeneration for VolumeStatus {
        fn add(&mut self, generation: i64) {
            self.observed_generation = Some(generation);
        }
    }
}

/// Where a v1 `tier` waits while the object is read or written as v1alpha1, which has no such
/// field: a conversion may change annotations, and nothing else of the metadata.
const TIER: &str = "volumes.kuberator.dev/tier";

/// The tier of a Volume that names none: large volumes are premium.
fn default_tier(capacity_gib: i32) -> String {
    if capacity_gib >= 100 { "premium" } else { "standard" }.to_owned()
}

impl From<v1alpha1::Volume> for v1::Volume {
    fn from(old: v1alpha1::Volume) -> Self {
        let mut metadata = old.metadata;
        let kept = metadata.annotations.as_mut().and_then(|notes| notes.remove(TIER));
        let tier = kept.unwrap_or_else(|| default_tier(old.spec.size));
        v1::Volume { metadata, spec: v1::VolumeSpec { capacity_gib: old.spec.size, tier }, status: None }
    }
}

impl From<v1::Volume> for v1alpha1::Volume {
    fn from(new: v1::Volume) -> Self {
        let mut metadata = new.metadata;
        if !new.spec.tier.is_empty() {
            metadata.annotations.get_or_insert_default().insert(TIER.to_owned(), new.spec.tier);
        }
        v1alpha1::Volume { metadata, spec: v1alpha1::VolumeSpec { size: new.spec.capacity_gib } }
    }
}

/// The operator.
#[derive(Operator)]
#[kuberator(
    resource = v1::Volume,
    finalizer = "volumes.kuberator.dev/finalizer",
    webhooks = [validate, set_defaults],
    versions = [v1alpha1::Volume],
)]
pub struct VolumeOperator;

impl VolumeOperator {
    async fn handle_apply(&self, volume: Arc<v1::Volume>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        let provisioned = format!("{}Gi on {}", volume.spec.capacity_gib, volume.spec.tier);
        let status = v1::VolumeStatus { provisioned: Some(provisioned), ..Default::default() };
        ctx.update_status(&volume, status).await?;
        Ok(Action::await_change())
    }

    async fn handle_cleanup(&self, volume: Arc<v1::Volume>, ctx: &Ctx<Self>) -> kuberator::Result<Action> {
        ctx.emit(&volume, EventData::normal("Released", "volume released")).await;
        Ok(Action::await_change())
    }

    /// A check a schema rule could make too; a real one might read a quota object.
    async fn validate(&self, change: Change<'_, v1::Volume>, _ctx: &Ctx<Self>) -> Result<(), Rejection> {
        let Some(volume) = change.new_object() else { return Ok(()) };
        if !(1..=1000).contains(&volume.spec.capacity_gib) {
            return Err(Rejection::new(format!(
                "capacityGib must be from 1 to 1000, not {}",
                volume.spec.capacity_gib
            )));
        }
        if !["standard", "premium"].contains(&volume.spec.tier.as_str()) {
            return Err(Rejection::new(format!(
                "tier must be standard or premium, not {:?}",
                volume.spec.tier
            )));
        }
        Ok(())
    }

    /// A default across fields: large volumes are premium unless said otherwise.
    async fn set_defaults(&self, volume: &mut v1::Volume, _ctx: &Ctx<Self>) -> Result<(), Rejection> {
        if volume.spec.tier.is_empty() {
            volume.spec.tier = default_tier(volume.spec.capacity_gib);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("demo") {
        kuberator_test::init_tracing();
        let (client, local) = kuberator_examples::client().await?;
        if matches!(local, Some(kuberator_examples::LocalCluster::InMemory(_))) {
            anyhow::bail!("this demo needs an API server that calls webhooks: add --real");
        }
        return demo(client, "default").await;
    }
    VolumeOperator.run().await
}

/// The life of an API: objects written as v1alpha1, the CRD grown to v1, the operator converting,
/// checking and defaulting, and the old objects moved to the new storage version.
///
/// # Errors
///
/// When a step fails, naming it.
pub async fn demo(client: Client, namespace: &str) -> anyhow::Result<()> {
    use std::time::Duration;

    use anyhow::Context as _;
    use kube::api::Patch;
    use kube::api::PatchParams;
    use kube::api::PostParams;
    use kuberator::webhook::Endpoint;
    use kuberator::webhook::Webhooks;
    use kuberator_test::Background;

    let apply = PatchParams::apply("evolving-api-demo").force();
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    let install = |crd: serde_json::Value| {
        let crds = crds.clone();
        let apply = apply.clone();
        async move {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            crds.patch(&name, &apply, &Patch::Apply(&crd)).await.context("installing the CRD")?;
            kuberator_test::wait_for(&crds, &name, Duration::from_secs(30), "the CRD to be served", |crd| {
                crd.and_then(|crd| {
                    crd.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Established")
                })
                .is_some_and(|established| established.status == "True")
            })
            .await?;
            anyhow::Ok(())
        }
    };

    // Last year: the CRD had v1alpha1 only, and someone made a Volume.
    install(kuberator::operator::manifests::crd::<v1alpha1::Volume>()).await?;
    let old: Api<v1alpha1::Volume> = Api::namespaced(client.clone(), namespace);
    let legacy = v1alpha1::Volume::new("legacy", v1alpha1::VolumeSpec { size: 20 });
    old.create(&PostParams::default(), &legacy).await.context("creating a v1alpha1 Volume")?;
    println!("created legacy as v1alpha1: size 20 (stored as v1alpha1)");

    // Now: the CRD serves both, stores v1, and converts through the operator.
    install(kuberator::operator::manifests::crd_with_versions::<v1::Volume>(&VolumeOperator::versions()))
        .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let reconciler = VolumeOperator.into_reconciler(client.clone());
    let webhooks = Webhooks::new("evolving-api-demo", Endpoint::Url(format!("https://{address}")))
        .with(&reconciler)
        .certificates(kuberator::webhook::Certificates::generated())
        .serve(address, client.clone())
        .await?;
    println!("serving the webhooks on {address}: the API server trusts them through the CA bundle");

    let new: Api<v1::Volume> = Api::namespaced(client.clone(), namespace);
    let seen = new.get("legacy").await.context("reading legacy as v1")?;
    println!(
        "legacy read as v1: capacityGib {}, tier {:?} (converted)",
        seen.spec.capacity_gib, seen.spec.tier
    );
    anyhow::ensure!(
        (seen.spec.capacity_gib, seen.spec.tier.as_str()) == (20, "standard"),
        "converted: {seen:?}"
    );

    // Before v1alpha1 may ever leave the CRD: every stored object written again, as v1.
    let rewritten = kuberator::webhook::migrate_storage::<v1::Volume>(&client).await?;
    let after = new.get("legacy").await?.metadata.resource_version;
    let crd = crds.get("volumes.kuberator.dev").await?;
    let served: Vec<&str> = crd.spec.versions.iter().map(|version| version.name.as_str()).collect();
    let trusted = crd
        .spec
        .conversion
        .as_ref()
        .and_then(|conversion| conversion.webhook.as_ref()?.client_config.as_ref()?.ca_bundle.as_ref());
    anyhow::ensure!(
        served == ["v1", "v1alpha1"] && trusted.is_some_and(|bundle| !bundle.0.is_empty()),
        "{crd:?}"
    );
    let stored = crd.status.and_then(|status| status.stored_versions).unwrap_or_default();
    println!("migrated {rewritten} Volume(s) to the storage version; stored versions now {stored:?}");
    anyhow::ensure!(seen.metadata.resource_version != after, "legacy was written again, as v1");
    anyhow::ensure!(stored == ["v1"], "stored versions: {stored:?}");

    let operator = Background::spawn(move |shutdown| reconciler.start(Some(shutdown)));

    let fresh = serde_json::json!({
        "apiVersion": "kuberator.dev/v1", "kind": "Volume", "metadata": {"name": "fresh"},
        "spec": {"capacityGib": 200},
    });
    let fresh: v1::Volume = serde_json::from_value(fresh)?;
    let created = new.create(&PostParams::default(), &fresh).await.context("creating a v1 Volume")?;
    println!("created fresh as v1 without a tier: tier {:?} (set_defaults)", created.spec.tier);
    anyhow::ensure!(created.spec.tier == "premium", "defaulted: {created:?}");
    let as_old = old.get("fresh").await?;
    println!("fresh read as v1alpha1: size {} (converted; its tier kept aside)", as_old.spec.size);
    anyhow::ensure!(as_old.spec.size == 200, "converted back: {as_old:?}");
    // Written as v1alpha1, read as v1: the tier came through the old version unharmed.
    old.patch("fresh", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"size": 300}})))
        .await?;
    let grown = new.get("fresh").await?;
    println!(
        "fresh grown to 300 through v1alpha1, read as v1: {}Gi on {}",
        grown.spec.capacity_gib, grown.spec.tier
    );
    anyhow::ensure!((grown.spec.capacity_gib, grown.spec.tier.as_str()) == (300, "premium"), "{grown:?}");

    let huge = v1::Volume::new("huge", v1::VolumeSpec { capacity_gib: 5000, tier: String::new() });
    match new.create(&PostParams::default(), &huge).await {
        Err(kube::Error::Api(refused)) => {
            println!("huge refused: {}", refused.message);
            anyhow::ensure!(refused.message.contains("capacityGib must be from 1 to 1000, not 5000"));
        }
        Err(other) => return Err(other.into()),
        Ok(_) => anyhow::bail!("a Volume of 5000 GiB was accepted"),
    }

    for name in ["legacy", "fresh"] {
        let ready =
            kuberator_test::wait_for(&new, name, Duration::from_secs(60), "the Volume to be Ready", |seen| {
                seen.is_some_and(kuberator_examples::is_ready)
            })
            .await?;
        let status = ready.and_then(|volume| volume.status).and_then(|status| status.provisioned);
        println!("{name} reconciled: {}", status.unwrap_or_default());
    }

    for name in ["legacy", "fresh"] {
        new.delete(name, &Default::default()).await?;
        kuberator_test::wait_for(&new, name, Duration::from_secs(60), "cleanup", |seen| seen.is_none())
            .await?;
        println!("deleted {name}: cleaned up and gone");
    }
    operator.stop(Duration::from_secs(30)).await;
    drop(webhooks);
    // The configurations would send the next change to a port no one serves.
    let hooks = kube::api::ApiResource::erase::<
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    >(&());
    let _ = Api::<kube::api::DynamicObject>::all_with(client.clone(), &hooks)
        .delete("evolving-api-demo", &Default::default())
        .await;
    let hooks = kube::api::ApiResource::erase::<
        k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    >(&());
    let _ = Api::<kube::api::DynamicObject>::all_with(client.clone(), &hooks)
        .delete("evolving-api-demo", &Default::default())
        .await;
    Ok(())
}
