//! Leader election on a `coordination.k8s.io/v1` Lease: of several replicas of an operator,
//! one reconciles and the others stand by.
//!
//! # Expected flow
//!
//! [`LeaderElection::run`] stands by until this process holds the Lease, then starts your
//! work (the controller) and renews the Lease every `retry_period` while it runs:
//!
//! ```rust,no_run
//! # use kuberator::leader::LeaderElection;
//! # async fn example(client: kube::Client) -> Result<(), kuberator::leader::ElectionError> {
//! LeaderElection::new("my-operator", "operators")
//!     .run(client, kuberator::shutdown::signal(), |stop| async move {
//!         // Build and start the controller here; `stop` completes on graceful shutdown.
//!         stop.await;
//!     })
//!     .await
//! # }
//! ```
//!
//! The derived operator's `run()` does this for you (`--leader-election`, on by default).
//!
//! # Guarantees
//!
//! - The work runs only while this process holds the Lease, and at most one process holds
//!   it at a time, as long as clocks run at about the same rate (no clock is compared with
//!   another's: a Lease is judged expired by the candidate's own clock, when its record has
//!   not changed for `lease_duration`).
//! - When the holder cannot renew within `renew_deadline` of its last renewal, or finds the
//!   Lease taken, the work is stopped at once (its task is aborted, cancelling in-flight
//!   reconciles at their next `.await`) and the process stands by again. Since
//!   `renew_deadline` < `lease_duration`, it stops before any other candidate may take over.
//! - On graceful shutdown (the `shutdown` future completes) while leading, the work is asked
//!   to stop through its [`Shutdown`] future and the Lease is still renewed while it drains; then
//!   the Lease is released (no holder, one-second duration) so that a standby takes over at
//!   once instead of waiting for it to expire.
//! - A standby watches the Lease, so it notices a release within a round trip; it also
//!   polls every `retry_period` (up to 20 % later, at random, so that standbys do not
//!   collide), which is how it notices that a holder stopped renewing.
//!
//! # Defaults
//!
//! client-go's: a 15 s lease, a 10 s renew deadline, a 2 s retry period. After a holder
//! dies without releasing (`kill -9`, a lost node), a standby takes over between
//! `lease_duration` and `lease_duration + retry_period` later.
//!
//! # Errors
//!
//! [`LeaderElection::run`] fails for settings that cannot work, and when the API server
//! refuses access to the Lease (401, 403): the error names the Lease and the permission. It
//! does not fail when the API server is merely unreachable: it logs and keeps trying.
//!
//! # Caveats
//!
//! - A handler cut off by lost leadership is not resumed: the next leader reconciles the
//!   object again, so handlers must be idempotent (they must be anyway).
//! - The Lease needs `get`, `create` and `update` (and `list` and `watch`, to notice a
//!   release at once) on `leases` in group `coordination.k8s.io` in its namespace; the
//!   derived operator's `rbac` subcommand prints them.

pub(crate) mod lease;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::Client;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::lease::Attempt;
use self::lease::LeaseLock;
use crate::shutdown::AbortOnDrop;
use crate::shutdown::Shutdown;

/// client-go's lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// client-go's renew deadline.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// client-go's retry period.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Why leader election cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The durations contradict each other.
    #[error(
        "invalid leader election timing: {0} (the defaults are a {lease:?} lease, a {renew:?} renew deadline and a {retry:?} retry period)",
        lease = DEFAULT_LEASE_DURATION,
        renew = DEFAULT_RENEW_DEADLINE,
        retry = DEFAULT_RETRY_PERIOD
    )]
    InvalidTiming(String),
    /// The lease name or namespace is empty.
    #[error("invalid leader election lease: {0}")]
    InvalidLease(String),
    /// The API server refused access to the Lease.
    #[error(
        "not allowed to use Lease {namespace}/{name} for leader election as this client; grant get, create, update, list and watch on `leases` in group `coordination.k8s.io` in namespace {namespace} (the operator's `rbac` subcommand prints the rules)"
    )]
    Forbidden {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

/// Which Lease to hold, as whom, and how fast to react.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// Name of the Lease; every replica of an operator uses the same one.
    pub lease_name: String,
    /// Namespace of the Lease (usually the operator's own).
    pub lease_namespace: String,
    /// This process's name in the Lease; unique among the replicas.
    pub identity: String,
    /// How long a Lease that is no longer renewed keeps others out.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it stops its work.
    pub renew_deadline: Duration,
    /// How often the holder renews, and a standby looks.
    pub retry_period: Duration,
}

impl LeaderElection {
    /// The Lease `name` in `namespace`, with client-go's timing and [`default_identity`].
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            lease_name: name.into(),
            lease_namespace: namespace.into(),
            identity: default_identity(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Holds the Lease as `identity`.
    #[must_use]
    pub fn identity(self, identity: impl Into<String>) -> Self {
        Self { identity: identity.into(), ..self }
    }

    /// Other timing than client-go's defaults.
    #[must_use]
    pub fn timing(self, lease_duration: Duration, renew_deadline: Duration, retry_period: Duration) -> Self {
        Self { lease_duration, renew_deadline, retry_period, ..self }
    }

    /// Checks what client-go checks: `lease_duration` > `renew_deadline` > 1.2 ×
    /// `retry_period`, and whole seconds for the lease (the Lease stores seconds).
    ///
    /// # Errors
    ///
    /// Which rule is broken, with the values.
    pub fn validate(&self) -> Result<(), ElectionError> {
        let Self { lease_name, lease_namespace, identity, lease_duration, renew_deadline, retry_period } =
            self;
        if lease_name.is_empty() || lease_namespace.is_empty() || identity.is_empty() {
            return Err(ElectionError::InvalidLease(format!(
                "name `{lease_name}`, namespace `{lease_namespace}` and identity `{identity}` must not be empty"
            )));
        }
        if lease_duration.subsec_nanos() != 0 || lease_duration.is_zero() {
            return Err(ElectionError::InvalidTiming(format!(
                "the lease duration must be a whole number of seconds, not {lease_duration:?}"
            )));
        }
        if renew_deadline >= lease_duration {
            return Err(ElectionError::InvalidTiming(format!(
                "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})"
            )));
        }
        if retry_period.is_zero() || *renew_deadline <= retry_period.mul_f64(1.2) {
            return Err(ElectionError::InvalidTiming(format!(
                "the renew deadline ({renew_deadline:?}) must be longer than 1.2 times the retry period ({retry_period:?})"
            )));
        }
        Ok(())
    }

    pub(crate) fn lease(&self) -> String {
        format!("{}/{}", self.lease_namespace, self.lease_name)
    }

    /// Runs `work` whenever this process holds the Lease, until `shutdown` completes; see
    /// the [module docs](self) for what happens when.
    ///
    /// `work` is called once per term of leadership with a [`Shutdown`] future that completes on
    /// graceful shutdown; the future it returns runs in a task of its own.
    ///
    /// # Errors
    ///
    /// When the settings are invalid or the Lease may not be used ([`ElectionError`]).
    ///
    /// # Panics
    ///
    /// When `work` panics: the panic is passed on after the Lease is released.
    pub async fn run<S, W, F>(self, client: Client, shutdown: S, mut work: W) -> Result<(), ElectionError>
    where
        S: Future<Output = ()>,
        W: FnMut(Shutdown) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        self.validate()?;
        let api: Api<Lease> = Api::namespaced(client, &self.lease_namespace);
        let mut lock = LeaseLock::new(api.clone(), &self.lease_name, &self.identity, self.lease_duration);
        let changed = Arc::new(Notify::new());
        let _watch = AbortOnDrop(watch_lease(api, &self.lease_name, Arc::clone(&changed)));
        let status = crate::telemetry::LeaderStatus::new(&self.lease());
        let mut shutdown = pin!(futures::FutureExt::fuse(shutdown));
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    // A write cut off by the shutdown may have taken the lease after all.
                    let released = tokio::time::timeout(self.retry_period, lock.release()).await;
                    if let Ok(Err(error)) = released {
                        tracing::debug!(lease = %self.lease(), error = %crate::error::report(&error), "could not check the lease on shutdown");
                    }
                    return Ok(());
                }
                acquired = self.acquire(&mut lock, &changed) => acquired?,
            }
            status.leading(true);
            tracing::info!(lease = %self.lease(), identity = %self.identity, "leading: reconciling starts");
            let (stop, stopped) = oneshot::channel();
            let mut stop = Some(stop);
            let mut task = AbortOnDrop(tokio::spawn(work(Shutdown::new(async move {
                // A dropped sender means the election is gone: stop too.
                let _ = stopped.await;
            }))));
            let ended = {
                let mut renewing = pin!(self.keep_renewing(&mut lock));
                loop {
                    tokio::select! {
                        () = &mut shutdown, if stop.is_some() => {
                            tracing::info!(lease = %self.lease(), "shutting down: waiting for in-flight reconciles, then releasing the lease");
                            let _ = stop.take().map(|stop| stop.send(()));
                        }
                        joined = &mut task.0 => break Ok(joined),
                        lost = &mut renewing => break Err(lost),
                    }
                }
            };
            status.leading(false);
            match ended {
                Ok(joined) => {
                    // Bounded: an API server that does not answer must not hold up shutdown.
                    match tokio::time::timeout(self.renew_deadline, lock.release()).await {
                        Ok(Ok(())) => tracing::info!(lease = %self.lease(), "released the lease"),
                        Ok(Err(error)) => {
                            tracing::warn!(lease = %self.lease(), error = %crate::error::report(&error), "could not release the lease; a standby takes over once it expires");
                        }
                        Err(_) => {
                            tracing::warn!(lease = %self.lease(), "the API server did not answer the release in time; a standby takes over once the lease expires");
                        }
                    }
                    if let Err(error) = joined
                        && error.is_panic()
                    {
                        std::panic::resume_unwind(error.into_panic());
                    }
                    return Ok(());
                }
                Err(reason) => {
                    task.0.abort();
                    let _ = (&mut task.0).await;
                    tracing::error!(lease = %self.lease(), identity = %self.identity, %reason, "lost leadership: stopped reconciling at once; standing by");
                    if stop.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Gives the Lease up if this identity holds it (no holder, a duration of one second), so
    /// a standby takes over at once: for a process that stops its work by other means than
    /// [`run`](Self::run)'s shutdown future, such as a drain that ran out of time.
    ///
    /// # Errors
    ///
    /// When the API server refuses the read or the write.
    pub async fn release(&self, client: Client) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(client, &self.lease_namespace);
        LeaseLock::new(api, &self.lease_name, &self.identity, self.lease_duration).release().await
    }

    /// Returns once this process holds the Lease.
    async fn acquire(&self, lock: &mut LeaseLock, changed: &Notify) -> Result<(), ElectionError> {
        let mut reported: Option<String> = None;
        loop {
            match tokio::time::timeout(self.renew_deadline, lock.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => return Ok(()),
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if reported.as_deref() != Some(holder.as_str()) {
                        tracing::info!(lease = %self.lease(), %holder, "standing by: another replica leads");
                        reported = Some(holder);
                    }
                }
                Ok(Err(error)) if is_forbidden(&error) => {
                    return Err(ElectionError::Forbidden {
                        namespace: self.lease_namespace.clone(),
                        name: self.lease_name.clone(),
                        source: error,
                    });
                }
                Ok(Err(error)) if is_conflict(&error) => {
                    tracing::debug!(lease = %self.lease(), "another replica wrote the lease first");
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.lease(), error = %crate::error::report(&error), "could not read or take the lease; trying again");
                }
                Err(_) => {
                    tracing::warn!(lease = %self.lease(), "the API server did not answer in time; trying again");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(jittered(self.retry_period)) => {}
                () = changed.notified() => {}
            }
        }
    }

    /// Renews every `retry_period`; returns why leadership was lost.
    async fn keep_renewing(&self, lock: &mut LeaseLock) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            let deadline = renewed + self.renew_deadline;
            let mut last_error = String::from("no answer");
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return format!(
                        "could not renew the lease within the renew deadline of {:?}: {last_error}",
                        self.renew_deadline
                    );
                }
                match tokio::time::timeout(left, lock.try_acquire_or_renew()).await {
                    Ok(Ok(Attempt::Leading)) => {
                        renewed = Instant::now();
                        break;
                    }
                    Ok(Ok(Attempt::HeldBy(holder))) => return format!("the lease is held by {holder} now"),
                    Ok(Err(error)) => {
                        last_error = crate::error::report(&error);
                        tracing::warn!(lease = %self.lease(), error = %last_error, "could not renew the lease; trying again");
                    }
                    Err(_) => last_error = "the API server did not answer in time".to_owned(),
                }
                if !lock.holds() {
                    return "the lease is no longer held by this process".to_owned();
                }
                tokio::time::sleep(self.retry_period.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
            }
        }
    }
}

/// `$POD_NAME` (or `$HOSTNAME`, or `kuberator`) and a random suffix, so that two processes
/// on one host differ too.
///
/// Public for whoever builds a [`LeaderElection`] by hand (a trait-level operator) and wants
/// the identity a derived operator's `run()` would use; the derived operator calls it itself.
pub fn default_identity() -> String {
    let host = ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "kuberator".to_owned());
    let suffix = RandomState::new().hash_one((std::process::id(), Instant::now())) & 0xff_ffff_ffff;
    format!("{host}_{suffix:010x}")
}

/// `period`, up to 20 % later at random.
pub(crate) fn jittered(period: Duration) -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    period.mul_f64(1.0 + (random % 1001) as f64 / 5000.0)
}

fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 401 || status.code == 403)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Watches the one Lease and wakes a standby on every change.
fn watch_lease(api: Api<Lease>, name: &str, changed: Arc<Notify>) -> JoinHandle<()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::debug!(error = %crate::error::report(&error), "watching the lease"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_go_defaults_are_valid_and_contradictions_are_named() {
        let election = LeaderElection::new("op", "ns");
        election.validate().unwrap();
        assert_eq!(
            (election.lease_duration, election.renew_deadline, election.retry_period),
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
        );
        let secs = Duration::from_secs;
        let error = election.clone().timing(secs(10), secs(10), secs(2)).validate().unwrap_err();
        assert!(error.to_string().contains("must be shorter than the lease duration"), "{error}");
        let error = election.clone().timing(secs(15), secs(10), secs(9)).validate().unwrap_err();
        assert!(error.to_string().contains("1.2 times the retry period"), "{error}");
        let error = election.timing(Duration::from_millis(1500), secs(1), Duration::from_millis(100));
        assert!(error.validate().unwrap_err().to_string().contains("whole number of seconds"));
        let error = LeaderElection::new("", "ns").validate().unwrap_err();
        assert!(error.to_string().contains("must not be empty"), "{error}");
    }

    #[test]
    fn identities_differ_per_process_and_name_the_host() {
        let (one, two) = (default_identity(), default_identity());
        assert_ne!(one, two);
        let (host, suffix) = one.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert_eq!(suffix.len(), 10);
    }

    #[test]
    fn retries_are_spread_over_twenty_percent() {
        for _ in 0..100 {
            let delay = jittered(Duration::from_secs(2));
            assert!(delay >= Duration::from_secs(2) && delay <= Duration::from_millis(2400), "{delay:?}");
        }
    }
}
