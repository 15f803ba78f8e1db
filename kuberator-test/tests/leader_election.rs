//! `kuberator::leader` against the real control plane, in one process: what happens to the
//! work when the lease is taken away, when it cannot be renewed, and while it drains on
//! shutdown. Short timing (a 3 s lease) keeps the tests quick; each has a namespace, and so
//! a Lease, of its own.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::api::rbac::v1::RoleRef;
use k8s_openapi::api::rbac::v1::Subject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::Client;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kuberator::leader::ElectionError;
use kuberator::leader::LeaderElection;
use kuberator::shutdown::Shutdown;
use kuberator_test::Background;
use kuberator_test::ControlPlane;

const LEASE: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

/// How each term of leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Still running.
    Running,
    /// Its shutdown future fired and it returned.
    Stopped,
    /// It was dropped in the middle: cancelled.
    Cancelled,
}

/// Per term: when it started, how it ended, and when.
#[derive(Default, Debug)]
struct Terms(Mutex<Vec<(Instant, Ending, Option<Instant>)>>);

impl Terms {
    fn started(self: &Arc<Self>) -> TermGuard {
        let mut terms = self.0.lock().unwrap();
        terms.push((Instant::now(), Ending::Running, None));
        TermGuard { terms: Arc::clone(self), index: terms.len() - 1, ending: Ending::Cancelled }
    }

    fn snapshot(&self) -> Vec<(Instant, Ending, Option<Instant>)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `check` holds for the terms.
    async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[(Instant, Ending, Option<Instant>)]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !check(&self.snapshot()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {:?}", self.snapshot());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Records the end of a term when dropped: cancelled unless it returned.
struct TermGuard {
    terms: Arc<Terms>,
    index: usize,
    ending: Ending,
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        let mut terms = self.terms.0.lock().unwrap();
        terms[self.index].1 = self.ending;
        terms[self.index].2 = Some(Instant::now());
    }
}

/// Work that runs until stopped, then takes `drain` to finish.
fn work(
    terms: &Arc<Terms>,
    drain: Duration,
) -> impl FnMut(Shutdown) -> futures::future::BoxFuture<'static, ()> + use<> {
    let terms = Arc::clone(terms);
    move |stop| {
        let guard = terms.started();
        Box::pin(async move {
            // The whole guard lives in the future: dropping the future drops it.
            let mut guard = guard;
            stop.await;
            tokio::time::sleep(drain).await;
            guard.ending = Ending::Stopped;
        })
    }
}

async fn setup(prefix: &str) -> (Client, String) {
    let (client, namespace) = kuberator_test::test_env(prefix).await;
    (client, namespace)
}

fn election(namespace: &str, identity: &str) -> LeaderElection {
    LeaderElection::new("work", namespace).identity(identity).timing(LEASE, RENEW_DEADLINE, RETRY)
}

async fn holder(client: &Client, namespace: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace).get_opt("work").await.unwrap()?;
    lease.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_lease_stops_the_work_at_once_and_the_elector_stands_by_again() {
    let (client, namespace) = setup("lease-taken").await;
    let terms = Arc::new(Terms::default());
    let elector = Background::spawn({
        let (client, election, work) =
            (client.clone(), election(&namespace, "me"), work(&terms, Duration::ZERO));
        move |shutdown| async move { election.run(client, shutdown, work).await.unwrap() }
    });
    terms.wait("the first term", Duration::from_secs(30), |terms| terms.len() == 1).await;

    // Someone else writes itself into the lease, as a replica with a broken clock might.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let mut lease = leases.get("work").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("thief".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    leases.replace("work", &PostParams::default(), &lease).await.unwrap();
    let taken = Instant::now();

    terms
        .wait("the work to be cancelled", Duration::from_secs(10), |terms| terms[0].1 == Ending::Cancelled)
        .await;
    let stopped = terms.snapshot()[0].2.unwrap() - taken;
    assert!(stopped <= RETRY + Duration::from_secs(1), "stopped {stopped:?} after the lease was taken");

    // The thief never renews: once its lease runs out, this elector leads again.
    terms.wait("a second term", Duration::from_secs(30), |terms| terms.len() == 2).await;
    let again = terms.snapshot()[1].0 - taken;
    assert!(
        again >= LEASE - Duration::from_millis(200),
        "led again {again:?} after, before the lease ran out"
    );
    assert!(again <= LEASE + RETRY.mul_f64(1.2) + Duration::from_secs(1), "led again only after {again:?}");
    assert_eq!(holder(&client, &namespace).await.as_deref(), Some("me"));
    let lease = leases.get("work").await.unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(2), "me, thief, me");

    elector.stop(Duration::from_secs(10)).await;
    assert_eq!(terms.snapshot()[1].1, Ending::Stopped, "a graceful shutdown lets the work return");
    assert_eq!(holder(&client, &namespace).await, None, "released");
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_before_anyone_may_take_over() {
    // On the real control plane RBAC takes the leases away; on the in-memory server (which
    // has no RBAC), a server of the test's own refuses them.
    let revocation = match kuberator_test::TestCluster::shared().await.unwrap() {
        kuberator_test::TestCluster::Real(_) => revoked_by_rbac().await,
        kuberator_test::TestCluster::InMemory(_) => {
            let server = kuberator_test::memory::MemoryServer::new();
            let client = server.client();
            let namespace = kuberator_test::test_namespace(&client, "lease-refused").await.unwrap();
            Revocation { admin: client.clone(), client, namespace, revoke: Revoke::Refuse(server) }
        }
    };
    let Revocation { admin, client, namespace, revoke } = revocation;

    let terms = Arc::new(Terms::default());
    let running = tokio::spawn({
        let (election, work) = (election(&namespace, "me"), work(&terms, Duration::ZERO));
        election.run(client, std::future::pending(), work)
    });
    terms.wait("the first term", Duration::from_secs(30), |terms| terms.len() == 1).await;
    // Let a renewal or two go through.
    tokio::time::sleep(RETRY * 3).await;

    match revoke {
        Revoke::Unbind(bindings) => {
            bindings.delete("leases", &DeleteParams::default()).await.unwrap();
        }
        Revoke::Refuse(server) => server.refuse(kuberator_test::memory::Verb::Any, "leases"),
    }
    let revoked = Instant::now();
    terms
        .wait("the work to be cancelled", Duration::from_secs(10), |terms| terms[0].1 == Ending::Cancelled)
        .await;
    let stopped = terms.snapshot()[0].2.unwrap() - revoked;
    // The last renewal was at most one retry period before the revocation; a standby may take
    // over a lease duration after it. The holder gave up at its renew deadline, before that.
    assert!(
        stopped <= RENEW_DEADLINE + Duration::from_millis(300),
        "stopped {stopped:?} after the revocation"
    );
    assert!(stopped < LEASE - RETRY, "stopped {stopped:?} after the revocation: others could lead by then");

    // Standing by again, it may not even read the lease: the election ends with the reason.
    let ended = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    let error = ended.unwrap_err();
    assert!(matches!(error, ElectionError::Forbidden { .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("Lease {namespace}/work")), "{error}");
    kuberator_test::delete_namespace(&admin, &namespace).await.unwrap();
}

/// How a test takes a leader's leases away.
enum Revoke {
    /// Delete the RoleBinding that allowed them (the real control plane).
    Unbind(Box<Api<RoleBinding>>),
    /// Refuse every verb on leases (the in-memory server).
    Refuse(kuberator_test::memory::MemoryServer),
}

struct Revocation {
    admin: Client,
    client: Client,
    namespace: String,
    revoke: Revoke,
}

/// A user that may use leases in a namespace of its own, through a binding the test takes
/// away.
async fn revoked_by_rbac() -> Revocation {
    let (admin, namespace) = setup("lease-revoked").await;
    let user = "lease-holder";
    let role = Role {
        metadata: ObjectMeta { name: Some("leases".into()), ..ObjectMeta::default() },
        rules: Some(kuberator::operator::manifests::lease_rules()),
    };
    Api::<Role>::namespaced(admin.clone(), &namespace).create(&PostParams::default(), &role).await.unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("leases".into()), ..ObjectMeta::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "leases".into(),
        },
        subjects: Some(vec![Subject { kind: "User".into(), name: user.into(), ..Subject::default() }]),
    };
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &namespace);
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let mut config = ControlPlane::shared().await.unwrap().config().await.unwrap();
    config.auth_info.impersonate = Some(user.into());
    let client = Client::try_from(config).unwrap();
    Revocation { admin, client, namespace, revoke: Revoke::Unbind(Box::new(bindings)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_held_while_the_work_drains_and_a_standby_takes_over_once_it_is_released() {
    let (client, namespace) = setup("lease-drain").await;
    let drain = LEASE * 2;
    let (first, second) = (Arc::new(Terms::default()), Arc::new(Terms::default()));
    let leader = Background::spawn({
        let (client, election, work) = (client.clone(), election(&namespace, "first"), work(&first, drain));
        move |shutdown| async move { election.run(client, shutdown, work).await.unwrap() }
    });
    first.wait("the first to lead", Duration::from_secs(30), |terms| terms.len() == 1).await;
    let standby = Background::spawn({
        let (client, election, work) =
            (client.clone(), election(&namespace, "second"), work(&second, Duration::ZERO));
        move |shutdown| async move { election.run(client, shutdown, work).await.unwrap() }
    });
    tokio::time::sleep(RETRY * 2).await;

    let stopping = tokio::spawn(leader.stop(drain + Duration::from_secs(10)));
    let asked = Instant::now();
    // Draining for longer than a lease: still the holder, renewing; the standby waits.
    while asked.elapsed() < drain - Duration::from_millis(500) {
        assert_eq!(holder(&client, &namespace).await.as_deref(), Some("first"));
        assert!(second.snapshot().is_empty(), "the standby led while the leader drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stopping.await.unwrap();
    let drained = first.snapshot()[0].2.unwrap();
    assert_eq!(first.snapshot()[0].1, Ending::Stopped);
    second.wait("the standby to lead", Duration::from_secs(10), |terms| terms.len() == 1).await;
    let handover = second.snapshot()[0].0 - drained;
    assert!(handover < Duration::from_secs(1), "the standby led {handover:?} after the release");
    assert_eq!(holder(&client, &namespace).await.as_deref(), Some("second"));

    standby.stop(Duration::from_secs(10)).await;
    kuberator_test::delete_namespace(&client, &namespace).await.unwrap();
}
