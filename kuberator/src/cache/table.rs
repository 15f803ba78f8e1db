//! [`NamespaceTable`]: an insert-only hash table from namespace to value, read without locks
//! and without writing shared memory.
//!
//! Entries live in an append-only [`boxcar::Vec`], so a reference to one stays valid for as
//! long as the table lives. An open-addressing index of atomic slots maps a namespace to its
//! entry. A lookup is: one load of the current index, a hash, and a probe of one or two
//! slots, each a plain load on x86 — nothing a second reader on another core could
//! contend for.
//!
//! Inserts take a mutex. An index that would pass half full is replaced by one twice its
//! size, published with a release store; the old one stays (indexes grow geometrically, so
//! all of them together are at most twice the size of the newest). A reader still on an old
//! index may miss the newest namespaces; a miss always takes the mutex and looks again, so
//! it finds them there.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

/// A namespace name as three words: its length and its first and last eight bytes.
///
/// Namespace names are DNS labels (at most 63 bytes of `[a-z0-9-]`). Names of up to 16
/// bytes are equal exactly when their keys are, so most lookups compare three integers and
/// never call `memcmp`; longer names compare their bytes only after their keys match. The
/// key also gives the slot: the three words mixed by one multiplication.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    len: usize,
    head: u64,
    tail: u64,
}

impl Key {
    #[inline]
    fn of(namespace: &str) -> Self {
        let bytes = namespace.as_bytes();
        let (head, tail) = match bytes.len() {
            // No variable-length copy here: it becomes a `memcpy` call that costs more than
            // the rest of the lookup. Two overlapping four-byte reads cover 4 to 7 bytes.
            len @ 4..8 => {
                let first = u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
                let last = u32::from_le_bytes(bytes[len - 4..].try_into().unwrap_or_default());
                (u64::from(first) | u64::from(last) << 32, 0)
            }
            0..4 => (bytes.iter().fold(0, |word, &byte| word << 8 | u64::from(byte)), 0),
            len => (
                u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default()),
                u64::from_le_bytes(bytes[len - 8..].try_into().unwrap_or_default()),
            ),
        };
        Self { len: bytes.len(), head, tail }
    }

    #[inline]
    fn slot(self) -> usize {
        let mixed =
            (self.head ^ self.tail.rotate_left(29) ^ self.len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> 32) as usize
    }

    /// Whether `entry` holds `namespace`, whose key is `self`.
    #[inline]
    fn names<V>(self, entry: &Entry<V>, namespace: &str) -> bool {
        entry.key == self && (self.len <= 16 || *entry.namespace == *namespace)
    }
}

/// Slot value of an empty slot; an occupied slot holds its entry's position plus one.
const EMPTY: usize = 0;

struct Entry<V> {
    key: Key,
    namespace: Box<str>,
    value: V,
}

struct Index {
    slots: Box<[AtomicUsize]>,
    mask: usize,
}

impl Index {
    fn with_capacity(entries: usize) -> Self {
        let size = (entries * 2).next_power_of_two().max(8);
        Self { slots: (0..size).map(|_| AtomicUsize::new(EMPTY)).collect(), mask: size - 1 }
    }
}

/// An insert-only map from namespace to `V`; see the [module docs](self).
pub(super) struct NamespaceTable<V> {
    entries: boxcar::Vec<Entry<V>>,
    indexes: boxcar::Vec<Index>,
    current: AtomicUsize,
    writer: Mutex<()>,
}

impl<V> NamespaceTable<V> {
    /// A table holding `entries` (later duplicates of a namespace are dropped).
    pub(super) fn new(entries: impl IntoIterator<Item = (String, V)>) -> Self {
        let table = Self {
            entries: boxcar::Vec::new(),
            indexes: boxcar::Vec::new(),
            current: AtomicUsize::new(0),
            writer: Mutex::new(()),
        };
        table.indexes.push(Index::with_capacity(0));
        for (namespace, value) in entries {
            table.get_or_insert_with(&namespace, || value);
        }
        table
    }

    /// The value for `namespace`, if there is one.
    #[inline]
    pub(super) fn get(&self, namespace: &str) -> Option<&V> {
        let index = &self.indexes[self.current.load(Ordering::Acquire)];
        let key = Key::of(namespace);
        let mut slot = key.slot() & index.mask;
        loop {
            match index.slots[slot].load(Ordering::Acquire) {
                EMPTY => return None,
                occupied => {
                    let entry = &self.entries[occupied - 1];
                    if key.names(entry, namespace) {
                        return Some(&entry.value);
                    }
                }
            }
            slot = (slot + 1) & index.mask;
        }
    }

    /// The value for `namespace`, inserting `make()` first if there is none. Concurrent
    /// calls for one namespace call `make` once.
    pub(super) fn get_or_insert_with(&self, namespace: &str, make: impl FnOnce() -> V) -> &V {
        if let Some(value) = self.get(namespace) {
            return value;
        }
        self.insert_slow(namespace, make)
    }

    #[cold]
    fn insert_slow(&self, namespace: &str, make: impl FnOnce() -> V) -> &V {
        // The mutex guards no data of its own, only this check-then-insert; a panic in `make`
        // leaves the table as it was, so a poisoned lock is safe to take over.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = self.get(namespace) {
            return value;
        }
        let position =
            self.entries.push(Entry { key: Key::of(namespace), namespace: namespace.into(), value: make() });
        let count = self.entries.count();
        let index = &self.indexes[self.current.load(Ordering::Acquire)];
        if count * 2 > index.slots.len() {
            let grown = Index::with_capacity(count);
            for (existing, entry) in self.entries.iter() {
                self.place(&grown, entry.key, existing);
            }
            let published = self.indexes.push(grown);
            self.current.store(published, Ordering::Release);
        } else {
            self.place(index, Key::of(namespace), position);
        }
        &self.entries[position].value
    }

    /// Writes `position` into the first free slot for `namespace` (writer only).
    fn place(&self, index: &Index, key: Key, position: usize) {
        let mut slot = key.slot() & index.mask;
        while index.slots[slot].load(Ordering::Relaxed) != EMPTY {
            slot = (slot + 1) & index.mask;
        }
        index.slots[slot].store(position + 1, Ordering::Release);
    }

    /// How many namespaces the table holds.
    pub(super) fn len(&self) -> usize {
        self.entries.count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let table = NamespaceTable::new([("default".to_owned(), 1), ("production".to_owned(), 2)]);
        assert_eq!(table.get("default"), Some(&1));
        assert_eq!(table.get("production"), Some(&2));
        assert_eq!(table.get("prod"), None);
        assert_eq!(table.get(""), None);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn names_that_share_their_key_bytes_are_told_apart() {
        // Equal length, first eight and last eight bytes; they differ only in the middle.
        let long_a = "aaaaaaaa-one-bbbbbbbb";
        let long_b = "aaaaaaaa-two-bbbbbbbb";
        let names =
            [long_a, "a", "ab", "abc", "abcd", "abcde", "abcdefg", "abcdefgh", "abcdefghi", "b", "xbcdefghi"];
        let frozen = FrozenTable::new(names.iter().enumerate().map(|(i, n)| (n.to_string(), i)));
        let growing = NamespaceTable::new(names.iter().enumerate().map(|(i, n)| (n.to_string(), i)));
        for (i, name) in names.iter().enumerate() {
            assert_eq!(frozen.get(name), Some(&i), "{name}");
            assert_eq!(growing.get(name), Some(&i), "{name}");
        }
        for absent in
            [long_b, "", "ybcdefghi", "abce", "bcd", "abcdefgi", "abcdefghij", "aaaaaaaa-one-bbbbbbbc"]
        {
            assert_eq!(frozen.get(absent), None, "{absent}");
            assert_eq!(growing.get(absent), None, "{absent}");
        }
    }

    #[test]
    fn duplicates_keep_the_first_value() {
        let table = NamespaceTable::new([("a".to_owned(), 1), ("a".to_owned(), 2)]);
        assert_eq!(table.get("a"), Some(&1));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn grows_past_many_resizes_and_keeps_every_reference_valid() {
        let table = NamespaceTable::new(Vec::<(String, usize)>::new());
        let first: *const usize = table.get_or_insert_with("ns-0", || 0);
        for i in 1..1000 {
            table.get_or_insert_with(&format!("ns-{i}"), || i);
        }
        for i in 0..1000 {
            assert_eq!(table.get(&format!("ns-{i}")), Some(&i), "ns-{i}");
        }
        assert_eq!(first, table.get("ns-0").unwrap() as *const usize);
        assert_eq!(table.len(), 1000);
    }

    #[test]
    fn concurrent_first_use_makes_one_value_per_namespace() {
        let table = NamespaceTable::new(Vec::<(String, usize)>::new());
        let made = AtomicUsize::new(0);
        let threads = 8;
        let barrier = Barrier::new(threads);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    barrier.wait();
                    for round in 0..200 {
                        let namespace = format!("team-{}", round % 40);
                        let value = table.get_or_insert_with(&namespace, || {
                            made.fetch_add(1, Ordering::Relaxed);
                            round % 40
                        });
                        assert_eq!(*value, round % 40);
                    }
                });
            }
        });
        assert_eq!(made.load(Ordering::Relaxed), 40);
        assert_eq!(table.len(), 40);
    }
}

/// A map from namespace to `V` fixed at construction: [`NamespaceTable`] without atomics,
/// whose slots hold the keys themselves, so a hit reads one slot and no entry.
pub(super) struct FrozenTable<V> {
    entries: Vec<(Box<str>, V)>,
    slots: Box<[FrozenSlot]>,
    mask: usize,
}

#[derive(Clone, Copy)]
struct FrozenSlot {
    key: Key,
    /// The entry's position, or `usize::MAX` for an empty slot.
    position: usize,
}

impl<V> FrozenTable<V> {
    /// A table holding `entries` (later duplicates of a namespace are dropped).
    pub(super) fn new(entries: impl IntoIterator<Item = (String, V)>) -> Self {
        let mut kept: Vec<(Box<str>, V)> = Vec::new();
        for (namespace, value) in entries {
            if !kept.iter().any(|(known, _)| **known == *namespace) {
                kept.push((namespace.into(), value));
            }
        }
        let size = (kept.len() * 2).next_power_of_two().max(8);
        let mask = size - 1;
        let empty = FrozenSlot { key: Key::of(""), position: usize::MAX };
        let mut slots = vec![empty; size].into_boxed_slice();
        for (position, (namespace, _)) in kept.iter().enumerate() {
            let key = Key::of(namespace);
            let mut slot = key.slot() & mask;
            while slots[slot].position != usize::MAX {
                slot = (slot + 1) & mask;
            }
            slots[slot] = FrozenSlot { key, position };
        }
        Self { entries: kept, slots, mask }
    }

    /// The value for `namespace`, if there is one.
    #[inline]
    pub(super) fn get(&self, namespace: &str) -> Option<&V> {
        let key = Key::of(namespace);
        let mut slot = key.slot() & self.mask;
        loop {
            let FrozenSlot { key: stored, position } = *self.slots.get(slot)?;
            if stored == key {
                let (name, value) = self.entries.get(position)?;
                if key.len <= 16 || **name == *namespace {
                    return Some(value);
                }
            } else if position == usize::MAX {
                return None;
            }
            slot = (slot + 1) & self.mask;
        }
    }
}
