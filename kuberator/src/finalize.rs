//! [`Finalize`]: finalizers and status writes for one resource type.

use futures::TryFuture;
use futures::TryFutureExt as _;
use std::sync::Arc;

use async_trait::async_trait;
use kube::api::Patch;
use kube::api::PatchParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer;
use kube::runtime::finalizer::Event;
use serde::Serialize;

use crate::KubeResource;
use crate::cache::ProvideApi;
use crate::error::Error;
use crate::error::Result;
use crate::object::describe;
use crate::object::name_and_scope;
use crate::own_writes;
use crate::own_writes::Deletion;
use crate::status::AsStatusError;
use crate::status::ObserveGeneration;
use crate::status::WithStatusError;

/// The finalizer of an operator of `R` unless configured otherwise: `<plural>.<group>/finalizer`.
pub(crate) fn default_finalizer<R: kube::Resource>() -> String
where
    R::DynamicType: Default,
{
    let resource = R::DynamicType::default();
    format!("{}.{}/finalizer", R::plural(&resource), R::group(&resource))
}

/// Finalizers and status writes for objects of type `R`, through the [`Api`](kube::Api)s of
/// a provider `P`.
///
/// Implement [`api_provider`](Finalize::api_provider) on a repository of your own, or use
/// [`K8sRepository`](crate::k8s::K8sRepository).
///
///
/// # Expected flow
///
/// [`Context::handle_reconciliation`](crate::Context::handle_reconciliation) calls
/// [`Finalize::finalize`] for every object the controller hands it. `finalize` follows
/// [`kube::runtime::finalizer()`], with one difference in step 1:
///
/// 1. An object without the finalizer and not being deleted gets the finalizer added (a JSON
///    patch that also checks nobody changed the finalizer list meanwhile); then
///    `handle_apply` runs at once on the object as that patch returned it. (kube stops there
///    and waits for the change to come back through the watch, which costs a second
///    reconcile of every new object; the controller recognizes that echo of its own write
///    and drops it.)
/// 2. An object with the finalizer and not being deleted runs `handle_apply`.
/// 3. An object being deleted that still has the finalizer runs `handle_cleanup`; only when
///    that succeeds is the finalizer removed, and the API server deletes the object.
/// 4. An object being deleted without the finalizer is left alone.
///
/// # Guarantees
///
/// - `handle_apply` never runs on an object that does not carry the finalizer, so every
///   object that was applied gets cleaned up.
/// - The finalizer is removed only after `handle_cleanup` returned `Ok`; a failing cleanup
///   keeps it, and the error policy retries.
/// - While the process lives, `handle_cleanup` succeeds at most once per deletion of an
///   object (its uid and `deletionTimestamp`): when cleanup succeeded and only the removal of
///   the finalizer failed (a cut connection, say), the retry removes the finalizer without
///   running cleanup again, and the failure is reported as [`Error::RemoveFinalizer`], whose
///   message says cleanup already ran.
/// - Across a restart of the process that memory is gone: an operator stopped between a
///   successful cleanup and the finalizer's removal runs cleanup again for that object. This
///   is why `handle_cleanup` must stay idempotent.
/// - That memory belongs to the running controller, and leaves when the object goes (its
///   Delete event, or a relist that no longer shows it).
///
/// # Called outside a controller
///
/// `finalize` works the same when called by hand (a unit test, a tool), with three things
/// missing that only a running controller has:
///
/// - the cleanup-once memory is the process's, not a controller's, and an entry leaves only
///   when the finalizer is removed or after an hour (no watch says the object went);
/// - the finalizer write's own watch event is not recognised (there is no watch to drop it
///   from), and the returned object keeps `managedFields`;
/// - [`next_delay`](crate::backoff::next_delay) has no failure counts and answers its cap.
///
/// # Errors
///
/// Failures come back as [`Error`] variants that name the object (`Kind namespace/name`):
/// [`Error::ApplyFailed`], [`Error::CleanupFailed`], [`Error::AddFinalizer`],
/// [`Error::RemoveFinalizer`], [`Error::UpdateStatus`].
#[async_trait]
pub trait Finalize<R, P>: Send + Sync
where
    R: KubeResource,
    P: ProvideApi<R>,
{
    /// The provider of the `Api` for each namespace.
    fn api_provider(&self) -> &P;

    /// Runs `reconcile` under the finalizer `finalizer_name`, as the
    /// [trait documentation](Finalize) describes. `reconcile` may fail with any error
    /// ([`Error::other`] converts it).
    ///
    /// # Errors
    ///
    /// When the object has no namespace or the provider refuses it, when a finalizer patch
    /// fails, or when `reconcile` fails: see the [trait documentation](Finalize).
    async fn finalize<Fut>(
        &self,
        finalizer_name: &str,
        object: Arc<R>,
        reconcile: impl FnOnce(Event<R>) -> Fut + Send,
    ) -> Result<Action>
    where
        Fut: TryFuture<Ok = Action> + Send,
        Fut::Error: Into<Box<dyn std::error::Error + Send + Sync + 'static>> + 'static,
    {
        let (_, namespace) = name_and_scope(&*object)?;
        // A cluster-scoped object's `Api` is the provider's for the empty namespace.
        let api = self.api_provider().get(namespace.unwrap_or_default())?;
        let label = describe(&*object);
        let deletion = Deletion::of(&*object, finalizer_name);
        if let Some(deletion) = deletion.as_ref().filter(|deletion| own_writes::cleanup_ran(deletion)) {
            // Cleanup succeeded before; only the finalizer's removal is left to do.
            return match cleaned::remove_finalizer(&api, &*object, finalizer_name).await {
                Ok(()) => {
                    own_writes::forget_cleanup(deletion);
                    Ok(Action::await_change())
                }
                Err(source) => Err(Error::RemoveFinalizer {
                    object: label,
                    finalizer: finalizer_name.to_owned(),
                    source: Box::new(source),
                }),
            };
        }
        let object = match add_finalizer(&api, object, finalizer_name).await {
            Ok(object) => object,
            Err(source) => {
                return Err(Error::AddFinalizer {
                    object: label,
                    finalizer: finalizer_name.to_owned(),
                    source: Box::new(source),
                });
            }
        };
        let uid = object.meta().uid.clone();
        let reconcile = |event| {
            let cleanup = matches!(event, Event::Cleanup(_));
            let deletion = deletion.clone();
            let (uid, label) = (uid.clone(), label.clone());
            reconcile(event).map_err(Error::other).map_ok(move |action| {
                if let (true, Some(deletion)) = (cleanup, deletion) {
                    // What a test (kuberator-test's simulator) counts cleanups by.
                    tracing::debug!(target: "kuberator::cleanup", object = %label, uid = uid.as_deref().unwrap_or_default(), "handle_cleanup succeeded");
                    own_writes::remember_cleanup(deletion);
                }
                action
            })
        };
        let result = finalizer(&api, finalizer_name, object, reconcile).await;
        if let (Ok(_), Some(deletion)) = (&result, &deletion) {
            own_writes::forget_cleanup(deletion);
        }
        result.map_err(|error| match error {
            finalizer::Error::ApplyFailed(source) => {
                Error::ApplyFailed { object: label, source: Box::new(source) }
            }
            finalizer::Error::CleanupFailed(source) => {
                Error::CleanupFailed { object: label, source: Box::new(source) }
            }
            finalizer::Error::AddFinalizer(source) => Error::AddFinalizer {
                object: label,
                finalizer: finalizer_name.to_owned(),
                source: Box::new(source),
            },
            finalizer::Error::RemoveFinalizer(source) => Error::RemoveFinalizer {
                object: label,
                finalizer: finalizer_name.to_owned(),
                source: Box::new(source),
            },
            finalizer::Error::UnnamedObject => {
                Error::UnnamedObject { kind: R::kind(&R::DynamicType::default()).into_owned() }
            }
            finalizer::Error::InvalidFinalizer => {
                Error::InvalidFinalizer { object: label, finalizer: finalizer_name.to_owned() }
            }
        })
    }

    /// Writes `status` to the object's `/status` subresource with a JSON merge patch, after
    /// setting its observed generation to the object's `metadata.generation`.
    ///
    /// Fields of `status` that serialize to `null` are removed from the stored status, so
    /// `None` clears a field. The write does not by itself run `handle_apply` again: the
    /// controller reconciles on spec (generation) and finalizer changes only.
    ///
    /// An empty `conditions` list is left out of the patch: a status built from
    /// `Default::default()` would otherwise wipe the conditions the runtime keeps (a derived
    /// operator's `Ready`). A non-empty list is written as given. To remove conditions, write
    /// the list without them.
    ///
    /// # Errors
    ///
    /// [`Error::SerializeStatus`] or [`Error::UpdateStatus`], naming the object; the latter
    /// also when the resource has no status subresource.
    async fn update_status<S>(&self, object: &R, mut status: S) -> Result<()>
    where
        S: Serialize + ObserveGeneration + Send,
    {
        if let Some(generation) = object.meta().generation {
            ObserveGeneration::add(&mut status, generation);
        }
        let (name, namespace) = name_and_scope(object)?;
        let mut status = serde_json::to_value(&status)
            .map_err(|source| Error::SerializeStatus { object: describe(object), source })?;
        if let Some(fields) = status.as_object_mut()
            && fields
                .get("conditions")
                .is_some_and(|conditions| conditions.as_array().is_some_and(Vec::is_empty))
        {
            fields.remove("conditions");
        }
        let routed = crate::status::conditions::route(object.meta().uid.as_deref(), &mut status);
        if routed == crate::status::conditions::Routed::Deferred {
            return Ok(());
        }
        let patch = serde_json::json!({ "status": status });
        self.api_provider()
            .get(namespace.unwrap_or_default())?
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::UpdateStatus { object: describe(object), source: Box::new(source) })?;
        Ok(())
    }

    /// Like [`update_status`](Finalize::update_status), after putting `error` (when there
    /// is one) into the status through [`WithStatusError`].
    ///
    /// # Errors
    ///
    /// As [`update_status`](Finalize::update_status).
    async fn update_status_with_error<S, A, E>(
        &self,
        object: &R,
        mut status: S,
        error: Option<&A>,
    ) -> Result<()>
    where
        S: Serialize + ObserveGeneration + WithStatusError<A, E> + Send,
        A: AsStatusError<E> + Sync,
        E: Send,
    {
        if let Some(error) = error {
            WithStatusError::add(&mut status, error.as_status_error());
        }
        self.update_status(object, status).await
    }
}

/// Adds `finalizer` to `object` unless it holds it or is being deleted, with the JSON patch
/// kube's finalizer flow uses (it tests the finalizer list first, so a concurrent change fails
/// the patch instead of duplicating or losing an entry); returns the object as the patch
/// left it, recorded as [our own write](crate::own_writes).
async fn add_finalizer<R>(api: &kube::Api<R>, object: Arc<R>, finalizer: &str) -> Result<Arc<R>, kube::Error>
where
    R: KubeResource,
{
    let meta = object.meta();
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    if meta.deletion_timestamp.is_some() || finalizers.iter().any(|f| f == finalizer) {
        return Ok(object);
    }
    let patch = if finalizers.is_empty() {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [finalizer] },
        ])
    } else {
        serde_json::json!([
            { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
            { "op": "add", "path": "/metadata/finalizers/-", "value": finalizer },
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    let name = meta.name.as_deref().unwrap_or_default();
    let expecting = crate::own_writes::expect_finalizer(&*object, finalizer);
    let patched = api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await?;
    Ok(Arc::new(expecting.landed(patched)))
}

/// The finalizer's removal after a cleanup that ran (see [`own_writes::cleanup_ran`]).
mod cleaned {
    use kube::Api;
    use kube::Resource;
    use kube::api::Patch;
    use kube::api::PatchParams;
    use serde::de::DeserializeOwned;

    /// Removes `finalizer` from `object` as kube's finalizer flow does: a JSON patch that
    /// first tests the entry is still at its index.
    pub(super) async fn remove_finalizer<R>(
        api: &Api<R>,
        object: &R,
        finalizer: &str,
    ) -> Result<(), kube::Error>
    where
        R: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let meta = object.meta();
        let finalizers = meta.finalizers.as_deref().unwrap_or_default();
        let Some(index) = finalizers.iter().position(|f| f == finalizer) else {
            return Ok(());
        };
        let path = format!("/metadata/finalizers/{index}");
        let mut operations = vec![
            serde_json::json!({ "op": "test", "path": path, "value": finalizer }),
            serde_json::json!({ "op": "remove", "path": path }),
        ];
        // The object this cleanup was for, not a new one made since under the same name.
        if let Some(uid) = meta.uid.as_deref() {
            operations.insert(0, serde_json::json!({ "op": "test", "path": "/metadata/uid", "value": uid }));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(operations)).expect("a static JSON patch");
        let name = meta.name.as_deref().unwrap_or_default();
        match api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
            Ok(_) => Ok(()),
            // Gone already: the removal is done.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }
}
