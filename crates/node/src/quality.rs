//! The node's report on the quality of its files: values that fit the contract's types
//! but not what it says of them (an ID whose birth date is not a date or whose check
//! character is wrong, a person on two rows of the registry, a gender it does not name).
//! Their rows are served as they are, and the models read them as the contract says (an
//! ID without a birth date is never an age hit); the node logs each finding once it has
//! loaded its files, and `Describe` answers them.

use std::collections::BTreeSet;

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use sunlight_domain::{NAMED_VALUES, Table};

use crate::Result;
use crate::node::Node;
use crate::persons::person_id_problems;

/// The most values of a column a finding quotes.
const QUOTED: usize = 3;

/// What is wrong with the values of `node`'s served files, a line a finding; worked out
/// once for the files as loaded, whichever of the log and `Describe` asks first.
pub async fn data_quality(node: &Node) -> Result<&[String]> {
    let found = node.quality().get_or_try_init(|| findings(node)).await?;
    Ok(found)
}

/// [`data_quality`], worked out.
async fn findings(node: &Node) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let ids = person_id_problems(node).await?;
    if ids.undated > 0 {
        found.push(format!(
            "{} person(s) have a person_id whose birth date part (characters 7-14) \
             is not a date; underage_elderly_allowance counts none of their payments",
            ids.undated
        ));
    }
    if !ids.forms.is_empty() {
        let parts: Vec<String> = ids
            .forms
            .iter()
            .map(|(problem, persons)| format!("{persons} with {}", problem.what()))
            .collect();
        found.push(format!(
            "{} person(s) have a person_id not in the form GB 11643 gives it: {}",
            ids.forms.values().sum::<usize>(),
            parts.join("; ")
        ));
    }
    found.extend(repeated_persons(node).await?);
    for (table, column) in NAMED_VALUES {
        found.extend(unnamed_values(node, table, column).await?);
    }
    Ok(found)
}

/// The rows of `persons` that repeat the `person_id` of another, where the node serves the
/// table: the registry holds a person once, and the models read every row of one it holds
/// twice.
async fn repeated_persons(node: &Node) -> Result<Option<String>> {
    if !node.served().any(|t| t == Table::Persons) {
        return Ok(None);
    }
    let counted = node.persons_of(Table::Persons).await?;
    let repeated = counted.rows - counted.persons;
    Ok((repeated > 0).then(|| {
        format!(
            "{repeated} row(s) of persons repeat the person_id of another row ({} rows, {} \
             persons); deceased_recipient counts a death on any of a person's rows, and \
             shared_account each of their households",
            counted.rows, counted.persons
        )
    }))
}

/// Logs `node`'s findings as warnings. Where a table cannot be read, its queries say so.
pub async fn log_data_quality(node: &Node) {
    match data_quality(node).await {
        Ok(found) => {
            for finding in found {
                tracing::warn!(node = %node.code(), "data quality: {finding}");
            }
        }
        Err(e) => tracing::debug!(error = %e, "data quality not checked"),
    }
}

/// The rows of `table` whose `column` holds a value the contract does not name, with the
/// first of those values, where the node serves the table.
async fn unnamed_values(node: &Node, table: Table, column: &str) -> Result<Option<String>> {
    if !node.served().any(|t| t == table) {
        return Ok(None);
    }
    let sql = format!(
        "SELECT CAST({column} AS VARCHAR), count(*) FROM {table} \
         WHERE {column} IS NOT NULL GROUP BY 1"
    );
    let mut rows = 0;
    let mut problem = None;
    let mut values = BTreeSet::new();
    for batch in node.context().sql(&sql).await?.collect().await? {
        let value = cast(batch.column(0), &DataType::Utf8)?;
        let value = value.as_string::<i32>();
        let count = batch.column(1).as_primitive::<Int64Type>();
        for (value, count) in value.iter().zip(count.values()) {
            let Some(value) = value else { continue };
            if let Some(why) = table.value_problem(column, value) {
                rows += count;
                problem.get_or_insert(why);
                values.insert(format!("{value:?}"));
            }
        }
    }
    Ok(problem.map(|why| {
        let quoted: Vec<String> = values.into_iter().take(QUOTED).collect();
        format!(
            "{rows} row(s) of {table} hold a {column} that {why} ({})",
            quoted.join(", ")
        )
    }))
}
