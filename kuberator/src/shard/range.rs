//! The hash space and a replica's share of it, in the API server's own terms.
//!
//! Kubernetes 1.36 (`ShardedListAndWatch`, alpha) filters lists and watches by a
//! `shardSelector` such as `shardRange(object.metadata.uid, '0x0000000000000000',
//! '0x8000000000000000')`: the 64-bit FNV-1a hash of the object's uid (or namespace), as 16
//! lowercase hex digits, within `[start, end)`, several ranges joined by `||`. [`hash`] is that
//! hash and [`ShardRange::selector`] writes that selector, so a range filtered here selects
//! exactly what the API server selects for it.

use std::fmt;

/// The hash space: `[0, 2^64)`.
const SPACE: u128 = 1 << 64;

/// The 64-bit FNV-1a hash of `value`'s bytes: what the API server hashes a shard key with.
#[must_use]
pub fn hash(value: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    value.bytes().fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

/// What the hash is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShardKey {
    /// `metadata.uid`: objects spread evenly whatever their namespaces; children and
    /// referenced objects are watched whole and follow their parent by its uid.
    #[default]
    Uid,
    /// `metadata.namespace`: a namespace and everything in it go to one replica, so children
    /// and referenced objects in the parent's namespace are filtered by the API server too;
    /// even only with many namespaces of similar size.
    Namespace,
}

impl ShardKey {
    /// The field path the API server's selector names.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Self::Uid => "object.metadata.uid",
            Self::Namespace => "object.metadata.namespace",
        }
    }

    /// The value hashed for an object with this uid and namespace (empty when it has none).
    #[must_use]
    pub fn value<'a>(self, uid: Option<&'a str>, namespace: Option<&'a str>) -> &'a str {
        match self {
            Self::Uid => uid.unwrap_or_default(),
            Self::Namespace => namespace.unwrap_or_default(),
        }
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uid => "uid",
            Self::Namespace => "namespace",
        })
    }
}

impl std::str::FromStr for ShardKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "uid" => Ok(Self::Uid),
            "namespace" => Ok(Self::Namespace),
            other => Err(format!("`{other}` is no shard key: write `uid` or `namespace`")),
        }
    }
}

/// Some hash ranges of one key: the objects a replica reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardRange {
    key: ShardKey,
    /// Sorted, disjoint, not adjacent; `[start, end)` with `end` up to 2^64.
    ranges: Vec<(u128, u128)>,
}

impl ShardRange {
    /// The whole hash space.
    #[must_use]
    pub fn all(key: ShardKey) -> Self {
        Self { key, ranges: vec![(0, SPACE)] }
    }

    /// The shards `held` of `total` equal ones (shard `i` is `[i * 2^64 / total,
    /// (i + 1) * 2^64 / total)`), adjacent ones merged. Shards at or above `total` are
    /// ignored.
    #[must_use]
    pub fn of_shards(key: ShardKey, total: u32, held: impl IntoIterator<Item = u32>) -> Self {
        let mut held: Vec<u32> = held.into_iter().filter(|shard| *shard < total).collect();
        held.sort_unstable();
        held.dedup();
        let mut ranges: Vec<(u128, u128)> = Vec::new();
        for shard in held {
            let (start, end) = shard_bounds(total, shard);
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => ranges.push((start, end)),
            }
        }
        Self { key, ranges }
    }

    /// What is hashed.
    #[must_use]
    pub fn key(&self) -> ShardKey {
        self.key
    }

    /// Whether nothing is in the range.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether the range is the whole hash space.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.ranges == [(0, SPACE)]
    }

    /// The share of the hash space in the range, from 0 to 1.
    #[must_use]
    pub fn fraction(&self) -> f64 {
        let width: u128 = self.ranges.iter().map(|(start, end)| end - start).sum();
        // Precision is not the point: it is a gauge.
        #[expect(clippy::cast_precision_loss, reason = "a share for a gauge")]
        let fraction = width as f64 / SPACE as f64;
        fraction
    }

    /// Whether `hash` is in the range.
    #[must_use]
    pub fn contains_hash(&self, hash: u64) -> bool {
        let hash = u128::from(hash);
        self.ranges.iter().any(|(start, end)| *start <= hash && hash < *end)
    }

    /// Whether an object with this uid and namespace is in the range.
    #[must_use]
    pub fn contains(&self, uid: Option<&str>, namespace: Option<&str>) -> bool {
        self.contains_hash(hash(self.key.value(uid, namespace)))
    }

    /// The API server's `shardSelector` for the range; empty for an empty range (which no
    /// selector can say: do not list at all).
    #[must_use]
    pub fn selector(&self) -> String {
        let field = self.key.field();
        self.ranges
            .iter()
            .map(|(start, end)| format!("shardRange({field}, '{}', '{}')", hex(*start), hex(*end)))
            .collect::<Vec<_>>()
            .join(" || ")
    }

    /// Reads a `shardSelector` as the API server does: `shardRange(FIELD, 'START', 'END')`
    /// terms joined by `||`, one field for all, bounds as `0x` and 16 lowercase hex digits
    /// (or `0x10000000000000000` for 2^64), each start below its end.
    ///
    /// # Errors
    ///
    /// What is wrong with the selector, in words the API server's message would use.
    pub fn parse(selector: &str) -> Result<Self, String> {
        let selector = selector.trim();
        if selector.is_empty() {
            return Err(
                "empty shard selector is not allowed; omit the parameter for unfiltered lists".to_owned()
            );
        }
        let mut key: Option<ShardKey> = None;
        let mut ranges = Vec::new();
        for term in selector.split("||") {
            let term = term.trim();
            let arguments = term
                .strip_prefix("shardRange")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('('))
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| {
                    format!("unsupported expression `{term}`; only shardRange() and || are allowed")
                })?;
            let arguments: Vec<&str> = arguments.split(',').map(str::trim).collect();
            let [field, start, end] = arguments[..] else {
                return Err(format!("shardRange() requires exactly 3 arguments, got {}", arguments.len()));
            };
            let term_key = match field {
                "object.metadata.uid" => ShardKey::Uid,
                "object.metadata.namespace" => ShardKey::Namespace,
                other => {
                    return Err(format!(
                        "unsupported field path \"{other}\"; supported: object.metadata.uid, object.metadata.namespace"
                    ));
                }
            };
            if key.is_some_and(|key| key != term_key) {
                return Err("all shard ranges must use the same field".to_owned());
            }
            key = Some(term_key);
            let (start, end) = (bound(start, "hexStart")?, bound(end, "hexEnd")?);
            if start >= end {
                return Err(format!("shard range start {} must be less than end {}", hex(start), hex(end)));
            }
            ranges.push((start, end));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::new();
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Ok(Self { key: key.unwrap_or_default(), ranges: merged })
    }
}

impl fmt::Display for ShardRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ranges.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&self.selector())
    }
}

/// Shard `shard` of `total` equal ones.
fn shard_bounds(total: u32, shard: u32) -> (u128, u128) {
    let total = u128::from(total.max(1));
    (u128::from(shard) * SPACE / total, (u128::from(shard) + 1) * SPACE / total)
}

/// A bound as the selector writes it.
fn hex(value: u128) -> String {
    if value >= SPACE { "0x10000000000000000".to_owned() } else { format!("0x{value:016x}") }
}

/// A quoted bound of a selector.
fn bound(text: &str, name: &str) -> Result<u128, String> {
    let quoted = text
        .strip_prefix('\'')
        .and_then(|text| text.strip_suffix('\''))
        .or_else(|| text.strip_prefix('"').and_then(|text| text.strip_suffix('"')))
        .ok_or_else(|| format!("{name} must be a string literal (e.g. '0xff'), got `{text}`"))?;
    let digits =
        quoted.strip_prefix("0x").ok_or_else(|| format!("{name} must have '0x' prefix, got \"{quoted}\""))?;
    if quoted == "0x10000000000000000" {
        return Ok(SPACE);
    }
    if digits.len() != 16
        || !digits.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    {
        return Err(format!("{name} must be a 0x-prefixed 16-digit lowercase hex value, got \"{quoted}\""));
    }
    u128::from_str_radix(digits, 16).map_err(|error| format!("{name}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv_1a_64() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shards_tile_the_space_and_merge_when_adjacent() {
        for total in [1, 2, 3, 7, 12, 24] {
            let all = ShardRange::of_shards(ShardKey::Uid, total, 0..total);
            assert!(all.is_all(), "{total}: {all}");
            for probe in [0, 1, u64::MAX / 3, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                let owners = (0..total)
                    .filter(|shard| {
                        ShardRange::of_shards(ShardKey::Uid, total, [*shard]).contains_hash(probe)
                    })
                    .count();
                assert_eq!(owners, 1, "{total} shards, hash {probe:#x}");
            }
        }
        let two = ShardRange::of_shards(ShardKey::Uid, 4, [2, 0, 1]);
        assert_eq!(
            two.selector(),
            "shardRange(object.metadata.uid, '0x0000000000000000', '0xc000000000000000')"
        );
        let split = ShardRange::of_shards(ShardKey::Namespace, 4, [0, 3]);
        assert_eq!(
            split.selector(),
            "shardRange(object.metadata.namespace, '0x0000000000000000', '0x4000000000000000') || \
             shardRange(object.metadata.namespace, '0xc000000000000000', '0x10000000000000000')"
        );
        assert!((split.fraction() - 0.5).abs() < 1e-9);
        assert!(ShardRange::of_shards(ShardKey::Uid, 4, []).is_empty());
    }

    #[test]
    fn selectors_round_trip_and_bad_ones_are_named() {
        for held in [vec![0], vec![1, 2], vec![0, 2, 5], vec![0, 1, 2, 3, 4, 5]] {
            let range = ShardRange::of_shards(ShardKey::Uid, 6, held);
            assert_eq!(ShardRange::parse(&range.selector()).unwrap(), range);
        }
        let bad = [
            ("", "empty shard selector"),
            (
                "shardRange(object.metadata.name, '0x0000000000000000', '0x8000000000000000')",
                "unsupported field",
            ),
            ("shardRange(object.metadata.uid, '0x0', '0x8000000000000000')", "16-digit"),
            (
                "shardRange(object.metadata.uid, '0x8000000000000000', '0x0000000000000000')",
                "must be less than",
            ),
            ("shardRange(object.metadata.uid, '0x0000000000000000')", "exactly 3 arguments"),
            ("labels(x)", "only shardRange() and ||"),
            (
                "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000') || \
                 shardRange(object.metadata.namespace, '0x8000000000000000', '0x10000000000000000')",
                "same field",
            ),
        ];
        for (selector, expected) in bad {
            let error = ShardRange::parse(selector).unwrap_err();
            assert!(error.contains(expected), "{selector}: {error}");
        }
    }

    #[test]
    fn objects_are_placed_by_the_hash_of_their_key() {
        let lower = ShardRange::of_shards(ShardKey::Uid, 2, [0]);
        let upper = ShardRange::of_shards(ShardKey::Uid, 2, [1]);
        // FNV-1a of "a" is 0xaf63…: the upper half.
        assert!(upper.contains(Some("a"), Some("x")) && !lower.contains(Some("a"), Some("x")));
        let by_namespace = ShardRange::of_shards(ShardKey::Namespace, 2, [1]);
        assert!(by_namespace.contains(Some("anything"), Some("a")));
    }
}
