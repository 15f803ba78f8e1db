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
//!
//! It also remembers the deletions whose cleanup ran while the finalizer's removal has not
//! landed yet, so that cleanup runs once per deletion while the controller runs; and, until
//! the watch shows it, the resourceVersion of the status the controller last wrote to each
//! object: a reconcile that starts from a cache without that write must not take the cached
//! status for the server's and skip a write that the server needs.
//!
//! Everything here is kept per object (by uid) and leaves when the object goes: on its
//! watch's Delete event, or, for an object deleted while the watch was down, when the relist
//! that follows no longer shows it ([`OwnWrites::retain`]). When the object's reconcile is
//! running then (it took the object from the cache just before the Delete came, say after
//! a child's event), what it needs stays until it ends ([`OwnWrites::started`]): else it
//! would find no memory of the cleanup and run it a second time. The sizes are the
//! `kuberator_remembered_objects` gauge (`map="echoes"`, `map="cleanups"` and
//! `map="statuses"`).

use std::collections::HashMap;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

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

/// Per object (uid), the echo we expect of our finalizer write and the deletions whose
/// cleanup ran; and whether the controller trims objects.
#[derive(Debug, Default)]
pub(crate) struct OwnWrites {
    echoes: crate::telemetry::Remembered,
    cleanups: crate::telemetry::Remembered,
    statuses_size: crate::telemetry::Remembered,
    expected: Mutex<HashMap<String, Expected>>,
    /// Per uid, the resourceVersion of the status this controller last wrote, until the watch
    /// shows it; `None` when that write failed and may still have landed (its answer lost).
    statuses: Mutex<HashMap<String, Option<String>>>,
    cleaned: Mutex<HashMap<Deletion, Instant>>,
    /// The uids whose reconcile runs now, and whether the object went meanwhile.
    running: Mutex<HashMap<String, bool>>,
    keep_managed_fields: bool,
}

/// One object's reconcile, from [`OwnWrites::started`] until it drops (finished or
/// cancelled); then what it remembered goes if the object went meanwhile, or if `gone` says
/// it is gone now.
pub(crate) struct Running<F: Fn() -> bool> {
    writes: Arc<OwnWrites>,
    uid: String,
    gone: F,
}

impl<F: Fn() -> bool> Drop for Running<F> {
    fn drop(&mut self) {
        let went = self.writes.running().remove(&self.uid).unwrap_or(false);
        if went || (self.gone)() {
            self.writes.forget_uid(&self.uid);
        }
    }
}

/// One deletion of one object, under one finalizer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Deletion {
    uid: String,
    deleted_at: String,
    finalizer: String,
}

impl Deletion {
    /// The deletion in progress of `object`, if it is being deleted and holds `finalizer`.
    pub(crate) fn of<R: Resource>(object: &R, finalizer: &str) -> Option<Self> {
        let meta = object.meta();
        let holds = meta.finalizers.as_ref().is_some_and(|all| all.iter().any(|f| f == finalizer));
        let deleted_at = meta.deletion_timestamp.as_ref()?;
        holds.then(|| Self {
            uid: meta.uid.clone().unwrap_or_default(),
            deleted_at: format!("{:?}", deleted_at.0),
            finalizer: finalizer.to_owned(),
        })
    }
}

/// How long a remembered cleanup is kept when its object is never seen again (outside a
/// controller, where no watch says it went).
const CLEANUP_KEPT: Duration = Duration::from_secs(3600);

/// Where a [`crate::Finalize`] called outside a controller remembers its cleanups: nothing
/// tells it when an object goes, so entries leave after [`CLEANUP_KEPT`].
static OUTSIDE: LazyLock<Arc<OwnWrites>> = LazyLock::new(|| Arc::new(OwnWrites::new("", false)));

impl OwnWrites {
    pub(crate) fn new(controller: &str, keep_managed_fields: bool) -> Self {
        Self {
            echoes: crate::telemetry::Remembered::new(controller, "echoes"),
            cleanups: crate::telemetry::Remembered::new(controller, "cleanups"),
            statuses_size: crate::telemetry::Remembered::new(controller, "statuses"),
            keep_managed_fields,
            ..Self::default()
        }
    }

    fn expected(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.expected.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cleaned(&self) -> std::sync::MutexGuard<'_, HashMap<Deletion, Instant>> {
        let mut cleaned = self.cleaned.lock().unwrap_or_else(PoisonError::into_inner);
        if !cleaned.is_empty() {
            cleaned.retain(|_, at| at.elapsed() < CLEANUP_KEPT);
        }
        cleaned
    }

    fn statuses(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.statuses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes how many entries are kept.
    fn report(&self) {
        self.echoes.set(self.expected().len());
        self.cleanups.set(self.cleaned().len());
        self.statuses_size.set(self.statuses().len());
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reconcile of the object `uid` starts: until the returned value drops, a Delete or
    /// relist leaves what concerns it in place, and the drop forgets it then (or when `gone`,
    /// asked at the drop, says the object is gone).
    pub(crate) fn started<F: Fn() -> bool>(self: &Arc<Self>, uid: &str, gone: F) -> Running<F> {
        self.running().insert(uid.to_owned(), false);
        Running { writes: Arc::clone(self), uid: uid.to_owned(), gone }
    }

    /// Whether `uid` is gone but its reconcile runs: if so, it is marked to be forgotten when
    /// that reconcile ends.
    fn defer(&self, uid: &str) -> bool {
        self.running().get_mut(uid).map(|went| *went = true).is_some()
    }

    /// The object `uid` is gone: nothing of it is kept (once its running reconcile, if any,
    /// ends).
    pub(crate) fn forget_uid(&self, uid: &str) {
        if self.defer(uid) {
            return;
        }
        self.expected().remove(uid);
        self.cleaned().retain(|deletion, _| deletion.uid != uid);
        self.statuses().remove(uid);
        self.report();
    }

    /// Keeps only what concerns the objects in `live` (uids): after a relist, the objects
    /// deleted while the watch was down are gone from it without a Delete event.
    pub(crate) fn retain(&self, live: &HashSet<String>) {
        let keep = |uid: &str| live.contains(uid) || self.defer(uid);
        self.expected().retain(|uid, _| keep(uid));
        self.cleaned().retain(|deletion, _| keep(&deletion.uid));
        self.statuses().retain(|uid, _| keep(uid));
        self.report();
    }

    /// How many entries are kept, echoes and cleanups.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.expected().len(), self.cleaned().len())
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
            drop(expected);
            self.report();
        }
        matches
    }

    /// The watch shows `object`: when it is at our last status write, the cache shows that
    /// write, and the memory of it goes; unless a reconcile of it runs now, which may have
    /// started from the cache before it showed the write (it decides at its end).
    pub(crate) fn status_seen<R: Resource>(&self, object: &R) {
        let meta = object.meta();
        let Some(uid) = meta.uid.as_deref() else { return };
        if self.running().contains_key(uid) {
            return;
        }
        let mut statuses = self.statuses();
        if statuses.is_empty() {
            return;
        }
        let version = meta.resource_version.as_deref();
        let shown = matches!(statuses.get(uid), Some(Some(written)) if Some(written.as_str()) == version);
        if shown {
            statuses.remove(uid);
            drop(statuses);
            self.report();
        }
    }

    /// The object is gone: nothing of it is kept.
    pub(crate) fn forget<R: Resource>(&self, object: &R) {
        if let Some(uid) = object.meta().uid.as_ref() {
            self.forget_uid(uid);
        }
    }

    /// Trims `object` as this controller's cache keeps objects.
    pub(crate) fn trim<R: Resource>(&self, object: &mut R) {
        if !self.keep_managed_fields {
            trim(object);
        }
    }
}

/// The running controller's memory, or, outside one, the process's.
fn current() -> Arc<OwnWrites> {
    SCOPE.try_with(Arc::clone).unwrap_or_else(|_| Arc::clone(&OUTSIDE))
}

/// Whether the cleanup of `deletion` ran (and the finalizer's removal has not landed yet).
pub(crate) fn cleanup_ran(deletion: &Deletion) -> bool {
    current().cleaned().contains_key(deletion)
}

/// Whether the object `uid`, as the reconcile read it from the cache (at `cached`, its
/// resourceVersion), shows the status the running controller last wrote to it, or the
/// controller wrote none the watch has not shown yet. Outside a controller: always.
pub(crate) fn status_caught_up(uid: &str, cached: Option<&str>) -> bool {
    let Ok(writes) = SCOPE.try_with(Arc::clone) else { return true };
    let statuses = writes.statuses();
    match statuses.get(uid) {
        None => true,
        Some(written) => written.is_some() && written.as_deref() == cached,
    }
}

/// The running controller wrote a status to the object `uid`: the server answered with
/// resourceVersion `written`, or (`None`) the write failed, and may have landed all the same.
pub(crate) fn remember_status(uid: &str, written: Option<String>) {
    if let Ok(writes) = SCOPE.try_with(Arc::clone) {
        writes.statuses().insert(uid.to_owned(), written);
        writes.report();
    }
}

/// The cleanup of `deletion` ran.
pub(crate) fn remember_cleanup(deletion: Deletion) {
    let writes = current();
    writes.cleaned().insert(deletion, Instant::now());
    writes.report();
}

/// The finalizer of `deletion` is removed. Inside a controller the memory of its cleanup
/// stays until the object's Delete event (or the relist that no longer shows it): a reconcile
/// that took the object from the cache before the removal landed must still find that the
/// cleanup ran, and not run it again. Outside a controller, where no Delete event comes, it
/// goes now.
pub(crate) fn forget_cleanup(deletion: &Deletion) {
    if SCOPE.try_with(|_| ()).is_ok() {
        return;
    }
    if OUTSIDE.cleaned().remove(deletion).is_some() {
        OUTSIDE.report();
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
            writes.report();
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
            writes.report();
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
        let writes = Arc::new(OwnWrites::new("test", false));
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
        let writes = Arc::new(OwnWrites::new("test", false));
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
    async fn a_delete_during_the_objects_reconcile_waits_for_it_to_end() {
        let writes = Arc::new(OwnWrites::new("test", false));
        let mut deleted = object("u1", 2, &[FINALIZER]);
        deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let deletion = Deletion::of(&deleted, FINALIZER).unwrap();
        // A reconcile took the object from the cache; its Delete comes while it runs.
        let running = writes.started("u1", || false);
        Arc::clone(&writes).scope(async { remember_cleanup(deletion.clone()) }).await;
        writes.forget(&deleted);
        writes.retain(&HashSet::new());
        assert!(Arc::clone(&writes).scope(async { cleanup_ran(&deletion) }).await, "forgotten mid-reconcile");
        drop(running);
        assert_eq!(writes.len(), (0, 0), "the object went: nothing stays once its reconcile ends");

        // A reconcile whose object is gone by the end, without a Delete seen: `gone` says so.
        let running = writes.started("u1", || true);
        Arc::clone(&writes).scope(async { remember_cleanup(deletion.clone()) }).await;
        drop(running);
        assert_eq!(writes.len(), (0, 0));
        // Still there: kept.
        let running = writes.started("u1", || false);
        Arc::clone(&writes).scope(async { remember_cleanup(deletion.clone()) }).await;
        drop(running);
        assert_eq!(writes.len(), (0, 1));
    }

    #[tokio::test]
    async fn a_delete_forgets_the_object() {
        let writes = Arc::new(OwnWrites::new("test", false));
        Arc::clone(&writes)
            .scope(async {
                expect_finalizer(&object("u1", 1, &[]), FINALIZER).landed(object("u1", 1, &[FINALIZER]))
            })
            .await;
        writes.forget(&object("u1", 2, &[]));
        assert!(!writes.is_echo(&object("u1", 1, &[FINALIZER])));
    }

    #[tokio::test]
    async fn a_relist_forgets_what_concerns_objects_gone_meanwhile_and_cleanups_are_per_controller() {
        let writes = Arc::new(OwnWrites::new("test", false));
        let mut deleted = object("u2", 1, &[FINALIZER]);
        deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let deletion = Deletion::of(&deleted, FINALIZER).unwrap();
        Arc::clone(&writes)
            .scope(async {
                let _ =
                    expect_finalizer(&object("u1", 1, &[]), FINALIZER).landed(object("u1", 1, &[FINALIZER]));
                let _ =
                    expect_finalizer(&object("u3", 1, &[]), FINALIZER).landed(object("u3", 1, &[FINALIZER]));
                remember_cleanup(deletion.clone());
                assert!(cleanup_ran(&deletion));
            })
            .await;
        assert!(!cleanup_ran(&deletion), "outside the controller, its memory is not seen");
        assert_eq!(writes.len(), (2, 1));
        writes.retain(&HashSet::from(["u1".to_owned()]));
        assert_eq!(writes.len(), (1, 0), "u2 and u3 went while the watch was down");
        writes.forget_uid("u1");
        assert_eq!(writes.len(), (0, 0));
    }

    #[test]
    fn a_deletion_is_one_uid_one_deletion_time_and_one_finalizer() {
        let mut map = object("u1", 1, &[FINALIZER]);
        assert_eq!(Deletion::of(&map, FINALIZER), None, "not being deleted");
        map.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let deletion = Deletion::of(&map, FINALIZER).unwrap();
        assert_eq!(Deletion::of(&map, "other/f"), None, "not holding that finalizer");
        assert!(!cleanup_ran(&deletion));
        remember_cleanup(deletion.clone());
        assert!(cleanup_ran(&deletion));
        map.metadata.uid = Some("u2".into());
        assert!(!cleanup_ran(&Deletion::of(&map, FINALIZER).unwrap()), "another object");
        forget_cleanup(&deletion);
        assert!(!cleanup_ran(&deletion));
    }

    #[test]
    fn trimming_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut map = object("u1", 1, &[]);
        map.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        map.metadata.annotations =
            Some([(LAST_APPLIED.to_owned(), "{}".to_owned()), ("keep".to_owned(), "me".to_owned())].into());
        let mut kept = map.clone();
        OwnWrites::new("test", true).trim(&mut kept);
        assert_eq!(kept, map, "keep_managed_fields keeps everything");
        trim(&mut map);
        assert_eq!(map.metadata.managed_fields, None);
        assert_eq!(map.metadata.annotations, Some([("keep".to_owned(), "me".to_owned())].into()));
    }
}
