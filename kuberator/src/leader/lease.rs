//! One candidate's view of the Lease: acquire or renew it, and release it.
//!
//! Expiry is judged by this process's own clock: a lease held by another is free once its
//! record has not changed for `lease_duration` since this process first saw that record, as
//! client-go does. Clocks of different machines are never compared.

use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ObjectMeta;
use kube::api::PostParams;

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attempt {
    /// This process holds the lease now.
    Leading,
    /// Another holder's lease has not expired yet.
    HeldBy(String),
}

/// The lease as this candidate last saw it.
pub(super) struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// The last record read or written, and when it last changed.
    observed: Option<(Option<LeaseSpec>, Instant)>,
}

impl LeaseLock {
    pub(super) fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self { api, name: name.to_owned(), identity: identity.to_owned(), lease_duration, observed: None }
    }

    /// Whether this process held the lease when it last looked.
    pub(super) fn holds(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|(spec, _)| spec.as_ref()?.holder_identity.as_deref())
            .is_some_and(|holder| holder == self.identity)
    }

    /// Takes the lease if it is free or expired, or renews it if this process holds it.
    ///
    /// # Errors
    ///
    /// When the API server refuses a read or a write; a write that lost a race (409) is one
    /// of them.
    pub(super) async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.record(now, now, 0)),
            };
            let created = self.api.create(&PostParams::default(), &lease).await?;
            self.observed = Some((created.spec, Instant::now()));
            return Ok(Attempt::Leading);
        };
        let spec = current.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != current.spec) {
            self.observed = Some((current.spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
        let since = self.observed.as_ref().map_or_else(Instant::now, |(_, since)| *since);
        if let Some(holder) = holder.as_deref().filter(|holder| *holder != self.identity) {
            // Time the holder was granted: the duration it wrote, else ours.
            let granted = spec
                .lease_duration_seconds
                .and_then(|seconds| u64::try_from(seconds).ok())
                .map_or(self.lease_duration, Duration::from_secs);
            if since.elapsed() < granted {
                return Ok(Attempt::HeldBy(holder.to_owned()));
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let record = if holder.as_deref() == Some(self.identity.as_str()) {
            let acquired = spec.acquire_time.map_or(now, |time| time.0);
            self.record(acquired, now, transitions)
        } else {
            self.record(now, now, transitions.saturating_add(1))
        };
        let replaced = self.replace(current, record).await?;
        self.observed = Some((replaced.spec, Instant::now()));
        Ok(Attempt::Leading)
    }

    /// Gives the lease up, if this process holds it, so that a candidate takes it at once:
    /// no holder, and a duration of one second.
    ///
    /// # Errors
    ///
    /// When the API server refuses the write.
    pub(super) async fn release(&mut self) -> Result<(), kube::Error> {
        for _ in 0..3 {
            let Some(current) = self.api.get_opt(&self.name).await? else { return Ok(()) };
            let spec = current.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            match self.replace(current, released(spec)).await {
                Ok(released) => {
                    self.observed = Some((released.spec, Instant::now()));
                    return Ok(());
                }
                // Someone wrote in between: look again.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn record(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        held_by(&self.identity, self.lease_duration, (acquired, renewed), transitions)
    }

    /// Writes `record` over `current`; its resourceVersion makes a concurrent write fail with
    /// 409 instead of being overwritten.
    async fn replace(&self, current: Lease, record: LeaseSpec) -> Result<Lease, kube::Error> {
        let lease = Lease { spec: Some(record), ..current };
        self.api.replace(&self.name, &PostParams::default(), &lease).await
    }
}

/// The record of a Lease held by `identity` for `lease_duration`, acquired and renewed at
/// `times`, after `transitions` changes of holder.
pub(crate) fn held_by(
    identity: &str,
    lease_duration: Duration,
    (acquired, renewed): (Timestamp, Timestamp),
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(renewed)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// `spec` given up: no holder and a duration of one second, so that the next candidate takes
/// it at once.
pub(crate) fn released(spec: LeaseSpec) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        ..spec
    }
}
