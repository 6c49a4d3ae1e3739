//! [`PersonDirectory`]: a node's persons by dense number. The census counts numbers,
//! which index a bit set rather than a hash set, and the node numbers each file's rows
//! once instead of hashing `person_id` in every query. Numbers never leave the node;
//! sketches carry the persons' keyed [`PersonKeys`], and tokens their identifiers.

use std::sync::{Arc, RwLock};

use arrow::array::{FixedSizeBinaryArray, FixedSizeBinaryBuilder, UInt32Array};
use datafusion::common::HashMap;
use datafusion::error::{DataFusionError, Result};
use fixedbitset::FixedBitSet;

use crate::{PersonKeys, PersonSketch, TOKEN_BYTES, Token, Tokenizer};

/// The number that stands for a missing `person_id`.
pub const NO_PERSON: u32 = u32::MAX;

/// A node's persons, numbered from 0 in the order it first meets them. Each identifier
/// has its own number, so that distinct numbers are exactly distinct identifiers.
#[derive(Debug)]
pub struct PersonDirectory {
    keys: PersonKeys,
    tokens: Option<Tokenizer>,
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
    /// The token of the identifier of each number from 0, made when first asked for.
    tokens: Vec<Token>,
}

impl PersonDirectory {
    /// An empty directory whose persons leave the node as the tokens of their
    /// identifiers under `tokens`, and are named in sketches by keys derived from them;
    /// without tokens, identifiers cannot leave, and sketches compare answers while the
    /// node process lives.
    pub fn new(tokens: Option<Tokenizer>) -> Self {
        Self {
            keys: tokens
                .as_ref()
                .map_or_else(PersonKeys::random, PersonKeys::derived),
            tokens,
            numbered: RwLock::default(),
        }
    }

    /// An empty directory with this one's tokens and sketch keys, for the node's files
    /// as it loads them again: sketches keep comparing answers across the reload.
    pub fn emptied(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            tokens: self.tokens.clone(),
            numbered: RwLock::default(),
        }
    }

    /// The node's tokens for identifiers, if it has a linkage key.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokens.as_ref()
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
            ..
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

    /// Visits the identifier of each person numbered so far.
    pub fn each_id(&self, visit: impl FnMut(&str)) {
        let numbered = self.numbered.read().expect("not poisoned");
        numbered.ids.iter().map(|id| &**id).for_each(visit);
    }

    /// The token of the identifier of each person in `numbers`. A person's token is made
    /// once, when first asked for.
    pub fn tokens(&self, numbers: &UInt32Array) -> Result<FixedSizeBinaryArray> {
        let needed = numbers.iter().flatten().max().map_or(0, |n| n as usize + 1);
        if self.numbered.read().expect("not poisoned").tokens.len() < needed {
            let tokens = self.tokens.as_ref().ok_or_else(|| {
                DataFusionError::Internal("identifiers leave only as tokens".to_string())
            })?;
            let mut numbered = self.numbered.write().expect("not poisoned");
            let Numbered {
                ids, tokens: made, ..
            } = &mut *numbered;
            for id in &ids[made.len()..] {
                made.push(tokens.token(id));
            }
        }
        let numbered = self.numbered.read().expect("not poisoned");
        let mut made = FixedSizeBinaryBuilder::with_capacity(numbers.len(), TOKEN_BYTES as i32);
        for number in numbers {
            match number {
                Some(n) => {
                    let token = numbered.tokens.get(n as usize).ok_or_else(|| {
                        DataFusionError::Internal(format!("person {n} was never numbered"))
                    })?;
                    made.append_value(token)?;
                }
                None => made.append_null(),
            }
        }
        Ok(made.finish())
    }

    /// The tokens of every person numbered so far, by number.
    pub fn all_tokens(&self) -> Result<FixedSizeBinaryArray> {
        let numbered = self.numbered.read().expect("not poisoned").ids.len();
        self.tokens(&UInt32Array::from_iter_values(0..numbered as u32))
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

    /// The sketch of `persons`, which are among `members`, whose sketch is `of_members`:
    /// where they are more than half of them, `of_members` less the others.
    pub fn sketch_among(
        &self,
        persons: &FixedBitSet,
        members: &FixedBitSet,
        of_members: &PersonSketch,
    ) -> PersonSketch {
        if 2 * persons.count_ones(..) <= members.count_ones(..) || !persons.is_subset(members) {
            return self.sketch(persons);
        }
        let mut others = members.clone();
        others.difference_with(persons);
        let numbered = self.numbered.read().expect("not poisoned");
        let mut sketch = of_members.clone();
        sketch.toggle_all(others.ones().map(|n| numbered.keys[n]), -1);
        sketch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_keeps_one_number_and_sketches_by_key() {
        let tokens = Tokenizer::new("a key of the test", 1);
        let keys = PersonKeys::derived(&tokens);
        let directory = PersonDirectory::new(Some(tokens.clone()));
        let first = directory.number([Some("a"), Some("b"), None, Some("a")]);
        assert_eq!(first, vec![0, 1, NO_PERSON, 0]);
        assert_eq!(directory.number([Some("c"), Some("b")]), vec![2, 1]);
        let numbers = UInt32Array::from(vec![Some(2), None, Some(0), Some(2)]);
        let made = directory.tokens(&numbers).unwrap();
        let token = |id: &str| Some(tokens.token(id));
        let expected = [token("c"), None, token("a"), token("c")];
        let made: Vec<Option<Token>> = made
            .iter()
            .map(|t| t.map(|t| t.try_into().unwrap()))
            .collect();
        assert_eq!(made, expected);
        let unknown = directory.tokens(&UInt32Array::from(vec![3])).unwrap_err();
        assert!(
            unknown.to_string().contains("person 3 was never numbered"),
            "{unknown}"
        );
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

    #[test]
    fn persons_among_a_tables_are_sketched_as_the_table_less_the_others() {
        let directory = PersonDirectory::new(Some(Tokenizer::new("a key of the test", 1)));
        let ids: Vec<String> = (0..40).map(|i| format!("person {i}")).collect();
        directory.number(ids.iter().map(|id| Some(id.as_str())));
        let set = |numbers: &mut dyn Iterator<Item = usize>| {
            let mut set = FixedBitSet::with_capacity(40);
            set.extend(numbers);
            set
        };
        // A table of every third person, and sets of most, few and none of them.
        let members = set(&mut (0..40).step_by(3));
        let of_members = directory.sketch(&members);
        for persons in [
            set(&mut (0..40).step_by(3).skip(2)),
            set(&mut (0..40).step_by(3).take(3)),
            members.clone(),
            set(&mut std::iter::empty()),
        ] {
            assert_eq!(
                directory.sketch_among(&persons, &members, &of_members),
                directory.sketch(&persons)
            );
        }
        // Persons outside the table are sketched all the same.
        let stray = set(&mut (0..40).step_by(3).skip(1).chain([1]));
        assert_eq!(
            directory.sketch_among(&stray, &members, &of_members),
            directory.sketch(&stray)
        );
    }
}
