//! The egress guard: the node's own check of everything a fragment would send. It traces
//! the fragment's columns, adds the person census, and on the way out tokenizes
//! identifiers, suppresses groups of fewer than k persons and refuses answers about
//! fewer than k persons.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryBuilder, GenericListArray,
    OffsetSizeTrait, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, UInt32Type};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNode;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use fixedbitset::FixedBitSet;
use futures::{StreamExt, TryStreamExt, stream};
use sunlight_domain::Table;
use sunlight_fragment::TableLeafExec;

use crate::census::{census, made_from};
use crate::lineage::{Tier, Treatment, node_egress, trace};
use crate::persons::{Seen, group_persons};
use crate::tokens::{own_persons, rebuilt, token_text, travelling};
use crate::{Error, PersonDirectory, PersonSketch, Refusal, Result, Rule, TOKEN_BYTES};

/// The smallest number of distinct persons a group must count; a node may raise it.
pub const DEFAULT_MIN_GROUP_SIZE: usize = 5;

/// The most held-back groups a node names by token; past it, their groups stay unnamed.
pub const MAX_NAMED_GROUPS: usize = 256;

/// A node's own disclosure policy.
#[derive(Debug, Clone)]
pub struct NodePolicy {
    /// Distinct persons every group that leaves must count (k).
    pub min_group_size: usize,
    /// The node's persons: the census counts their numbers, the sketches that let the
    /// city spot differencing carry their keys, and identifiers leave as its tokens (not
    /// at all on a node without a linkage key).
    pub persons: Arc<PersonDirectory>,
}

/// The rows and persons of a whole table, which a node counts once.
#[derive(Debug, Clone)]
pub struct Counted {
    /// Rows.
    pub rows: usize,
    /// Distinct persons.
    pub persons: usize,
    /// Their numbers.
    pub members: Arc<FixedBitSet>,
    /// Their sketch.
    pub sketch: PersonSketch,
}

/// What a node knows ahead of the persons behind a fragment.
#[derive(Debug, Clone)]
pub enum Ahead {
    /// It aggregates a whole table ([`whole_table`]), whose rows form one group, whose
    /// persons are the table's.
    OneGroup(Counted),
    /// It aggregates a whole table, whose rows form several groups, whose persons
    /// together are the table's.
    Groups(Counted),
    /// It reads rows about persons of one table only, some of them: its groups are formed
    /// from some of the table's persons.
    Among(Counted),
}

/// Where the persons behind each output row are found.
#[derive(Debug)]
enum Persons {
    /// In a column: a row's person, or a group's persons or their number, followed by
    /// the persons of the figures made from some of a group's rows, under `conditions`.
    Column {
        index: usize,
        conditions: Vec<String>,
        grouped: bool,
        formed_from: FormedFrom,
    },
    /// One group over a whole table, whose persons are already counted.
    Whole(Box<Counted>),
    /// Nowhere: the fragment reads no table about persons.
    None,
}

/// Every person the groups of a census are formed from.
#[derive(Debug)]
enum FormedFrom {
    /// Those the census sees as the fragment runs, all of them among a table's persons
    /// where it is known.
    Seen {
        seen: Seen,
        among: Option<Box<Counted>>,
    },
    /// A whole table's, as sketched ahead.
    Table(Box<PersonSketch>),
}

/// A checked fragment: the plan to run in its place, and how its output is released.
#[derive(Debug)]
pub struct Egress {
    /// The fragment with its person census; run this one.
    pub plan: Arc<dyn ExecutionPlan>,
    treatments: Vec<Treatment>,
    /// What leaves: the fragment's columns, tokens as they travel.
    schema: SchemaRef,
    persons: Persons,
    policy: NodePolicy,
    /// How many columns lead each row with its group's key, when they can be named.
    keys: Option<usize>,
    /// Groups, by token, that another node held back: none of their rows leaves.
    excluded: HashSet<u64>,
    /// Whether the groups come with totals over them (grouping sets).
    totals: bool,
    /// Whether the fragment ends in the partial phase of an aggregate, one row a group,
    /// with the state of a distinct count of identifiers: what [`Self::sharing`] changes.
    lists_identifiers: bool,
    /// The node's persons that other nodes hold too, by number, when the city counts
    /// with them: a distinct count of persons then lists only their tokens.
    shared: Option<Arc<FixedBitSet>>,
}

/// A fragment that aggregates a whole table, without filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeTable {
    /// The table.
    pub table: Table,
    /// The table's columns that form the groups, by name. Where every row holds the
    /// same value in each, as a node's own `county_code` does, every group's persons
    /// are the table's.
    pub groups: Vec<String>,
}

/// The table `fragment` aggregates whole, if it does, and the columns it groups by. Above
/// the aggregate, the fragment may filter, order, limit and project its groups: every row
/// it sends is still one of them. Each of its figures must be made from every row of its
/// group ([`made_from`]).
pub fn whole_table(fragment: &Arc<dyn ExecutionPlan>) -> Option<WholeTable> {
    let mut top = fragment;
    let aggregate = loop {
        if let Some(aggregate) = top.downcast_ref::<AggregateExec>() {
            break aggregate;
        }
        let passes = top.is::<ProjectionExec>()
            || top.is::<FilterExec>()
            || top.is::<SortExec>()
            || top.is::<GlobalLimitExec>()
            || top.is::<LocalLimitExec>()
            || top.is::<CooperativeExec>()
            || top.name() == "CoalesceBatchesExec";
        if !passes {
            return None;
        }
        top = top.children().into_iter().next()?;
    };
    let made_from_some = (0..aggregate.aggr_expr().len())
        .any(|figure| !made_from(aggregate, figure, None).is_ok_and(|c| c.is_empty()));
    if made_from_some {
        return None;
    }
    let mut columns = aggregate
        .group_expr()
        .expr()
        .iter()
        .map(|(e, _)| e.downcast_ref::<Column>().map(Column::index))
        .collect::<Option<Vec<_>>>()?;
    let mut input = aggregate.input();
    loop {
        if let Some(leaf) = input.downcast_ref::<TableLeafExec>() {
            let schema = leaf.schema();
            return leaf.limit().is_none().then(|| WholeTable {
                table: leaf.table(),
                groups: columns
                    .iter()
                    .map(|&c| schema.field(c).name().clone())
                    .collect(),
            });
        }
        if let Some(projection) = input.downcast_ref::<ProjectionExec>() {
            let exprs = projection.expr();
            columns = columns
                .iter()
                .map(|&c| exprs[c].expr.downcast_ref::<Column>().map(Column::index))
                .collect::<Option<Vec<_>>>()?;
        } else if !(input.is::<CooperativeExec>() || input.name() == "CoalesceBatchesExec") {
            return None;
        }
        input = input.children().into_iter().next()?;
    }
}

/// A fragment's output as released by the guard.
pub struct Released {
    /// Schema of what leaves.
    pub schema: SchemaRef,
    /// The rows that leave.
    pub stream: SendableRecordBatchStream,
    /// Groups held back because they count fewer than k persons.
    pub suppressed: usize,
    /// Groups released that count at least k persons (groups of no person aside).
    pub released: usize,
    /// Every person the groups were formed from, those of held-back groups too, when the
    /// census lists them.
    pub sketch: Option<PersonSketch>,
    /// The persons of the released groups less those also in a group held back, when
    /// a group was held back; [`Released::sketch`] says it all otherwise.
    pub shown: Option<PersonSketch>,
    /// The tokens of the groups held back, when the node can name every one of them:
    /// the partial groups of an aggregate by keys, on a node with a linkage key.
    pub held: Option<Vec<u64>>,
}

/// The plan to run in place of `fragment`, and where the persons behind its rows are
/// found: known ahead for one group over a whole table, and otherwise followed by a census,
/// whose groups are formed from the whole table's persons or from those it sees (some of
/// one table's, where the node knows).
fn counted(
    fragment: &Arc<dyn ExecutionPlan>,
    min_group_size: usize,
    ahead: Option<Ahead>,
) -> Result<(Arc<dyn ExecutionPlan>, Persons)> {
    let seen_by_census = |among| {
        let seen = Seen::default();
        (Some(seen.clone()), FormedFrom::Seen { seen, among })
    };
    let (seen, formed_from) = match ahead {
        Some(Ahead::OneGroup(counted)) => {
            // The group's persons are known; a census would only let a distinct count
            // of persons count their numbers, and where it cannot, the fragment runs as is.
            let plan = match counts_distinct(fragment) {
                true => census(fragment, min_group_size, None).ok().flatten(),
                false => None,
            };
            let plan = plan.map_or_else(|| fragment.clone(), |c| c.plan);
            return Ok((plan, Persons::Whole(Box::new(counted))));
        }
        Some(Ahead::Groups(counted)) => (None, FormedFrom::Table(Box::new(counted.sketch))),
        Some(Ahead::Among(counted)) => seen_by_census(Some(Box::new(counted))),
        None => seen_by_census(None),
    };
    let census = census(fragment, min_group_size, seen)
        .map_err(|e| Refusal::new(Rule::Untraceable, e.message()))?;
    Ok(match census {
        Some(c) => (
            c.plan,
            Persons::Column {
                index: c.column,
                conditions: c.conditions,
                grouped: c.grouped,
                formed_from,
            },
        ),
        None => (fragment.clone(), Persons::None),
    })
}

/// Whether an aggregate of `fragment` counts distinct values.
fn counts_distinct(fragment: &Arc<dyn ExecutionPlan>) -> bool {
    fragment
        .exists(|p| {
            Ok(p.downcast_ref::<AggregateExec>()
                .is_some_and(|a| a.aggr_expr().iter().any(|e| e.is_distinct())))
        })
        .unwrap_or(false)
}

/// What a node does to each output column of `fragment` before it leaves, by the egress
/// rules that hold on every node: the city checks a fragment by them before any node is
/// asked, and a node again before it runs one. Identifying values leave as keyed tokens,
/// so a distinct aggregate's state of them must be text.
pub fn treatments(fragment: &Arc<dyn ExecutionPlan>) -> Result<Vec<Treatment>> {
    let schema = fragment.schema();
    let traced = trace(fragment, Tier::Node, &|_| None)?;
    let treatments = node_egress(&traced, schema.fields())?;
    for (treatment, field) in treatments.iter().zip(schema.fields()) {
        let text = match (treatment, field.data_type()) {
            (Treatment::Keep, _) => continue,
            (Treatment::Tokenize, t) => is_text(t),
            (Treatment::TokenizeElements, DataType::List(inner) | DataType::LargeList(inner)) => {
                is_text(inner.data_type())
            }
            (Treatment::TokenizeElements, _) => false,
        };
        if !text {
            return Err(Refusal::new(
                Rule::QuasiIdentifier,
                format!(
                    "column {} would carry the values of a distinct aggregate over a \
                     non-text column, or a sketch of them, its partial state; group by \
                     county_code, so that each node computes it whole",
                    field.name()
                ),
            ));
        }
    }
    Ok(treatments)
}

impl Egress {
    /// Checks `fragment` against the egress rules of `policy`; `ahead` counts the persons
    /// of the table it aggregates whole, given only when [`whole_table`] names one, or of
    /// the one table about persons it reads.
    pub fn check(
        fragment: &Arc<dyn ExecutionPlan>,
        policy: &NodePolicy,
        ahead: Option<Ahead>,
    ) -> Result<Self> {
        let schema = fragment.schema();
        let treatments = treatments(fragment)?;
        let mut tokenized = treatments.iter().zip(schema.fields());
        if let Some((_, field)) = tokenized.find(|(t, _)| **t != Treatment::Keep)
            && policy.persons.tokenizer().is_none()
        {
            return Err(Refusal::new(
                Rule::DirectIdentifier,
                format!(
                    "column {} carries identifiers, and this node has no linkage key to \
                     turn them into tokens; set [linkage] key in its config",
                    field.name()
                ),
            ));
        }
        let (plan, persons) = counted(fragment, policy.min_group_size, ahead)?;
        let lists_identifiers =
            partial_top(fragment).is_some() && treatments.contains(&Treatment::TokenizeElements);
        let leaving = treatments
            .iter()
            .zip(schema.fields())
            .map(|(treatment, field)| travelling(field, *treatment != Treatment::Keep))
            .collect::<Vec<_>>();
        Ok(Self {
            plan,
            treatments,
            schema: Arc::new(Schema::new_with_metadata(
                leaving,
                schema.metadata().clone(),
            )),
            persons,
            policy: policy.clone(),
            keys: partial_keys(fragment),
            lists_identifiers,
            excluded: HashSet::new(),
            totals: fragment
                .exists(|p| {
                    Ok(p.downcast_ref::<AggregateExec>()
                        .is_some_and(|a| a.group_expr().has_grouping_set()))
                })
                .unwrap_or(true),
            shared: None,
        })
    }

    /// Holds back, besides its own small groups, the groups named by `groups`: those
    /// another node held back, so that the city shows none of them in part.
    pub fn excluding(mut self, groups: impl IntoIterator<Item = u64>) -> Self {
        self.excluded.extend(groups);
        self
    }

    /// Whether [`Self::sharing`] changes what the fragment sends: it ends in the partial
    /// phase of an aggregate, one row a group, with the state of a distinct count of
    /// identifiers.
    pub fn lists_identifiers(&self) -> bool {
        self.lists_identifiers
    }

    /// Lists, in the state of a distinct count of persons, the tokens of the persons in
    /// `shared` only, those other nodes hold too, and in place of the others one token
    /// that counts them ([`own_persons`]): they are counted here alone, so the city's
    /// count stays exact. `shared` must hold every person another node of the query
    /// holds; the city found them from every node's tokens.
    pub fn sharing(mut self, shared: Arc<FixedBitSet>) -> Self {
        self.shared = self.lists_identifiers().then_some(shared);
        self
    }

    /// The tokens of the groups of `batch`'s rows, when groups can be named.
    fn group_tokens(&self, batch: &RecordBatch) -> DfResult<Option<Vec<u64>>> {
        let (Some(keys), Some(tokens)) = (self.keys, self.policy.persons.tokenizer()) else {
            return Ok(None);
        };
        let columns = &batch.columns()[..keys];
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(columns)?;
        Ok(Some(
            rows.iter().map(|row| tokens.group(row.as_ref())).collect(),
        ))
    }

    /// Of `batch`'s rows, those that leave, and which they are: `small` tells a group held
    /// back for its own persons, and a group another node held back stays too. Adds the
    /// tokens of the groups held back here to `held`, or forgets them all when one cannot
    /// be named.
    fn sift(
        &self,
        batch: &RecordBatch,
        small: &[bool],
        held: &mut Option<Vec<u64>>,
    ) -> DfResult<(RecordBatch, BooleanArray)> {
        let any_small = small.contains(&true);
        let tokens = match any_small || !self.excluded.is_empty() {
            true => self.group_tokens(batch)?,
            false => None,
        };
        let named = tokens.as_ref().map(|t| {
            t.iter()
                .zip(small)
                .filter(|&(_, &s)| s)
                .map(|(&token, _)| token)
                .collect::<Vec<_>>()
        });
        match (named, held.as_mut()) {
            (Some(named), Some(held)) => held.extend(named),
            _ if any_small => *held = None,
            _ => {}
        }
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                let elsewhere = tokens
                    .as_ref()
                    .is_some_and(|t| self.excluded.contains(&t[row]));
                Some(!small[row] && !elsewhere)
            })
            .collect();
        Ok((filter_record_batch(batch, &keep)?, keep))
    }

    /// Applies the guard to the output of [`Egress::plan`]. Reads groups to the end, and
    /// rows until they concern k persons, before anything is released. Groups of fewer
    /// than k persons are held back; rows about fewer than k persons are refused.
    pub async fn release(
        self,
        mut input: SendableRecordBatchStream,
    ) -> std::result::Result<Released, Error> {
        let k = self.policy.min_group_size;
        let mut held = Vec::new();
        let mut suppressed = 0;
        let mut released = 0;
        let mut sketch = None;
        let mut shown = None;
        let mut named = Some(Vec::new());
        match &self.persons {
            Persons::Whole(counted) => {
                let small = counted.persons > 0 && counted.persons < k;
                while let Some(batch) = input.next().await {
                    let batch = batch?;
                    let (kept, _) =
                        self.sift(&batch, &vec![small; batch.num_rows()], &mut named)?;
                    match small {
                        true => suppressed += batch.num_rows(),
                        false => released += kept.num_rows(),
                    }
                    held.push(kept);
                }
                sketch = (!small).then(|| counted.sketch.clone());
            }
            Persons::Column {
                index,
                conditions,
                grouped: true,
                formed_from,
            } => {
                // A group held back counts fewer than k persons, so its list is whole.
                let mut hidden: Vec<u32> = Vec::new();
                while let Some(batch) = input.next().await {
                    let batch = batch?;
                    let lists = &batch.columns()[*index..=*index + conditions.len()];
                    let listed = group_persons(lists, k, conditions)?;
                    let listed = listed.as_list::<i32>();
                    let persons: Vec<usize> = (0..listed.len())
                        .map(|row| match listed.is_valid(row) {
                            true => listed.value_length(row) as usize,
                            false => 0,
                        })
                        .collect();
                    let small: Vec<bool> = persons.iter().map(|&n| n > 0 && n < k).collect();
                    for row in (0..small.len()).filter(|&row| small[row]) {
                        let numbers = listed.value(row);
                        hidden.extend(numbers.as_primitive::<UInt32Type>().values());
                    }
                    let (kept, keep) = self.sift(&batch, &small, &mut named)?;
                    suppressed += small.iter().filter(|&&s| s).count();
                    released += persons
                        .iter()
                        .zip(keep.values())
                        .filter(|&(&n, leaves)| leaves && n >= k)
                        .count();
                    held.push(kept);
                }
                if suppressed > 0 && self.totals {
                    return Err(Refusal::new(
                        Rule::MinGroupSize,
                        format!(
                            "{suppressed} group(s) count fewer than {k} distinct persons, and \
                             the answer holds totals over its groups (ROLLUP, CUBE or \
                             GROUPING SETS): a total less the groups shown would reveal \
                             them; drop the totals or widen the groups"
                        ),
                    )
                    .into());
                }
                let formed = match formed_from {
                    FormedFrom::Seen { seen, among } => {
                        let seen = seen.lock().expect("not poisoned");
                        match among {
                            Some(table) => self.policy.persons.sketch_among(
                                &seen,
                                &table.members,
                                &table.sketch,
                            ),
                            None => self.policy.persons.sketch(&seen),
                        }
                    }
                    FormedFrom::Table(sketch) => (**sketch).clone(),
                };
                if !hidden.is_empty() {
                    // The persons of groups held back are among those the groups are
                    // formed from, and sketches subtract.
                    let hidden = hidden.into_iter().map(|p| p as usize).collect();
                    let mut visible = formed.clone();
                    visible.subtract(&self.policy.persons.sketch(&hidden));
                    shown = Some(visible);
                }
                sketch = Some(formed);
            }
            Persons::Column {
                index: column,
                grouped: false,
                ..
            } => {
                let mut seen = Vec::new();
                while seen.len() < k {
                    let Some(batch) = input.next().await else {
                        break;
                    };
                    let batch = batch?;
                    let people = batch.column(*column).as_primitive::<UInt32Type>();
                    seen.extend(people.iter().flatten());
                    distinct(&mut seen);
                    held.push(batch);
                }
                if !seen.is_empty() && seen.len() < k {
                    return Err(too_few(k, "the rows of the answer concern").into());
                }
            }
            Persons::None => {}
        }
        let schema = self.schema.clone();
        let guard = Arc::new(self);
        let rest = input.and_then({
            let guard = guard.clone();
            move |b| std::future::ready(guard.clear(&b))
        });
        let held: Vec<_> = held.iter().map(|b| guard.clear(b)).collect();
        let stream = stream::iter(held).chain(rest);
        Ok(Released {
            schema: schema.clone(),
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            suppressed,
            released,
            sketch,
            shown,
            held: named.filter(|n| n.len() == suppressed && n.len() <= MAX_NAMED_GROUPS),
        })
    }

    /// The fragment's own columns of `batch`, identifiers turned into tokens.
    fn clear(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let columns = self
            .treatments
            .iter()
            .zip(self.schema.fields())
            .enumerate()
            .map(|(i, (treatment, field))| {
                let column = batch.column(i);
                match treatment {
                    Treatment::Keep if column.data_type() == field.data_type() => {
                        Ok(column.clone())
                    }
                    // The state of a count of distinct texts, which the census counts
                    // as values ([`crate::census`]): the texts the fragment would list.
                    Treatment::Keep => each_value(column, field, |values| Ok(token_text(values)?)),
                    Treatment::Tokenize => self.tokenize(column),
                    Treatment::TokenizeElements => match (&self.shared, field.data_type()) {
                        (Some(shared), DataType::List(inner)) if lists_persons(column) => {
                            self.own_counted(column.as_list::<i32>(), inner, shared)
                        }
                        (Some(shared), DataType::LargeList(inner)) if lists_persons(column) => {
                            self.own_counted(column.as_list::<i64>(), inner, shared)
                        }
                        _ => each_value(column, field, |values| self.tokenize(values)),
                    },
                }
            })
            .collect::<DfResult<Vec<_>>>()?;
        // A fragment may answer rows without columns, as under `SELECT count(*) FROM
        // (SELECT DISTINCT … LIMIT 3)`.
        let rows = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &rows,
        )?)
    }

    /// `lists` of person numbers as lists of `field`: the tokens of the persons in
    /// `shared`, and one [`own_persons`] token that counts the others.
    fn own_counted<O: OffsetSizeTrait>(
        &self,
        lists: &GenericListArray<O>,
        field: &FieldRef,
        shared: &FixedBitSet,
    ) -> DfResult<ArrayRef> {
        let numbers = lists.values().as_primitive::<UInt32Type>();
        let mut listed = Vec::new();
        // Per list, the end of its persons in `listed` and the count of the others.
        let mut ends = Vec::with_capacity(lists.len());
        for bounds in lists.offsets().windows(2) {
            let mut own = 0_u32;
            let (start, end) = (bounds[0].as_usize(), bounds[1].as_usize());
            for number in numbers.slice(start, end - start).iter() {
                match number {
                    Some(n) if !shared.contains(n as usize) => own += 1,
                    shared_or_null => listed.push(shared_or_null),
                }
            }
            ends.push((listed.len(), own));
        }
        let tokens = self.policy.persons.tokens(&UInt32Array::from(listed))?;
        let mut sent =
            FixedSizeBinaryBuilder::with_capacity(tokens.len() + ends.len(), TOKEN_BYTES as i32);
        let mut offsets = Vec::with_capacity(ends.len() + 1);
        offsets.push(O::usize_as(0));
        let mut start = 0;
        for (end, own) in ends {
            for at in start..end {
                match tokens.is_null(at) {
                    true => sent.append_null(),
                    false => sent.append_value(tokens.value(at))?,
                }
            }
            if own > 0 {
                sent.append_value(own_persons(own))?;
            }
            offsets.push(O::usize_as(sent.len()));
            start = end;
        }
        let lists = GenericListArray::<O>::try_new(
            field.clone(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(sent.finish()),
            lists.nulls().cloned(),
        )?;
        Ok(Arc::new(lists))
    }

    /// The tokens of the values of `column`: of the identifiers of person numbers, the
    /// state of a distinct count of persons, and of the texts of others.
    fn tokenize(&self, column: &ArrayRef) -> DfResult<ArrayRef> {
        if let Some(numbers) = column.as_primitive_opt::<UInt32Type>() {
            return Ok(Arc::new(self.policy.persons.tokens(numbers)?));
        }
        let tokens = self
            .policy
            .persons
            .tokenizer()
            .expect("checked when the fragment was");
        let text = token_text(column)?;
        let mut hashed = FixedSizeBinaryBuilder::with_capacity(text.len(), TOKEN_BYTES as i32);
        for value in text.as_string::<i32>() {
            match value {
                Some(value) => hashed.append_value(tokens.token(value))?,
                None => hashed.append_null(),
            }
        }
        Ok(Arc::new(hashed.finish()))
    }
}

/// Whether `column` lists persons by number, as the state of a distinct count of persons
/// does.
fn lists_persons(column: &ArrayRef) -> bool {
    matches!(
        column.data_type(),
        DataType::List(inner) | DataType::LargeList(inner) if inner.data_type() == &DataType::UInt32
    )
}

/// `column`, a list of values, with `f` applied to its values, as the lists `field` holds.
fn each_value(
    column: &ArrayRef,
    field: &FieldRef,
    f: impl Fn(&ArrayRef) -> DfResult<ArrayRef>,
) -> DfResult<ArrayRef> {
    match (field.data_type(), column.data_type()) {
        (DataType::List(inner), DataType::List(_)) => rebuilt(column.as_list::<i32>(), inner, f),
        (DataType::LargeList(inner), DataType::LargeList(_)) => {
            rebuilt(column.as_list::<i64>(), inner, f)
        }
        (expected, found) => Err(DataFusionError::Internal(format!(
            "column {} is {found} where the fragment makes {expected}: lists of values \
             are expected",
            field.name()
        ))),
    }
}

/// How many columns lead each row of `fragment` with its group's key: the fragment ends
/// in the partial phase of an aggregate by one set of keys, whose groups the city merges
/// across nodes by those keys.
fn partial_keys(fragment: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let aggregate = partial_top(fragment)?;
    let group = aggregate.group_expr();
    (group.is_single() && !group.is_empty()).then(|| group.expr().len())
}

/// The partial phase of an aggregate in which `fragment` ends, if it does: the node
/// merges its groups, so it sends one row a group.
fn partial_top(fragment: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    let mut top = fragment;
    while top.is::<CooperativeExec>() || top.name() == "CoalesceBatchesExec" {
        top = top.children().into_iter().next()?;
    }
    let aggregate = top.downcast_ref::<AggregateExec>()?;
    (*aggregate.mode() == AggregateMode::Partial).then_some(aggregate)
}

/// Sorts `persons` and drops the repeated ones.
fn distinct(persons: &mut Vec<u32>) {
    persons.sort_unstable();
    persons.dedup();
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// The refusal of an answer about fewer than `k` persons.
pub fn too_few(k: usize, what: &str) -> Refusal {
    Refusal::new(
        Rule::MinGroupSize,
        format!(
            "{what} fewer than {k} distinct persons; widen the filter or the groups \
             (a filter that isolates fewer than {k} persons is refused)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::expressions::{col, is_not_null};

    use arrow::array::{ListArray, StringArray};
    use arrow::datatypes::Field;

    use super::*;
    use crate::Tokenizer;
    use crate::test_plans::{count_by, count_distinct, leaf, partial_by};
    use crate::tokens::as_planned;

    /// `input`'s rows whose `column`, by position, is not null.
    fn filtered(input: Arc<dyn ExecutionPlan>, column: usize) -> Arc<dyn ExecutionPlan> {
        let schema = input.schema();
        let predicate = is_not_null(col(schema.field(column).name(), &schema).unwrap()).unwrap();
        Arc::new(FilterExec::try_new(predicate, input).unwrap())
    }

    #[test]
    fn a_whole_table_is_named_with_its_group_columns_and_a_filtered_one_is_not() {
        let disbursements = || leaf(Table::Disbursements, &["county_code", "township"]);
        let by_county = count_by(disbursements(), "county_code");
        let whole = WholeTable {
            table: Table::Disbursements,
            groups: vec!["county_code".into()],
        };
        assert_eq!(whole_table(&by_county), Some(whole.clone()));
        // HAVING: the groups sent are still groups of the whole table.
        assert_eq!(whole_table(&filtered(by_county, 1)), Some(whole));
        assert_eq!(
            whole_table(&count_by(disbursements(), "township")).map(|w| w.groups),
            Some(vec!["township".into()])
        );
        let rows = leaf(Table::Disbursements, &["county_code", "amount"]);
        assert_eq!(
            whole_table(&count_by(filtered(rows, 1), "county_code")),
            None
        );
    }

    #[test]
    fn a_distinct_count_of_persons_lists_the_shared_and_counts_the_others() {
        let tokens = Tokenizer::new("a key of the test", 0);
        let persons = Arc::new(PersonDirectory::new(Some(tokens.clone())));
        assert_eq!(persons.number(["a", "b", "c"].map(Some)), [0, 1, 2]);
        let policy = NodePolicy {
            min_group_size: 1,
            persons,
        };
        let rows = leaf(Table::Disbursements, &["subsidy_type", "person_id"]);
        let person = col("person_id", &rows.schema()).unwrap();
        let fragment = partial_by(
            rows.clone(),
            "subsidy_type",
            vec![count_distinct(&rows, person, "n")],
        );
        // The state the fragment sends: per type, the numbers of its persons.
        let lists = ListArray::from_iter_primitive::<UInt32Type, _, _>([
            Some(vec![Some(0), Some(1), Some(2)]),
            Some(vec![Some(1)]),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("subsidy_type", DataType::Utf8, true),
            Field::new("n", lists.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["DIBAO", "GAOLING"])),
                Arc::new(lists),
            ],
        )
        .unwrap();
        let planned = fragment.schema().field(1).as_ref().clone();
        let texts = |egress: &Egress| -> Vec<Vec<String>> {
            let sent = egress.clear(&batch).unwrap();
            let texts = as_planned(sent.column(1), &planned, "140212").unwrap();
            let lists = texts.as_list::<i32>();
            let list = |i| -> Vec<String> {
                let list = lists.value(i);
                list.as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(String::from)
                    .collect()
            };
            (0..lists.len()).map(list).collect()
        };
        let text = |id: &str| {
            let mut buffer = [0; crate::TOKEN_CHARS];
            crate::tokens::text_of(&tokens.token(id), &mut buffer).to_string()
        };

        let egress = Egress::check(&fragment, &policy, None).unwrap();
        assert!(egress.lists_identifiers());
        assert_eq!(
            texts(&egress),
            [vec![text("a"), text("b"), text("c")], vec![text("b")]]
        );
        // Only b is held by another node too: a and c leave as a count.
        let shared = Arc::new(FixedBitSet::with_capacity_and_blocks(3, [0b010]));
        let egress = egress.sharing(shared);
        let own = |n: u32| format!("140212#{n}");
        assert_eq!(
            texts(&egress),
            [vec![text("b"), own(0), own(1)], vec![text("b")]]
        );
    }
}
