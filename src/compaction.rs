//! Sparse batches made contiguous with the fewest moves (paper, "sparse batches").
//!
//! After stage s the survivors of a batch sit at irregular positions. For k survivors, the
//! window of length k that already holds the most of them (one sliding-window pass) becomes
//! the contiguous block; each survivor outside it is swapped into a hole inside it (second
//! pass). That is k − max moves, the minimum: any contiguous block of length k must receive
//! every survivor not already in it, one move each.

/// The plan: the target window and the swaps that fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// First position of the window.
    pub start: usize,
    /// Number of survivors (the window's length).
    pub len: usize,
    /// `(from, to)`: the survivor at `from` (outside the window) swaps with the hole at `to`.
    pub moves: Vec<(usize, usize)>,
}

/// Plans the compaction of the survivors `keep[i] == true`.
pub fn compact(keep: &[bool]) -> Compaction {
    let k = keep.iter().filter(|&&b| b).count();
    if k == 0 {
        return Compaction {
            start: 0,
            len: 0,
            moves: Vec::new(),
        };
    }
    // pass 1: the window of length k holding the most survivors (first one on ties)
    let mut inside = keep[..k].iter().filter(|&&b| b).count();
    let (mut best, mut start) = (inside, 0);
    for i in k..keep.len() {
        inside += keep[i] as usize;
        inside -= keep[i - k] as usize;
        if inside > best {
            best = inside;
            start = i + 1 - k;
        }
    }
    // pass 2: pair the outsiders with the holes, both in increasing order
    let holes = (start..start + k).filter(|&i| !keep[i]);
    let outsiders = (0..start).chain(start + k..keep.len()).filter(|&i| keep[i]);
    let moves: Vec<(usize, usize)> = outsiders.zip(holes).collect();
    debug_assert_eq!(moves.len(), k - best);
    Compaction {
        start,
        len: k,
        moves,
    }
}

impl Compaction {
    /// The permutation the swaps apply to a batch of `n`: position i receives row `perm[i]`.
    pub fn permutation(&self, n: usize) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..n).collect();
        for &(from, to) in &self.moves {
            perm.swap(from, to);
        }
        perm
    }

    /// For each position of the window, the row (of the uncompacted batch) that ends there:
    /// gathering these rows is the compacted block; its outputs scatter back through them.
    pub fn window_sources(&self) -> Vec<usize> {
        let mut src: Vec<usize> = (self.start..self.start + self.len).collect();
        for &(from, to) in &self.moves {
            src[to - self.start] = from;
        }
        src
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, VecDeque};

    /// True minimum number of single-element moves (a survivor relocated to a free position)
    /// that make the survivors contiguous, by breadth-first search over occupancy masks.
    fn brute_force_min_moves(keep: &[bool]) -> usize {
        let n = keep.len();
        let mask: u32 = keep.iter().enumerate().map(|(i, &b)| (b as u32) << i).sum();
        let contiguous = |m: u32| {
            m == 0 || (m >> m.trailing_zeros()).wrapping_add(1) & (m >> m.trailing_zeros()) == 0
        };
        let mut dist = HashMap::from([(mask, 0usize)]);
        let mut queue = VecDeque::from([mask]);
        while let Some(m) = queue.pop_front() {
            let d = dist[&m];
            if contiguous(m) {
                return d;
            }
            for from in (0..n).filter(|&i| m >> i & 1 == 1) {
                for to in (0..n).filter(|&i| m >> i & 1 == 0) {
                    let next = m & !(1 << from) | 1 << to;
                    if let std::collections::hash_map::Entry::Vacant(e) = dist.entry(next) {
                        e.insert(d + 1);
                        queue.push_back(next);
                    }
                }
            }
        }
        unreachable!("a contiguous mask is always reachable")
    }

    #[test]
    fn paper_example() {
        //            0      1     2      3     4     5      6
        let keep = [true, false, true, false, true, true, false];
        let c = compact(&keep);
        assert_eq!((c.start, c.len), (2, 4));
        assert_eq!(c.moves, vec![(0, 3)]);
        assert_eq!(c.window_sources(), vec![2, 0, 4, 5]);
    }

    #[test]
    fn nothing_and_everything() {
        assert_eq!(compact(&[false; 5]).len, 0);
        let all = compact(&[true; 5]);
        assert!(all.moves.is_empty());
        assert_eq!(all.window_sources(), vec![0, 1, 2, 3, 4]);
    }

    proptest! {
        #[test]
        fn is_a_minimal_permutation(keep in proptest::collection::vec(any::<bool>(), 0..12)) {
            let n = keep.len();
            let c = compact(&keep);
            let perm = c.permutation(n);
            // a permutation of 0..n
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            // survivors end contiguous, in the window, and only survivors are there
            let k = keep.iter().filter(|&&b| b).count();
            prop_assert_eq!(c.len, k);
            for (pos, &row) in perm.iter().enumerate() {
                let in_window = pos >= c.start && pos < c.start + k;
                prop_assert_eq!(keep[row], in_window);
            }
            prop_assert_eq!(&perm[c.start..c.start + k], &c.window_sources()[..]);
            // every move relocates one survivor; the count is the true minimum
            prop_assert_eq!(c.moves.len(), brute_force_min_moves(&keep));
        }
    }
}
