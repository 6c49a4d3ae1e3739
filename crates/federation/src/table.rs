//! Global tables at the city: each contract table is the union of that table on every
//! node, scanned by a [`NodeFragmentExec`]. Predicates on `county_code` pick the nodes.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use sunlight_domain::Table;
use sunlight_fragment::TableLeafExec;

use crate::fragment_exec::{Channels, NodeFragmentExec};
use crate::registry::NodeRegistry;

/// A contract table as the union over the registered nodes.
#[derive(Debug)]
pub struct GlobalTable {
    table: Table,
    registry: Arc<dyn NodeRegistry>,
    channels: Arc<Channels>,
}

impl GlobalTable {
    /// The union of `table` over `registry`'s nodes.
    pub fn new(table: Table, registry: Arc<dyn NodeRegistry>, channels: Arc<Channels>) -> Self {
        Self {
            table,
            registry,
            channels,
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for GlobalTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters prune nodes here and are applied again inside each node's fragment.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let allowed: Option<BTreeSet<String>> = filters
            .iter()
            .filter_map(county_codes)
            .reduce(|a, b| &a & &b);
        let nodes: Vec<_> = self
            .registry
            .nodes()
            .into_iter()
            .filter(|n| {
                allowed
                    .as_ref()
                    .is_none_or(|codes| codes.contains(n.code.as_str()))
            })
            .collect();
        let leaf = TableLeafExec::try_new(self.table, projection.cloned(), nodes.len(), limit)?;
        if nodes.is_empty() {
            return Ok(Arc::new(EmptyExec::new(leaf.schema())));
        }
        Ok(Arc::new(NodeFragmentExec::try_new(
            nodes,
            Arc::new(leaf),
            self.channels.clone(),
        )?))
    }
}

/// The `county_code` values a filter admits, when it says so plainly
/// (`=`, `IN`, `OR` and `AND` of those).
fn county_codes(expr: &Expr) -> Option<BTreeSet<String>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (column, Expr::Literal(value, _)) | (Expr::Literal(value, _), column)
                if is_county_code(column) =>
            {
                text(value).map(|v| BTreeSet::from([v]))
            }
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => Some(&county_codes(left)? | &county_codes(right)?),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => match (county_codes(left), county_codes(right)) {
            (Some(a), Some(b)) => Some(&a & &b),
            (a, b) => a.or(b),
        },
        Expr::InList(list) if !list.negated && is_county_code(&list.expr) => list
            .list
            .iter()
            .map(|e| match e {
                Expr::Literal(value, _) => text(value),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn is_county_code(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(c) if c.name == "county_code")
}

fn text(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        _ => None,
    }
}
