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
