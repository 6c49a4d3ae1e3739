//! Long chains of alternatives, `a = 1 OR a = 2 OR …`, as BI tools write a selection of
//! values, read as lists, `a IN (1, 2, …)`: a chain nests as deep as it is long, which
//! the planner walks by recursion, while a list does not nest.

use std::collections::HashMap;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

use crate::statement::MAX_NESTING;

/// How many alternatives make a chain long enough to be listed: shorter chains are planned
/// as written, and keep their names in an answer's columns and in EXPLAIN.
pub(crate) const LONG_CHAIN: usize = MAX_NESTING / 4;

/// How many alternatives `expr` chains with `OR`: one unless it is such a chain. The
/// parser builds a chain leaning left, `((a OR b) OR c) OR …`, unless parentheses
/// nest it.
pub(crate) fn chain_length(expr: &Expr) -> usize {
    let mut length = 1;
    let mut expr = expr;
    while let Expr::BinaryOp {
        left,
        op: BinaryOperator::Or,
        ..
    } = expr
    {
        length += 1;
        expr = left;
    }
    length
}

/// `chain` with the alternatives that compare one column with values of one kind
/// gathered into one list, `column IN (values)`, in the place of the first of them.
/// Others stay as written, and so does a column compared with one value. `a = 1 OR a = 2`
/// and `a IN (1, 2)` are alike in SQL's three-valued logic, and a list's values of one
/// kind are compared with the column as each one alone.
pub(crate) fn listed(chain: Expr) -> Expr {
    let mut alternatives: Vec<Alternative> = Vec::new();
    let mut lists: HashMap<(String, String), usize> = HashMap::new();
    for alternative in alternatives_of(chain) {
        let Some((column, value, kind)) = compared(&alternative) else {
            alternatives.push(Alternative::Written(alternative));
            continue;
        };
        let key = (column.to_string(), kind);
        match lists.get(&key).map(|&at| &mut alternatives[at]) {
            Some(Alternative::Listed { values, .. }) => values.push(value.clone()),
            _ => {
                lists.insert(key, alternatives.len());
                alternatives.push(Alternative::Listed {
                    column: Box::new(column.clone()),
                    values: vec![value.clone()],
                    first: alternative,
                });
            }
        }
    }
    alternatives
        .into_iter()
        .map(Alternative::into_expr)
        .reduce(|left, right| Expr::BinaryOp {
            left: Box::new(left),
            op: BinaryOperator::Or,
            right: Box::new(right),
        })
        .expect("a chain has an alternative")
}

/// An alternative of a chain as written, or the first that compares its column with a
/// value of its kind, and the values of all those that do.
enum Alternative {
    Written(Expr),
    Listed {
        first: Expr,
        column: Box<Expr>,
        values: Vec<Expr>,
    },
}

impl Alternative {
    /// The alternative as planned: a list where its column was compared with more than
    /// one value.
    fn into_expr(self) -> Expr {
        match self {
            Self::Listed { column, values, .. } if values.len() > 1 => Expr::InList {
                expr: column,
                list: values,
                negated: false,
            },
            Self::Listed { first, .. } | Self::Written(first) => first,
        }
    }
}

/// The alternatives of `chain`, taken apart along the chain without recursion.
fn alternatives_of(mut chain: Expr) -> Vec<Expr> {
    let mut alternatives = Vec::new();
    while let Expr::BinaryOp {
        left,
        op: BinaryOperator::Or,
        right,
    } = chain
    {
        alternatives.push(*right);
        chain = *left;
    }
    alternatives.push(chain);
    alternatives.reverse();
    alternatives
}

/// The column, the value and the value's kind of `alternative` where it is
/// `column = value` or `value = column`, in parentheses or not: a column named alone,
/// and a literal number, string, boolean or typed string, such as `DATE '2023-01-01'`.
fn compared(alternative: &Expr) -> Option<(&Expr, &Expr, String)> {
    let mut alternative = alternative;
    while let Expr::Nested(inner) = alternative {
        alternative = inner;
    }
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = alternative
    else {
        return None;
    };
    let is_column = |e: &Expr| matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
    match (is_column(left), is_column(right)) {
        (true, false) => Some((left, right, kind(right)?)),
        (false, true) => Some((right, left, kind(left)?)),
        _ => None,
    }
}

/// The kind of `value` where it is a literal: numbers with and without a fraction are
/// two kinds, as SQL reads them as two types.
fn kind(value: &Expr) -> Option<String> {
    match value {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) if n.contains(['.', 'e', 'E']) => Some("fraction".into()),
            Value::Number(..) => Some("integer".into()),
            Value::SingleQuotedString(_) => Some("string".into()),
            Value::Boolean(_) => Some("boolean".into()),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) if matches!(v.value, Value::Number(..)) => kind(expr),
            _ => None,
        },
        Expr::TypedString(typed) => Some(typed.data_type.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::context::{SQLOptions, SessionContext};

    use super::*;
    use crate::statement::Statement;

    /// The rows of `sql` in `context`, sorted, as a table.
    async fn answer(context: &SessionContext, sql: &str) -> String {
        let frame = Statement::new(sql)
            .plan(context, SQLOptions::new())
            .await
            .unwrap();
        let batches = frame.collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn long_chains_of_alternatives_answer_as_written() {
        let context = SessionContext::new();
        context
            .sql(
                "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'v1', DATE '2023-01-01', 1.5), \
                 (2, NULL, DATE '2023-01-02', -2.0), (NULL, 'v3', NULL, 3.25), \
                 (-3, 'v4', DATE '2023-01-04', NULL), (95, 'x', DATE '2024-01-01', 0.5)) \
                 AS v(a, s, d, x)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        // Alternatives of every kind listed, and some that are not: another operator, a
        // NULL, a column against a column, a number's two kinds against one column.
        let alternatives: Vec<String> = (0..200)
            .map(|i| match i % 10 {
                0 => format!("a = {i}"),
                1 => format!("(s = 'v{}')", i % 7),
                2 => format!("d = DATE '2023-01-{:02}'", 1 + i % 28),
                3 => format!("{} = x", f64::from(i) / 4.0),
                4 => format!("x = -{i}"),
                5 => format!("a = -{}", i % 4),
                6 => format!("a > {}", 90 + i),
                7 => "s = NULL".to_string(),
                8 => "a = a + 1".to_string(),
                _ => format!("t.a = +{}", i % 3),
            })
            .collect();
        let long = alternatives.join(" OR ");
        // The same alternatives in parenthesized chains too short to be listed.
        let short = alternatives
            .chunks(LONG_CHAIN)
            .map(|chunk| format!("({})", chunk.join(" OR ")))
            .collect::<Vec<_>>()
            .join(" OR ");
        for query in [
            "SELECT * FROM t WHERE {} ORDER BY a, s",
            "SELECT count(*), CASE WHEN {} THEN 'in' END AS c FROM t GROUP BY c ORDER BY c",
        ] {
            let listed = answer(&context, &query.replace("{}", &long)).await;
            let written = answer(&context, &query.replace("{}", &short)).await;
            assert_eq!(listed, written);
        }
        assert!(
            answer(&context, &format!("SELECT * FROM t WHERE {long}"))
                .await
                .contains("v4")
        );
        let explained = answer(&context, &format!("EXPLAIN SELECT * FROM t WHERE {long}")).await;
        assert!(
            explained.contains("t.a IN ([Int64(0), Int64(-1), Int64(10)"),
            "{explained}"
        );
        // A chain of a short enough length is planned as written.
        let few = answer(&context, "EXPLAIN SELECT * FROM t WHERE a = 1 OR a = 2").await;
        assert!(few.contains("t.a = Int64(1) OR t.a = Int64(2)"), "{few}");
    }

    #[tokio::test]
    async fn a_selection_of_many_values_is_answered_whatever_its_length() {
        let context = SessionContext::new();
        let values = |n: usize| {
            (0..n)
                .map(|i| format!("a = {i}"))
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        for n in [LONG_CHAIN + 1, 100_000] {
            let sql = format!(
                "SELECT count(*) AS n FROM generate_series(1, 10) AS g(a) WHERE {}",
                values(n)
            );
            let counted = answer(&context, &sql).await;
            assert!(counted.contains("| 10 |"), "{counted}");
        }
    }
}
