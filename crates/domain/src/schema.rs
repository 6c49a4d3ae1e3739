//! The tables of `DOMAIN.md` as Arrow schemas. Each field carries its column class
//! (D, Q or P) in field metadata under [`CLASS_METADATA_KEY`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::node::known_codes;
use crate::{Error, NodeCode, Result};

/// Field metadata key holding a column's class.
pub const CLASS_METADATA_KEY: &str = "sunlight.class";

/// How far a column's values may travel (see `DOMAIN.md`). Classes order from the most
/// protected: D, then Q, then P.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnClass {
    /// D: a direct identifier; never leaves a node in clear outside an audited case opening.
    Direct,
    /// Q: a quasi-identifier; leaves only inside aggregates that pass disclosure control.
    Quasi,
    /// P: public or operational.
    Public,
}

impl ColumnClass {
    /// The one-letter code used in `DOMAIN.md` and in field metadata.
    pub fn code(&self) -> &'static str {
        match self {
            ColumnClass::Direct => "D",
            ColumnClass::Quasi => "Q",
            ColumnClass::Public => "P",
        }
    }
}

/// The class recorded in a field's metadata; fields without one are public.
pub fn column_class(field: &Field) -> ColumnClass {
    match field.metadata().get(CLASS_METADATA_KEY).map(String::as_str) {
        Some("D") => ColumnClass::Direct,
        Some("Q") => ColumnClass::Quasi,
        _ => ColumnClass::Public,
    }
}

/// A table of the data contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Household registry extract.
    Persons,
    /// "One card" subsidy payments.
    Disbursements,
    /// People paid from public funds.
    Payroll,
    /// Disability certificate registry.
    DisabilityCerts,
    /// Reference policy table, the same on every node.
    SubsidyStandards,
}

impl Table {
    /// Every table of the contract.
    pub const ALL: [Table; 5] = [
        Table::Persons,
        Table::Disbursements,
        Table::Payroll,
        Table::DisabilityCerts,
        Table::SubsidyStandards,
    ];

    /// The table's name, which is also its folder name under a node's data root.
    pub fn name(&self) -> &'static str {
        match self {
            Table::Persons => "persons",
            Table::Disbursements => "disbursements",
            Table::Payroll => "payroll",
            Table::DisabilityCerts => "disability_certs",
            Table::SubsidyStandards => "subsidy_standards",
        }
    }

    /// The columns of the table's declared primary key, in key order: `payment_id`, unique
    /// across the whole city, keys `disbursements`. The contract promises no unique column
    /// in the other tables, so they declare none. Declared, not enforced: the Flight SQL
    /// catalog reports it to clients.
    pub fn primary_key(&self) -> &'static [&'static str] {
        match self {
            Table::Disbursements => &["payment_id"],
            _ => &[],
        }
    }

    /// The table's Arrow schema, with column classes as field metadata; built once.
    pub fn schema(&self) -> SchemaRef {
        static SCHEMAS: LazyLock<[SchemaRef; 5]> = LazyLock::new(|| Table::ALL.map(build_schema));
        SCHEMAS[*self as usize].clone()
    }

    /// `value`, written as text in `column`, in the contract's words where it is written in
    /// others that mean the same: a gender written `男` or `女`, as Chinese registries write
    /// it, is `M` or `F`.
    pub fn canonical<'a>(&self, column: &str, value: &'a str) -> &'a str {
        match (self, column, value) {
            (Table::Persons, "gender", "男") => "M",
            (Table::Persons, "gender", "女") => "F",
            _ => value,
        }
    }

    /// What is wrong with `value`, written as text, in `column`, where the contract names
    /// the column's values: the columns of [`NAMED_VALUES`] and every `county_code`.
    pub fn value_problem(&self, column: &str, value: &str) -> Option<String> {
        let one_of = |allowed: &[&str]| {
            (!allowed.contains(&value)).then(|| format!("is not one of {}", allowed.join(", ")))
        };
        match (self, column) {
            (Table::Persons, "gender") => one_of(&["M", "F"]),
            (Table::Payroll, "employer_type") => one_of(&["GOV", "PUBLIC_INSTITUTION"]),
            (Table::DisabilityCerts, "level") => value
                .parse::<f64>()
                .is_ok_and(|level| !(1.0..=4.0).contains(&level))
                .then(|| "is not a level from 1 (most severe) to 4".to_string()),
            (_, "county_code") => value
                .parse::<NodeCode>()
                .err()
                .map(|_| format!("is not a node code: {}", known_codes("or"))),
            _ => None,
        }
    }
}

/// The columns whose values the contract names, apart from `county_code`: each value
/// is one [`Table::value_problem`] accepts.
pub const NAMED_VALUES: [(Table, &str); 3] = [
    (Table::Persons, "gender"),
    (Table::Payroll, "employer_type"),
    (Table::DisabilityCerts, "level"),
];

/// The Arrow schema of `table`, from the contract's columns.
fn build_schema(table: Table) -> SchemaRef {
    use ColumnClass::{Direct as D, Public as P, Quasi as Q};
    use DataType::{Boolean, Date32, Int32, Utf8};
    let money = DataType::Decimal128(12, 2);
    let columns: Vec<(&str, DataType, bool, ColumnClass)> = match table {
        Table::Persons => vec![
            ("person_id", Utf8, false, D),
            ("name", Utf8, false, D),
            ("gender", Utf8, false, Q),
            ("birth_date", Date32, false, Q),
            ("household_id", Utf8, true, Q),
            ("county_code", Utf8, false, P),
            ("township", Utf8, false, P),
            ("village", Utf8, false, P),
            ("death_date", Date32, true, Q),
        ],
        Table::Disbursements => vec![
            ("payment_id", Utf8, false, P),
            ("person_id", Utf8, false, D),
            ("name", Utf8, false, D),
            ("county_code", Utf8, false, P),
            ("township", Utf8, false, P),
            ("village", Utf8, false, P),
            ("subsidy_type", Utf8, false, P),
            ("period", Date32, false, P),
            ("amount", money, false, Q),
            ("account_no", Utf8, true, D),
            ("paid_on", Date32, false, P),
            ("department", Utf8, false, P),
        ],
        Table::Payroll => vec![
            ("person_id", Utf8, false, D),
            ("name", Utf8, false, D),
            ("employer", Utf8, false, P),
            ("employer_type", Utf8, false, P),
            ("county_code", Utf8, false, P),
            ("start_date", Date32, false, Q),
            ("end_date", Date32, true, Q),
        ],
        Table::DisabilityCerts => vec![
            ("person_id", Utf8, false, D),
            ("cert_no", Utf8, false, D),
            ("category", Utf8, false, Q),
            ("level", Int32, false, Q),
            ("issued_on", Date32, false, Q),
            ("revoked_on", Date32, true, Q),
        ],
        Table::SubsidyStandards => vec![
            ("subsidy_type", Utf8, false, P),
            ("name_zh", Utf8, false, P),
            ("department", Utf8, false, P),
            ("min_age", Int32, true, P),
            ("cap", money, false, P),
            ("requires_cert_level", Int32, true, P),
            ("excludes_payroll", Boolean, false, P),
            ("valid_from", Date32, false, P),
            ("valid_to", Date32, true, P),
        ],
    };
    let fields = columns.into_iter().map(|(name, ty, nullable, class)| {
        Field::new(name, ty, nullable).with_metadata(HashMap::from([(
            CLASS_METADATA_KEY.to_string(),
            class.code().to_string(),
        )]))
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

impl FromStr for Table {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Table::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| Error::UnknownTable(s.to_string()))
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disbursements_contract() {
        let schema = Table::Disbursements.schema();
        let amount = schema.field_with_name("amount").unwrap();
        assert_eq!(amount.data_type(), &DataType::Decimal128(12, 2));
        assert_eq!(column_class(amount), ColumnClass::Quasi);
        let person = schema.field_with_name("person_id").unwrap();
        assert_eq!(column_class(person), ColumnClass::Direct);
        assert_eq!(schema.fields().len(), 12);
    }

    #[test]
    fn names_round_trip() {
        for table in Table::ALL {
            assert_eq!(table.name().parse::<Table>().unwrap(), table);
        }
        assert!("people".parse::<Table>().is_err());
    }
}
