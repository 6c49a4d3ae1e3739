//! `distinct_persons(number)`: `count(DISTINCT person_id)` counted by the node's person
//! numbers. The census already carries each row's number, so the node need not read,
//! hash and keep the identifiers themselves. Distinct numbers are distinct identifiers
//! ([`crate::PersonDirectory`]). The partial state lists a group's numbers; the egress
//! guard turns them into the tokens of their identifiers, the state the city merges.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::datatypes::{DataType, Field, FieldRef, SchemaRef, UInt32Type};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_plan::expressions::CastExpr;
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::accumulate::accumulate;
use fixedbitset::FixedBitSet;

use crate::one_text_each;
use crate::persons::{list_type, lists, rows_as_lists};

/// The aggregate that counts distinct person numbers.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistinctPersons {
    signature: Signature,
}

impl Default for DistinctPersons {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::UInt32], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for DistinctPersons {
    fn name(&self) -> &str {
        "distinct_persons"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    /// Named as `count(DISTINCT …)` names its state.
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "count distinct"),
            list_type(),
            false,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneSet::default()))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PersonSets::default()))
    }
}

/// `function` as `count(DISTINCT x)` where it is `count(DISTINCT CAST(x AS Utf8))` over
/// `schema` and each value of `x` has one text ([`one_text_each`]): the same count, of
/// the values rather than of texts made for every row. Its partial state lists values,
/// which the egress guard turns into the tokens of their texts; but not of `UInt32`
/// values, whose lists it reads as person numbers.
pub(crate) fn counted_by_value(
    function: &AggregateFunctionExpr,
    schema: &SchemaRef,
) -> Result<Option<Arc<AggregateFunctionExpr>>> {
    if !function.is_distinct() || function.fun().name() != "count" {
        return Ok(None);
    }
    let args = function.expressions();
    let [arg] = args.as_slice() else {
        return Ok(None);
    };
    let Some(value) = text_of(arg, schema)? else {
        return Ok(None);
    };
    // Lists of UInt32 leave as the tokens of persons ([`DistinctPersons`]).
    if value.data_type(schema)? == DataType::UInt32 {
        return Ok(None);
    }
    let count = Arc::new(function.fun().clone());
    AggregateExprBuilder::new(count, vec![value])
        .schema(schema.clone())
        .alias(function.name())
        .distinct()
        .build()
        .map(|f| Some(Arc::new(f)))
}

/// `x` where `expr` is `CAST(x AS Utf8)` over `schema` and each value of `x` has one text
/// ([`one_text_each`]): NULL where its text is, with as many distinct values as texts.
pub(crate) fn text_of(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let Some(text) = expr.downcast_ref::<CastExpr>() else {
        return Ok(None);
    };
    let value = text.expr();
    Ok(
        (text.cast_type() == &DataType::Utf8 && one_text_each(&value.data_type(schema)?))
            .then(|| value.clone()),
    )
}

/// The distinct persons of one group: their numbers in a list while it is smaller than a
/// bit set up to the largest of them would be, and then in that bit set.
#[derive(Debug)]
enum PersonSet {
    Few { numbers: Vec<u32>, largest: u32 },
    Many(FixedBitSet),
}

impl Default for PersonSet {
    fn default() -> Self {
        Self::Few {
            numbers: Vec::new(),
            largest: 0,
        }
    }
}

impl PersonSet {
    fn insert(&mut self, number: u32) {
        match self {
            Self::Few { numbers, largest } => {
                numbers.push(number);
                *largest = (*largest).max(number);
                // Four bytes a number against one bit a possible number.
                if numbers.len() * 32 > *largest as usize {
                    let mut set = FixedBitSet::with_capacity(*largest as usize + 1);
                    numbers.iter().for_each(|&n| set.insert(n as usize));
                    *self = Self::Many(set);
                }
            }
            Self::Many(set) => set.grow_and_insert(number as usize),
        }
    }

    /// The numbers, in order, each once.
    fn distinct(self) -> Vec<u32> {
        match self {
            Self::Few { mut numbers, .. } => {
                numbers.sort_unstable();
                numbers.dedup();
                numbers
            }
            Self::Many(set) => set.ones().map(|n| n as u32).collect(),
        }
    }

    fn count(self) -> i64 {
        match self {
            Self::Many(set) => set.count_ones(..) as i64,
            few => few.distinct().len() as i64,
        }
    }

    fn merge(&mut self, list: &ArrayRef) {
        let numbers = list.as_primitive::<UInt32Type>();
        numbers.iter().flatten().for_each(|n| self.insert(n));
    }

    fn size(&self) -> usize {
        match self {
            Self::Few { numbers, .. } => numbers.capacity() * size_of::<u32>(),
            Self::Many(set) => set.len() / 8,
        }
    }
}

/// One [`PersonSet`] a group.
#[derive(Debug, Default)]
struct PersonSets {
    groups: Vec<PersonSet>,
}

impl GroupsAccumulator for PersonSets {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups
            .resize_with(total_num_groups, PersonSet::default);
        let numbers = values[0].as_primitive::<UInt32Type>();
        accumulate(group_indices, numbers, opt_filter, |group, number| {
            self.groups[group].insert(number);
        });
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        Ok(Arc::new(Int64Array::from_iter_values(
            groups.into_iter().map(PersonSet::count),
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups: Vec<Vec<u32>> = emit_to
            .take_needed(&mut self.groups)
            .into_iter()
            .map(PersonSet::distinct)
            .collect();
        let lengths: Vec<usize> = groups.iter().map(Vec::len).collect();
        Ok(vec![lists(lengths, groups.into_iter().flatten())])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups
            .resize_with(total_num_groups, PersonSet::default);
        let lists = values[0].as_list::<i32>();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_valid(row) {
                self.groups[group].merge(&lists.value(row));
            }
        }
        Ok(())
    }

    /// Each row as a group of its one person, or of none.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        Ok(vec![rows_as_lists(values[0].as_primitive(), opt_filter).0])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<PersonSet>()
            + self.groups.iter().map(PersonSet::size).sum::<usize>()
    }
}

/// The one set of an aggregate without groups.
#[derive(Debug, Default)]
struct OneSet {
    set: PersonSet,
}

impl Accumulator for OneSet {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let numbers = values[0].as_primitive::<UInt32Type>();
        numbers.iter().flatten().for_each(|n| self.set.insert(n));
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(
            std::mem::take(&mut self.set).count(),
        )))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.set.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let numbers = std::mem::take(&mut self.set).distinct();
        let list = lists([numbers.len()], numbers);
        Ok(vec![ScalarValue::List(Arc::new(
            list.as_list::<i32>().clone(),
        ))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for list in lists.iter().flatten() {
            self.set.merge(&list);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use arrow::array::UInt32Array;

    use super::*;

    /// Numbers from a small generator: runs, repeats and jumps, some missing.
    fn numbers(seed: u64, len: usize, spread: u32) -> Vec<Option<u32>> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = (state >> 33) as u32 % spread;
                (!n.is_multiple_of(17)).then_some(n)
            })
            .collect()
    }

    #[test]
    fn groups_count_and_list_their_distinct_numbers_through_partial_and_merge() {
        for (spread, groups) in [(40, 3), (100_000, 2), (5, 7)] {
            let values = numbers(spread as u64, 5_000, spread);
            let group_of: Vec<usize> = (0..values.len()).map(|i| (i * 7) % groups).collect();
            let mut expected = vec![BTreeSet::new(); groups];
            for (v, &g) in values.iter().zip(&group_of) {
                if let Some(v) = v {
                    expected[g].insert(*v);
                }
            }
            let array: ArrayRef = Arc::new(UInt32Array::from(values.clone()));
            // Two partial accumulators over halves, merged by a third.
            let half = values.len() / 2;
            let mut merged = PersonSets::default();
            for range in [0..half, half..values.len()] {
                let mut partial = PersonSets::default();
                let slice = array.slice(range.start, range.len());
                partial
                    .update_batch(&[slice], &group_of[range], None, groups)
                    .unwrap();
                let state = partial.state(EmitTo::All).unwrap();
                let indices: Vec<usize> = (0..groups).collect();
                merged.merge_batch(&state, &indices, groups).unwrap();
            }
            let state = PersonSets {
                groups: std::mem::take(&mut merged.groups),
            }
            .state(EmitTo::All)
            .unwrap();
            let lists: Vec<BTreeSet<u32>> = state[0]
                .as_list::<i32>()
                .iter()
                .map(|l| {
                    l.unwrap()
                        .as_primitive::<UInt32Type>()
                        .values()
                        .iter()
                        .copied()
                        .collect()
                })
                .collect();
            assert_eq!(lists, expected);
            let mut counted = PersonSets::default();
            counted
                .update_batch(std::slice::from_ref(&array), &group_of, None, groups)
                .unwrap();
            let counts = counted.evaluate(EmitTo::All).unwrap();
            let counts: Vec<i64> = counts
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec();
            assert_eq!(
                counts,
                expected.iter().map(|e| e.len() as i64).collect::<Vec<_>>()
            );

            let mut one = OneSet::default();
            one.update_batch(&[array]).unwrap();
            let all: BTreeSet<u32> = expected.into_iter().flatten().collect();
            assert_eq!(
                one.evaluate().unwrap(),
                ScalarValue::Int64(Some(all.len() as i64))
            );
        }
    }
}
