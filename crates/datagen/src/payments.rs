//! Building `disbursements` rows for a person.

use std::sync::LazyLock;

use chrono::{Days, NaiveDate};
use rand::Rng;
use sunlight_domain::{SubsidyStandard, default_standards};

use crate::rows::{PaymentRow, PersonRow};

static STANDARDS: LazyLock<Vec<SubsidyStandard>> = LazyLock::new(default_standards);

/// The default standard of `subsidy_type`.
pub fn standard(subsidy_type: &str) -> &'static SubsidyStandard {
    STANDARDS
        .iter()
        .find(|s| s.subsidy_type == subsidy_type)
        .unwrap_or_else(|| panic!("{subsidy_type} is not a default standard"))
}

/// Whole yuan as fen.
pub const fn yuan(y: i128) -> i128 {
    y * 100
}

/// Where a payment is booked: the payee's village unless a plant says otherwise.
pub struct Payee<'a> {
    pub person: &'a PersonRow,
    pub township: &'a str,
    pub village: &'a str,
    pub account_no: Option<&'a str>,
}

impl<'a> Payee<'a> {
    /// Paid in the person's own village, to `account_no`.
    pub fn at_home(person: &'a PersonRow, account_no: Option<&'a str>) -> Self {
        Self {
            person,
            township: &person.township,
            village: &person.village,
            account_no,
        }
    }

    /// One payment row; the payment id is given when the row is written.
    pub fn pay(
        &self,
        rng: &mut impl Rng,
        subsidy_type: &str,
        period: NaiveDate,
        amount_fen: i128,
    ) -> PaymentRow {
        let standard = standard(subsidy_type);
        PaymentRow {
            payment_id: String::new(),
            person_id: self.person.person_id.clone(),
            name: self.person.name.clone(),
            township: self.township.to_string(),
            village: self.village.to_string(),
            subsidy_type: standard.subsidy_type,
            period,
            amount_fen,
            account_no: self.account_no.map(str::to_string),
            paid_on: period + Days::new(rng.random_range(4..=20)),
            department: standard.department,
        }
    }
}
