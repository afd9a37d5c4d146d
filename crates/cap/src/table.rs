//! A fixed-size, set-associative table: the bounded store behind the rate limiter and the
//! verified-token cache.
//!
//! A key's hash picks one set of `W` slots; the set has its own mutex. Lookups and inserts
//! touch only that set, so every operation is O(W) = O(1), the most memory the table can
//! use is fixed at construction, and two requests contend only if they land in the same
//! set. A set's slots are allocated (all `W` at once) when its first value arrives, so an
//! idle table costs one small header per set, not its full size: a process that never
//! sees traffic does not pay for the tables sized for a busy one. When a set is full, an
//! insert replaces its least recently used slot: the table never refuses a new key, so one
//! busy key cannot starve the others out of it. Keys must be hashed with a keyed hash so
//! that nobody can aim many keys at one set.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) struct SetTable<T, const W: usize> {
    sets: Box<[Mutex<Set<T, W>>]>,
}

pub(crate) struct Set<T, const W: usize> {
    /// Bumped on every access; a slot's `used` is the tick of its last access.
    tick: u64,
    /// At most `W` slots, in no particular order; empty (no allocation) until the first
    /// insert, which reserves all `W`.
    slots: Vec<Slot<T>>,
}

struct Slot<T> {
    used: u64,
    value: T,
}

impl<T, const W: usize> SetTable<T, W> {
    /// A table holding at most `capacity` values (rounded down to a multiple of `W`, and
    /// at least `W`).
    pub(crate) fn new(capacity: usize) -> Self {
        let sets = (capacity / W).max(1);
        SetTable {
            sets: (0..sets)
                .map(|_| {
                    Mutex::new(Set {
                        tick: 0,
                        slots: Vec::new(),
                    })
                })
                .collect(),
        }
    }

    /// The most values the table holds.
    pub(crate) fn capacity(&self) -> usize {
        self.sets.len() * W
    }

    /// Locks the set that `hash` maps to.
    pub(crate) fn lock(&self, hash: u64) -> MutexGuard<'_, Set<T, W>> {
        // Multiply-shift maps a uniform 64-bit hash onto 0..len without a division.
        let index = ((u128::from(hash) * self.sets.len() as u128) >> 64) as usize;
        // A panic while holding the lock cannot leave a set half-updated (every update is
        // a single assignment), so a poisoned lock is safe to keep using.
        self.sets[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Empties every set and gives its slots' memory back.
    pub(crate) fn clear(&self) {
        for set in self.sets.iter() {
            let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
            set.slots = Vec::new();
        }
    }

    /// Number of occupied slots. Walks every set: for tests and metrics, not the request path.
    pub(crate) fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|set| {
                let set = set.lock().unwrap_or_else(PoisonError::into_inner);
                set.slots.len()
            })
            .sum()
    }
}

impl<T, const W: usize> Set<T, W> {
    /// The first value for which `matches` holds, marked as just used.
    pub(crate) fn find(&mut self, mut matches: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.tick += 1;
        let tick = self.tick;
        self.slots.iter_mut().find_map(|slot| {
            if matches(&slot.value) {
                slot.used = tick;
                Some(&mut slot.value)
            } else {
                None
            }
        })
    }

    /// Stores `value` in a free slot, or in place of the least recently used one.
    pub(crate) fn insert(&mut self, value: T) -> &mut T {
        self.tick += 1;
        let slot = Slot {
            used: self.tick,
            value,
        };
        let index = if self.slots.len() < W {
            if self.slots.capacity() == 0 {
                self.slots.reserve_exact(W);
            }
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let victim = (0..W).min_by_key(|&i| self.slots[i].used).unwrap_or(0);
            self.slots[victim] = slot;
            victim
        };
        &mut self.slots[index].value
    }

    /// Removes every value for which `matches` holds.
    pub(crate) fn remove(&mut self, mut matches: impl FnMut(&T) -> bool) {
        self.slots.retain(|slot| !matches(&slot.value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_never_exceeds_the_request() {
        assert_eq!(SetTable::<u32, 4>::new(10).capacity(), 8);
        assert_eq!(SetTable::<u32, 4>::new(0).capacity(), 4);
        assert_eq!(SetTable::<u32, 8>::new(65_536).capacity(), 65_536);
    }

    #[test]
    fn full_set_evicts_least_recently_used() {
        let table = SetTable::<u32, 4>::new(4);
        let mut set = table.lock(0);
        for v in 0..4 {
            set.insert(v);
        }
        // Touch 0 so that 1 becomes the oldest.
        assert!(set.find(|&v| v == 0).is_some());
        set.insert(99);
        assert!(set.find(|&v| v == 1).is_none(), "1 was least recently used");
        for v in [0, 2, 3, 99] {
            assert!(set.find(|&x| x == v).is_some(), "{v} should remain");
        }
    }

    #[test]
    fn many_inserts_stay_within_capacity() {
        let table = SetTable::<u64, 4>::new(64);
        for v in 0..10_000u64 {
            let hash = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            table.lock(hash).insert(v);
        }
        assert_eq!(table.len(), 64);
        table.clear();
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_set_allocates_its_slots_on_first_insert_and_never_more() {
        let table = SetTable::<u64, 4>::new(1024);
        assert!(
            table
                .sets
                .iter()
                .all(|set| set.lock().unwrap().slots.capacity() == 0),
            "an unused table holds no slots"
        );
        let mut set = table.lock(42);
        for v in 0..100 {
            set.insert(v);
        }
        assert_eq!(set.slots.capacity(), 4, "a set reserves exactly W slots");
        assert_eq!(set.slots.len(), 4);
        drop(set);
        let used = table
            .sets
            .iter()
            .filter(|set| set.lock().unwrap().slots.capacity() > 0)
            .count();
        assert_eq!(used, 1, "only the set written to holds slots");
    }

    #[test]
    fn remove_drops_matching_values() {
        let table = SetTable::<u32, 4>::new(4);
        let mut set = table.lock(7);
        set.insert(1);
        set.insert(2);
        set.remove(|&v| v == 1);
        assert!(set.find(|&v| v == 1).is_none());
        assert!(set.find(|&v| v == 2).is_some());
    }
}
