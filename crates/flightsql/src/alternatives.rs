//! Long chains of alternatives, `a = 1 OR a = 2 OR …`, as BI tools write a selection of
//! values, read as lists, `a IN (1, 2, …)`, and chains of exclusions, `a <> 1 AND a <> 2
//! AND …`, as `a NOT IN (1, 2, …)`: a chain nests as deep as it is long, which the planner
//! walks by recursion, while a list does not nest.

use std::collections::HashMap;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value};

use crate::statement::MAX_NESTING;

/// How many parts make a chain long enough to be listed: shorter chains are planned as
/// written, and keep their names in an answer's columns and in EXPLAIN.
pub(crate) const LONG_CHAIN: usize = MAX_NESTING / 4;

/// How many parts `expr` chains with `OR`, or with `AND`: one unless it is such a chain.
/// The parser builds a chain leaning left, `((a OR b) OR c) OR …`, unless parentheses nest
/// it.
pub(crate) fn chain_length(expr: &Expr) -> usize {
    let Expr::BinaryOp {
        op: joined @ (BinaryOperator::Or | BinaryOperator::And),
        ..
    } = expr
    else {
        return 1;
    };
    let mut length = 1;
    let mut expr = expr;
    while let Expr::BinaryOp { left, op, .. } = expr
        && op == joined
    {
        length += 1;
        expr = left;
    }
    length
}

/// `chain` with the parts that compare one column with values of one kind gathered into
/// one list in the place of the first of them: equalities joined by `OR` into
/// `column IN (values)`, inequalities joined by `AND` into `column NOT IN (values)`.
/// Others stay as written, and so does a column compared with one value. `a = 1 OR a = 2`
/// and `a IN (1, 2)` are alike in SQL's three-valued logic, as are `a <> 1 AND a <> 2` and
/// `a NOT IN (1, 2)`, and a list's values of one kind are compared with the column as each
/// one alone.
pub(crate) fn listed(chain: Expr) -> Expr {
    let Expr::BinaryOp { op: joined, .. } = &chain else {
        return chain;
    };
    let joined = joined.clone();
    let (comparison, negated) = match joined {
        BinaryOperator::And => (BinaryOperator::NotEq, true),
        _ => (BinaryOperator::Eq, false),
    };
    let mut parts: Vec<Part> = Vec::new();
    let mut lists: HashMap<(String, String), usize> = HashMap::new();
    for part in parts_of(chain, &joined) {
        let Some((column, value, kind)) = compared(&part, &comparison) else {
            parts.push(Part::Written(part));
            continue;
        };
        let key = (column.to_string(), kind);
        match lists.get(&key).map(|&at| &mut parts[at]) {
            Some(Part::Listed { values, .. }) => values.push(value.clone()),
            _ => {
                lists.insert(key, parts.len());
                parts.push(Part::Listed {
                    column: Box::new(column.clone()),
                    values: vec![value.clone()],
                    first: part,
                });
            }
        }
    }
    parts
        .into_iter()
        .map(|part| part.into_expr(negated))
        .reduce(|left, right| Expr::BinaryOp {
            left: Box::new(left),
            op: joined.clone(),
            right: Box::new(right),
        })
        .expect("a chain has a part")
}

/// A part of a chain as written, or the first that compares its column with a value of
/// its kind, and the values of all those that do.
enum Part {
    Written(Expr),
    Listed {
        first: Expr,
        column: Box<Expr>,
        values: Vec<Expr>,
    },
}

impl Part {
    /// The part as planned: a list, `NOT IN` where `negated`, where its column was compared
    /// with more than one value.
    fn into_expr(self, negated: bool) -> Expr {
        match self {
            Self::Listed { column, values, .. } if values.len() > 1 => Expr::InList {
                expr: column,
                list: values,
                negated,
            },
            Self::Listed { first, .. } | Self::Written(first) => first,
        }
    }
}

/// The parts of `chain`, joined by `joined`, taken apart along the chain without recursion.
fn parts_of(mut chain: Expr, joined: &BinaryOperator) -> Vec<Expr> {
    let mut parts = Vec::new();
    while let Expr::BinaryOp { left, op, right } = chain {
        if op != *joined {
            chain = Expr::BinaryOp { left, op, right };
            break;
        }
        parts.push(*right);
        chain = *left;
    }
    parts.push(chain);
    parts.reverse();
    parts
}

/// The column, the value and the value's kind of `part` where it compares them with
/// `comparison`, `column = value` or `value = column` say, in parentheses or not: a column
/// named alone, and a literal number, string, boolean or typed string, such as
/// `DATE '2023-01-01'`.
fn compared<'a>(
    part: &'a Expr,
    comparison: &BinaryOperator,
) -> Option<(&'a Expr, &'a Expr, String)> {
    let mut part = part;
    while let Expr::Nested(inner) = part {
        part = inner;
    }
    let Expr::BinaryOp { left, op, right } = part else {
        return None;
    };
    if op != comparison {
        return None;
    }
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

    /// The answer to `sql` in `context`, as a table.
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
        // Exclusions, joined by AND, and conditions that are not.
        let exclusions: Vec<String> = (0..200)
            .map(|i| match i % 5 {
                0 => format!("a <> {i}"),
                1 => format!("(s <> 'v{}')", i % 7),
                2 => format!("d <> DATE '2023-02-{:02}'", 1 + i % 28),
                3 => format!("-{i} <> a"),
                _ => format!("x > -{i}"),
            })
            .collect();
        for (parts, joined) in [(&alternatives, " OR "), (&exclusions, " AND ")] {
            let long = parts.join(joined);
            // The same parts in parenthesized chains too short to be listed.
            let short = parts
                .chunks(LONG_CHAIN)
                .map(|chunk| format!("({})", chunk.join(joined)))
                .collect::<Vec<_>>()
                .join(joined);
            for query in [
                "SELECT * FROM t WHERE {} ORDER BY a, s",
                "SELECT count(*), CASE WHEN {} THEN 'in' END AS c FROM t GROUP BY c ORDER BY c",
            ] {
                let listed = answer(&context, &query.replace("{}", &long)).await;
                let written = answer(&context, &query.replace("{}", &short)).await;
                assert_eq!(listed, written);
            }
            let explained =
                answer(&context, &format!("EXPLAIN SELECT * FROM t WHERE {long}")).await;
            let list = match joined {
                " OR " => "t.a IN ([Int64(0), Int64(-1), Int64(10)",
                _ => "t.a NOT IN ([Int64(0), Int64(-3), Int64(5)",
            };
            assert!(explained.contains(list), "{explained}");
        }
        let long = alternatives.join(" OR ");
        assert!(
            answer(&context, &format!("SELECT * FROM t WHERE {long}"))
                .await
                .contains("v4")
        );
        // A chain of a short enough length is planned as written.
        let few = answer(&context, "EXPLAIN SELECT * FROM t WHERE a = 1 OR a = 2").await;
        assert!(few.contains("t.a = Int64(1) OR t.a = Int64(2)"), "{few}");
    }

    #[tokio::test]
    async fn a_selection_or_exclusion_of_many_values_is_answered_whatever_its_length() {
        let context = SessionContext::new();
        // `a` compared with the values `from..to` in a chain of `comparison`s `joined`.
        let chain = |from: usize, to: usize, comparison: &str, joined: &str| {
            (from..to)
                .map(|i| format!("a {comparison} {i}"))
                .collect::<Vec<_>>()
                .join(joined)
        };
        for filter in [
            chain(0, LONG_CHAIN + 1, "=", " OR "),
            chain(0, 100_000, "=", " OR "),
            chain(11, LONG_CHAIN + 12, "<>", " AND "),
            chain(11, 100_000, "<>", " AND "),
        ] {
            let sql =
                format!("SELECT count(*) AS n FROM generate_series(1, 10) AS g(a) WHERE {filter}");
            let counted = answer(&context, &sql).await;
            assert!(counted.contains("| 10 |"), "{counted}");
        }
    }
}
