//! The class (D, Q or P) of a column the city plans with, which its field's metadata
//! carries from the contract's tables, and through unions ([`UnionKeepsClass`]).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ExprSchema};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, Union};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use sunlight_domain::{CLASS_METADATA_KEY, ColumnClass, column_class};

/// The class of `expr` over `schema`, if it is a plain column.
pub(crate) fn class_of(expr: &Expr, schema: &DFSchema) -> Option<ColumnClass> {
    let Expr::Column(column) = expr else {
        return None;
    };
    let field = schema.field_from_column(column).ok()?;
    Some(column_class(field))
}

/// Whether any of `exprs` reads a column of `schema` of one of `classes`.
pub(crate) fn reads(exprs: &[&Expr], schema: &DFSchema, classes: &[ColumnClass]) -> bool {
    exprs.iter().any(|e| {
        e.column_refs().into_iter().any(|c| {
            class_of(&Expr::Column(c.clone()), schema).is_some_and(|class| classes.contains(&class))
        })
    })
}

/// Gives each column of a union the most protected class of its sides. DataFusion keeps
/// only the field metadata the sides agree on, so that `issued_on` (Q) united with
/// `period` (P) would plan as a public column: a distinct count of it would not become
/// one of texts, which nodes send as tokens, and the nodes would refuse it. The plans
/// above a union so changed take their schemas anew.
#[derive(Debug, Default)]
pub struct UnionKeepsClass;

impl OptimizerRule for UnionKeepsClass {
    fn name(&self) -> &str {
        "union_keeps_class"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let mut unites = false;
        plan.apply_with_subqueries(|p| {
            unites = matches!(p, LogicalPlan::Union(_));
            Ok(match unites {
                true => TreeNodeRecursion::Stop,
                false => TreeNodeRecursion::Continue,
            })
        })?;
        match unites {
            true => keep_classes(plan),
            false => Ok(Transformed::no(plan)),
        }
    }
}

/// `plan` with the classes of its unions' sides, its own schema taken anew if what it
/// reads changed.
fn keep_classes(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let below = plan
        .map_subqueries(keep_classes)?
        .transform_data(|p| p.map_children(keep_classes))?;
    let changed = below.transformed;
    let plan = match changed {
        true => below.data.recompute_schema()?,
        false => below.data,
    };
    let own = match plan {
        LogicalPlan::Union(union) => most_protected(union)?.update_data(LogicalPlan::Union),
        plan => Transformed::no(plan),
    };
    Ok(Transformed::new_transformed(
        own.data,
        own.transformed || changed,
    ))
}

/// `union` with each column of the most protected class among its sides'.
fn most_protected(union: Union) -> Result<Transformed<Union>> {
    let mut changed = false;
    let fields = union
        .schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            // DataFusion keeps a union's sides as wide as the union.
            let sides = union.inputs.iter();
            let class = sides.map(|side| column_class(side.schema().field(i))).min();
            let class = class.unwrap_or(ColumnClass::Public);
            if column_class(field) == class {
                return (qualifier.cloned(), field.clone());
            }
            changed = true;
            let mut metadata = field.metadata().clone();
            metadata.insert(CLASS_METADATA_KEY.to_string(), class.code().to_string());
            let field = field.as_ref().clone().with_metadata(metadata);
            (qualifier.cloned(), Arc::new(field))
        });
    let fields = fields.collect();
    if !changed {
        return Ok(Transformed::no(union));
    }
    let schema = DFSchema::new_with_metadata(fields, union.schema.inner().metadata().clone())?;
    Ok(Transformed::yes(Union {
        inputs: union.inputs,
        schema: Arc::new(schema),
    }))
}
