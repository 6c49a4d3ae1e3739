//! The problem models of `DOMAIN.md`, by id.

use std::fmt;
use std::str::FromStr;

/// One of the seven problem models whose rules `DOMAIN.md` pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemModel {
    /// 财政供养人员领取低保.
    PayrollOnDibao,
    /// 低龄人员领取高龄补贴.
    UnderageElderlyAllowance,
    /// 重复领取补贴.
    DuplicatePayment,
    /// 死亡人员领取补贴.
    DeceasedRecipient,
    /// 一卡多人.
    SharedAccount,
    /// 超标准发放.
    OverStandard,
    /// 无证领取残疾人补贴.
    DisabilityWithoutCert,
}

impl ProblemModel {
    /// All models in the order of `DOMAIN.md`.
    pub const ALL: [ProblemModel; 7] = [
        ProblemModel::PayrollOnDibao,
        ProblemModel::UnderageElderlyAllowance,
        ProblemModel::DuplicatePayment,
        ProblemModel::DeceasedRecipient,
        ProblemModel::SharedAccount,
        ProblemModel::OverStandard,
        ProblemModel::DisabilityWithoutCert,
    ];

    /// The model id used in packages, hits and reports.
    pub fn id(&self) -> &'static str {
        match self {
            ProblemModel::PayrollOnDibao => "payroll_on_dibao",
            ProblemModel::UnderageElderlyAllowance => "underage_elderly_allowance",
            ProblemModel::DuplicatePayment => "duplicate_payment",
            ProblemModel::DeceasedRecipient => "deceased_recipient",
            ProblemModel::SharedAccount => "shared_account",
            ProblemModel::OverStandard => "over_standard",
            ProblemModel::DisabilityWithoutCert => "disability_without_cert",
        }
    }

    /// The Chinese title (问题模型).
    pub fn title_zh(&self) -> &'static str {
        match self {
            ProblemModel::PayrollOnDibao => "财政供养人员领取低保",
            ProblemModel::UnderageElderlyAllowance => "低龄人员领取高龄补贴",
            ProblemModel::DuplicatePayment => "重复领取补贴",
            ProblemModel::DeceasedRecipient => "死亡人员领取补贴",
            ProblemModel::SharedAccount => "一卡多人",
            ProblemModel::OverStandard => "超标准发放",
            ProblemModel::DisabilityWithoutCert => "无证领取残疾人补贴",
        }
    }
}

impl FromStr for ProblemModel {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.id() == s)
            .ok_or_else(|| crate::Error::UnknownModel(s.to_string()))
    }
}

impl fmt::Display for ProblemModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}
