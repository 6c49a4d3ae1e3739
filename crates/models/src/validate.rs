//! Checking a package before it enters the registry: each query must plan against the
//! contract's tables alone, read-only, and return exactly the columns its kind needs, so
//! that no class-D column is ever an output.

use std::sync::Arc;

use datafusion::catalog::MemTable;
use datafusion::execution::SessionState;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use sunlight_domain::{ColumnClass, Table, column_class};
use sunlight_flightsql::{parse, plan_parsed};

use crate::{Error, Linkage, ModelPackage, Result};

/// The columns each query of a package must return, in order.
fn expected(package: &ModelPackage) -> Vec<(&'static str, &str, Vec<&'static str>)> {
    match &package.linkage {
        None => vec![("rule.sql", package.rule.as_str(), vec!["payment_id"])],
        Some(Linkage::Duplicate) => {
            vec![(
                "rule.sql",
                package.rule.as_str(),
                vec!["payment_id", "link_key"],
            )]
        }
        Some(Linkage::CoveredBy { cover }) => vec![
            (
                "rule.sql",
                package.rule.as_str(),
                vec!["payment_id", "link_person", "period"],
            ),
            (
                "cover query",
                cover.as_str(),
                vec!["link_person", "start_date", "end_date"],
            ),
        ],
    }
}

/// Plans every query of `package` over empty contract tables and checks its output.
pub async fn validate(package: &ModelPackage) -> Result<()> {
    let ctx = SessionContext::new();
    for table in Table::ALL {
        let empty = MemTable::try_new(table.schema(), vec![vec![]]).expect("contract schema");
        ctx.register_table(table.name(), Arc::new(empty))
            .expect("fresh context");
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    for (file, sql, columns) in expected(package) {
        let sql_error = |message: String| Error::Sql {
            model: package.id.clone(),
            file: file.to_string(),
            message,
        };
        let state = ctx.state();
        let statement = parse(&state, sql).map_err(|e| sql_error(e.find_root().to_string()))?;
        if let Some(table) = unknown_table(&state, &statement) {
            let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
            return Err(sql_error(format!(
                "reads {table}, which is not a table of the data contract; rules read {}",
                tables.join(", ")
            )));
        }
        let frame = plan_parsed(&ctx, &state, statement, options)
            .await
            .map_err(|e| sql_error(e.find_root().to_string()))?;
        let found: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let output = |message: String| Error::Output {
            model: package.id.clone(),
            file: file.to_string(),
            message,
        };
        if let Some(direct) = found.iter().find(|name| {
            Table::ALL.iter().any(|t| {
                t.schema()
                    .field_with_name(name)
                    .is_ok_and(|f| column_class(f) == ColumnClass::Direct)
            })
        }) {
            return Err(output(format!(
                "returns class-D column {direct}, which must never leave the node; \
                 return payment_id (and link columns, which nodes tokenize) instead"
            )));
        }
        if found != columns {
            return Err(output(format!(
                "returns columns ({}); a {} query must return ({})",
                found.join(", "),
                match package.linkage {
                    None => "local rule",
                    Some(Linkage::Duplicate) => "duplicate-linkage",
                    Some(Linkage::CoveredBy { .. }) => "covered-by-linkage",
                },
                columns.join(", ")
            )));
        }
    }
    Ok(())
}

/// The first table `statement` reads that the data contract does not have; table
/// functions such as `generate_series` are not tables.
fn unknown_table(state: &SessionState, statement: &DFStatement) -> Option<String> {
    let tables = state.resolve_table_references(statement).ok()?;
    tables
        .into_iter()
        .map(|t| t.table().to_string())
        .find(|t| t.parse::<Table>().is_err() && !state.table_functions().contains_key(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(rule: &str) -> ModelPackage {
        let mut package = ModelPackage::builtins().remove(5);
        package.rule = rule.to_string();
        package
    }

    #[tokio::test]
    async fn builtins_validate() {
        for package in ModelPackage::builtins() {
            validate(&package).await.unwrap();
        }
    }

    #[tokio::test]
    async fn bad_rules_are_refused_with_the_reason() {
        let alternatives = vec!["amount > 1"; 50_000].join(" OR ");
        let deep = format!("SELECT payment_id FROM disbursements WHERE {alternatives}");
        for (rule, expected) in [
            (deep.as_str(), "nests expressions more than 256 levels deep"),
            ("SELEC payment_id FROM disbursements", "SELEC"),
            (
                "SELECT payment_id FROM salaries",
                "reads salaries, which is not a table of the data contract; rules read \
                 persons, disbursements",
            ),
            (
                "WITH h AS (SELECT payment_id FROM model_hits) SELECT payment_id FROM h",
                "reads model_hits, which is not a table",
            ),
            (
                "SELECT payment_id, person_id FROM disbursements",
                "class-D column person_id",
            ),
            (
                "SELECT payment_id, amount FROM disbursements",
                "must return (payment_id)",
            ),
            ("DELETE FROM disbursements", "DML"),
        ] {
            let err = validate(&local(rule)).await.unwrap_err();
            assert!(err.to_string().contains(expected), "{rule}: {err}");
        }
    }
}
