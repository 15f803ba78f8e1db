//! The Leases of a shard group as one replica sees and writes them.
//!
//! Every Lease of the group carries the label `kuberator.io/shard-group=<group>`: one per
//! replica (`<group>-member-<identity>`, held by that replica for as long as it runs) and one
//! per shard (`<group>-shard-<total>-<i>`, held by the replica that reconciles it). Expiry is
//! judged by this process's own clock, as for leader election ([`crate::leader`]): a Lease
//! that is held by another is expired once its record has not changed for its duration since
//! this process first saw that record.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::ResourceExt as _;
use kube::api::DeleteParams;
use kube::api::ObjectMeta;
use kube::api::PostParams;
use kube::api::Preconditions;

/// The label every Lease of a group carries.
pub(crate) const GROUP_LABEL: &str = "kuberator.io/shard-group";
/// The label that says what a Lease is for: `member` or `shard`.
const ROLE_LABEL: &str = "kuberator.io/shard-role";
/// On a member Lease: how many shards that replica splits the hash space into.
pub(crate) const TOTAL_ANNOTATION: &str = "kuberator.io/shards";

/// The group's Leases as read, with when each record was first seen.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    leases: HashMap<String, (Lease, Instant)>,
}

/// One shard Lease's state as this replica judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Nobody holds it, or its holder let it expire.
    Free,
    /// Held by this identity (or another) and not expired.
    Held(String),
}

impl Seen {
    /// Takes in what the group holds now; entries of Leases that went are forgotten.
    pub(crate) fn update(&mut self, leases: Vec<Lease>, now: Instant) {
        let mut next = HashMap::with_capacity(leases.len());
        for lease in leases {
            let name = lease.name_any();
            let since = match self.leases.remove(&name) {
                Some((seen, since)) if seen.spec == lease.spec => since,
                _ => now,
            };
            next.insert(name, (lease, since));
        }
        self.leases = next;
    }

    /// The Lease named `name`, if the group has it.
    pub(crate) fn get(&self, name: &str) -> Option<&Lease> {
        self.leases.get(name).map(|(lease, _)| lease)
    }

    /// Who holds the Lease `name`; `None` when there is no such Lease.
    pub(crate) fn holder(&self, name: &str, now: Instant) -> Option<Holder> {
        let (lease, since) = self.leases.get(name)?;
        Some(judge(lease, *since, now))
    }

    /// The identities of the live members that split the space into `total` shards, sorted;
    /// and whether a live member splits it otherwise.
    pub(crate) fn members(&self, total: u32, now: Instant) -> (Vec<String>, Vec<String>) {
        let mut same = Vec::new();
        let mut other = Vec::new();
        for (lease, since) in self.leases.values() {
            if lease.labels().get(ROLE_LABEL).map(String::as_str) != Some("member") {
                continue;
            }
            let Holder::Held(identity) = judge(lease, *since, now) else { continue };
            let splits =
                lease.annotations().get(TOTAL_ANNOTATION).and_then(|total| total.parse::<u32>().ok());
            if splits == Some(total) { same.push(identity) } else { other.push(identity) }
        }
        same.sort();
        other.sort();
        (same, other)
    }

    /// Shard Leases not named with `ours` (another total's) that are held and not expired:
    /// while one is, the hash ranges of this total may overlap a range someone reconciles.
    pub(crate) fn foreign_shards(&self, ours: &str, now: Instant) -> Vec<String> {
        self.leases
            .iter()
            .filter(|(name, (lease, _))| {
                lease.labels().get(ROLE_LABEL).map(String::as_str) == Some("shard") && !name.starts_with(ours)
            })
            .filter(|(_, (lease, since))| matches!(judge(lease, *since, now), Holder::Held(_)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Leases that expired more than `grace` ago and are no live holder's: left by replicas
    /// that died (member Leases) or by another shard count (shard Leases), for deletion.
    pub(crate) fn abandoned(&self, keep_prefix: &str, grace: Duration, now: Instant) -> Vec<Lease> {
        self.leases
            .iter()
            .filter(|(name, _)| !name.starts_with(keep_prefix))
            .filter(|(_, (lease, since))| {
                let expired_at = *since + granted(lease).unwrap_or_default();
                judge(lease, *since, now) == Holder::Free
                    && now.saturating_duration_since(expired_at) >= grace
            })
            .map(|(_, (lease, _))| lease.clone())
            .collect()
    }
}

/// How long the Lease's holder was granted, as it wrote.
fn granted(lease: &Lease) -> Option<Duration> {
    let seconds = lease.spec.as_ref()?.lease_duration_seconds?;
    Some(Duration::from_secs(u64::try_from(seconds).ok()?))
}

fn judge(lease: &Lease, since: Instant, now: Instant) -> Holder {
    let holder =
        lease.spec.as_ref().and_then(|spec| spec.holder_identity.clone()).filter(|holder| !holder.is_empty());
    match holder {
        Some(holder) if now.saturating_duration_since(since) < granted(lease).unwrap_or_default() => {
            Holder::Held(holder)
        }
        _ => Holder::Free,
    }
}

/// What this replica holds and how to write it.
pub(crate) struct Leases {
    api: Api<Lease>,
    group: String,
    identity: String,
    lease_duration: Duration,
    /// Each Lease this replica holds, as last written, and when it was written.
    held: BTreeMap<String, (Lease, Instant)>,
}

/// What a write found.
#[derive(Debug)]
pub(crate) enum Written {
    /// This replica holds the Lease now.
    Held,
    /// Another replica does, or wrote first.
    Taken,
}

impl Leases {
    pub(crate) fn new(api: Api<Lease>, group: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api,
            group: group.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            held: BTreeMap::new(),
        }
    }

    /// The names of the Leases held, with when each was last renewed.
    pub(crate) fn held(&self) -> impl Iterator<Item = (&str, Instant)> {
        self.held.iter().map(|(name, (_, renewed))| (name.as_str(), *renewed))
    }

    /// Forgets `name` without writing (it was lost).
    pub(crate) fn forget(&mut self, name: &str) {
        self.held.remove(name);
    }

    /// Takes `name` (a Lease with `role` and `annotations`) as `current` shows it: created
    /// if it is not there, else written over `current`'s version, so that of two replicas
    /// that try at once, one gets it.
    ///
    /// # Errors
    ///
    /// When the API server refuses the write for another reason than a race.
    pub(crate) async fn take(
        &mut self,
        name: &str,
        role: &str,
        annotations: BTreeMap<String, String>,
        current: Option<&Lease>,
    ) -> Result<Written, kube::Error> {
        let now = Timestamp::now();
        let written = match current {
            None => {
                let labels = BTreeMap::from([
                    (GROUP_LABEL.to_owned(), self.group.clone()),
                    (ROLE_LABEL.to_owned(), role.to_owned()),
                ]);
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        labels: Some(labels),
                        annotations: Some(annotations).filter(|annotations| !annotations.is_empty()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.record(now, now, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(current) => {
                let transitions = current.spec.as_ref().and_then(|spec| spec.lease_transitions).unwrap_or(0);
                let mut lease = current.clone();
                lease.spec = Some(self.record(now, now, transitions.saturating_add(1)));
                self.api.replace(name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                self.held.insert(name.to_owned(), (lease, Instant::now()));
                Ok(Written::Held)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Written::Taken),
            Err(error) => Err(error),
        }
    }

    /// Renews `name`, which this replica holds: over the version it last wrote, or, when
    /// something else wrote since, over the current one if it still names this replica.
    ///
    /// # Errors
    ///
    /// When the API server does not take the write; the Lease stays held until its renew
    /// deadline, which the caller watches.
    pub(crate) async fn renew(&mut self, name: &str) -> Result<Written, kube::Error> {
        let Some((mut lease, _)) = self.held.get(name).cloned() else { return Ok(Written::Taken) };
        for _ in 0..2 {
            let spec = lease.spec.clone().unwrap_or_default();
            let acquired = spec.acquire_time.map_or_else(Timestamp::now, |time| time.0);
            lease.spec =
                Some(self.record(acquired, Timestamp::now(), spec.lease_transitions.unwrap_or_default()));
            match self.api.replace(name, &PostParams::default(), &lease).await {
                Ok(renewed) => {
                    self.held.insert(name.to_owned(), (renewed, Instant::now()));
                    return Ok(Written::Held);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let Some(current) = self.api.get_opt(name).await? else {
                        self.held.remove(name);
                        return Ok(Written::Taken);
                    };
                    let holder = current.spec.as_ref().and_then(|spec| spec.holder_identity.as_deref());
                    if holder != Some(self.identity.as_str()) {
                        self.held.remove(name);
                        return Ok(Written::Taken);
                    }
                    lease = current;
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.held.remove(name);
                    return Ok(Written::Taken);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Written::Taken)
    }

    /// Gives `name` up: no holder and a duration of one second, so that the next replica
    /// takes it at once.
    ///
    /// # Errors
    ///
    /// When the API server refuses the write; the Lease then expires by itself.
    pub(crate) async fn release(&mut self, name: &str) -> Result<(), kube::Error> {
        let Some((mut lease, _)) = self.held.remove(name) else { return Ok(()) };
        lease.spec = Some(crate::leader::lease::released(lease.spec.take().unwrap_or_default()));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            // Someone wrote in between: it is not ours to give any more.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Deletes `name` (this replica's member Lease, on shutdown).
    ///
    /// # Errors
    ///
    /// When the API server refuses the delete.
    pub(crate) async fn delete_own(&mut self, name: &str) -> Result<(), kube::Error> {
        let Some((lease, _)) = self.held.remove(name) else { return Ok(()) };
        self.delete(&lease).await
    }

    /// Deletes `lease` if it has not changed since it was read.
    ///
    /// # Errors
    ///
    /// When the API server refuses the delete; a Lease that changed or went is no error.
    pub(crate) async fn delete(&self, lease: &Lease) -> Result<(), kube::Error> {
        let preconditions = Preconditions { uid: lease.uid(), resource_version: lease.resource_version() };
        let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
        match self.api.delete(&lease.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn record(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        crate::leader::lease::held_by(&self.identity, self.lease_duration, (acquired, renewed), transitions)
    }
}

/// The shards of `total` that go to the member at `index` of `members`: `total / members`,
/// one more for the first `total % members`.
pub(crate) fn share(total: u32, members: usize, index: usize) -> u32 {
    let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    total / members + u32::from(index < total % members)
}

/// Which of `held` to keep when this replica should hold `target`: the lowest-numbered.
pub(crate) fn keep(held: &BTreeSet<u32>, target: u32) -> BTreeSet<u32> {
    held.iter().copied().take(usize::try_from(target).unwrap_or(usize::MAX)).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn lease(name: &str, role: &str, holder: Option<&str>, seconds: i32, total: Option<u32>) -> Lease {
        let mut metadata = ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (GROUP_LABEL.to_owned(), "op".to_owned()),
                (ROLE_LABEL.to_owned(), role.to_owned()),
            ])),
            ..ObjectMeta::default()
        };
        if let Some(total) = total {
            metadata.annotations = Some(BTreeMap::from([(TOTAL_ANNOTATION.to_owned(), total.to_string())]));
        }
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(seconds),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for total in [1, 5, 12, 24] {
            for members in 1..=7 {
                let shares: Vec<u32> = (0..members).map(|index| share(total, members, index)).collect();
                assert_eq!(shares.iter().sum::<u32>(), total, "{total} over {members}");
                assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(keep(&BTreeSet::from([7, 1, 4]), 2), BTreeSet::from([1, 4]));
    }

    #[test]
    fn expiry_is_judged_by_this_clock_from_when_a_record_was_first_seen() {
        let start = Instant::now();
        let mut seen = Seen::default();
        seen.update(vec![lease("op-member-a", "member", Some("a"), 15, Some(12))], start);
        assert_eq!(seen.holder("op-member-a", start), Some(Holder::Held("a".to_owned())));
        // The same record 14 s later: still held; 15 s later: expired.
        let later = start + Duration::from_secs(14);
        seen.update(vec![lease("op-member-a", "member", Some("a"), 15, Some(12))], later);
        assert_eq!(seen.holder("op-member-a", later), Some(Holder::Held("a".to_owned())));
        let expired = start + Duration::from_secs(15);
        assert_eq!(seen.holder("op-member-a", expired), Some(Holder::Free));
        // A renewal (a new record) counts from when it is seen.
        let mut renewed = lease("op-member-a", "member", Some("a"), 15, Some(12));
        renewed.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::now()));
        seen.update(vec![renewed], expired);
        assert_eq!(
            seen.holder("op-member-a", expired + Duration::from_secs(10)),
            Some(Holder::Held("a".to_owned()))
        );
        // A Lease that went is forgotten.
        seen.update(Vec::new(), expired);
        assert_eq!(seen.holder("op-member-a", expired), None);
    }

    #[test]
    fn members_are_counted_by_their_shard_count_and_abandoned_leases_are_found() {
        let now = Instant::now();
        let mut seen = Seen::default();
        seen.update(
            vec![
                lease("op-member-b", "member", Some("b"), 15, Some(12)),
                lease("op-member-a", "member", Some("a"), 15, Some(12)),
                lease("op-member-c", "member", Some("c"), 15, Some(24)),
                lease("op-member-gone", "member", None, 1, Some(12)),
                lease("op-shard-24-3", "shard", Some("c"), 15, None),
                lease("op-shard-12-0", "shard", Some("a"), 15, None),
            ],
            now,
        );
        assert_eq!(seen.members(12, now), (vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]));
        assert_eq!(seen.foreign_shards("op-shard-12-", now), vec!["op-shard-24-3".to_owned()]);
        let abandoned = |at| -> Vec<String> {
            let mut names: Vec<String> = seen
                .abandoned("op-shard-12-", Duration::from_secs(30), at)
                .iter()
                .map(|lease| lease.name_any())
                .collect();
            names.sort();
            names
        };
        assert!(abandoned(now + Duration::from_secs(10)).is_empty());
        assert_eq!(abandoned(now + Duration::from_secs(31)), vec!["op-member-gone".to_owned()]);
        assert_eq!(
            abandoned(now + Duration::from_secs(46)),
            ["op-member-a", "op-member-b", "op-member-c", "op-member-gone", "op-shard-24-3"]
                .map(str::to_owned)
        );
    }
}
