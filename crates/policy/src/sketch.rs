//! [`PersonSketch`]: the persons behind an answer as an invertible Bloom lookup table.
//! Sketches add up across nodes and subtract between answers; a small difference decodes,
//! so the city can tell when two answers of one user differ by fewer than k persons
//! without any node sending who they are.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use siphasher::sip::SipHasher13;

/// Keyed 64-bit names of persons, for sketches: a PRF of the identifier under a node's
/// secret, so a sketch cell reveals nothing that can be looked up.
#[derive(Clone)]
pub struct PersonKeys {
    k0: u64,
    k1: u64,
}

impl fmt::Debug for PersonKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonKeys").finish_non_exhaustive()
    }
}

impl PersonKeys {
    /// Keys drawn at random, for a node without a linkage key: sketches then compare
    /// answers while the node process lives.
    pub fn random() -> Self {
        let state = std::collections::hash_map::RandomState::new();
        Self {
            k0: state.hash_one(0u8),
            k1: state.hash_one(1u8),
        }
    }

    /// Keys derived from the node's linkage tokens.
    pub fn derived(tokens: &crate::Tokenizer) -> Self {
        let seed = tokens.token("sunlight person sketch keys");
        Self {
            k0: u64::from_be_bytes(seed[..8].try_into().expect("16 bytes")),
            k1: u64::from_be_bytes(seed[8..].try_into().expect("16 bytes")),
        }
    }

    /// The key of the person with identifier `person`.
    pub fn key(&self, person: &str) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(self.k0, self.k1);
        hasher.write(person.as_bytes());
        hasher.finish()
    }
}

/// Cells per hash function; three functions, each with its own cells.
const WIDTH: usize = 10;
const HASHES: usize = 3;
const CELLS: usize = WIDTH * HASHES;
const CELL_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    count: i32,
    keys: u64,
    checks: u64,
}

/// A set of 64-bit person keys, as an invertible Bloom lookup table.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonSketch {
    cells: [Cell; CELLS],
}

impl Default for PersonSketch {
    fn default() -> Self {
        Self {
            cells: [Cell::default(); CELLS],
        }
    }
}

impl fmt::Debug for PersonSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonSketch({})", self.to_header())
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer: a bijection that spreads every input bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A key's cells and check, all in one mix; the offset keeps key 0 off cell 0 of every
/// function.
fn spread(key: u64) -> u64 {
    mix(key ^ 0x9e37_79b9_7f4a_7c15)
}

impl PersonSketch {
    /// The sketch of `keys`, each counted once.
    pub fn of(keys: impl IntoIterator<Item = u64>) -> Self {
        let mut sketch = Self::default();
        sketch.toggle_all(keys, 1);
        sketch
    }

    /// Adds (`sign` 1) or takes away (-1) the persons of `keys`, drawn a chunk at a time
    /// before any is toggled. Drawing keys from a directory is a scattered load each;
    /// apart from the toggles, which wait on one another through the cells, the loads
    /// overlap, several times faster.
    pub(crate) fn toggle_all(&mut self, keys: impl IntoIterator<Item = u64>, sign: i32) {
        let mut keys = keys.into_iter();
        let mut chunk = [0; 256];
        loop {
            let mut drawn = 0;
            for (slot, key) in chunk.iter_mut().zip(&mut keys) {
                *slot = key;
                drawn += 1;
            }
            for &key in &chunk[..drawn] {
                self.toggle(key, sign);
            }
            if drawn < chunk.len() {
                return;
            }
        }
    }

    /// Adds (`sign` 1) or takes away (-1) the person of `key`. One mix of the key gives
    /// its cells, a 16-bit slice each scaled to its function's width, and its check, the
    /// whole mix: worked out here rather than kept, so that a node's directory holds
    /// eight bytes a person.
    pub(crate) fn toggle(&mut self, key: u64, sign: i32) {
        let mixed = spread(key);
        for i in 0..HASHES {
            let slot = (((mixed >> (16 * i)) & 0xFFFF) * WIDTH as u64) >> 16;
            let cell = &mut self.cells[i * WIDTH + slot as usize];
            cell.count += sign;
            cell.keys ^= key;
            cell.checks ^= mixed;
        }
    }

    /// Adds `other`'s persons (the union of disjoint sets, or a multiset).
    pub fn add(&mut self, other: &PersonSketch) {
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            a.count += b.count;
            a.keys ^= b.keys;
            a.checks ^= b.checks;
        }
    }

    /// Takes away `other`'s persons (a subset's, or a multiset's).
    pub fn subtract(&mut self, other: &PersonSketch) {
        for (a, b) in self.cells.iter_mut().zip(&other.cells) {
            a.count -= b.count;
            a.keys ^= b.keys;
            a.checks ^= b.checks;
        }
    }

    /// The number of persons in one set and not the other, when it is small enough to
    /// decode (a handful); `None` when the sets differ by more.
    pub fn difference(&self, other: &PersonSketch) -> Option<usize> {
        let mut diff = self.clone();
        diff.subtract(other);
        let mut peeled = 0;
        while let Some(cell) = diff
            .cells
            .iter()
            .find(|c| c.count.abs() == 1 && c.checks == spread(c.keys))
            .copied()
        {
            diff.toggle(cell.keys, -cell.count);
            peeled += 1;
        }
        diff.cells
            .iter()
            .all(|c| *c == Cell::default())
            .then_some(peeled)
    }

    /// The sketch as unpadded URL-safe base64, for a response header.
    pub fn to_header(&self) -> String {
        let mut bytes = Vec::with_capacity(CELLS * CELL_BYTES);
        for cell in &self.cells {
            bytes.extend_from_slice(&cell.count.to_be_bytes());
            bytes.extend_from_slice(&cell.keys.to_be_bytes());
            bytes.extend_from_slice(&cell.checks.to_be_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads [`PersonSketch::to_header`]'s form.
    pub fn from_header(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() != CELLS * CELL_BYTES {
            return None;
        }
        let mut sketch = Self::default();
        for (cell, chunk) in sketch.cells.iter_mut().zip(bytes.chunks(CELL_BYTES)) {
            cell.count = i32::from_be_bytes(chunk[..4].try_into().ok()?);
            cell.keys = u64::from_be_bytes(chunk[4..12].try_into().ok()?);
            cell.checks = u64::from_be_bytes(chunk[12..].try_into().ok()?);
        }
        Some(sketch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_differences_decode_and_large_ones_do_not() {
        let base: Vec<u64> = (0..5_000).map(|i| mix(i * 7 + 3)).collect();
        let a = PersonSketch::of(base.iter().copied());
        for removed in 0..=4 {
            let b = PersonSketch::of(base[removed..].iter().copied());
            assert_eq!(a.difference(&b), Some(removed));
            assert_eq!(b.difference(&a), Some(removed));
        }
        let swapped = PersonSketch::of(base[2..].iter().copied().chain([1, 2]));
        assert_eq!(a.difference(&swapped), Some(4));
        let far = PersonSketch::of(base[100..].iter().copied());
        assert_eq!(a.difference(&far), None);
    }

    #[test]
    fn sketches_add_across_nodes_and_travel_in_a_header() {
        let mut city = PersonSketch::of([1, 2, 3]);
        city.add(&PersonSketch::of([10, 11]));
        assert_eq!(city, PersonSketch::of([1, 2, 3, 10, 11]));
        assert_eq!(PersonSketch::from_header(&city.to_header()), Some(city));
        assert_eq!(PersonSketch::from_header("AA"), None);
    }
}
