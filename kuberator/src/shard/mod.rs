//! Sharding: several replicas of an operator each reconcile a share of the objects, split by
//! a hash of each object's uid (or namespace) and coordinated only through Leases.
//!
//! # Expected flow
//!
//! A derived operator's `run()` does this with `--shards N` (N > 1). By hand:
//!
//! ```rust,no_run
//! # use kuberator::shard::Sharding;
//! # async fn example(client: kube::Client) -> Result<(), kuberator::leader::ElectionError> {
//! Sharding::new("my-operator", "operators", 12)
//!     .run(client, kuberator::shutdown::signal(), |range, stop| async move {
//!         // Reconcile only the objects `range` contains; `stop` completes when the range
//!         // changes or the process shuts down: finish what runs, then return.
//!         println!("reconciling {range}");
//!         stop.await;
//!     })
//!     .await
//! # }
//! ```
//!
//! # Design
//!
//! - The hash space (64-bit FNV-1a, the API server's `shardSelector` hash, see
//!   [`ShardRange`]) is split into `shards` equal shards, each a Lease
//!   `<group>-shard-<shards>-<i>`. A replica reconciles an object only while it holds the
//!   Lease of the object's shard.
//! - Each replica holds a member Lease `<group>-member-<identity>` for as long as it runs, so
//!   that the others see it join (its Lease appears) and leave (deleted on shutdown, expired
//!   after a crash). With `m` live members sorted by identity, the member at index `i` should
//!   hold `shards / m` shards, one more when `i < shards % m`.
//! - Every `retry_period` (and whenever a Lease of the group changes) a replica renews what
//!   it holds, takes free or expired shards while it holds fewer than its share, and gives up
//!   its highest-numbered ones while it holds more.
//! - A replica works on one range at a time: the union of the shards it holds and keeps. When
//!   that set changes, it stops the work (its `stop` future completes; in-flight reconciles
//!   finish), only then releases the shards it gives up, and starts the work again on the new
//!   set. A shard that moves is therefore drained by its old owner before its Lease is free,
//!   and taken by the new owner only once free: no object is reconciled by two replicas at
//!   once, including during a move.
//! - A new replica waits one `retry_period` after joining before it takes shards, so that
//!   replicas that start together see each other first.
//!
//! # Guarantees
//!
//! - An object is reconciled only by the replica that holds its shard's Lease, as long as
//!   clocks run at about the same rate (expiry is judged by the observer's own clock, as for
//!   [`crate::leader`]).
//! - A replica that cannot renew a shard within `renew_deadline` of its last renewal, or
//!   finds it taken, stops its work at once (in-flight reconciles are cancelled at their next
//!   `.await`) before any other replica may take that shard (`renew_deadline` <
//!   `lease_duration`); it then goes on with the shards it still holds.
//! - After a replica dies (`kill -9`), its shards are taken over between `lease_duration` and
//!   `lease_duration + retry_period` (up to 20 % more, jitter) later, by the replicas whose
//!   share grew; its member Lease stops counting at the same time.
//! - On graceful shutdown, the work drains, then every shard is released and the member
//!   Lease deleted, so that the others take over at once.
//! - Replicas configured with different shard counts never reconcile at once: a replica does
//!   not take a shard while a shard Lease of another count is held and unexpired (during a
//!   rolling update that changes `--shards`, the new replicas wait until the old ones have
//!   let go).
//! - Leases of replicas that died, and shard Leases of another count, are deleted by the
//!   live replicas once they have been expired for two lease durations.
//!
//! # Caveats
//!
//! - A change of the set restarts the replica's controllers on the new range: they relist and
//!   resync what the range holds. Moves happen only when members join or leave.
//! - With `ShardKey::Uid`, the replica's cache holds only its share of the primary kind;
//!   children and referenced objects are watched whole (their uids differ from their
//!   parent's) and a change of one triggers only the replica that holds the parent. With
//!   `ShardKey::Namespace`, the children's watch is filtered by the same range too.
//! - The shards are the unit of balance: with `shards` a multiple of the replica count, the
//!   shares are equal.
//!
//! # Errors
//!
//! [`Sharding::run`] fails for settings that cannot work, and when the API server refuses
//! access to the Leases (401, 403): the error names the group and the permission.

mod filter;
mod leases;
mod range;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::Client;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector;
use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio::sync::oneshot;

pub(crate) use self::filter::ShardFilter;
pub(crate) use self::filter::with_selector;
use self::leases::Holder;
use self::leases::Leases;
use self::leases::Seen;
use self::leases::Written;
pub use self::range::ShardKey;
pub use self::range::ShardRange;
pub use self::range::hash;
use crate::leader::ElectionError;
use crate::shutdown::AbortOnDrop;
use crate::shutdown::Shutdown;

/// How many shards unless told: equal shares for 1, 2, 3, 4, 6 and 12 replicas.
pub const DEFAULT_SHARDS: u32 = 12;

/// The shard group a replica is part of, and how it behaves in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharding {
    /// The group: a prefix of its Lease names and the value of their label; every replica of
    /// an operator uses the same one.
    pub group: String,
    /// Namespace of the Leases (usually the operator's own).
    pub namespace: String,
    /// This replica's name in the Leases; unique among the replicas.
    pub identity: String,
    /// How many shards the hash space is split into; at least the number of replicas.
    pub shards: u32,
    /// What is hashed.
    pub key: ShardKey,
    /// How long a shard Lease that is no longer renewed keeps the others out.
    pub lease_duration: Duration,
    /// How long a replica keeps trying to renew before it stops working on a shard.
    pub renew_deadline: Duration,
    /// How often a replica renews and looks at the group.
    pub retry_period: Duration,
}

impl Sharding {
    /// `shards` shards by uid in the group `group` (its Leases in `namespace`), with
    /// client-go's leader-election timing and [`crate::leader::default_identity`].
    pub fn new(group: impl Into<String>, namespace: impl Into<String>, shards: u32) -> Self {
        Self {
            group: group.into(),
            namespace: namespace.into(),
            identity: crate::leader::default_identity(),
            shards,
            key: ShardKey::Uid,
            lease_duration: crate::leader::DEFAULT_LEASE_DURATION,
            renew_deadline: crate::leader::DEFAULT_RENEW_DEADLINE,
            retry_period: crate::leader::DEFAULT_RETRY_PERIOD,
        }
    }

    /// Holds the Leases as `identity`.
    #[must_use]
    pub fn identity(self, identity: impl Into<String>) -> Self {
        Self { identity: identity.into(), ..self }
    }

    /// Hashes `key` instead of the uid.
    #[must_use]
    pub fn key(self, key: ShardKey) -> Self {
        Self { key, ..self }
    }

    /// Other timing than client-go's defaults.
    #[must_use]
    pub fn timing(self, lease_duration: Duration, renew_deadline: Duration, retry_period: Duration) -> Self {
        Self { lease_duration, renew_deadline, retry_period, ..self }
    }

    /// Checks the timing as [`LeaderElection::validate`](crate::leader::LeaderElection::validate)
    /// does, the group name (a DNS label of at most 40 characters, so that the Lease names
    /// and their label fit) and the shard count (1 to 1024).
    ///
    /// # Errors
    ///
    /// Which rule is broken, with the values.
    pub fn validate(&self) -> Result<(), ElectionError> {
        crate::leader::LeaderElection::new(self.group.clone(), self.namespace.clone())
            .identity(self.identity.clone())
            .timing(self.lease_duration, self.renew_deadline, self.retry_period)
            .validate()?;
        let dns_label = self.group.len() <= 40
            && self
                .group
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && !self.group.starts_with('-')
            && !self.group.ends_with('-');
        if !dns_label {
            return Err(ElectionError::InvalidLease(format!(
                "the shard group `{}` must be lower-case letters, digits and `-`, at most 40 characters (set it with --lease-name)",
                self.group
            )));
        }
        if !(1..=1024).contains(&self.shards) {
            return Err(ElectionError::InvalidLease(format!(
                "--shards must be between 1 and 1024, not {}",
                self.shards
            )));
        }
        Ok(())
    }

    /// What the names of this shard count's Leases start with: `<group>-shard-<shards>-`.
    fn shard_prefix(&self) -> String {
        format!("{}-shard-{}-", self.group, self.shards)
    }

    fn shard_lease(&self, shard: u32) -> String {
        format!("{}{shard}", self.shard_prefix())
    }

    /// The member Lease of this replica: its identity as a DNS name, with a hash of the
    /// identity so that two identities never share one.
    fn member_lease(&self) -> String {
        let cleaned: String = self
            .identity
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(180)
            .collect();
        format!("{}-member-{}-{:08x}", self.group, cleaned.trim_matches('-'), hash(&self.identity) as u32)
    }

    fn shard_of_lease(&self, name: &str) -> Option<u32> {
        name.strip_prefix(&self.shard_prefix())?.parse().ok()
    }

    /// Whether the API server filters watches by shard (asked once, with a list of at most
    /// one Lease of the group's namespace); `false`, logged, when it does not or cannot say.
    pub async fn server_filters(&self, client: Client) -> bool {
        match filter::server_filters(client, &self.namespace).await {
            Ok(true) => {
                tracing::info!("the API server filters each replica's watches by its shards");
                true
            }
            Ok(false) => {
                tracing::warn!(
                    "the API server does not filter by shardSelector (it takes Kubernetes 1.36 or later with the feature gate ShardedListAndWatch): each replica receives every object and keeps its shards'",
                );
                false
            }
            Err(error) => {
                tracing::warn!(
                    error = %crate::error::report(&error),
                    "could not tell whether the API server filters by shard: each replica filters what it receives",
                );
                false
            }
        }
    }

    /// Runs `work` on the range of the shards this replica holds, whenever it holds some,
    /// until `shutdown` completes; see the [module docs](self) for what happens when.
    ///
    /// `work` is called once per range with a [`Shutdown`] future that completes when the
    /// range is about to change or the process shuts down; the future it returns runs in a
    /// task of its own and should return once it has drained.
    ///
    /// # Errors
    ///
    /// When the settings are invalid or the Leases may not be used ([`ElectionError`]).
    ///
    /// # Panics
    ///
    /// When `work` panics: the panic is passed on after the shards are released.
    pub async fn run<S, W, F>(self, client: Client, shutdown: S, work: W) -> Result<(), ElectionError>
    where
        S: Future<Output = ()>,
        W: FnMut(ShardRange, Shutdown) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::info_span!("shards", group = %self.group_name());
        tracing::Instrument::instrument(self.run_in_group(client, shutdown, work), span).await
    }

    async fn run_in_group<S, W, F>(
        self,
        client: Client,
        shutdown: S,
        mut work: W,
    ) -> Result<(), ElectionError>
    where
        S: Future<Output = ()>,
        W: FnMut(ShardRange, Shutdown) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        self.validate()?;
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut leases = Leases::new(api.clone(), &self.group, &self.identity, self.lease_duration);
        let changed = Arc::new(Notify::new());
        let (reader, _watch) = watch_group(api, &self.group, Arc::clone(&changed));
        let status = crate::telemetry::ShardStatus::new(&self.group_name());
        let member = self.member_lease();
        let joined = Instant::now();
        let mut seen = Seen::default();
        let mut term: Option<Term> = None;
        let mut shutting_down = false;
        let mut shutdown = pin!(futures::FutureExt::fuse(shutdown));
        tracing::info!(
            identity = %self.identity,
            shards = self.shards,
            key = %self.key,
            "joining the shard group",
        );
        loop {
            let now = Instant::now();
            seen.update(reader.state().iter().map(|lease| (**lease).clone()).collect(), now);
            // 1. Keep what is held; learn what was lost.
            self.renew(&mut leases, &member, &seen, shutting_down).await?;
            let held = self.held(&leases);
            if let Some(running) = &term
                && !running.shards.is_subset(&held)
            {
                let lost: Vec<u32> = running.shards.difference(&held).copied().collect();
                tracing::error!(?lost, "lost shards: stopped reconciling at once");
                status.moved("lost", lost.len());
                if let Some(running) = term.take() {
                    running.abort().await;
                }
            }
            // 2. Take up to this replica's share.
            let target = if shutting_down { 0 } else { self.target(&seen, now, joined) };
            if !shutting_down && now.duration_since(joined) >= self.retry_period {
                let taken = self.take_free(&mut leases, &seen, target, now).await?;
                status.moved("took", taken);
            }
            let held = self.held(&leases);
            let keep = leases::keep(&held, target);
            // 3. Work on exactly the shards to keep.
            match &mut term {
                Some(running) if running.shards == keep => {}
                Some(running) => running.stop(),
                None => {
                    let release: Vec<u32> = held.difference(&keep).copied().collect();
                    self.release(&mut leases, &release).await;
                    if !release.is_empty() {
                        tracing::info!(shards = ?release, "released shards");
                        status.moved("released", release.len());
                    }
                    if shutting_down {
                        let deleting = leases.delete_own(&member);
                        if let Ok(Err(error)) = tokio::time::timeout(self.retry_period, deleting).await {
                            tracing::warn!(
                                error = %crate::error::report(&error),
                                "could not delete the member lease; it expires by itself",
                            );
                        }
                        status.holds(0.0, 0);
                        return Ok(());
                    }
                    let range = ShardRange::of_shards(self.key, self.shards, keep.iter().copied());
                    status.holds(range.fraction(), keep.len());
                    if !keep.is_empty() {
                        tracing::info!(
                            shards = ?keep,
                            of = self.shards,
                            share = format!("{:.1} %", range.fraction() * 100.0),
                            selector = %range,
                            "reconciling shards",
                        );
                        term = Some(Term::start(keep, &mut work, range));
                    }
                }
            }
            self.collect_abandoned(&leases, &seen, now).await;
            // 4. Wait for the next tick, a change of the group, the end of the work or a signal.
            let ended = async {
                match term.as_mut().and_then(|running| running.task.as_mut()) {
                    Some(task) => (&mut task.0).await,
                    None => std::future::pending().await,
                }
            };
            // Also at the first renew deadline, so that a lost shard stops its work on time.
            let deadline =
                self.earliest_deadline(&leases).unwrap_or_else(|| Instant::now() + self.lease_duration);
            let wake = tokio::select! {
                () = tokio::time::sleep(crate::leader::jittered(self.retry_period)) => Wake::Look,
                () = tokio::time::sleep_until(deadline.into()) => Wake::Look,
                () = changed.notified() => Wake::Look,
                joined = ended => Wake::Ended(joined),
                () = &mut shutdown, if !shutting_down => Wake::Shutdown,
            };
            match wake {
                Wake::Look => {}
                Wake::Shutdown => {
                    tracing::info!("shutting down: draining, then releasing the shards");
                    shutting_down = true;
                    if let Some(running) = &mut term {
                        running.stop();
                    }
                }
                Wake::Ended(joined) => {
                    let asked = term.as_ref().is_some_and(|running| running.stop.is_none());
                    term = None;
                    if let Err(error) = joined
                        && error.is_panic()
                    {
                        let held: Vec<u32> = self.held(&leases).into_iter().collect();
                        self.release(&mut leases, &held).await;
                        std::panic::resume_unwind(error.into_panic());
                    }
                    if !asked {
                        tracing::info!("the work ended by itself: leaving the group");
                        shutting_down = true;
                    }
                }
            }
            // A drain that does not end is cut off after a lease duration, so that a move
            // cannot wait for ever (the shards are still held and renewed meanwhile).
            if let Some(running) = &term
                && running.stopping_since.is_some_and(|since| since.elapsed() >= self.lease_duration)
            {
                tracing::error!("the work did not drain within a lease duration: cancelled");
                if let Some(running) = term.take() {
                    running.abort().await;
                }
            }
        }
    }

    /// `namespace/group`, for logs and metrics.
    fn group_name(&self) -> String {
        format!("{}/{}", self.namespace, self.group)
    }

    /// The shards held now.
    fn held(&self, leases: &Leases) -> BTreeSet<u32> {
        leases.held().filter_map(|(name, _)| self.shard_of_lease(name)).collect()
    }

    /// Gives `shards` up, each write bounded by a retry period; one that fails expires by
    /// itself.
    async fn release(&self, leases: &mut Leases, shards: &[u32]) {
        for shard in shards {
            let lease = self.shard_lease(*shard);
            if let Ok(Err(error)) = tokio::time::timeout(self.retry_period, leases.release(&lease)).await {
                tracing::warn!(
                    shard,
                    error = %crate::error::report(&error),
                    "could not release a shard; it expires by itself",
                );
            }
        }
    }

    /// Renews the member Lease (taking it at first) and each shard held whose last renewal is
    /// a `retry_period` old; forgets a shard taken by another or past its renew deadline.
    async fn renew(
        &self,
        leases: &mut Leases,
        member: &str,
        seen: &Seen,
        shutting_down: bool,
    ) -> Result<(), ElectionError> {
        // All renewals of a round end by the earliest renew deadline, and within a retry
        // period: one slow answer must not hold up another lease's deadline.
        let until = self.earliest_deadline(leases).map_or(Instant::now() + self.retry_period, |deadline| {
            deadline.min(Instant::now() + self.retry_period)
        });
        let due: Vec<String> = leases
            .held()
            .filter(|(_, renewed)| renewed.elapsed() >= self.retry_period)
            .map(|(name, _)| name.to_owned())
            .collect();
        for name in due {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, leases.renew(&name)).await {
                Ok(Ok(Written::Held)) => {}
                Ok(Ok(Written::Taken)) => {
                    tracing::warn!(lease = %name, "another replica holds the lease now");
                    leases.forget(&name);
                }
                Ok(Err(error)) => {
                    self.refused(&error)?;
                    tracing::warn!(
                        lease = %name,
                        error = %crate::error::report(&error),
                        "could not renew; trying again",
                    );
                }
                Err(_) => {
                    tracing::warn!(lease = %name, "the API server did not answer the renewal in time");
                }
            }
        }
        let late: Vec<String> = leases
            .held()
            .filter(|(_, renewed)| renewed.elapsed() >= self.renew_deadline)
            .map(|(name, _)| name.to_owned())
            .collect();
        for name in late {
            tracing::error!(
                lease = %name,
                deadline = ?self.renew_deadline,
                "could not renew within the renew deadline",
            );
            leases.forget(&name);
        }
        if !shutting_down && !leases.held().any(|(name, _)| name == member) {
            let annotations =
                BTreeMap::from([(leases::TOTAL_ANNOTATION.to_owned(), self.shards.to_string())]);
            match tokio::time::timeout(
                self.retry_period,
                leases.take(member, "member", annotations, seen.get(member)),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Err(_) => tracing::warn!("the API server did not answer the member lease's write in time"),
                Ok(Err(error)) => {
                    self.refused(&error)?;
                    tracing::warn!(
                        error = %crate::error::report(&error),
                        "could not write the member lease; trying again",
                    );
                }
            }
        }
        Ok(())
    }

    /// When the first held Lease reaches its renew deadline.
    fn earliest_deadline(&self, leases: &Leases) -> Option<Instant> {
        leases.held().map(|(_, renewed)| renewed + self.renew_deadline).min()
    }

    /// This replica's share, from the live members that use the same shard count.
    fn target(&self, seen: &Seen, now: Instant, joined: Instant) -> u32 {
        let (mut members, others) = seen.members(self.shards, now);
        if !members.contains(&self.identity) {
            members.push(self.identity.clone());
            members.sort();
        }
        if !others.is_empty() && now.duration_since(joined) < self.retry_period {
            tracing::debug!(?others, "members with another shard count");
        }
        let index = members.iter().position(|member| *member == self.identity).unwrap_or_default();
        leases::share(self.shards, members.len(), index)
    }

    /// Takes free shards, lowest first, until this replica holds `target`.
    async fn take_free(
        &self,
        leases: &mut Leases,
        seen: &Seen,
        target: u32,
        now: Instant,
    ) -> Result<usize, ElectionError> {
        let foreign = seen.foreign_shards(&self.shard_prefix(), now);
        if !foreign.is_empty() {
            tracing::warn!(
                leases = ?foreign,
                "waiting: live replicas split the space into another number of shards",
            );
            return Ok(0);
        }
        let mut held = u32::try_from(self.held(leases).len()).unwrap_or(u32::MAX);
        let mut taken = Vec::new();
        for shard in 0..self.shards {
            if held >= target {
                break;
            }
            let name = self.shard_lease(shard);
            if leases.held().any(|(held, _)| held == name) {
                continue;
            }
            match seen.holder(&name, now) {
                Some(Holder::Held(_)) => continue,
                Some(Holder::Free) | None => {}
            }
            let taking = leases.take(&name, "shard", BTreeMap::new(), seen.get(&name));
            let Ok(outcome) = tokio::time::timeout(self.retry_period, taking).await else {
                tracing::warn!(lease = %name, "the API server did not answer in time; trying again");
                break;
            };
            match outcome {
                Ok(Written::Held) => {
                    held += 1;
                    taken.push(shard);
                }
                Ok(Written::Taken) => {}
                Err(error) => {
                    self.refused(&error)?;
                    tracing::warn!(
                        lease = %name,
                        error = %crate::error::report(&error),
                        "could not take a shard; trying again",
                    );
                }
            }
        }
        if !taken.is_empty() {
            tracing::info!(shards = ?taken, "took shards");
        }
        Ok(taken.len())
    }

    /// Deletes Leases that have been expired for two lease durations and are not this
    /// count's shards: those of replicas that died, and of another shard count.
    async fn collect_abandoned(&self, leases: &Leases, seen: &Seen, now: Instant) {
        for lease in seen.abandoned(&self.shard_prefix(), self.lease_duration * 2, now) {
            let name = kube::ResourceExt::name_any(&lease);
            match tokio::time::timeout(self.retry_period, leases.delete(&lease)).await.unwrap_or(Ok(())) {
                Ok(()) => {
                    tracing::info!(lease = %name, "deleted an abandoned lease");
                }
                Err(error) => {
                    tracing::debug!(
                        lease = %name,
                        error = %crate::error::report(&error),
                        "could not delete an abandoned lease",
                    );
                }
            }
        }
    }

    fn refused(&self, error: &kube::Error) -> Result<(), ElectionError> {
        if matches!(error, kube::Error::Api(status) if status.code == 401 || status.code == 403) {
            return Err(ElectionError::Forbidden {
                namespace: self.namespace.clone(),
                name: format!("{}-*", self.group),
                source: clone_error(error),
            });
        }
        Ok(())
    }
}

/// The API error again (kube's error is not `Clone`).
fn clone_error(error: &kube::Error) -> kube::Error {
    match error {
        kube::Error::Api(status) => kube::Error::Api(status.clone()),
        other => kube::Error::Service(other.to_string().into()),
    }
}

/// What woke the loop.
enum Wake {
    /// A tick or a change of the group's Leases.
    Look,
    /// The work's task ended.
    Ended(Result<(), tokio::task::JoinError>),
    /// The process shuts down.
    Shutdown,
}

/// The work on one set of shards.
struct Term {
    shards: BTreeSet<u32>,
    task: Option<AbortOnDrop<()>>,
    /// Completes the work's stop future; `None` once sent.
    stop: Option<oneshot::Sender<()>>,
    /// When the work was asked to stop.
    stopping_since: Option<Instant>,
}

impl Term {
    fn start<W, F>(shards: BTreeSet<u32>, work: &mut W, range: ShardRange) -> Self
    where
        W: FnMut(ShardRange, Shutdown) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(work(
            range,
            Shutdown::new(async move {
                // A dropped sender means the term is gone: stop too.
                let _ = stopped.await;
            }),
        ));
        Self { shards, task: Some(AbortOnDrop(task)), stop: Some(stop), stopping_since: None }
    }

    /// Asks the work to drain and return.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            self.stopping_since = Some(Instant::now());
        }
    }

    /// Cancels the work at once and waits until it is gone.
    async fn abort(mut self) {
        if let Some(mut task) = self.task.take() {
            task.0.abort();
            let _ = (&mut task.0).await;
        }
    }
}

/// The group's Leases, cached, and a wake-up on every change.
fn watch_group(
    api: Api<Lease>,
    group: &str,
    changed: Arc<Notify>,
) -> (reflector::Store<Lease>, AbortOnDrop<()>) {
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(&format!("{}={group}", leases::GROUP_LABEL));
    let task = tokio::spawn(async move {
        let mut events = pin!(reflector::reflector(writer, watcher(api, config)).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    tracing::debug!(error = %crate::error::report(&error), "watching the shard leases");
                }
            }
        }
    });
    (reader, AbortOnDrop(task))
}
