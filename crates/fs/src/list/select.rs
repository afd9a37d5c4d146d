//! [`SmallestNames`]: the `keep` smallest names of a stream, chosen while a directory is
//! read, in one reusable byte arena instead of an allocation per name.

use std::cmp::Ordering;

/// Where one name lies in the arena. Names are at most 255 bytes (`NAME_MAX`).
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u8,
}

/// Keeps the `keep` smallest names pushed (by raw bytes). Memory is bounded by the page,
/// not the directory: names accumulate up to `keep + slack` (a quarter of `keep`, at
/// least 64), then the smallest `keep` are selected (linear time) and compacted, and
/// anything not below the largest of those is skipped from then on. So a directory of n
/// names costs O(n) comparisons per prune, a prune per `slack` names at most, and never
/// holds more than `keep + slack` names.
#[derive(Default)]
pub(crate) struct SmallestNames {
    keep: usize,
    arena: Vec<u8>,
    spare: Vec<u8>,
    names: Vec<Span>,
    /// After a prune: the largest name kept. A name not below it cannot be among the
    /// `keep` smallest.
    bound: Option<Vec<u8>>,
}

/// Arenas larger than this are freed after use rather than kept for the next listing.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Name lists longer than this are freed after use too.
const KEEP_NAMES: usize = 4096;

fn name(arena: &[u8], s: Span) -> &[u8] {
    &arena[s.start as usize..s.start as usize + usize::from(s.len)]
}

impl SmallestNames {
    /// Start over, keeping the `keep` (at least 1) smallest names from now on.
    pub(crate) fn reset(&mut self, keep: usize) {
        self.keep = keep.max(1);
        self.arena.clear();
        self.spare.clear();
        self.names.clear();
        self.bound = None;
    }

    /// Offer `name` (at most 255 bytes; longer ones cannot be directory entries and are
    /// ignored).
    pub(crate) fn push(&mut self, candidate: &[u8]) {
        let Ok(len) = u8::try_from(candidate.len()) else {
            return;
        };
        if self
            .bound
            .as_deref()
            .is_some_and(|bound| candidate >= bound)
        {
            return;
        }
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(candidate);
        self.names.push(Span { start, len });
        if self.names.len() >= self.keep + (self.keep / 4).max(64) {
            self.prune();
        }
    }

    /// Keep only the `keep` smallest names, compacted, and remember the largest of them.
    fn prune(&mut self) {
        let arena = &self.arena;
        let by_name = |a: &Span, b: &Span| -> Ordering { name(arena, *a).cmp(name(arena, *b)) };
        if self.names.len() > self.keep {
            self.names.select_nth_unstable_by(self.keep - 1, by_name);
            self.names.truncate(self.keep);
        }
        self.spare.clear();
        for span in &mut self.names {
            let start = self.spare.len() as u32;
            self.spare.extend_from_slice(name(&self.arena, *span));
            span.start = start;
        }
        std::mem::swap(&mut self.arena, &mut self.spare);
        let largest = self
            .names
            .iter()
            .map(|s| name(&self.arena, *s))
            .max()
            .map(<[u8]>::to_vec);
        self.bound = largest;
    }

    /// How many names are kept now (at most `keep` after [`SmallestNames::finish`]).
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Sort what is kept and drop all but the `keep` smallest.
    pub(crate) fn finish(&mut self) {
        let arena = &self.arena;
        self.names
            .sort_unstable_by(|a, b| name(arena, *a).cmp(name(arena, *b)));
        self.names.truncate(self.keep);
    }

    /// The `i`th kept name (sorted after [`SmallestNames::finish`]).
    pub(crate) fn get(&self, i: usize) -> &[u8] {
        name(&self.arena, self.names[i])
    }

    /// Release memory a very large page needed, so an idle thread does not hold it.
    pub(crate) fn trim(&mut self) {
        if self.arena.capacity() > KEEP_CAPACITY
            || self.spare.capacity() > KEEP_CAPACITY
            || self.names.capacity() > KEEP_NAMES
        {
            *self = SmallestNames::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smallest(names: &[Vec<u8>], keep: usize) -> Vec<Vec<u8>> {
        let mut s = SmallestNames::default();
        s.reset(keep);
        for n in names {
            s.push(n);
        }
        s.finish();
        (0..s.len()).map(|i| s.get(i).to_vec()).collect()
    }

    #[test]
    fn keeps_exactly_the_smallest_in_order() {
        // A scrambled order (a permutation of 0..1000 by a multiplier coprime to 1000).
        let names: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| format!("n{:04}", (i * 337) % 1000).into_bytes())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        for keep in [1, 2, 3, 7, 64, 999, 1000, 5000] {
            let want: Vec<_> = sorted.iter().take(keep).cloned().collect();
            assert_eq!(smallest(&names, keep), want, "keep {keep}");
        }
    }

    #[test]
    fn compares_raw_bytes_and_holds_at_most_keep_and_its_slack() {
        let names: Vec<Vec<u8>> = vec![
            b"\xff".to_vec(),
            b"a".to_vec(),
            b"\xc3\xa9".to_vec(),
            b"A".to_vec(),
            vec![b'z'; 255],
        ];
        assert_eq!(
            smallest(&names, 3),
            [b"A".to_vec(), b"a".to_vec(), vec![b'z'; 255]]
        );
        // Descending names: every one is smaller than all before it, so none is skipped
        // by the bound and the list is pruned whenever it reaches its slack.
        for (keep, most) in [(10, 10 + 64), (1000, 1000 + 250)] {
            let mut s = SmallestNames::default();
            s.reset(keep);
            let mut largest = 0;
            for i in 0..20_000u32 {
                s.push(format!("{:08}", 20_000 - i).as_bytes());
                largest = largest.max(s.len());
            }
            assert_eq!(largest, most - 1, "keep {keep}");
            s.finish();
            assert_eq!(s.get(0), b"00000001");
            assert_eq!(s.len(), keep);
        }
    }

    #[test]
    fn trim_frees_a_long_name_list_too() {
        let mut s = SmallestNames::default();
        s.reset(10_000);
        for i in 0..10_000u32 {
            // Short names: the arena stays small, the list of spans does not.
            s.push(format!("{i}").as_bytes());
        }
        assert!(s.arena.capacity() <= KEEP_CAPACITY);
        s.trim();
        assert_eq!(s.names.capacity(), 0, "a 10,000-span list kept after use");
    }
}
