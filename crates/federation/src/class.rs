//! The class (D, Q or P) of a column the city plans with, which its field's metadata
//! carries from the contract's tables.

use datafusion::common::{DFSchema, ExprSchema};
use datafusion::logical_expr::Expr;
use sunlight_domain::{ColumnClass, column_class};

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
