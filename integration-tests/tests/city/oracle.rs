//! Centralized DataFusion over a generated city's files: the oracle the tests compare to.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use datafusion::catalog::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use sunlight_datagen::node_root;
use sunlight_domain::{NodeCode, Table};

/// A context holding each table as the union of the given nodes' files.
pub fn context(city: &Path, nodes: &[NodeCode]) -> SessionContext {
    let ctx = SessionContext::new();
    for udf in sunlight_fragment::masking_udfs() {
        ctx.register_udf(udf);
    }
    for table in Table::ALL {
        let urls: Vec<ListingTableUrl> = nodes
            .iter()
            .map(|n| node_root(city, *n).join(table.name()))
            .filter(|p| p.is_dir())
            .map(|p| ListingTableUrl::parse(format!("{}/", p.display())).expect("path URL"))
            .collect();
        let provider: Arc<dyn datafusion::catalog::TableProvider> = if urls.is_empty() {
            Arc::new(MemTable::try_new(table.schema(), vec![vec![]]).expect("empty table"))
        } else {
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(table.schema());
            Arc::new(ListingTable::try_new(config).expect("listing table"))
        };
        ctx.register_table(table.name(), provider)
            .expect("register");
    }
    ctx
}

/// A context over all nodes, with `subsidy_standards` from one node only (it is a
/// reference table, the same everywhere).
pub async fn city_context(city: &Path) -> SessionContext {
    let nodes: Vec<NodeCode> = NodeCode::all().collect();
    let ctx = context(city, &nodes);
    let standards = context(city, &[NodeCode::CITY])
        .table_provider(Table::SubsidyStandards.name())
        .await
        .expect("standards");
    ctx.deregister_table(Table::SubsidyStandards.name())
        .expect("deregister");
    ctx.register_table(Table::SubsidyStandards.name(), standards)
        .expect("register");
    ctx
}

/// Runs `sql` and returns its first column as strings.
pub async fn strings(ctx: &SessionContext, sql: &str) -> BTreeSet<String> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{sql}"))
        .collect()
        .await
        .expect(sql);
    let mut out = BTreeSet::new();
    for batch in batches {
        let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
            .expect("castable");
        let column = column.as_string::<i32>();
        for i in 0..column.len() {
            if column.is_valid(i) {
                out.insert(column.value(i).to_string());
            }
        }
    }
    out
}

/// Runs `sql` and returns its single count.
pub async fn count(ctx: &SessionContext, sql: &str) -> i64 {
    let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
    batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0)
}
