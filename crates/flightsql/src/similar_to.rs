//! [`SimilarToAsRegex`]: `x SIMILAR TO pattern` matched as SQL says.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;

use crate::analyzer::rewrite_exprs;

/// Rewrites `x SIMILAR TO pattern` as the regular expression match SQL defines it to be.
/// DataFusion matches the pattern as a regular expression anywhere in `x`, so `'abc'
/// SIMILAR TO 'b'` holds and `township SIMILAR TO '%乡'` matches nothing. In SQL the
/// pattern matches the whole of `x`, `%` and `_` stand for any text and any character, as
/// in `LIKE`, and `.`, `^` and `$` stand for themselves, while `|`, `*`, `+`, `?`, `{m,n}`,
/// `( )` and `[ ]` work as in a regular expression; the escape character (`\` unless
/// `ESCAPE` names another) makes the next character stand for itself. The pattern must be
/// a constant.
#[derive(Debug, Default)]
pub struct SimilarToAsRegex;

impl AnalyzerRule for SimilarToAsRegex {
    fn name(&self) -> &str {
        "similar_to_as_regex"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_exprs(plan, |e| match e {
            Expr::SimilarTo(like) => as_regex(like).map(Transformed::yes),
            other => Ok(Transformed::no(other)),
        })
    }
}

/// `like`, a `SIMILAR TO`, as a regular expression match.
fn as_regex(like: Like) -> Result<Expr> {
    let op = match (like.negated, like.case_insensitive) {
        (false, false) => Operator::RegexMatch,
        (false, true) => Operator::RegexIMatch,
        (true, false) => Operator::RegexNotMatch,
        (true, true) => Operator::RegexNotIMatch,
    };
    let escape = like.escape_char.unwrap_or('\\');
    let pattern = like.pattern.transform_up(|e| match e {
        Expr::Literal(value, metadata) => {
            let Some(Some(pattern)) = value.try_as_str() else {
                return Ok(Transformed::no(Expr::Literal(value, metadata)));
            };
            let regex = ScalarValue::from(regex_of(pattern, escape)?);
            let regex = regex.cast_to(&value.data_type())?;
            Ok(Transformed::yes(Expr::Literal(regex, metadata)))
        }
        Expr::Cast(_) | Expr::TryCast(_) => Ok(Transformed::no(e)),
        other => plan_err!(
            "SIMILAR TO takes a constant pattern, not {other}; match a computed pattern with \
             ~ and a regular expression instead"
        ),
    })?;
    Ok(Expr::BinaryExpr(BinaryExpr::new(
        like.expr,
        op,
        Box::new(pattern.data),
    )))
}

/// The regular expression that matches what `pattern` does under `SIMILAR TO`, with
/// `escape` as its escape character.
fn regex_of(pattern: &str, escape: char) -> Result<String> {
    let mut regex = String::from("^(?:");
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        if c == escape {
            let Some(literal) = chars.next() else {
                return plan_err!(
                    "the SIMILAR TO pattern '{pattern}' ends with its escape character \
                     '{escape}', which must come before a character"
                );
            };
            if literal.is_ascii_punctuation() {
                regex.push('\\');
            }
            regex.push(literal);
            continue;
        }
        match c {
            ']' if in_class => {
                in_class = false;
                regex.push(c);
            }
            _ if in_class => regex.push(c),
            '[' => {
                in_class = true;
                regex.push(c);
            }
            '%' => regex.push_str(".*"),
            '_' => regex.push('.'),
            '(' => regex.push_str("(?:"),
            '.' | '^' | '$' | '\\' => {
                regex.push('\\');
                regex.push(c);
            }
            _ => regex.push(c),
        }
    }
    regex.push_str(")$");
    Ok(regex)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, BooleanArray};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// What `sql`, one boolean, answers with the rule.
    async fn holds(context: &SessionContext, sql: &str) -> Option<bool> {
        let batches = context.sql(sql).await.unwrap().collect().await.unwrap();
        let column = batches[0].column(0);
        let values = column.as_any().downcast_ref::<BooleanArray>().unwrap();
        values.is_valid(0).then(|| values.value(0))
    }

    #[tokio::test]
    async fn similar_to_matches_the_whole_text_with_sql_wildcards() {
        let context = SessionContext::new();
        context.add_analyzer_rule(Arc::new(SimilarToAsRegex));
        for (sql, expected) in [
            ("SELECT 'abc' SIMILAR TO 'b'", Some(false)),
            ("SELECT 'abc' SIMILAR TO '%b%'", Some(true)),
            ("SELECT 'abc' SIMILAR TO 'a_c'", Some(true)),
            ("SELECT 'abc' SIMILAR TO 'a.c'", Some(false)),
            ("SELECT 'a.c' SIMILAR TO 'a.c'", Some(true)),
            ("SELECT 'abc' SIMILAR TO '(abc|x)'", Some(true)),
            ("SELECT 'abcabc' SIMILAR TO '(abc)+'", Some(true)),
            ("SELECT 'abd' SIMILAR TO '[a-c]+'", Some(false)),
            ("SELECT 'a%c' SIMILAR TO '[%]+' ", Some(false)),
            ("SELECT '%%' SIMILAR TO '[%]+'", Some(true)),
            ("SELECT 'a$^' SIMILAR TO 'a$^'", Some(true)),
            ("SELECT 'abc' NOT SIMILAR TO 'b'", Some(true)),
            ("SELECT '50%' SIMILAR TO '50\\%'", Some(true)),
            ("SELECT '500' SIMILAR TO '50\\%'", Some(false)),
            ("SELECT '50%' SIMILAR TO '50#%' ESCAPE '#'", Some(true)),
            ("SELECT 'a_b' SIMILAR TO 'a#_b' ESCAPE '#'", Some(true)),
            ("SELECT 'axb' SIMILAR TO 'a#_b' ESCAPE '#'", Some(false)),
            ("SELECT '聚乐乡' SIMILAR TO '%乡'", Some(true)),
            ("SELECT '聚乐镇' SIMILAR TO '%乡'", Some(false)),
            ("SELECT 'abc' SIMILAR TO NULL", None),
            ("SELECT NULL SIMILAR TO 'abc'", None),
        ] {
            assert_eq!(holds(&context, sql).await, expected, "{sql}");
        }
        for (sql, told) in [
            (
                "SELECT 'abc' SIMILAR TO 'ab\\'",
                "the SIMILAR TO pattern 'ab\\' ends with its escape character '\\'",
            ),
            (
                "SELECT a SIMILAR TO a FROM (VALUES ('x')) t(a)",
                "SIMILAR TO takes a constant pattern, not t.a",
            ),
        ] {
            let frame = context.sql(sql).await.unwrap();
            let e = frame.collect().await.unwrap_err().to_string();
            assert!(e.contains(told), "{sql}: {e}");
        }
    }
}
