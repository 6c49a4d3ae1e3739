//! `persons(number)`: the census aggregate. For each group it keeps the distinct person
//! numbers it sees, but never more than k of them: a group that reaches k passes, and the
//! union of such capped sets is still exact below k, so groups of groups count right.
//! Unless the fragment's persons are known ahead, every person it sees also goes into one
//! set for the whole fragment, the persons its sketch is made of.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::accumulate;
use fixedbitset::{Block, FixedBitSet};

/// The numbers of the persons a fragment's census saw, shared by its accumulators.
pub type Seen = Arc<Mutex<FixedBitSet>>;

/// The census aggregate of one fragment.
#[derive(Debug)]
pub struct Persons {
    cap: usize,
    seen: Option<Seen>,
    signature: Signature,
}

impl Persons {
    /// Keeps up to `cap` persons a group, and every person seen in `seen`, if given.
    pub fn new(cap: usize, seen: Option<Seen>) -> Self {
        Self {
            cap,
            seen,
            signature: Signature::exact(vec![DataType::UInt32], Volatility::Immutable),
        }
    }

    fn groups(&self) -> PersonGroups {
        PersonGroups {
            cap: self.cap,
            seen: self.seen.clone(),
            mine: FixedBitSet::new(),
            groups: Vec::new(),
            full: 0,
        }
    }
}

impl PartialEq for Persons {
    fn eq(&self, other: &Self) -> bool {
        let set = |p: &Self| p.seen.as_ref().map(Arc::as_ptr);
        set(self) == set(other) && self.cap == other.cap
    }
}

impl Eq for Persons {}

impl Hash for Persons {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.seen.as_ref().map(Arc::as_ptr).hash(state);
        self.cap.hash(state);
    }
}

/// A list of person numbers.
pub(crate) fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, true)))
}

impl AggregateUDFImpl for Persons {
    fn name(&self) -> &str {
        "persons"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(list_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[persons]", args.name),
            list_type(),
            true,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup::new(self.groups())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.groups()))
    }
}

/// Up to `cap` distinct persons of each group. When the fragment's persons are counted,
/// those it sees go first into a set of its own, so that accumulators in other partitions
/// need not wait for the shared one; they join it whenever groups are emitted.
#[derive(Debug)]
struct PersonGroups {
    cap: usize,
    seen: Option<Seen>,
    mine: FixedBitSet,
    groups: Vec<Vec<u32>>,
    /// How many groups hold `cap` persons.
    full: usize,
}

impl PersonGroups {
    fn add(&mut self, group: usize, key: u32) {
        let persons = &mut self.groups[group];
        if persons.len() < self.cap && !persons.contains(&key) {
            persons.push(key);
            if persons.len() == self.cap {
                self.full += 1;
            }
        }
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        self.publish();
        let emitted = list_of(&emit_to.take_needed(&mut self.groups));
        self.full = self.groups.iter().filter(|g| g.len() == self.cap).count();
        emitted
    }

    /// Adds the persons seen so far to the fragment's set.
    fn publish(&mut self) {
        if let Some(seen) = &self.seen {
            seen.lock().expect("not poisoned").union_with(&self.mine);
            self.mine.clear();
        }
    }
}

/// Sets bits a word at a time. A file's rows of one person, and persons numbered in the
/// order of a file, come in runs that share a word; or-ing each bit into memory would
/// wait on the store of the one before.
struct Words<'a> {
    words: &'a mut [Block],
    at: usize,
    bits: Block,
}

impl<'a> Words<'a> {
    /// Sets bits of `set`, grown first to hold `largest`, the largest number to come.
    fn over(set: &'a mut FixedBitSet, largest: Option<u32>) -> Self {
        if let Some(largest) = largest {
            set.grow(largest as usize + 1);
        }
        Self {
            words: set.as_mut_slice(),
            at: 0,
            bits: 0,
        }
    }

    fn insert(&mut self, number: u32) {
        let number = number as usize;
        let word = number / Block::BITS as usize;
        if word != self.at {
            self.words[self.at] |= self.bits;
            self.at = word;
            self.bits = 0;
        }
        self.bits |= 1 << (number % Block::BITS as usize);
    }

    fn finish(self) {
        if let Some(word) = self.words.get_mut(self.at) {
            *word |= self.bits;
        }
    }
}

/// One list of keys per group.
fn list_of(groups: &[Vec<u32>]) -> ArrayRef {
    lists(
        groups.iter().map(Vec::len),
        groups.iter().flatten().copied(),
    )
}

/// Lists of the given `lengths`, of `persons` in order.
pub(crate) fn lists(
    lengths: impl IntoIterator<Item = usize>,
    persons: impl IntoIterator<Item = u32>,
) -> ArrayRef {
    Arc::new(ListArray::new(
        Arc::new(Field::new_list_field(DataType::UInt32, true)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(UInt32Array::from_iter_values(persons)),
        None,
    ))
}

/// Each row of `persons` as a list of its one person, or of none where it has none or
/// `filter` leaves it out; and the persons listed, in order.
pub(crate) fn rows_as_lists(
    persons: &UInt32Array,
    filter: Option<&BooleanArray>,
) -> (ArrayRef, Vec<u32>) {
    let kept: Vec<bool> = (0..persons.len())
        .map(|row| persons.is_valid(row) && filter.is_none_or(|f| f.value(row)))
        .collect();
    let listed: Vec<u32> = kept
        .iter()
        .zip(persons.values())
        .filter_map(|(&kept, &person)| kept.then_some(person))
        .collect();
    let lists = lists(kept.into_iter().map(usize::from), listed.iter().copied());
    (lists, listed)
}

impl GroupsAccumulator for PersonGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let keys = values[0].as_primitive::<UInt32Type>();
        // Once every group has its persons, only the fragment's set, if any, still grows.
        let all_full = self.full == total_num_groups;
        if self.seen.is_some() {
            // The set leaves `self` for the loop, so that the groups can take persons too.
            let mut mine = std::mem::take(&mut self.mine);
            let mut words = Words::over(&mut mine, arrow::compute::max(keys));
            accumulate(group_indices, keys, opt_filter, |group, key| {
                words.insert(key);
                if !all_full {
                    self.add(group, key);
                }
            });
            words.finish();
            self.mine = mine;
        } else if !all_full {
            accumulate(group_indices, keys, opt_filter, |group, key| {
                self.add(group, key);
            });
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let lists = values[0].as_list::<i32>();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let keys = lists.value(row);
            for key in keys.as_primitive::<UInt32Type>().iter().flatten() {
                self.add(group, key);
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let (lists, persons) = rows_as_lists(values[0].as_primitive(), opt_filter);
        if let Some(seen) = &self.seen {
            let mut seen = seen.lock().expect("not poisoned");
            let mut words = Words::over(&mut seen, persons.iter().max().copied());
            persons.iter().for_each(|&person| words.insert(person));
            words.finish();
        }
        Ok(vec![lists])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Vec<u32>>()
            + self.groups.len() * self.cap * std::mem::size_of::<u32>()
            + self.mine.len() / 8
    }
}

/// The census of an aggregate without groups: one group, index 0 of every row.
#[derive(Debug)]
struct OneGroup {
    groups: PersonGroups,
    zeros: Vec<usize>,
}

impl OneGroup {
    fn new(groups: PersonGroups) -> Self {
        Self {
            groups,
            zeros: Vec::new(),
        }
    }

    fn value(&mut self) -> ScalarValue {
        self.groups.publish();
        self.groups.groups.resize_with(1, Vec::new);
        ScalarValue::List(Arc::new(
            list_of(&self.groups.groups).as_list::<i32>().clone(),
        ))
    }
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = zeros(&mut self.zeros, values[0].len());
        self.groups.update_batch(values, rows, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.groups.size()
            + self.zeros.capacity() * std::mem::size_of::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value()])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = zeros(&mut self.zeros, states[0].len());
        self.groups.merge_batch(states, rows, 1)
    }
}

/// The group index, 0, of each of `rows` rows, from a buffer kept between batches.
fn zeros(buffer: &mut Vec<usize>, rows: usize) -> &[usize] {
    if buffer.len() < rows {
        buffer.resize(rows, 0);
    }
    &buffer[..rows]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_set_the_bits_of_runs_jumps_and_repeats() {
        let numbers = [3, 3, 4, 63, 64, 65, 200, 5, 5, 199, 0];
        let mut expected = FixedBitSet::with_capacity(201);
        let mut set = FixedBitSet::new();
        let mut words = Words::over(&mut set, numbers.iter().max().copied());
        for n in numbers {
            expected.insert(n as usize);
            words.insert(n);
        }
        words.finish();
        assert_eq!(set, expected);
        Words::over(&mut FixedBitSet::new(), None).finish();
    }

    #[test]
    fn rows_turned_into_groups_keep_their_person_and_add_it_to_those_seen() {
        let seen = Seen::default();
        let groups = Persons::new(5, Some(seen.clone())).groups();
        let persons: ArrayRef = Arc::new(UInt32Array::from(vec![Some(3), None, Some(70), Some(3)]));
        let filter = BooleanArray::from(vec![true, true, false, true]);
        let state = groups.convert_to_state(&[persons], Some(&filter)).unwrap();
        let lists: Vec<Vec<u32>> = state[0]
            .as_list::<i32>()
            .iter()
            .map(|l| l.unwrap().as_primitive::<UInt32Type>().values().to_vec())
            .collect();
        assert_eq!(lists, [vec![3], vec![], vec![], vec![3]]);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.ones().collect::<Vec<_>>(), [3]);
    }
}
