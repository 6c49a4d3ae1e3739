//! [`Statement`]: a client's SQL with the values bound to its placeholders, and the
//! handle of a prepared statement that carries both.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::prelude::DataFrame;
use datafusion::sql::parser::{CopyToSource, DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{self, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};
use prost::Message;
use sunlight_proto::v1::PreparedStatementHandle;
use tonic::Status;

use crate::alternatives::{LONG_CHAIN, chain_length, listed};
use crate::service::{CATALOG, SCHEMA};

/// A statement from a client: its SQL and, once bound, one row of values for its
/// placeholders (`$1`, `$2`, … or `?` in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The SQL as the client sent it.
    pub sql: String,
    /// One column per placeholder, in order, and one row.
    pub parameters: Option<RecordBatch>,
}

/// The session settings the city and the nodes plan SQL with: the information schema,
/// the catalog and schema clients name, and no check of the field metadata of an
/// aggregate's input against its logical plan's. The contract's column classes ride in
/// field metadata; a union of columns of two classes keeps one class in DataFusion's
/// physical plan and another in its logical plan (none, or at the city the most protected
/// of its sides'), which the check takes for a planner bug.
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, SCHEMA);
    config
        .options_mut()
        .execution
        .skip_physical_aggregate_schema_check = true;
    config
}

impl Statement {
    /// A statement without bound values.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            parameters: None,
        }
    }

    /// Plans the statement in `context` with `options`, its placeholders bound.
    pub async fn plan(&self, context: &SessionContext, options: SQLOptions) -> Result<DataFrame> {
        let sql = numbered(&self.sql)?;
        let frame = match planned(context, &sql, options).await {
            Ok(frame) => frame,
            Err(e) => return Err(unknown_table(context, &sql).unwrap_or_else(|| explained(e))),
        };
        let Some(parameters) = &self.parameters else {
            return Ok(frame);
        };
        let placeholders = frame.logical_plan().get_parameter_fields()?.len();
        if placeholders != parameters.num_columns() {
            return Err(DataFusionError::Plan(format!(
                "the statement has {placeholders} placeholder(s), and {} value(s) were bound",
                parameters.num_columns()
            )));
        }
        let values = (0..parameters.num_columns())
            .map(|i| ScalarValue::try_from_array(parameters.column(i), 0).map(chosen))
            .collect::<Result<Vec<_>>>()?;
        frame.with_param_values(ParamValues::from(values))
    }
}

/// A bound value without the union some clients wrap every value in, so that one column
/// can take a value of any type (`flightsql-dbapi` binds dense unions): the value chosen.
fn chosen(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Union(Some((_, value)), ..) => chosen(*value),
        ScalarValue::Union(None, ..) => ScalarValue::Null,
        value => value,
    }
}

/// A prepared statement as its handle carries it: the statement, with the values bound to
/// it, and the number that names it as prepared.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The statement and its bound values.
    pub statement: Statement,
    /// Drawn at random as the statement is prepared; 0 in handles made before that.
    pub id: u64,
}

impl Prepared {
    /// `statement`, prepared now.
    pub fn new(statement: Statement) -> Self {
        Self {
            statement,
            id: rand::random::<u64>().max(1),
        }
    }

    /// The statement's number, if its handle has one.
    pub fn named(&self) -> Option<u64> {
        (self.id != 0).then_some(self.id)
    }

    /// Reads a prepared statement's handle.
    pub fn from_handle(handle: &[u8]) -> Result<Self, Status> {
        let handle = PreparedStatementHandle::decode(handle)
            .map_err(|e| Status::invalid_argument(format!("malformed statement handle: {e}")))?;
        let parameters = match handle.parameters.is_empty() {
            true => None,
            false => StreamReader::try_new(handle.parameters.as_slice(), None)
                .and_then(|mut reader| reader.next().transpose())
                .map_err(|e| {
                    Status::invalid_argument(format!("malformed parameters in handle: {e}"))
                })?,
        };
        Ok(Self {
            statement: Statement {
                sql: handle.sql,
                parameters,
            },
            id: handle.id,
        })
    }

    /// The handle of the statement, with its values if bound.
    pub fn handle(&self) -> Result<Vec<u8>, Status> {
        let mut parameters = Vec::new();
        if let Some(batch) = &self.statement.parameters {
            let mut writer = StreamWriter::try_new(&mut parameters, &batch.schema())
                .and_then(|mut w| w.write(batch).map(|()| w))
                .map_err(|e| Status::internal(e.to_string()))?;
            writer
                .finish()
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(PreparedStatementHandle {
            sql: self.statement.sql.clone(),
            parameters,
            id: self.id,
        }
        .encode_to_vec())
    }
}

/// The SQL, followed by the bound values, as the audit records it.
impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.sql)?;
        let Some(parameters) = &self.parameters else {
            return Ok(());
        };
        let values: Vec<String> = (0..parameters.num_columns())
            .map(|i| {
                let value = array_value_to_string(parameters.column(i), 0)
                    .unwrap_or_else(|e| format!("<{e}>"));
                format!("${} = {value}", i + 1)
            })
            .collect();
        write!(f, " -- with {}", values.join(", "))
    }
}

/// Schemas of a planned statement: what it returns, and the values it takes.
#[derive(Debug, Clone)]
pub struct StatementSchemas {
    /// The schema of its answer.
    pub dataset: SchemaRef,
    /// One field per placeholder, `$1`, `$2`, … in order, typed where the query tells.
    pub parameters: SchemaRef,
}

impl StatementSchemas {
    /// The schemas of a planned statement.
    pub fn of(frame: &DataFrame) -> Result<Self> {
        let mut placeholders: Vec<(usize, Field)> = frame
            .logical_plan()
            .get_parameter_fields()?
            .into_iter()
            .map(|(id, field)| {
                let index = id
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "placeholder {id} is not positional: write $1, $2, … or ?"
                        ))
                    })?;
                let data_type = field.map_or(DataType::Null, |f| f.data_type().clone());
                Ok((index, Field::new(id, data_type, true)))
            })
            .collect::<Result<_>>()?;
        placeholders.sort_by_key(|(index, _)| *index);
        Ok(Self {
            dataset: frame.schema().inner().clone(),
            parameters: Arc::new(Schema::new(
                placeholders
                    .into_iter()
                    .map(|(_, field)| field)
                    .collect::<Vec<_>>(),
            )),
        })
    }

    /// Whether the statement takes values.
    pub fn has_parameters(&self) -> bool {
        !self.parameters.fields().is_empty()
    }
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … in order, as DataFusion binds
/// values by position.
fn numbered(sql: &str) -> Result<String> {
    // Most statements have no `?` at all: they need no second tokenizing.
    if !sql.contains('?') {
        return Ok(sql.to_string());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| DataFusionError::Plan(e.to_string()))?;
    let marks: Vec<Location> = tokens
        .iter()
        .filter(|t| matches!(&t.token, Token::Placeholder(p) if p == "?"))
        .map(|t| t.span.start)
        .collect();
    if marks.is_empty() {
        return Ok(sql.to_string());
    }
    let mut out = String::with_capacity(sql.len() + marks.len());
    let mut next = 0;
    for (line, text) in sql.split_inclusive('\n').enumerate() {
        for (column, c) in text.chars().enumerate() {
            let here = Location::new(line as u64 + 1, column as u64 + 1);
            if c == '?' && marks.get(next) == Some(&here) {
                next += 1;
                out.push_str(&format!("${next}"));
            } else {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Fails unless every placeholder of `frame` has its value: a statement runs only once
/// its values are bound.
pub fn require_values(frame: &DataFrame) -> Result<()> {
    let mut unbound: Vec<String> = frame
        .logical_plan()
        .get_parameter_names()?
        .into_iter()
        .collect();
    if unbound.is_empty() {
        return Ok(());
    }
    unbound.sort();
    Err(DataFusionError::Plan(format!(
        "the statement has placeholder(s) {} and no values were bound: prepare it and bind \
         one row of values",
        unbound.join(", ")
    )))
}

/// How deep a statement's expressions may nest. DataFusion plans, copies and drops an
/// expression by recursion on the thread's stack, while the parser reads a chain of
/// operators (`a > 1 OR a > 2 OR …`, `x || y || …`) in a loop, without nesting: a chain
/// some thousands long would overflow the stack and end the server. A query written by
/// hand nests a few levels, and a long chain of alternatives or exclusions that compare a
/// column with values is read as a list, `a IN (1, 2, …)` or `a NOT IN (…)`, which does
/// not nest.
pub const MAX_NESTING: usize = 256;

/// How many relations a statement may combine: tables, derived tables, common table
/// expressions and set operations (`UNION`, `EXCEPT`, `INTERSECT`). The parser reads
/// each list of them in a loop, while each deepens the plan, which DataFusion too walks by
/// recursion. A query written by hand combines a few dozen at the most.
pub const MAX_RELATIONS: usize = 256;

/// The longest SQL whose expressions cannot nest deeper than [`MAX_NESTING`]: a level
/// takes an operator and an operand, two bytes at the least (`1+1+…`).
const SHORT_SQL: usize = 2 * MAX_NESTING;

/// Stack a byte of longer SQL may need while it is parsed and dropped, half a level of
/// nesting at the most: twice what a debug build was measured to need (between 32 and 64
/// bytes), on top of [`PARSER_STACK`].
const STACK_PER_BYTE: usize = 128;

/// Stack the parser needs whatever the length of the SQL.
const PARSER_STACK: usize = 1 << 20;

/// Parses `sql`, one statement, in `state`'s dialect, refusing expressions nested deeper
/// than [`MAX_NESTING`] and more than [`MAX_RELATIONS`] relations, so that planning it
/// cannot overflow the stack. SQL longer than [`SHORT_SQL`] is parsed, checked and, where
/// it fails, dropped on a stack of its own, sized for the deepest expression its length
/// can hold.
pub fn parse(state: &SessionState, sql: &str) -> Result<DFStatement> {
    let parse = || {
        const SEVERAL: &str = "The context currently only supports a single SQL statement";
        let dialect = &state.config().options().sql_parser.dialect;
        let mut statement = state.sql_to_statement(sql, dialect).map_err(|e| match e {
            DataFusionError::NotImplemented(message) if message == SEVERAL => {
                let count = DFParser::parse_sql(sql).map_or(2, |statements| statements.len());
                DataFusionError::Plan(format!(
                    "the request holds {count} SQL statements, and a request runs one: send \
                     them one at a time"
                ))
            }
            DataFusionError::SQL(e, _) if *e == ParserError::RecursionLimitExceeded => {
                let limit = state.config().options().sql_parser.recursion_limit;
                DataFusionError::Plan(format!(
                    "the statement nests parentheses, subqueries or function calls more than \
                     {limit} levels deep"
                ))
            }
            other => other,
        })?;
        bound(&mut statement)?;
        Ok(statement)
    };
    on_stack_for(sql, parse)
}

/// Runs `parse`, which parses `sql` and drops what it parsed but the statement it
/// returns, if any, on a stack deep enough for the deepest expression `sql` can hold: the
/// caller's, for SQL up to [`SHORT_SQL`] long, else one of its own.
pub(crate) fn on_stack_for<T>(sql: &str, parse: impl FnOnce() -> T) -> T {
    match sql.len() <= SHORT_SQL {
        true => parse(),
        false => stacker::grow(PARSER_STACK + sql.len() * STACK_PER_BYTE, parse),
    }
}

/// Reads `statement`'s long chains of alternatives as lists, then refuses it where an
/// expression nests deeper than [`MAX_NESTING`], it combines more than
/// [`MAX_RELATIONS`] relations, or it carries a clause DataFusion parses but would not
/// apply, where that changes the answer ([`unapplied`]).
fn bound(statement: &mut DFStatement) -> Result<()> {
    let size = &mut Size::default();
    let outcome = match statement {
        DFStatement::Statement(statement) => statement.visit(size),
        DFStatement::Explain(explain) => return bound(&mut explain.statement),
        DFStatement::CopyTo(copy) => match &mut copy.source {
            CopyToSource::Query(query) => query.visit(size),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::CreateExternalTable(table) => table.order_exprs.visit(size),
        DFStatement::Reset(_) => ControlFlow::Continue(()),
    };
    match outcome {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// What of a statement deepens its plan, as far as it was visited: the expressions around
/// the one visited, and the relations; and how many `OR`s or `AND`s of the chain being
/// visited the visit reaches next, which were listed with the chain or are too few.
#[derive(Default)]
struct Size {
    nesting: usize,
    relations: usize,
    chained: usize,
}

impl Size {
    /// Counts `more` relations, and stops past the limit.
    fn relations(&mut self, more: usize) -> ControlFlow<DataFusionError> {
        self.relations += more;
        if self.relations <= MAX_RELATIONS {
            return ControlFlow::Continue(());
        }
        ControlFlow::Break(DataFusionError::Plan(format!(
            "the statement combines more than {MAX_RELATIONS} relations (tables, derived \
             tables, common table expressions, UNION, EXCEPT and INTERSECT); split it"
        )))
    }
}

impl VisitorMut for Size {
    type Break = DataFusionError;

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<DataFusionError> {
        if let Some(format) = &query.for_clause {
            return ControlFlow::Break(unapplied(
                format_args!("formats its answer {format}"),
                "in rows of columns",
                "read the answer's columns instead",
            ));
        }
        // Counted, and the selects of the query checked, before the visit descends into
        // a chain of set operations.
        let mut operations = 0;
        let mut sides = vec![query.body.as_ref()];
        while let Some(side) = sides.pop() {
            match side {
                ast::SetExpr::SetOperation { left, right, .. } => {
                    operations += 1;
                    sides.extend([left.as_ref(), right.as_ref()]);
                }
                ast::SetExpr::Select(select) => {
                    if let Some(e) = unapplied_to_select(select) {
                        return ControlFlow::Break(e);
                    }
                }
                _ => {}
            }
        }
        let ctes = query.with.as_ref().map_or(0, |with| with.cte_tables.len());
        self.relations(ctes + operations)
    }

    fn pre_visit_table_factor(
        &mut self,
        table: &mut ast::TableFactor,
    ) -> ControlFlow<DataFusionError> {
        if let Some(e) = unapplied_to_table(table) {
            return ControlFlow::Break(e);
        }
        self.relations(1)
    }

    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<DataFusionError> {
        // The visit reaches a chain's `OR`s or `AND`s one after another, from the last,
        // before anything else of the chain.
        match self.chained {
            0 if chain_length(expr) > LONG_CHAIN => {
                *expr = listed(std::mem::replace(expr, ast::Expr::value(ast::Value::Null)));
                self.chained = chain_length(expr).saturating_sub(2);
            }
            0 => self.chained = chain_length(expr).saturating_sub(2),
            _ => self.chained -= 1,
        }
        self.nesting += 1;
        if self.nesting <= MAX_NESTING {
            return ControlFlow::Continue(());
        }
        ControlFlow::Break(DataFusionError::Plan(format!(
            "the statement nests expressions more than {MAX_NESTING} levels deep, as a chain \
             of that many operators does (`a > 1 OR a > 2 OR …`, `x || y || …`); split the \
             statement"
        )))
    }

    fn post_visit_expr(&mut self, _expr: &mut ast::Expr) -> ControlFlow<DataFusionError> {
        self.nesting -= 1;
        ControlFlow::Continue(())
    }
}

/// A clause that DataFusion parses but does not plan, and that would change the answer:
/// what the statement `asks`, what the answer would be `without` it, and what to write
/// `instead`.
fn unapplied(asks: impl fmt::Display, without: &str, instead: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "the statement {asks}, which this server does not do: it would answer {without}; \
         {instead}"
    ))
}

/// The error of `table` where it is sampled (`TABLESAMPLE`, `SAMPLE`) or its partitions
/// chosen (`PARTITION (p1)`). A hint that changes no answer (`WITH (NOLOCK)`) passes.
fn unapplied_to_table(table: &ast::TableFactor) -> Option<DataFusionError> {
    let asks = match table {
        ast::TableFactor::Table {
            name,
            sample: Some(_),
            ..
        } => format!("samples {name}"),
        ast::TableFactor::Table {
            name, partitions, ..
        } if !partitions.is_empty() => format!("selects partitions of {name}"),
        ast::TableFactor::Derived {
            sample: Some(_), ..
        } => "samples a derived table".to_owned(),
        _ => return None,
    };
    Some(unapplied(
        asks,
        "over every row",
        "choose the rows with WHERE instead",
    ))
}

/// The error of `select` where it filters with `PREWHERE`, walks a hierarchy with
/// `CONNECT BY` or adds totals with `GROUP BY … WITH ROLLUP` (`CUBE`, `TOTALS`, Hive's
/// trailing `GROUPING SETS`).
fn unapplied_to_select(select: &ast::Select) -> Option<DataFusionError> {
    let modifiers = match &select.group_by {
        ast::GroupByExpr::All(modifiers) | ast::GroupByExpr::Expressions(_, modifiers) => modifiers,
    };
    if select.prewhere.is_some() {
        Some(unapplied(
            "filters with PREWHERE",
            "over every row",
            "write the condition in WHERE instead",
        ))
    } else if !select.connect_by.is_empty() {
        Some(unapplied(
            "walks a hierarchy with CONNECT BY",
            "over the rows as they are",
            "write it as WITH RECURSIVE instead",
        ))
    } else {
        modifiers.first().map(|modifier| {
            unapplied(
                format_args!("groups {modifier}"),
                "without its totals",
                "write GROUP BY ROLLUP (…), CUBE (…) or GROUPING SETS (…) instead",
            )
        })
    }
}

/// Plans `sql`, as `SessionContext::sql_with_options` does, having parsed it with [`parse`].
async fn planned(context: &SessionContext, sql: &str, options: SQLOptions) -> Result<DataFrame> {
    let state = context.state();
    let statement = parse(&state, sql)?;
    plan_parsed(context, &state, statement, options).await
}

/// Plans `statement`, which [`parse`] gave from `context`'s `state`, with `options`.
pub async fn plan_parsed(
    context: &SessionContext,
    state: &SessionState,
    statement: DFStatement,
    options: SQLOptions,
) -> Result<DataFrame> {
    let plan = state.statement_to_plan(statement).await?;
    options.verify_plan(&plan)?;
    context.execute_logical_plan(plan).await
}

/// `e`, the error of planning a statement, with what to do instead where the options
/// refused a statement that would write or change the server.
fn explained(e: DataFusionError) -> DataFusionError {
    const REFUSED: [&str; 3] = [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ];
    match e {
        DataFusionError::Plan(message) if REFUSED.iter().any(|r| message.starts_with(r)) => {
            DataFusionError::Plan(format!(
                "{message}: this server answers read-only queries (SELECT, WITH, EXPLAIN, \
                 SHOW, DESCRIBE); a node's tables are loaded with `sunlight import`, and an \
                 answer is saved with `sunlight sql --output FILE`"
            ))
        }
        other => other,
    }
}

/// The error of `sql`, a query, when it reads a table `context` does not have: that
/// table, and the tables there are.
fn unknown_table(context: &SessionContext, sql: &str) -> Option<DataFusionError> {
    let state = context.state();
    let options = state.config().options();
    let statement = parse(&state, sql).ok()?;
    let DFStatement::Statement(query) = &statement else {
        return None;
    };
    if !matches!(**query, ast::Statement::Query(_)) {
        return None;
    }
    let unknown = state
        .resolve_table_references(&statement)
        .ok()?
        .into_iter()
        .find(|t| {
            // A table function, such as generate_series, is read as a table reference.
            !context.table_exist(t.clone()).unwrap_or(false)
                && !state.table_functions().contains_key(t.table())
        })?;
    let (catalog, schema) = (
        &options.catalog.default_catalog,
        &options.catalog.default_schema,
    );
    let mut tables = context.catalog(catalog)?.schema(schema)?.table_names();
    tables.sort();
    Some(DataFusionError::Plan(format!(
        "table '{}' not found; the tables here are {}",
        unknown.resolve(catalog, schema),
        tables.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_are_numbered_outside_strings_and_comments() {
        let sql =
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = ? AND y = 'it''s ?' AND z IN (?, ?)";
        assert_eq!(
            numbered(sql).unwrap(),
            "SELECT '?', \"a?\" FROM t -- why?\nWHERE x = $1 AND y = 'it''s ?' AND z IN ($2, $3)"
        );
        assert_eq!(numbered("SELECT $1").unwrap(), "SELECT $1");
        assert_eq!(
            numbered("SELECT 1 WHERE township = '聚乐乡' AND subsidy_type = ?").unwrap(),
            "SELECT 1 WHERE township = '聚乐乡' AND subsidy_type = $1"
        );
    }

    #[tokio::test]
    async fn an_unknown_table_is_named_with_the_tables_there_are() {
        let context = SessionContext::new();
        for table in ["persons", "payroll"] {
            context
                .sql(&format!("CREATE TABLE {table} (a INT)"))
                .await
                .unwrap();
        }
        let plan = |sql: &str| {
            let context = context.clone();
            let statement = Statement::new(sql);
            async move {
                statement
                    .plan(&context, SQLOptions::new().with_allow_ddl(false))
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        assert_eq!(
            plan("SELECT count(*) FROM persons JOIN persns USING (a)").await,
            "Error during planning: table 'datafusion.public.persns' not found; the tables \
             here are payroll, persons"
        );
        // A query that fails for another reason keeps its own error, CTEs and all, and
        // so does a statement that is not a query.
        let other = plan("WITH t AS (SELECT a FROM persons) SELECT b FROM t").await;
        assert!(other.contains("No field named b"), "{other}");
        let series = plan("SELECT b FROM generate_series(1, 3)").await;
        assert!(series.contains("No field named b"), "{series}");
        // A statement that writes says what to do instead.
        let ddl = plan("CREATE TABLE x (a INT)").await;
        assert!(!ddl.contains("not found"), "{ddl}");
        assert!(
            ddl.starts_with(
                "Error during planning: DDL not supported: CreateMemoryTable: this \
                 server answers read-only queries"
            ),
            "{ddl}"
        );
        // So does a script of several statements, a semicolon in a string not ending one.
        assert_eq!(
            plan("SELECT count(*) FROM persons;\nSELECT ';' FROM payroll; SELECT 1;").await,
            "Error during planning: the request holds 3 SQL statements, and a request runs \
             one: send them one at a time"
        );
    }

    #[tokio::test]
    async fn clauses_datafusion_would_not_apply_are_refused_rather_than_ignored() {
        let context = SessionContext::new();
        context.sql("CREATE TABLE persons (a INT)").await.unwrap();
        let plan = |sql: &'static str| {
            let context = context.clone();
            async move { Statement::new(sql).plan(&context, SQLOptions::new()).await }
        };
        let every_row = "it would answer over every row; choose the rows with WHERE instead";
        for (sql, told) in [
            (
                "SELECT count(*) FROM persons TABLESAMPLE (10 PERCENT)",
                "the statement samples persons, which this server does not do",
            ),
            ("SELECT count(*) FROM persons SAMPLE 0.1", every_row),
            (
                "SELECT count(*) FROM persons p TABLESAMPLE BERNOULLI (5 ROWS)",
                "samples persons",
            ),
            (
                "SELECT count(*) FROM (SELECT a FROM persons) AS t TABLESAMPLE (1 PERCENT)",
                "samples a derived table",
            ),
            (
                "SELECT a FROM persons WHERE a IN (SELECT a FROM persons PARTITION (p1))",
                "selects partitions of persons",
            ),
            (
                "SELECT count(*) FROM persons PREWHERE a > 1",
                "filters with PREWHERE, which this server does not do: it would answer over \
                 every row; write the condition in WHERE instead",
            ),
            (
                "SELECT a FROM persons START WITH a = 1 CONNECT BY PRIOR a = a",
                "walks a hierarchy with CONNECT BY",
            ),
            (
                "SELECT a, count(*) FROM persons GROUP BY a WITH ROLLUP",
                "groups WITH ROLLUP, which this server does not do: it would answer without \
                 its totals; write GROUP BY ROLLUP (…), CUBE (…) or GROUPING SETS (…) instead",
            ),
            (
                "SELECT 1 UNION ALL SELECT a FROM persons GROUP BY a WITH TOTALS",
                "groups WITH TOTALS",
            ),
            (
                "SELECT a FROM persons FOR XML AUTO",
                "formats its answer FOR XML AUTO",
            ),
        ] {
            let e = plan(sql).await.expect_err(sql).to_string();
            assert!(e.contains(told), "{sql}: {e}");
        }
        // Hints that change no answer are planned as DataFusion plans them.
        plan("SELECT count(*) FROM persons WITH (NOLOCK)")
            .await
            .unwrap();
        plan("SELECT a FROM persons FOR UPDATE").await.unwrap();
    }

    #[tokio::test]
    async fn expressions_nest_up_to_the_limit_and_deeper_ones_are_refused_whole() {
        let context = SessionContext::new();
        let plan = |sql: String| {
            let context = context.clone();
            async move { Statement::new(sql).plan(&context, SQLOptions::new()).await }
        };
        // `1+1+…+1` of n ones nests n deep: the sum, its operands' sums, and so on.
        let ones = |n: usize| vec!["1"; n].join("+");
        let deepest = plan(format!("SELECT {}", ones(MAX_NESTING))).await.unwrap();
        let batches = deepest.collect().await.unwrap();
        let sum = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>();
        assert_eq!(sum.unwrap().value(0), MAX_NESTING as i64);
        // Deeper chains are refused, however long; one that would overflow the stack where
        // it is parsed, planned or dropped is refused too, whether it parses, fails to parse
        // after the chain, or is one of several statements.
        let long = ones(200_000);
        for sql in [
            format!("SELECT {}", ones(MAX_NESTING + 1)),
            format!("SELECT {long}"),
            format!("SELECT a FROM (VALUES (1)) t(a) WHERE a = {long} OR a = 2"),
            format!("EXPLAIN SELECT {long}"),
        ] {
            let e = plan(sql).await.unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "nests expressions more than {MAX_NESTING} levels deep"
                )),
                "{e}"
            );
        }
        let parenthesized = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
        let e = plan(parenthesized).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "Error during planning: the statement nests parentheses, subqueries or function \
             calls more than 50 levels deep"
        );
        let broken = plan(format!("SELECT {long}+"))
            .await
            .unwrap_err()
            .to_string();
        assert!(broken.contains("Expected: an expression"), "{broken}");
        let several = plan(format!("SELECT 1; SELECT {long}")).await.unwrap_err();
        assert!(
            several.to_string().contains("holds 2 SQL statements"),
            "{several}"
        );
    }

    #[tokio::test]
    async fn statements_combine_relations_up_to_the_limit_and_more_are_refused_whole() {
        let context = SessionContext::new();
        context.sql("CREATE TABLE t (a INT)").await.unwrap();
        context
            .sql("INSERT INTO t VALUES (1)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let plan = |sql: String| {
            let context = context.clone();
            async move { Statement::new(sql).plan(&context, SQLOptions::new()).await }
        };
        let union = |n: usize| vec!["SELECT 1 AS x"; n].join(" UNION ALL ");
        let joins = |n: usize| {
            (1..n)
                .map(|i| format!("JOIN t t{i} ON t{i}.a = t0.a"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let chain = |n: usize| {
            (1..n)
                .map(|i| format!("c{i} AS (SELECT a FROM c{})", i - 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows = |frame: DataFrame| async move {
            let batches = frame.collect().await.unwrap();
            batches.iter().map(RecordBatch::num_rows).sum::<usize>()
        };
        // A side of a set operation more than its operations, each table a relation, each
        // common table expression two (itself and the table it reads), and the table of the
        // query that reads the last.
        let widest = plan(union(MAX_RELATIONS + 1)).await.unwrap();
        assert_eq!(rows(widest).await, MAX_RELATIONS + 1);
        let joined = plan(format!("SELECT t0.a FROM t t0 {}", joins(MAX_RELATIONS))).await;
        assert_eq!(rows(joined.unwrap()).await, 1);
        let n = (MAX_RELATIONS - 1) / 2;
        let chained = format!(
            "WITH c0 AS (SELECT a FROM t), {} SELECT a FROM c{}",
            chain(n),
            n - 1
        );
        assert_eq!(rows(plan(chained).await.unwrap()).await, 1);
        for sql in [
            union(MAX_RELATIONS + 2),
            union(100_000),
            format!("SELECT t0.a FROM t t0 {}", joins(MAX_RELATIONS + 1)),
            format!(
                "WITH c0 AS (SELECT a FROM t), {} SELECT a FROM c0",
                chain(50_000)
            ),
            format!("SELECT count(*) FROM t WHERE a IN ({})", union(100_000)),
        ] {
            let e = plan(sql).await.unwrap_err().to_string();
            assert!(
                e.contains(&format!("combines more than {MAX_RELATIONS} relations")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_handle_carries_the_bound_values_and_the_audit_shows_them() {
        let values = RecordBatch::try_from_iter([
            (
                "$1",
                Arc::new(arrow::array::StringArray::from(vec!["140215"])) as _,
            ),
            (
                "$2",
                Arc::new(arrow::array::Int64Array::from(vec![100])) as _,
            ),
        ])
        .unwrap();
        let prepared = Prepared::new(Statement {
            sql: "SELECT count(*) FROM disbursements WHERE county_code = ? AND amount > ?".into(),
            parameters: Some(values.clone()),
        });
        let back = Prepared::from_handle(&prepared.handle().unwrap()).unwrap();
        assert_eq!(back, prepared);
        assert_ne!(back.id, 0);
        assert!(
            back.statement
                .to_string()
                .ends_with("-- with $1 = 140215, $2 = 100")
        );
        let bad = Prepared::from_handle(b"\xff\xff").unwrap_err();
        assert!(
            bad.message().contains("malformed statement handle"),
            "{bad}"
        );
    }
}
