//! The answers of the catalog calls that describe keys and types: primary keys as each
//! table declares them, no foreign keys, the SQL types a client meets in the tables and
//! in results, and each table column's description.

use std::sync::{Arc, LazyLock};

use arrow::array::{Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetPrimaryKeys, Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode,
};

use crate::TableInfo;
use crate::service::{CATALOG, SCHEMA};

/// The schema of a `GetPrimaryKeys` answer, as Flight SQL defines it.
pub static PRIMARY_KEYS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
});

/// The schema of a `GetImportedKeys`, `GetExportedKeys` or `GetCrossReference` answer.
pub static FOREIGN_KEYS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8("pk_catalog_name", true),
        utf8("pk_db_schema_name", true),
        utf8("pk_table_name", false),
        utf8("pk_column_name", false),
        utf8("fk_catalog_name", true),
        utf8("fk_db_schema_name", true),
        utf8("fk_table_name", false),
        utf8("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        utf8("fk_key_name", true),
        utf8("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
});

/// The columns of the primary key of the table `query` names, one row each in key
/// order; none when the catalog or schema it names is not ours or the table has no key.
pub fn primary_keys(
    query: &CommandGetPrimaryKeys,
    tables: &[TableInfo],
) -> Result<RecordBatch, ArrowError> {
    let ours = query.catalog.as_deref().is_none_or(|c| c == CATALOG)
        && query.db_schema.as_deref().is_none_or(|s| s == SCHEMA);
    let columns: Vec<&str> = tables
        .iter()
        .filter(|t| ours && t.name == query.table)
        .flat_map(|t| t.primary_key.iter().map(String::as_str))
        .collect();
    let n = columns.len();
    let repeat = |value: &str| Arc::new(StringArray::from(vec![value; n]));
    RecordBatch::try_new(
        PRIMARY_KEYS.clone(),
        vec![
            repeat(CATALOG),
            repeat(SCHEMA),
            repeat(&query.table),
            Arc::new(StringArray::from(columns)),
            Arc::new(StringArray::new_null(n)),
            Arc::new(Int32Array::from_iter_values(1..=n as i32)),
        ],
    )
}

/// The answer to every foreign key call: the tables declare no foreign keys, since no
/// column is sure to match another table's unique column on every node.
pub fn no_foreign_keys() -> RecordBatch {
    RecordBatch::new_empty(FOREIGN_KEYS.clone())
}

/// The SQL types of the tables' columns and of the results a query can give.
pub fn xdbc_types() -> XdbcTypeInfoData {
    let number = |name: &str, data_type, digits| XdbcTypeInfo {
        column_size: Some(digits),
        unsigned_attribute: Some(false),
        num_prec_radix: Some(10),
        ..named(name, data_type, data_type)
    };
    let time = |name: &str, data_type, subcode| XdbcTypeInfo {
        literal_prefix: Some(format!("{name} '")),
        literal_suffix: Some("'".into()),
        datetime_subcode: Some(subcode),
        ..named(name, data_type, XdbcDataType::XdbcDatetime)
    };
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for info in [
        named("BOOLEAN", XdbcDataType::XdbcBit, XdbcDataType::XdbcBit),
        number("INTEGER", XdbcDataType::XdbcInteger, 10),
        number("BIGINT", XdbcDataType::XdbcBigint, 19),
        number("DOUBLE", XdbcDataType::XdbcDouble, 15),
        XdbcTypeInfo {
            create_params: Some(vec!["precision".into(), "scale".into()]),
            minimum_scale: Some(0),
            maximum_scale: Some(38),
            ..number("DECIMAL", XdbcDataType::XdbcDecimal, 38)
        },
        XdbcTypeInfo {
            literal_prefix: Some("'".into()),
            literal_suffix: Some("'".into()),
            case_sensitive: true,
            ..named(
                "VARCHAR",
                XdbcDataType::XdbcVarchar,
                XdbcDataType::XdbcVarchar,
            )
        },
        // Subcode 1 is both YEAR and DATE in Flight SQL; prost keeps the first name.
        time(
            "DATE",
            XdbcDataType::XdbcDate,
            XdbcDatetimeSubcode::XdbcSubcodeYear,
        ),
        time(
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            XdbcDatetimeSubcode::XdbcSubcodeTimestamp,
        ),
    ] {
        builder.append(info);
    }
    builder.build().expect("static type list is valid")
}

/// `table`'s columns `schema` with the description Flight SQL defines for the columns
/// `GetTables` gives: where each column is, its SQL type of [`xdbc_types`] with the
/// precision and scale of a decimal, and that it is searchable and read-only.
pub fn described_columns(table: &str, schema: &Schema) -> Schema {
    let fields = schema.fields().iter().map(|field| {
        let data_type = field.data_type();
        let type_name = sql_type_name(data_type);
        let mut described = field.metadata().clone();
        let mut set = |key: &str, value: &str| {
            described.insert(format!("ARROW:FLIGHT:SQL:{key}"), value.to_string());
        };
        set("CATALOG_NAME", CATALOG);
        set("DB_SCHEMA_NAME", SCHEMA);
        set("TABLE_NAME", table);
        if let Some(name) = type_name {
            set("TYPE_NAME", name);
        }
        if let DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) =
            data_type
        {
            set("PRECISION", &precision.to_string());
            set("SCALE", &scale.to_string());
        }
        let text = type_name == Some("VARCHAR");
        set("IS_CASE_SENSITIVE", if text { "1" } else { "0" });
        set("IS_AUTO_INCREMENT", "0");
        set("IS_READ_ONLY", "1");
        set("IS_SEARCHABLE", "1");
        field.as_ref().clone().with_metadata(described)
    });
    Schema::new_with_metadata(fields.collect::<Vec<_>>(), schema.metadata().clone())
}

/// The name in [`xdbc_types`] of the SQL type that holds Arrow's `data_type`.
fn sql_type_name(data_type: &DataType) -> Option<&'static str> {
    Some(match data_type {
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            "INTEGER"
        }
        DataType::Int64 | DataType::UInt32 => "BIGINT",
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "DOUBLE",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "DECIMAL",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(..) => "TIMESTAMP",
        _ => return None,
    })
}

/// A nullable, searchable type called `name`, with no other attributes.
fn named(name: &str, data_type: XdbcDataType, sql_data_type: XdbcDataType) -> XdbcTypeInfo {
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        nullable: Nullable::NullabilityNullable,
        searchable: Searchable::Full,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        sql_data_type,
        ..XdbcTypeInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_column_is_described_by_place_and_sql_type_and_keeps_its_metadata() {
        let class = HashMap::from([("sunlight.class".to_string(), "Q".to_string())]);
        let schema = Schema::new(vec![
            Field::new("amount", DataType::Decimal128(12, 2), false).with_metadata(class),
            Field::new("name", DataType::Utf8, false),
            Field::new("tags", DataType::new_list(DataType::Utf8, true), true),
        ]);
        let described = described_columns("disbursements", &schema);
        let of = |column: &str, key: &str| {
            let field = described.field_with_name(column).unwrap();
            field
                .metadata()
                .get(&format!("ARROW:FLIGHT:SQL:{key}"))
                .cloned()
        };
        assert_eq!(of("amount", "TABLE_NAME").as_deref(), Some("disbursements"));
        assert_eq!(of("amount", "CATALOG_NAME").as_deref(), Some(CATALOG));
        assert_eq!(of("amount", "TYPE_NAME").as_deref(), Some("DECIMAL"));
        assert_eq!(of("amount", "PRECISION").as_deref(), Some("12"));
        assert_eq!(of("amount", "SCALE").as_deref(), Some("2"));
        assert_eq!(of("amount", "IS_CASE_SENSITIVE").as_deref(), Some("0"));
        assert_eq!(of("name", "TYPE_NAME").as_deref(), Some("VARCHAR"));
        assert_eq!(of("name", "IS_CASE_SENSITIVE").as_deref(), Some("1"));
        assert_eq!(of("name", "IS_READ_ONLY").as_deref(), Some("1"));
        assert_eq!(
            of("tags", "TYPE_NAME"),
            None,
            "no SQL type of the list holds a list"
        );
        let amount = described.field_with_name("amount").unwrap();
        assert_eq!(amount.metadata()["sunlight.class"], "Q");
        // The names are those of the type list.
        let types = xdbc_types().record_batch(None).unwrap();
        let names = types
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for column in ["amount", "name"] {
            let name = of(column, "TYPE_NAME").unwrap();
            assert!(names.iter().any(|n| n == Some(name.as_str())), "{name}");
        }
    }
}
