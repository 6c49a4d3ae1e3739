//! [`PersonDirectory`]: a node's persons by dense number. The census counts numbers,
//! which index a bit set rather than a hash set, and the node numbers each file's rows
//! once instead of hashing `person_id` in every query. Numbers never leave the node;
//! sketches carry the persons' keyed [`PersonKeys`], and tokens their identifiers.

use std::sync::{Arc, RwLock};

use datafusion::common::HashMap;
use fixedbitset::FixedBitSet;

use crate::{PersonKeys, PersonSketch};

/// The number that stands for a missing `person_id`.
pub const NO_PERSON: u32 = u32::MAX;

/// A node's persons, numbered from 0 in the order it first meets them. Each identifier
/// has its own number, so that distinct numbers are exactly distinct identifiers.
#[derive(Debug)]
pub struct PersonDirectory {
    keys: PersonKeys,
    numbered: RwLock<Numbered>,
}

#[derive(Debug, Default)]
struct Numbered {
    /// Number of each person's identifier.
    numbers: HashMap<Arc<str>, u32>,
    /// Identifier of each number.
    ids: Vec<Arc<str>>,
    /// Key of each number, for sketches.
    keys: Vec<u64>,
    /// The sketch of every numbered person.
    everyone: PersonSketch,
}

impl PersonDirectory {
    /// An empty directory whose persons are named by `keys` in sketches.
    pub fn new(keys: PersonKeys) -> Self {
        Self {
            keys,
            numbered: RwLock::default(),
        }
    }

    /// The number of each identifier in `ids`, numbering persons met for the first time;
    /// [`NO_PERSON`] for a missing one.
    pub fn number<'a>(&self, ids: impl IntoIterator<Item = Option<&'a str>>) -> Vec<u32> {
        let mut numbered = self.numbered.write().expect("not poisoned");
        let Numbered {
            numbers,
            ids: all,
            keys,
            everyone,
        } = &mut *numbered;
        ids.into_iter()
            .map(|id| match id {
                None => NO_PERSON,
                Some(id) => match numbers.get(id) {
                    Some(&number) => number,
                    None => {
                        let number = u32::try_from(all.len())
                            .ok()
                            .filter(|&n| n != NO_PERSON)
                            .expect("fewer than 2^32 - 1 persons");
                        let key = self.keys.key(id);
                        everyone.toggle(key, 1);
                        keys.push(key);
                        let id: Arc<str> = Arc::from(id);
                        all.push(id.clone());
                        numbers.insert(id, number);
                        number
                    }
                },
            })
            .collect()
    }

    /// `f` of the identifier of each person, by number.
    pub fn with_ids<R>(&self, f: impl FnOnce(&[Arc<str>]) -> R) -> R {
        f(&self.numbered.read().expect("not poisoned").ids)
    }

    /// The sketch of the persons whose numbers are in `persons`. Sketches add, so a set
    /// of more than half the persons is sketched as everyone less the others.
    pub fn sketch(&self, persons: &FixedBitSet) -> PersonSketch {
        let numbered = self.numbered.read().expect("not poisoned");
        let keys = &numbered.keys;
        if 2 * persons.count_ones(..) <= keys.len() {
            return PersonSketch::of(persons.ones().map(|n| keys[n]));
        }
        let mut sketch = numbered.everyone.clone();
        let others = persons.zeroes().chain(persons.len()..keys.len());
        sketch.toggle_all(others.map(|n| keys[n]), -1);
        sketch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_keeps_one_number_and_sketches_by_key() {
        let keys = PersonKeys::random();
        let directory = PersonDirectory::new(keys.clone());
        let first = directory.number([Some("a"), Some("b"), None, Some("a")]);
        assert_eq!(first, vec![0, 1, NO_PERSON, 0]);
        assert_eq!(directory.number([Some("c"), Some("b")]), vec![2, 1]);
        let ids = directory.with_ids(|ids| ids.iter().map(|id| id.to_string()).collect::<Vec<_>>());
        assert_eq!(ids, ["a", "b", "c"]);
        let mut persons = FixedBitSet::with_capacity(3);
        persons.insert(1);
        assert_eq!(
            directory.sketch(&persons),
            PersonSketch::of([keys.key("b")])
        );
        persons.insert(2);
        persons.set(1, false);
        persons.insert(0);
        assert_eq!(
            directory.sketch(&persons),
            PersonSketch::of([keys.key("a"), keys.key("c")])
        );
        // A set shorter than the directory: the persons past its end are not in it.
        let mut first = FixedBitSet::with_capacity(2);
        first.insert_range(..);
        assert_eq!(
            directory.sketch(&first),
            PersonSketch::of([keys.key("a"), keys.key("b")])
        );
    }
}
