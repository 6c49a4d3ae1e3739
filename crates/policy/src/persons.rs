//! `persons(number, scope, condition, ...)`: the census aggregate. For each group it keeps
//! the distinct person numbers it sees, but never more than k of them: a group that reaches
//! k passes, and the union of such capped sets is still exact below k, so groups of groups
//! count right. For each condition it keeps apart, the same way, the persons of the rows
//! in its scope that it holds for, and of those it does not: each a part a figure of the
//! group is made from, which must not count fewer than k persons in a group of k or more
//! ([`group_persons`]).
//! Unless the fragment's persons are known ahead, every person it sees also goes into one
//! set for the whole fragment, the persons its sketch is made of.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListArray, UInt32Array};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::boolean::{and, not};
use arrow::compute::{nullif, prep_null_mask_filter};
use arrow::datatypes::{DataType, Field, FieldRef, UInt32Type};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::expressions::Literal;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::accumulate;
use fixedbitset::{Block, FixedBitSet};

use crate::{Refusal, Rule};

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
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }

    /// The census of groups by the persons of `arguments`' first, and of its others, the
    /// conditions of the figures.
    fn census(&self, arguments: &[Arc<dyn PhysicalExpr>]) -> GroupCensus {
        let groups = |seen| PersonGroups {
            cap: self.cap,
            seen,
            mine: FixedBitSet::new(),
            groups: Vec::new(),
            full: 0,
        };
        GroupCensus {
            all: groups(self.seen.clone()),
            figures: arguments[1..].iter().map(|_| groups(None)).collect(),
            conditions: figure_conditions(arguments),
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
        let field = |i| {
            Arc::new(Field::new(
                format!("{}[persons{i}]", args.name),
                list_type(),
                true,
            ))
        };
        Ok((0..args.input_fields.len()).map(field).collect())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup {
            census: self.census(args.exprs),
            zeros: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.census(args.exprs)))
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
/// wait on the store of the one before. The set grows to hold each number as its word is
/// stored, so that no pass over the numbers need find their largest first.
struct Words<'a> {
    set: &'a mut FixedBitSet,
    at: usize,
    bits: Block,
}

impl<'a> Words<'a> {
    /// Sets bits of `set`.
    fn over(set: &'a mut FixedBitSet) -> Self {
        Self {
            set,
            at: 0,
            bits: 0,
        }
    }

    fn insert(&mut self, number: u32) {
        let number = number as usize;
        let word = number / Block::BITS as usize;
        if word != self.at {
            self.store();
            self.at = word;
        }
        self.bits |= 1 << (number % Block::BITS as usize);
    }

    /// Ors the bits gathered into their word of the set.
    fn store(&mut self) {
        if self.bits == 0 {
            return;
        }
        // One past the largest number stored, as growing to hold it first would make it.
        let end =
            self.at * Block::BITS as usize + (Block::BITS - self.bits.leading_zeros()) as usize;
        if self.set.len() < end {
            self.set.grow(end);
        }
        self.set.as_mut_slice()[self.at] |= self.bits;
        self.bits = 0;
    }

    fn finish(mut self) {
        self.store();
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

impl PersonGroups {
    /// Adds to each group the persons of its rows that `filter` passes: one number a row,
    /// or a list of them (the persons of a group, when groups are grouped again).
    fn update(
        &mut self,
        persons: &ArrayRef,
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) {
        self.groups.resize_with(total_num_groups, Vec::new);
        // Once every group has its persons, only the fragment's set, if any, still grows.
        let all_full = self.full == total_num_groups;
        if let Some(lists) = persons.as_list_opt::<i32>() {
            // Persons the census of the groups grouped here has seen already.
            if all_full {
                return;
            }
            let keys = lists.values().as_primitive::<UInt32Type>();
            let offsets = lists.value_offsets();
            for (row, &group) in group_indices.iter().enumerate() {
                if lists.is_null(row) || filter.is_some_and(|f| !f.value(row)) {
                    continue;
                }
                let listed = offsets[row] as usize..offsets[row + 1] as usize;
                for key in listed.filter(|&key| keys.is_valid(key)) {
                    self.add(group, keys.value(key));
                }
            }
            return;
        }
        let keys = persons.as_primitive::<UInt32Type>();
        if self.seen.is_some() {
            // The set leaves `self` for the loop, so that the groups can take persons too.
            let mut mine = std::mem::take(&mut self.mine);
            let mut words = Words::over(&mut mine);
            match (all_full, filter, keys.nulls()) {
                // Only the set grows, by every row's person: no group or filter to read.
                (true, None, None) => keys.values().iter().for_each(|&key| words.insert(key)),
                _ => accumulate(group_indices, keys, filter, |group, key| {
                    words.insert(key);
                    if !all_full {
                        self.add(group, key);
                    }
                }),
            }
            words.finish();
            self.mine = mine;
        } else if !all_full {
            accumulate(group_indices, keys, filter, |group, key| {
                self.add(group, key);
            });
        }
    }

    /// Each row of `persons` as a group of its own: the state of a list of its persons, or
    /// of none where `filter` leaves it out.
    fn rows_as_groups(
        &self,
        persons: &ArrayRef,
        filter: Option<&BooleanArray>,
    ) -> Result<ArrayRef> {
        if persons.as_list_opt::<i32>().is_some() {
            return Ok(match filter {
                Some(f) => nullif(persons, &not(f)?)?,
                None => persons.clone(),
            });
        }
        let (lists, listed) = rows_as_lists(persons.as_primitive(), filter);
        if let Some(seen) = &self.seen {
            let mut seen = seen.lock().expect("not poisoned");
            let mut words = Words::over(&mut seen);
            listed.iter().for_each(|&person| words.insert(person));
            words.finish();
        }
        Ok(lists)
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Vec<u32>>()
            + self.groups.len() * self.cap * std::mem::size_of::<u32>()
            + self.mine.len() / 8
    }
}

/// The census of each group: its persons, and apart, for each condition, those of its
/// rows in scope it holds for and those it does not: the parts a figure of the group is
/// made from ([`crate::census`]).
#[derive(Debug)]
struct GroupCensus {
    all: PersonGroups,
    figures: Vec<PersonGroups>,
    /// The condition of each figure's rows, as the query states it.
    conditions: Vec<String>,
}

impl GroupCensus {
    fn each(&mut self) -> impl Iterator<Item = &mut PersonGroups> {
        std::iter::once(&mut self.all).chain(&mut self.figures)
    }

    fn lists(&mut self, emit_to: EmitTo) -> Vec<ArrayRef> {
        self.each().map(|groups| groups.emit(emit_to)).collect()
    }
}

/// The rows each list of a census takes: those `opt_filter` passes, and of those, for
/// each pair of a scope and a condition, the rows in scope the condition holds for and
/// those it does not hold for (a NULL holds for none).
fn filters(
    opt_filter: Option<&BooleanArray>,
    pairs: &[ArrayRef],
) -> Result<Vec<Option<BooleanArray>>> {
    let all = opt_filter.map(holds);
    let mut filters = vec![all.clone()];
    for pair in pairs.chunks(2) {
        let scope = holds(pair[0].as_boolean());
        let scope = match &all {
            Some(f) => and(f, &scope)?,
            None => scope,
        };
        let passes = holds(pair[1].as_boolean());
        filters.push(Some(and(&scope, &passes)?));
        filters.push(Some(and(&scope, &not(&passes)?)?));
    }
    Ok(filters)
}

/// The conditions of the lists of a census by `arguments`, the persons and then pairs of
/// a scope and a condition: where the condition holds in scope, and where it does not.
pub(crate) fn figure_conditions(arguments: &[Arc<dyn PhysicalExpr>]) -> Vec<String> {
    let in_scope =
        |scope: &Arc<dyn PhysicalExpr>, condition: String| match scope.downcast_ref::<Literal>() {
            Some(_) => condition,
            None => format!("{scope} AND {condition}"),
        };
    arguments[1..]
        .chunks(2)
        .flat_map(|pair| {
            let holds = pair[1].to_string();
            let fails = format!("NOT ({holds})");
            [in_scope(&pair[0], holds), in_scope(&pair[0], fails)]
        })
        .collect()
}

/// Where `condition` holds: true, not false nor NULL.
fn holds(condition: &BooleanArray) -> BooleanArray {
    match condition.null_count() {
        0 => condition.clone(),
        _ => prep_null_mask_filter(condition),
    }
}

impl GroupsAccumulator for GroupCensus {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let filters = filters(opt_filter, &values[1..])?;
        for (groups, filter) in self.each().zip(&filters) {
            groups.update(&values[0], group_indices, filter.as_ref(), total_num_groups);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        group_persons(&self.lists(emit_to), self.all.cap, &self.conditions)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(self.lists(emit_to))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        for (groups, lists) in self.each().zip(values) {
            groups.update(lists, group_indices, None, total_num_groups);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let filters = filters(opt_filter, &values[1..])?;
        let all = std::iter::once(&self.all).chain(&self.figures);
        all.zip(&filters)
            .map(|(groups, filter)| groups.rows_as_groups(&values[0], filter.as_ref()))
            .collect()
    }

    fn size(&self) -> usize {
        self.all.size() + self.figures.iter().map(PersonGroups::size).sum::<usize>()
    }
}

/// The persons of each group, the first of `lists`, once the others, the persons each
/// figure of the group is made from, are checked: a figure made from fewer than `k`
/// persons of a group of `k` or more tells of them alone, and is refused. (A group of
/// fewer is held back whole.) `conditions` name the figures' conditions, in order.
pub(crate) fn group_persons(
    lists: &[ArrayRef],
    k: usize,
    conditions: &[String],
) -> Result<ArrayRef> {
    let group = lists[0].as_list::<i32>();
    for (list, condition) in lists[1..].iter().zip(conditions) {
        let figure = list.as_list::<i32>();
        let few = (0..group.len()).find_map(|row| {
            let made_from = figure
                .is_valid(row)
                .then(|| figure.value_length(row) as usize)?;
            let whole = group.is_valid(row) && group.value_length(row) as usize >= k;
            (whole && made_from > 0 && made_from < k).then_some(made_from)
        });
        if let Some(few) = few {
            let refusal = Refusal::new(
                Rule::MinGroupSize,
                format!(
                    "a figure of a group of at least {k} distinct persons is made, wholly or in \
                     part, from the rows of {few} of them alone, those where {condition}; it \
                     would tell of them. Select those rows with WHERE, so that groups of fewer \
                     than {k} persons are held back, or widen the condition"
                ),
            );
            return Err(DataFusionError::External(Box::new(refusal)));
        }
    }
    Ok(lists[0].clone())
}

/// The census of an aggregate without groups: one group, index 0 of every row.
#[derive(Debug)]
struct OneGroup {
    census: GroupCensus,
    zeros: Vec<usize>,
}

impl OneGroup {
    /// The lists of the one group, which exists even when no row came.
    fn lists(&mut self) -> Vec<ArrayRef> {
        self.census
            .each()
            .for_each(|groups| groups.groups.resize_with(1, Vec::new));
        self.census.lists(EmitTo::All)
    }
}

/// The one row of `list`, a list array.
fn scalar(list: &ArrayRef) -> ScalarValue {
    ScalarValue::List(Arc::new(list.as_list::<i32>().clone()))
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = zeros(&mut self.zeros, values[0].len());
        self.census.update_batch(values, rows, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let lists = self.lists();
        let persons = group_persons(&lists, self.census.all.cap, &self.census.conditions)?;
        Ok(scalar(&persons))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.census.size()
            + self.zeros.capacity() * std::mem::size_of::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.lists().iter().map(scalar).collect())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = zeros(&mut self.zeros, states[0].len());
        self.census.merge_batch(states, rows, 1)
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
    use datafusion::physical_plan::expressions::Column;

    use super::*;

    #[test]
    fn words_set_the_bits_of_runs_jumps_and_repeats() {
        let numbers = [3, 3, 4, 63, 64, 65, 200, 5, 5, 199, 0];
        let mut expected = FixedBitSet::with_capacity(201);
        let mut set = FixedBitSet::new();
        let mut words = Words::over(&mut set);
        for n in numbers {
            expected.insert(n as usize);
            words.insert(n);
        }
        words.finish();
        assert_eq!(set, expected);
        Words::over(&mut FixedBitSet::new()).finish();
    }

    fn numbers(list: &ArrayRef) -> Vec<Vec<u32>> {
        list.as_list::<i32>()
            .iter()
            .map(|l| l.unwrap().as_primitive::<UInt32Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn a_figure_made_from_fewer_than_k_persons_of_a_group_of_k_is_refused() {
        let seen = Seen::default();
        // The persons, and one condition in the scope of every row.
        let arguments: Vec<Arc<dyn PhysicalExpr>> = vec![
            Arc::new(Column::new("person", 0)),
            Arc::new(Literal::new(ScalarValue::Boolean(Some(true)))),
            Arc::new(Column::new("paid_once", 2)),
        ];
        let persons = Persons::new(3, Some(seen.clone()));
        let mut census = persons.census(&arguments);
        let numbers_of: ArrayRef = Arc::new(UInt32Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8]));
        // Group 0 has four persons, a figure of one of them; group 1 has three, a figure
        // of none; group 2 has one, whose figure it is.
        let every_row: ArrayRef = Arc::new(BooleanArray::from(vec![true; 8]));
        let paid_once: ArrayRef = Arc::new(BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
            Some(false),
            Some(false),
            Some(false),
            Some(false),
            Some(true),
        ]));
        let groups = [0, 0, 0, 0, 1, 1, 1, 2];
        census
            .update_batch(&[numbers_of, every_row, paid_once], &groups, None, 3)
            .unwrap();
        let state = census.state(EmitTo::All).unwrap();
        assert_eq!(numbers(&state[0]), [vec![1, 2, 3], vec![5, 6, 7], vec![8]]);
        assert_eq!(numbers(&state[1]), [vec![1], vec![], vec![8]]);
        assert_eq!(numbers(&state[2]), [vec![2, 3, 4], vec![5, 6, 7], vec![]]);
        assert_eq!(seen.lock().unwrap().ones().count(), 8);

        let mut merged = persons.census(&arguments);
        merged.merge_batch(&state, &[0, 1, 2], 3).unwrap();
        let err = merged.evaluate(EmitTo::All).unwrap_err().to_string();
        assert!(
            err.contains("refused by rule min-group-size")
                && err.contains("rows of 1 of them alone, those where paid_once@2"),
            "{err}"
        );
        let mut without_the_first = persons.census(&arguments);
        let rest: Vec<ArrayRef> = state.iter().map(|s| s.slice(1, 2)).collect();
        without_the_first.merge_batch(&rest, &[0, 1], 2).unwrap();
        let lists = without_the_first.evaluate(EmitTo::All).unwrap();
        assert_eq!(numbers(&lists), [vec![5, 6, 7], vec![8]]);
    }
}
