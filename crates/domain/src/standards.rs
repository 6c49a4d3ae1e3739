//! The default `subsidy_standards` shipped with the platform.

use std::sync::Arc;

use arrow::array::{
    BooleanArray, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray,
};
use chrono::NaiveDate;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_the_contract_schema() {
        let batch = standards_batch(&default_standards());
        assert_eq!(batch.num_rows(), 7);
        assert_eq!(batch.schema(), Table::SubsidyStandards.schema());
    }
}
