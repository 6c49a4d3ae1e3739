//! The payment calendar: the months the synthetic city pays for.

use chrono::{Datelike, Months, NaiveDate};

/// First year with payments.
pub const FIRST_YEAR: i32 = 2021;
/// Last year with payments.
pub const LAST_YEAR: i32 = 2024;

/// A calendar date; panics on an impossible one, which is a bug in the generator.
pub fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_else(|| panic!("invalid date {y}-{m}-{d}"))
}

/// `count` monthly periods starting at the first of `year`-`month`.
pub fn months(year: i32, month: u32, count: u32) -> Vec<NaiveDate> {
    (0..count)
        .map(|i| ymd(year, month, 1) + Months::new(i))
        .collect()
}

/// Every monthly period of the payment window.
pub fn window() -> Vec<NaiveDate> {
    months(FIRST_YEAR, 1, ((LAST_YEAR - FIRST_YEAR + 1) * 12) as u32)
}

/// The date `years` years after `date`; 29 February becomes 1 March in common years.
pub fn add_years(date: NaiveDate, years: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(date.year() + years, date.month(), date.day())
        .unwrap_or_else(|| ymd(date.year() + years, 3, 1))
}
