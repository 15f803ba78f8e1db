//! The controller's own writes, recognized when the watch brings them back, and the trimming
//! of what the controller keeps of each object.
//!
//! When a reconcile adds the finalizer, the handler runs at once on the object the patch
//! returned; the watch then delivers that change as a finalizer change. Reconciling it again
//! would do nothing new, so the controller drops it, once. Before the patch is sent, the
//! reconcile says what the object will look like (its uid, its generation, and its
//! finalizers with ours added); the first watch event of that object that matches exactly is
//! dropped. The watch may deliver it before the patch's own response arrives, which is why the
//! expectation is set first. Any event that differs (a spec change by someone else, another
//! finalizer) goes through as usual, and so do requeues and error retries, which do not
//! come from the watch. A patch that fails withdraws its expectation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use kube::Resource;

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the object in.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

tokio::task_local! {
    static SCOPE: Arc<OwnWrites>;
}

/// What the object will look like once our finalizer write lands.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    generation: Option<i64>,
    finalizers: Vec<String>,
}

/// Per object (uid), the echo we expect of our finalizer write; and whether the controller
/// trims objects.
#[derive(Debug, Default)]
pub(crate) struct OwnWrites {
    expected: Mutex<HashMap<String, Expected>>,
    keep_managed_fields: bool,
}

impl OwnWrites {
    pub(crate) fn new(keep_managed_fields: bool) -> Self {
        Self { expected: Mutex::default(), keep_managed_fields }
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.expected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one reconcile, so that [`expect_finalizer`] inside it reaches this controller.
    pub(crate) async fn scope<F: Future>(self: Arc<Self>, future: F) -> F::Output {
        SCOPE.scope(self, future).await
    }

    /// Whether `object` is the echo of our finalizer write; true at most once per write.
    pub(crate) fn is_echo<R: Resource>(&self, object: &R) -> bool {
        let meta = object.meta();
        let Some(uid) = meta.uid.as_ref() else { return false };
        let mut expected = self.expected();
        let matches = expected.get(uid).is_some_and(|echo| {
            echo.generation == meta.generation
                && meta.finalizers.as_deref().unwrap_or_default() == echo.finalizers.as_slice()
        });
        if matches {
            expected.remove(uid);
        }
        matches
    }

    /// The object is gone: nothing of it is kept.
    pub(crate) fn forget<R: Resource>(&self, object: &R) {
        if let Some(uid) = object.meta().uid.as_ref() {
            let mut expected = self.expected();
            if !expected.is_empty() {
                expected.remove(uid);
            }
        }
    }

    /// Trims `object` as this controller's cache keeps objects.
    pub(crate) fn trim<R: Resource>(&self, object: &mut R) {
        if !self.keep_managed_fields {
            trim(object);
        }
    }
}

/// Says, before the patch is sent, that the running reconcile adds `finalizer` to `object`;
/// the returned guard withdraws that unless [`Expecting::landed`] is called with the
/// patched object. Outside a controller (a handler called by hand), does nothing.
pub(crate) fn expect_finalizer<R: Resource>(object: &R, finalizer: &str) -> Expecting {
    let meta = object.meta();
    let uid = SCOPE
        .try_with(|writes| {
            let uid = meta.uid.clone()?;
            let mut finalizers = meta.finalizers.clone().unwrap_or_default();
            finalizers.push(finalizer.to_owned());
            writes.expected().insert(uid.clone(), Expected { generation: meta.generation, finalizers });
            Some((Arc::clone(writes), uid))
        })
        .ok()
        .flatten();
    Expecting(uid)
}

/// An expected echo, withdrawn when dropped before the write landed.
pub(crate) struct Expecting(Option<(Arc<OwnWrites>, String)>);

impl Expecting {
    /// The write landed: the echo stays expected; returns `object` trimmed as the
    /// controller's cache would keep it.
    pub(crate) fn landed<R: Resource>(mut self, mut object: R) -> R {
        if let Some((writes, _)) = self.0.take() {
            writes.trim(&mut object);
        }
        object
    }
}

impl Drop for Expecting {
    fn drop(&mut self) {
        if let Some((writes, uid)) = self.0.take() {
            writes.expected().remove(&uid);
        }
    }
}

/// Drops `metadata.managedFields` and the `kubectl.kubernetes.io/last-applied-configuration`
/// annotation: bookkeeping of the API server and of kubectl that an operator rarely reads,
/// and most of a small object's size.
pub(crate) fn trim<R: Resource>(object: &mut R) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    const FINALIZER: &str = "a.b/f";

    fn object(uid: &str, generation: i64, finalizers: &[&str]) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.uid = Some(uid.into());
        map.metadata.generation = Some(generation);
        map.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        map
    }

    #[tokio::test]
    async fn only_the_exact_change_written_is_an_echo_and_only_once() {
        let writes = Arc::new(OwnWrites::new(false));
        Arc::clone(&writes)
            .scope(async {
                let expecting = expect_finalizer(&object("u1", 1, &["other/f"]), FINALIZER);
                expecting.landed(object("u1", 1, &["other/f", FINALIZER]));
            })
            .await;
        assert!(!writes.is_echo(&object("u1", 2, &["other/f", FINALIZER])), "a spec change as well");
        assert!(!writes.is_echo(&object("u1", 1, &[FINALIZER])), "other finalizers");
        assert!(!writes.is_echo(&object("u2", 1, &["other/f", FINALIZER])), "another object");
        assert!(writes.is_echo(&object("u1", 1, &["other/f", FINALIZER])));
        assert!(!writes.is_echo(&object("u1", 1, &["other/f", FINALIZER])), "only once");
    }

    #[tokio::test]
    async fn a_write_that_failed_expects_no_echo() {
        let writes = Arc::new(OwnWrites::new(false));
        Arc::clone(&writes)
            .scope(async {
                let _failed = expect_finalizer(&object("u1", 1, &[]), FINALIZER);
            })
            .await;
        assert!(!writes.is_echo(&object("u1", 1, &[FINALIZER])));
    }

    #[tokio::test]
    async fn outside_a_controller_nothing_is_expected_nor_trimmed() {
        let mut map = object("u1", 1, &[]);
        map.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        let map = expect_finalizer(&map, FINALIZER).landed(map.clone());
        assert!(map.metadata.managed_fields.is_some());
    }

    #[tokio::test]
    async fn a_delete_forgets_the_object() {
        let writes = Arc::new(OwnWrites::new(false));
        Arc::clone(&writes)
            .scope(async {
                expect_finalizer(&object("u1", 1, &[]), FINALIZER).landed(object("u1", 1, &[FINALIZER]))
            })
            .await;
        writes.forget(&object("u1", 2, &[]));
        assert!(!writes.is_echo(&object("u1", 1, &[FINALIZER])));
    }

    #[test]
    fn trimming_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut map = object("u1", 1, &[]);
        map.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        map.metadata.annotations =
            Some([(LAST_APPLIED.to_owned(), "{}".to_owned()), ("keep".to_owned(), "me".to_owned())].into());
        let mut kept = map.clone();
        OwnWrites::new(true).trim(&mut kept);
        assert_eq!(kept, map, "keep_managed_fields keeps everything");
        trim(&mut map);
        assert_eq!(map.metadata.managed_fields, None);
        assert_eq!(map.metadata.annotations, Some([("keep".to_owned(), "me".to_owned())].into()));
    }
}
