//! The analyzer rules the city and the nodes add to DataFusion's, each of which mends a
//! query that DataFusion alone would answer other than SQL says, or refuses by name one
//! that it would fail to plan.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;

use crate::set_comparison::SetComparisonAliased;
use crate::similar_to::SimilarToAsRegex;
use crate::subquery_conditions::SubqueryConditionsInFilters;

/// The rules, to add to a context's analyzer.
pub fn analyzer_rules() -> [Arc<dyn AnalyzerRule + Send + Sync>; 3] {
    [
        Arc::new(SubqueryConditionsInFilters),
        Arc::new(SetComparisonAliased),
        Arc::new(SimilarToAsRegex),
    ]
}

/// Whether `name` is one of these rules', which DataFusion puts before each error the
/// rule returns.
pub(crate) fn is_analyzer_rule(name: &str) -> bool {
    analyzer_rules().iter().any(|rule| rule.name() == name)
}

/// `plan`, its subqueries' plans too, with `rewrite` applied to every expression, from
/// the leaves up; each expression keeps its name, so that no plan's columns change.
pub(crate) fn rewrite_exprs(
    plan: LogicalPlan,
    mut rewrite: impl FnMut(Expr) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|plan| {
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|e| {
            let name = names.save(&e);
            let rewritten = e.transform_up(&mut rewrite)?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    })
    .map(|t| t.data)
}
