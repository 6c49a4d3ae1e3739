//! The fragment executor: decodes a plan shipped by the city, checks it, puts the node's
//! own table scans in place of its leaves, and runs it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ScalarValue, Statistics};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::execution::session_state::SessionState;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::expressions::{Column, Literal};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::udaf::StatisticsArgs;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::FutureExt;
use sunlight_domain::{NodeCode, Table};
use sunlight_flightsql::{panic_message, too_large};
use sunlight_fragment::{TableLeafExec, decode_plan};
use sunlight_policy::{Ahead, Egress, Released, WholeTable, whole_table};
use sunlight_proto::v1::FragmentTicket;

use crate::check::check_fragment;
use crate::county_guard::CountyGuardExec;
use crate::node::Node;
use crate::optimize::optimize;
use crate::persons::{has_persons, scan_with_persons};
use crate::proven::without_proven;
use crate::{Error, Result};

/// Runs `ticket`'s fragment on `node` and streams its single output partition, as the
/// egress guard releases it.
pub async fn run(node: &Node, ticket: FragmentTicket) -> Result<Released> {
    guarded(checked_run(node, ticket)).await
}

/// `work`, with a panic in it turned into an error that says so. A panic would otherwise
/// drop the connection, which the city takes for a node that is down and retries.
async fn guarded<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic_message(panic.as_ref());
            Err(too_large(message)
                .map_or_else(|| Error::Failed(message.to_string()), Error::TooLarge))
        })
}

async fn checked_run(node: &Node, ticket: FragmentTicket) -> Result<Released> {
    if ticket.node != node.code().as_str() {
        return Err(Error::WrongNode {
            expected: node.code().to_string(),
            found: ticket.node,
        });
    }
    let task = node.task();
    let plan = decode_plan(&ticket.plan, &task)?;
    check_fragment(&plan)?;
    let plan = without_proven(node, plan).await?;
    let (ahead, statistics) = match whole_table(&plan) {
        Some(whole) if has_persons(whole.table) => {
            let counted = node.persons_of(whole.table).await?;
            match one_group(node, &whole).await? {
                true => {
                    // Answered from the statistics the files had when checked, which must
                    // still be the files.
                    node.files().unchanged(whole.table).await?;
                    (
                        Some(Ahead::OneGroup(counted)),
                        Some(node.statistics(whole.table).await?),
                    )
                }
                false => (Some(Ahead::Groups(counted)), None),
            }
        }
        _ => match persons_table(&plan) {
            Some(table) => (Some(Ahead::Among(node.persons_of(table).await?)), None),
            None => (None, None),
        },
    };
    let mut egress =
        Egress::check(&plan, &node.privacy().policy, ahead)?.excluding(ticket.excluded_groups);
    if let Some(epoch) = ticket.shared_persons.filter(|_| egress.lists_identifiers()) {
        let shared = node.shared().held(epoch);
        egress = egress.sharing(shared.ok_or(Error::StaleShared { epoch })?);
    }
    let plan = match statistics {
        Some(statistics) => answer_from_statistics(egress.plan.clone(), &statistics, node.code())?,
        None => egress.plan.clone(),
    };
    let plan = resolve_leaves(node, plan).await?;
    // Executed within the task, so that the tasks its operators start run there too.
    let released = async move { Ok(egress.release(execute_stream(plan, task)?).await?) };
    node.compute().run(released).await
}

/// The one table about persons that `plan` reads, if it reads no other (it may read that
/// one twice, and `subsidy_standards`).
fn persons_table(plan: &Arc<dyn ExecutionPlan>) -> Option<Table> {
    let mut tables = Vec::new();
    plan.apply(|p| {
        if let Some(leaf) = p.downcast_ref::<TableLeafExec>()
            && has_persons(leaf.table())
        {
            tables.push(leaf.table());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let first = *tables.first()?;
    tables.iter().all(|&t| t == first).then_some(first)
}

/// Whether the rows of `whole`'s table form one group: it has no groups, or groups by
/// the node's `county_code` alone, which the table's statistics prove every row holds.
async fn one_group(node: &Node, whole: &WholeTable) -> Result<bool> {
    if whole.groups.iter().any(|g| g != "county_code") {
        return Ok(false);
    }
    Ok(whole.groups.is_empty() || node.county_proven(whole.table).await?)
}

/// `fragment`, whose aggregate over a whole table forms one group, with that aggregate
/// answered from the table's `statistics` where they hold every value it needs, as
/// they do for `count` and `min`: the table is then not read. A group by `county_code`
/// is the node's `code`.
fn answer_from_statistics(
    fragment: Arc<dyn ExecutionPlan>,
    statistics: &Statistics,
    code: NodeCode,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(fragment
        .transform_up(|p| {
            Ok(match aggregate_from_statistics(&p, statistics, code)? {
                Some(batch) => Transformed::yes(MemorySourceConfig::try_new_exec(
                    &[vec![batch]],
                    p.schema(),
                    None,
                )? as Arc<dyn ExecutionPlan>),
                None => Transformed::no(p),
            })
        })?
        .data)
}

/// The one row of `plan`, if it is an aggregate over a whole table leaf that forms one
/// group, and the table's `statistics` hold the value of every aggregate function.
fn aggregate_from_statistics(
    plan: &Arc<dyn ExecutionPlan>,
    statistics: &Statistics,
    code: NodeCode,
) -> DfResult<Option<RecordBatch>> {
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    let Some(leaf) = aggregate.input().downcast_ref::<TableLeafExec>() else {
        return Ok(None);
    };
    if leaf.limit().is_some() || aggregate.filter_expr().iter().any(Option::is_some) {
        return Ok(None);
    }
    let modes = [
        AggregateMode::Partial,
        AggregateMode::Single,
        AggregateMode::SinglePartitioned,
    ];
    let groups = aggregate.group_expr().expr().len();
    let schema = plan.schema();
    if !modes.contains(aggregate.mode())
        || !aggregate.group_expr().is_single()
        // Each aggregate's partial state must be its one value; a distinct aggregate's
        // state is its values, not their number.
        || groups + aggregate.aggr_expr().len() != schema.fields().len()
        || aggregate.aggr_expr().iter().any(|e| e.is_distinct())
    {
        return Ok(None);
    }
    let statistics = statistics
        .clone()
        .project(leaf.projection().map(<[usize]>::to_vec).as_ref());
    // A group of no rows is no answer row.
    if groups > 0 && !matches!(statistics.num_rows, Precision::Exact(n) if n > 0) {
        return Ok(None);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in &schema.fields()[..groups] {
        let code = ScalarValue::from(code.as_str()).cast_to(field.data_type())?;
        columns.push(code.to_array()?);
    }
    for (expr, field) in aggregate.aggr_expr().iter().zip(&schema.fields()[groups..]) {
        let exprs = expr.expressions();
        let returns = expr.field();
        let args = StatisticsArgs {
            statistics: &statistics,
            return_type: returns.data_type(),
            is_distinct: false,
            exprs: &exprs,
        };
        let value = expr.fun().value_from_stats(&args);
        let Some(value) = value.filter(|v| v.data_type() == *field.data_type()) else {
            return Ok(None);
        };
        columns.push(value.to_array()?);
    }
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

/// Replaces every [`TableLeafExec`] with a scan of the node's table, and plans the
/// fragment for the node ([`optimize`]).
async fn resolve_leaves(
    node: &Node,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut leaves = Vec::new();
    plan.apply(|p| {
        if let Some(leaf) = p.downcast_ref::<TableLeafExec>() {
            leaves.push((key(p), leaf.clone()));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let state = node.state();
    let mut scans = HashMap::new();
    for (key, leaf) in leaves {
        if let Some(expected) = leaf.copy() {
            node.hold_standards(expected).await?;
        }
        let schema = leaf.schema();
        let county = schema.index_of("county_code").ok();
        let proven = match county {
            Some(_) => node.county_proven(leaf.table()).await?,
            None => false,
        };
        let mut written = Vec::new();
        if let (Some(at), true) = (county, proven) {
            written.push((at, ScalarValue::from(node.code().as_str())));
        }
        if leaf.ids_unread() {
            written.push((schema.index_of("person_id")?, ScalarValue::from("")));
        }
        let scan = scan_writing(node, &leaf, written, state).await?;
        let scan = match (county, proven) {
            // A leaf over several nodes that carries county_code was planned as
            // partitioned by it.
            (Some(at), false) if leaf.partitions() > 1 => {
                Arc::new(CountyGuardExec::new(scan, node.code(), leaf.table(), at))
            }
            _ => scan,
        };
        scans.insert(key, scan);
    }
    let resolved = plan.transform_up(|p| {
        Ok(match scans.get(&key(&p)) {
            Some(scan) => Transformed::yes(scan.clone()),
            None => Transformed::no(p),
        })
    })?;
    Ok(optimize(resolved.data, state.config_options())?)
}

/// A scan of `leaf`'s table on the node.
async fn scan(
    node: &Node,
    leaf: &TableLeafExec,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    if leaf.persons() {
        return scan_with_persons(node, leaf, state).await;
    }
    let provider = node.table_provider(leaf.table()).await?;
    let projection = leaf.projection().map(<[usize]>::to_vec);
    Ok(provider
        .scan(state, projection.as_ref(), &[], leaf.limit())
        .await?)
}

/// A scan of `leaf` whose columns `written` are not read but written in, each with its
/// one value: `county_code` where the table's statistics prove that every row holds the
/// node's code, and `person_id` where nothing reads it ([`TableLeafExec::ids_unread`]).
async fn scan_writing(
    node: &Node,
    leaf: &TableLeafExec,
    written: Vec<(usize, ScalarValue)>,
    state: &SessionState,
) -> Result<Arc<dyn ExecutionPlan>> {
    if written.is_empty() {
        return scan(node, leaf, state).await;
    }
    let columns = leaf.columns();
    let read = (0..columns.len())
        .filter(|i| !written.iter().any(|(at, _)| at == i))
        .map(|i| columns[i])
        .collect();
    let mut rest =
        TableLeafExec::try_new(leaf.table(), Some(read), leaf.partitions(), leaf.limit())?;
    if leaf.persons() {
        rest = rest.with_persons();
    }
    let input = scan(node, &rest, state).await?;
    let schema = leaf.schema();
    let columns = schema.fields().iter().enumerate().map(|(i, field)| {
        let expr: Arc<dyn PhysicalExpr> = match written.iter().find(|(at, _)| *at == i) {
            Some((_, value)) => Arc::new(Literal::new(value.clone())),
            None => {
                let before = written.iter().filter(|(at, _)| *at < i).count();
                Arc::new(Column::new(field.name(), i - before))
            }
        };
        ProjectionExpr::new(expr, field.name().clone())
    });
    Ok(Arc::new(ProjectionExec::try_new(columns, input)?))
}

fn key(plan: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(plan) as *const () as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of a fragment's work that panicked saying `message`.
    async fn panicked(message: &'static str) -> tonic::Status {
        let failed = guarded(async move {
            if true {
                panic!("{message}");
            }
            Ok(())
        })
        .await
        .unwrap_err();
        tonic::Status::from(failed)
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_that_says_so() {
        let status = panicked("index out of bounds").await;
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status
                .message()
                .contains("the node failed while running the fragment: index out of bounds"),
            "{status}"
        );
        assert!(!status.message().contains("DataFusion"), "{status}");
        assert_eq!(guarded(async { Ok(7) }).await.unwrap(), 7);
        // Arrays past their offsets are the query's doing.
        let status = panicked("offset overflow").await;
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status
                .message()
                .starts_with("the node cannot hold this answer: a column of text or lists"),
            "{status}"
        );
    }
}
