//! The gRPC status of a query that DataFusion failed, the same at a node and at the city.

use std::sync::LazyLock;

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use tonic::Status;

use crate::analyzer::is_analyzer_rule;

/// `InvalidArgument` where the query is at fault: its SQL, its names, arguments a
/// function does not take as it runs (DataFusion's execution errors, such as
/// `date_part('decade', …)`), or values it asks to convert or compute that cannot be (a
/// cast of `'abc'` to a decimal, a division by zero, a date past the last one);
/// `ResourceExhausted` where memory ran out; `Internal` otherwise. An error of one of the
/// analyzer rules the city and the nodes add is told without the rule's name.
pub fn query_status(e: &DataFusionError) -> Status {
    if let DataFusionError::Context(rule, inner) = e
        && is_analyzer_rule(rule)
    {
        return query_status(inner);
    }
    let message = e.to_string();
    match e.find_root() {
        DataFusionError::SQL(parser, _) => {
            Status::invalid_argument(message.replace(&format!("{parser:?}"), as_written(parser)))
        }
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_) => Status::invalid_argument(of_the_caller(&message)),
        DataFusionError::ArrowError(arrow, _) if of_the_query(arrow) => {
            Status::invalid_argument(of_the_caller(&message))
        }
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

/// What DataFusion adds to the text of an internal error: a request to report a bug
/// in DataFusion.
static BUG_REPORT: LazyLock<(String, String)> = LazyLock::new(|| {
    let internal = DataFusionError::Internal(String::new()).to_string();
    let (prefix, request) = internal.split_at(internal.find('.').unwrap_or(internal.len()));
    (prefix.to_owned(), request.to_owned())
});

/// `message` without DataFusion's words of an internal error, which it also wraps in
/// errors of the query, as where a function's arguments fit none of its signatures
/// (`sum(paid_on)`): the fault is the caller's, and the rest of the message says it.
fn of_the_caller(message: &str) -> String {
    let (prefix, request) = &*BUG_REPORT;
    message
        .replace(request.as_str(), "")
        .replace(prefix.as_str(), "")
}

/// What the parser found wrong, in its words alone: DataFusion prints a parser error as
/// Rust code, `ParserError("Expected: …")`.
fn as_written(parser: &ParserError) -> &str {
    match parser {
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => message,
        ParserError::RecursionLimitExceeded => "the statement nests too deeply to parse",
    }
}

/// Whether Arrow failed on what the query asked of the values.
fn of_the_query(e: &ArrowError) -> bool {
    matches!(
        e,
        ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::ComputeError(_)
            | ArrowError::InvalidArgumentError(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_the_query_cannot_convert_is_the_callers_fault() {
        let cast = DataFusionError::Context(
            "Optimizer rule 'simplify_expressions' failed".into(),
            Box::new(ArrowError::CastError("Cannot cast string 'abc'".into()).into()),
        );
        let status = query_status(&cast);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("Cannot cast string 'abc'"));

        let argument = DataFusionError::Execution("Date part 'decade' not supported".into());
        assert_eq!(query_status(&argument).code(), tonic::Code::InvalidArgument);

        let io = ArrowError::IoError("disk".into(), std::io::Error::other("gone"));
        assert_eq!(query_status(&io.into()).code(), tonic::Code::Internal);
    }

    /// The error of running `sql`, which plans.
    async fn run_error(ctx: &datafusion::prelude::SessionContext, sql: &str) -> DataFusionError {
        let planned = ctx.sql(sql).await.expect(sql);
        planned.collect().await.expect_err(sql)
    }

    #[tokio::test]
    async fn a_value_out_of_range_of_its_type_is_the_callers_fault() {
        let ctx = datafusion::prelude::SessionContext::new();
        let e = run_error(
            &ctx,
            "SELECT DATE '2021-01-01' + INTERVAL '100000000 years'",
        )
        .await;
        let status = query_status(&e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("Date arithmetic overflow"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn a_parser_error_is_told_in_the_parsers_words() {
        let ctx = datafusion::prelude::SessionContext::new();
        for (sql, told) in [
            (
                "SELEC 1",
                "SQL error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1",
            ),
            (
                "SELECT 'open",
                "SQL error: Unterminated string literal at Line: 1, Column: 8",
            ),
        ] {
            let e = ctx.sql(sql).await.expect_err(sql);
            let status = query_status(&e);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(status.message(), told, "{sql}");
        }
    }

    #[tokio::test]
    async fn an_added_analyzer_rule_refuses_without_its_name() {
        let ctx = datafusion::prelude::SessionContext::new();
        for rule in crate::analyzer_rules() {
            ctx.add_analyzer_rule(rule);
        }
        let e = run_error(&ctx, "SELECT 1 IN (SELECT 1) AS one").await;
        assert!(
            e.to_string().starts_with("subquery_conditions_in_filters"),
            "{e}"
        );
        let status = query_status(&e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("Error during planning: IN (SELECT …) is answered only"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn arguments_no_signature_takes_are_not_told_as_a_bug() {
        let ctx = datafusion::prelude::SessionContext::new();
        let e = ctx
            .sql("SELECT sum(d) FROM (VALUES (DATE '2021-01-01')) AS t(d)")
            .await
            .expect_err("a sum of dates");
        assert!(e.to_string().contains("likely caused by a bug"), "{e}");

        let status = query_status(&e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let message = status.message();
        assert!(
            message
                .starts_with("Error during planning: Function 'sum' failed to match any signature"),
            "{message}"
        );
        assert!(
            message.contains("No function matches the given name and argument types 'sum(Date32)'"),
            "{message}"
        );
        assert!(
            !message.contains("bug") && !message.contains("Internal"),
            "{message}"
        );

        let bug = DataFusionError::Internal("a plan with no input".into());
        assert!(
            query_status(&bug)
                .message()
                .contains("likely caused by a bug")
        );
    }
}
