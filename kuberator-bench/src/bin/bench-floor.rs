//! The floor: a plain client with no watch and no cache. It lists the objects, does for each
//! the writes every contender does (add the finalizer, write status; on deletion, remove the
//! finalizer) at the same concurrency, and lists again; when a list finds nothing to do, it
//! waits half a second. What it costs is what the writes cost, plus a list per pass.
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::Client;
use kube::ResourceExt as _;
use kube::api::DynamicObject;
use kube::api::GroupVersionKind;
use kube::api::ListParams;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::discovery::ApiResource;
use kuberator_bench::FINALIZER;

/// What one object needs, if anything.
enum Work {
    AddFinalizer,
    WriteStatus,
    RemoveFinalizer(usize),
}

fn work(object: &DynamicObject) -> Option<Work> {
    let finalizers = object.finalizers();
    let held = finalizers.iter().position(|f| f == FINALIZER);
    if object.metadata.deletion_timestamp.is_some() {
        return held.map(Work::RemoveFinalizer);
    }
    if held.is_none() {
        return Some(Work::AddFinalizer);
    }
    let observed = object.data["status"]["observedGeneration"].as_i64();
    (observed != object.metadata.generation).then_some(Work::WriteStatus)
}

async fn add_finalizer(api: &Api<DynamicObject>, object: &DynamicObject) -> kube::Result<()> {
    let patch = if object.finalizers().is_empty() {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ])
    } else {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": object.finalizers() },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ])
    };
    let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
    Ok(())
}

async fn write_status(api: &Api<DynamicObject>, object: &DynamicObject) -> kube::Result<()> {
    let generation = object.metadata.generation;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({ "status": {
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "Reconciled", "message": "reconciled",
            "observedGeneration": generation, "lastTransitionTime": now,
        }],
    }});
    api.patch_status(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn remove_finalizer(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    index: usize,
) -> kube::Result<()> {
    let path = format!("/metadata/finalizers/{index}");
    let patch = serde_json::json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path },
    ]);
    let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
    Ok(())
}

async fn handle(api: &Api<DynamicObject>, object: &DynamicObject, work: Work) -> kube::Result<()> {
    match work {
        Work::AddFinalizer => {
            add_finalizer(api, object).await?;
            write_status(api, object).await
        }
        Work::WriteStatus => write_status(api, object).await,
        Work::RemoveFinalizer(index) => remove_finalizer(api, object, index).await,
    }
}

/// Every object, a page of 500 at a time.
async fn list(api: &Api<DynamicObject>) -> kube::Result<Vec<DynamicObject>> {
    let mut objects = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        objects.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(objects),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let namespace = kuberator_bench::env(kuberator_bench::NAMESPACE_ENV)?;
    let concurrency = kuberator_bench::concurrency()?;
    let client = Client::try_default().await?;
    let handled = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&handled);
    kuberator_bench::answer_counts(move || {
        let counted = Arc::clone(&counted);
        async move { counted.load(Ordering::Relaxed) }
    });
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(kuberator_bench::GROUP, "v1", "Bench"));
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
    loop {
        let objects = match list(&api).await {
            Ok(objects) => objects,
            Err(error) => {
                tracing::warn!(%error, "list failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let todo: Vec<_> = objects.iter().filter_map(|object| Some((object, work(object)?))).collect();
        if todo.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        futures::stream::iter(todo)
            .for_each_concurrent(concurrency, |(object, work)| {
                let (api, handled) = (&api, &handled);
                async move {
                    handled.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = handle(api, object, work).await {
                        tracing::warn!(object = %object.name_any(), %error, "write failed");
                    }
                }
            })
            .await;
    }
}
