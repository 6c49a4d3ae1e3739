//! The default `subsidy_standards` shipped with the platform, and the digest by which
//! the city and the nodes tell whether their copies are the same.

use std::sync::Arc;

use arrow::array::{
    BooleanArray, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray,
};
use arrow::compute::cast;
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::{Table, date32};

/// One row of `subsidy_standards`. Money is in fen (hundredths of a yuan), as in
/// `Decimal128(12, 2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsidyStandard {
    /// Code used in `disbursements.subsidy_type`.
    pub subsidy_type: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// Issuing department.
    pub department: &'static str,
    /// Minimum age of a recipient at the period, if any.
    pub min_age: Option<i32>,
    /// Largest allowed single payment, in fen.
    pub cap_fen: i128,
    /// Certificate level needed (this level or more severe), if any.
    pub requires_cert_level: Option<i32>,
    /// Payroll people may not receive it.
    pub excludes_payroll: bool,
    /// First day the standard applies.
    pub valid_from: NaiveDate,
    /// Last day the standard applies, if it ended.
    pub valid_to: Option<NaiveDate>,
}

/// The seven default standards of `DOMAIN.md`.
pub fn default_standards() -> Vec<SubsidyStandard> {
    let from = NaiveDate::from_ymd_opt(2018, 1, 1).expect("valid date");
    let row = |subsidy_type, name_zh, department, min_age, cap_yuan: i128, cert, excludes| {
        SubsidyStandard {
            subsidy_type,
            name_zh,
            department,
            min_age,
            cap_fen: cap_yuan * 100,
            requires_cert_level: cert,
            excludes_payroll: excludes,
            valid_from: from,
            valid_to: None,
        }
    };
    vec![
        row("DIBAO", "最低生活保障", "民政", None, 600, None, true),
        row("TEKUN", "特困人员救助供养", "民政", None, 900, None, true),
        row("GAOLING", "高龄补贴", "民政", Some(80), 200, None, false),
        row(
            "CANJI_SHENGHUO",
            "困难残疾人生活补贴",
            "残联",
            None,
            100,
            Some(4),
            false,
        ),
        row(
            "CANJI_HULI",
            "重度残疾人护理补贴",
            "残联",
            None,
            150,
            Some(2),
            false,
        ),
        row("YULU", "雨露计划", "教育", None, 3000, None, false),
        row(
            "GENGDI",
            "耕地地力保护补贴",
            "农业农村",
            None,
            2000,
            None,
            false,
        ),
    ]
}

/// Standards as a record batch in the contract's `subsidy_standards` schema.
pub fn standards_batch(standards: &[SubsidyStandard]) -> RecordBatch {
    let caps = Decimal128Array::from_iter_values(standards.iter().map(|s| s.cap_fen))
        .with_precision_and_scale(12, 2)
        .expect("12,2 is a valid decimal type");
    RecordBatch::try_new(
        Table::SubsidyStandards.schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                standards.iter().map(|s| s.subsidy_type),
            )),
            Arc::new(StringArray::from_iter_values(
                standards.iter().map(|s| s.name_zh),
            )),
            Arc::new(StringArray::from_iter_values(
                standards.iter().map(|s| s.department),
            )),
            Arc::new(Int32Array::from_iter(standards.iter().map(|s| s.min_age))),
            Arc::new(caps),
            Arc::new(Int32Array::from_iter(
                standards.iter().map(|s| s.requires_cert_level),
            )),
            Arc::new(BooleanArray::from_iter(
                standards.iter().map(|s| Some(s.excludes_payroll)),
            )),
            Arc::new(Date32Array::from_iter_values(
                standards.iter().map(|s| date32(s.valid_from)),
            )),
            Arc::new(Date32Array::from_iter(
                standards.iter().map(|s| s.valid_to.map(date32)),
            )),
        ],
    )
    .expect("standards match the contract schema")
}

/// The SHA-256, in hex, of a copy of `subsidy_standards`: of its rows in the contract's
/// types, in sorted order, so that two copies with the same rows have the same digest
/// however they are stored, ordered or batched.
pub fn standards_sha256(batches: &[RecordBatch]) -> Result<String, ArrowError> {
    let schema = Table::SubsidyStandards.schema();
    let fields = schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let mut rows = Vec::new();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| cast(column, field.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let converted = converter.convert_columns(&columns)?;
        rows.extend(converted.iter().map(|row| row.as_ref().to_vec()));
    }
    rows.sort();
    let mut digest = Sha256::new();
    for row in rows {
        digest.update((row.len() as u64).to_le_bytes());
        digest.update(row);
    }
    Ok(hex::encode(digest.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_with_the_same_rows_have_one_digest() {
        let standards = default_standards();
        let whole = standards_sha256(&[standards_batch(&standards)]).unwrap();
        let mut reversed = standards.clone();
        reversed.reverse();
        let split = [
            standards_batch(&reversed[..3]),
            standards_batch(&reversed[3..]),
        ];
        assert_eq!(standards_sha256(&split).unwrap(), whole);
        let mut raised = standards;
        raised[0].cap_fen += 1;
        assert_ne!(
            standards_sha256(&[standards_batch(&raised)]).unwrap(),
            whole
        );
        assert_ne!(standards_sha256(&[]).unwrap(), whole);
    }

    #[test]
    fn defaults_fill_the_contract_schema() {
        let batch = standards_batch(&default_standards());
        assert_eq!(batch.num_rows(), 7);
        assert_eq!(batch.schema(), Table::SubsidyStandards.schema());
    }
}
