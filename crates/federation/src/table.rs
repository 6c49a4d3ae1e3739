//! Global tables at the city: each contract table is the union of that table on every
//! node, scanned by a [`NodeFragmentExec`]. Predicates on `county_code` pick the nodes.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, lit};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use sunlight_domain::Table;
use sunlight_fragment::TableLeafExec;

use crate::fragment_exec::{Channels, NodeFragmentExec};
use crate::registry::NodeRegistry;

const COUNTY: &str = "county_code";

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
        let on_code: Vec<Expr> = filters
            .iter()
            .filter(|f| f.column_refs().iter().any(|c| c.name == COUNTY))
            .map(|f| unnormalize_col(f.clone()))
            .collect();
        let schema = Arc::new(DFSchema::try_from(self.schema())?);
        let simplifier =
            ExprSimplifier::new(SimplifyContext::builder().with_schema(schema).build());
        let nodes: Vec<_> = self
            .registry
            .nodes()
            .into_iter()
            .filter(|n| admits(&on_code, n.code.as_str(), &simplifier))
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

/// Whether a row of the node with `code` may meet every one of `filters`, unqualified, as
/// far as `county_code`, its node's code in every row, decides: each filter with the code
/// in place of the column, simplified as DataFusion simplifies, that comes out false or NULL
/// rules the node out. Any deterministic test of the code decides (`=`, ranges, `IN`,
/// `LIKE`, functions of it), alone or combined with `AND`, `OR` and `NOT`; a filter that
/// still depends on other columns does not.
fn admits(filters: &[Expr], code: &str, simplifier: &ExprSimplifier) -> bool {
    filters.iter().all(|filter| {
        let with_code = filter.clone().transform(|e| {
            Ok(match e {
                Expr::Column(c) if c.name == COUNTY => Transformed::yes(lit(code)),
                e => Transformed::no(e),
            })
        });
        let simplified = with_code.and_then(|e| simplifier.simplify(e.data));
        !matches!(
            simplified,
            Ok(Expr::Literal(
                ScalarValue::Boolean(Some(false) | None) | ScalarValue::Null,
                _
            ))
        )
    })
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The nodes among `codes` whose rows may meet `predicate` over `disbursements`.
    async fn admitted(predicate: &str, codes: &[&'static str]) -> Vec<&'static str> {
        let table = Table::Disbursements;
        let schema = Arc::new(DFSchema::try_from(table.schema()).unwrap());
        let filter = SessionContext::new()
            .parse_sql_expr(predicate, &schema)
            .unwrap();
        let simplifier =
            ExprSimplifier::new(SimplifyContext::builder().with_schema(schema).build());
        codes
            .iter()
            .copied()
            .filter(|code| admits(std::slice::from_ref(&filter), code, &simplifier))
            .collect()
    }

    #[tokio::test]
    async fn any_deterministic_test_of_the_county_code_picks_the_nodes() {
        let codes = ["140212", "140213", "140214", "140221", "140222"];
        for (predicate, expected) in [
            ("county_code = '140213'", &["140213"][..]),
            // As DataFusion's analyzer writes `county_code = 140213`.
            ("CAST(county_code AS BIGINT) = 140213", &["140213"]),
            ("county_code IN ('140212', '140222')", &["140212", "140222"]),
            (
                "county_code BETWEEN '140213' AND '140221'",
                &["140213", "140214", "140221"],
            ),
            ("county_code > '140214'", &["140221", "140222"]),
            ("county_code LIKE '14022%'", &["140221", "140222"]),
            (
                "starts_with(county_code, '14021')",
                &["140212", "140213", "140214"],
            ),
            (
                "county_code NOT IN ('140212', '140213')",
                &["140214", "140221", "140222"],
            ),
            (
                "county_code <> '140214'",
                &["140212", "140213", "140221", "140222"],
            ),
            ("substr(county_code, 5, 1) = '2'", &["140221", "140222"]),
            (
                "(county_code = '140212' AND amount > 1) OR (county_code = '140222' AND amount < 5)",
                &["140212", "140222"],
            ),
            ("county_code IS NULL", &[]),
            (
                "NOT (county_code = '140212' OR county_code = '140213')",
                &["140214", "140221", "140222"],
            ),
        ] {
            assert_eq!(admitted(predicate, &codes).await, expected, "{predicate}");
        }
    }

    #[tokio::test]
    async fn a_filter_that_other_columns_decide_keeps_every_node() {
        let codes = ["140212", "140213"];
        for predicate in [
            "county_code = '140212' OR amount > 5000",
            "county_code = township",
            "amount > 100",
            "county_code = CAST(random() AS VARCHAR)",
        ] {
            assert_eq!(admitted(predicate, &codes).await, codes, "{predicate}");
        }
    }
}
