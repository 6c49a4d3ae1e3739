//! GB 11643 resident identity numbers: 6 region digits, 8 birth-date digits, 3 sequence
//! digits and a check character per ISO 7064 MOD 11-2 (`X` stands for 10).

use chrono::{Datelike, NaiveDate};

use crate::{Error, Result};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// A resident ID whose shape, check character and birth date are valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResidentId(String);

impl ResidentId {
    /// Validates `id`. A lower-case `x` is accepted and normalized to `X`.
    pub fn parse(id: &str) -> Result<Self> {
        let id = id.trim().to_ascii_uppercase();
        match form_problem(&id) {
            None => {}
            Some(FormProblem::Check) => {
                return Err(Error::ResidentIdCheck {
                    found: id[17..].chars().next().expect("18 characters"),
                    expected: Self::check_char(&id[..17]),
                    id,
                });
            }
            Some(problem) => {
                return Err(Error::MalformedResidentId {
                    reason: problem.what(),
                    id,
                });
            }
        }
        birth_date_part(&id).ok_or_else(|| Error::ResidentIdBirthDate {
            part: id[6..14].to_string(),
            id: id.clone(),
        })?;
        Ok(ResidentId(id))
    }

    /// The ISO 7064 MOD 11-2 check character of 17 digits.
    ///
    /// # Panics
    /// If `body` is not 17 ASCII digits.
    pub fn check_char(body: &str) -> char {
        assert_eq!(body.len(), 17, "a resident ID body has 17 digits");
        let sum: u32 = body
            .bytes()
            .zip(WEIGHTS)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        CHECK_CHARS[(sum % 11) as usize]
    }

    /// Builds a valid ID from a region code, a birth date and a sequence number.
    pub fn compose(region: &str, birth: NaiveDate, sequence: u16) -> Self {
        let body = format!("{region}{}{:03}", birth.format("%Y%m%d"), sequence % 1000);
        let check = Self::check_char(&body);
        ResidentId(format!("{body}{check}"))
    }

    /// The birth date encoded in characters 7–14.
    pub fn birth_date(&self) -> NaiveDate {
        birth_date_part(&self.0).expect("validated on construction")
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What keeps an ID, as written, from the form GB 11643 gives it, its birth date part
/// aside ([`birth_date_part`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FormProblem {
    /// Other than 18 characters.
    Length,
    /// A character other than a digit among the first 17.
    Digits,
    /// A last character other than a digit or `X`.
    Last,
    /// A check character other than the one its first 17 digits give.
    Check,
}

impl FormProblem {
    /// What the ID has, in words that follow "it has".
    pub fn what(self) -> &'static str {
        match self {
            FormProblem::Length => "other than 18 characters",
            FormProblem::Digits => "a character other than a digit among the first 17",
            FormProblem::Last => "a last character other than a digit or X",
            FormProblem::Check => {
                "a check character other than the one its first 17 digits give (ISO 7064 MOD 11-2)"
            }
        }
    }
}

/// What keeps `id`, exactly as written, from the form GB 11643 gives it: 17 digits and
/// their check character, a digit or an upper-case `X`. Its birth date part is not looked
/// at ([`birth_date_part`]).
pub fn form_problem(id: &str) -> Option<FormProblem> {
    if id.chars().count() != 18 {
        return Some(FormProblem::Length);
    }
    if !id.as_bytes()[..17].iter().all(u8::is_ascii_digit) {
        return Some(FormProblem::Digits);
    }
    // The first 17 bytes are digits, so the last character starts at byte 17.
    let last = id[17..].chars().next().expect("18 characters");
    if !(last.is_ascii_digit() || last == 'X') {
        return Some(FormProblem::Last);
    }
    (last != ResidentId::check_char(&id[..17])).then_some(FormProblem::Check)
}

/// The birth date in characters 7–14 of `id`, if they form a date. This is the reading
/// the `underage_elderly_allowance` model uses, and it needs no valid check character.
pub fn birth_date_part(id: &str) -> Option<NaiveDate> {
    let part = id.get(6..14)?;
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(part, "%Y%m%d").ok()
}

/// Full years from `birth` to `at`. A person whose birthday falls on `at` has reached
/// the new age; someone born on 29 February reaches it on 1 March in common years.
pub fn full_years_between(birth: NaiveDate, at: NaiveDate) -> i32 {
    let mut years = at.year() - birth.year();
    if (at.month(), at.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn check_characters() {
        // The worked example of GB 11643.
        assert_eq!(ResidentId::check_char("11010519491231002"), 'X');
        assert!(ResidentId::parse("11010519491231002X").is_ok());
        assert!(ResidentId::parse("11010519491231002x").is_ok());
        assert_eq!(ResidentId::check_char("44052418800101001"), '4');
        let err = ResidentId::parse("110105194912310021").unwrap_err();
        assert_eq!(
            err,
            Error::ResidentIdCheck {
                id: "110105194912310021".into(),
                found: '1',
                expected: 'X'
            }
        );
    }

    #[test]
    fn malformed_ids() {
        for bad in [
            "",
            "1101051949123100",
            "11010519491231002XX",
            "1101051949123100AX",
            "11010519491231002Y",
        ] {
            assert!(
                matches!(
                    ResidentId::parse(bad),
                    Err(Error::MalformedResidentId { .. })
                ),
                "{bad:?} should be malformed"
            );
        }
        let bad_date = ResidentId::compose("140215", date(1990, 1, 1), 1)
            .as_str()
            .replace("19900101", "19901301");
        let fixed = format!(
            "{}{}",
            &bad_date[..17],
            ResidentId::check_char(&bad_date[..17])
        );
        assert!(matches!(
            ResidentId::parse(&fixed),
            Err(Error::ResidentIdBirthDate { .. })
        ));
    }

    #[test]
    fn ids_are_judged_as_written() {
        assert_eq!(form_problem("11010519491231002X"), None);
        // A birth date part that is not a date is no problem of form.
        assert_eq!(form_problem("140215199013010011"), None);
        for (id, problem) in [
            ("11010519491231002", FormProblem::Length),
            ("１1010519491231002X", FormProblem::Digits),
            ("1101051949123100 X", FormProblem::Digits),
            ("11010519491231002x", FormProblem::Last),
            ("11010519491231002Ｘ", FormProblem::Last),
            ("110105194912310021", FormProblem::Check),
        ] {
            assert_eq!(form_problem(id), Some(problem), "{id}");
        }
        assert_eq!(
            ResidentId::parse("1101051949123100")
                .unwrap_err()
                .to_string(),
            "resident ID \"1101051949123100\" is malformed: it has other than 18 characters"
        );
    }

    #[test]
    fn composed_ids_validate() {
        let id = ResidentId::compose("140215", date(1944, 6, 1), 17);
        assert_eq!(
            ResidentId::parse(id.as_str()).unwrap().birth_date(),
            date(1944, 6, 1)
        );
    }

    #[test]
    fn age_around_a_birthday() {
        let born = date(1944, 6, 1);
        assert_eq!(full_years_between(born, date(2024, 5, 31)), 79);
        assert_eq!(full_years_between(born, date(2024, 6, 1)), 80);
        assert_eq!(full_years_between(born, date(2024, 6, 2)), 80);
    }

    #[test]
    fn age_of_a_leap_day_birth() {
        let born = date(1944, 2, 29);
        assert_eq!(full_years_between(born, date(2024, 2, 28)), 79);
        assert_eq!(full_years_between(born, date(2024, 2, 29)), 80);
        assert_eq!(full_years_between(born, date(2023, 2, 28)), 78);
        assert_eq!(full_years_between(born, date(2023, 3, 1)), 79);
    }
}
