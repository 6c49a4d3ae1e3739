//! The ordinary records of one county: people, their payments, payroll and certificates.
//! Nothing here is a hit of any model; planted cases are added by [`crate::plants`].

use std::collections::HashMap;

use chrono::{Datelike, Days, NaiveDate};
use rand::Rng;
use rand::seq::IndexedRandom;
use sunlight_domain::{NodeCode, ResidentId, full_years_between};

use crate::calendar::{FIRST_YEAR, LAST_YEAR, add_years, window, ymd};
use crate::names::{Geography, person_name};
use crate::payments::{Payee, yuan};
use crate::rows::{CertRow, PaymentRow, PayrollRow, PersonRow};

/// Sequence numbers 900–999 of every birth date are left to planted people.
pub const PLANTED_SEQUENCE_START: u16 = 900;

const CATEGORIES: &[&str] = &["肢体", "视力", "听力", "言语", "智力", "精神", "多重"];

/// Hands out the 3-digit sequence part of resident IDs per region and birth date.
#[derive(Debug, Default)]
pub struct SequenceAllocator {
    next: HashMap<(NodeCode, NaiveDate), u16>,
}

impl SequenceAllocator {
    /// A new ID for someone registered in `region` and born on `birth`, using sequence
    /// numbers from `first` up to `limit` (exclusive); moves the birth date a day later
    /// when a day is full.
    pub fn issue(
        &mut self,
        region: NodeCode,
        mut birth: NaiveDate,
        first: u16,
        limit: u16,
    ) -> ResidentId {
        loop {
            let next = self.next.entry((region, birth)).or_insert(first);
            if *next < limit {
                *next += 1;
                return ResidentId::compose(region.as_str(), birth, *next - 1);
            }
            birth = birth + Days::new(1);
        }
    }
}

/// What one county person produces.
#[derive(Debug, Default)]
pub struct PersonRecords {
    pub payments: Vec<PaymentRow>,
    pub payroll: Option<PayrollRow>,
    pub cert: Option<CertRow>,
}

/// Draws the ordinary people of a county one at a time.
pub struct CountyPeople {
    node: NodeCode,
    geography: Geography,
    ids: SequenceAllocator,
    household: Option<(String, String, String, u32)>,
    households: u64,
    people: u64,
}

impl CountyPeople {
    pub fn new(node: NodeCode, geography: Geography) -> Self {
        Self {
            node,
            geography,
            ids: SequenceAllocator::default(),
            household: None,
            households: 0,
            people: 0,
        }
    }

    /// The next person and the records that go with them.
    pub fn next(&mut self, rng: &mut impl Rng) -> (PersonRow, PersonRecords) {
        let (household_id, township, village, head) = self.household_slot(rng);
        let age = match rng.random::<f64>() {
            u if u < 0.18 => rng.random_range(0..18),
            u if u < 0.76 => rng.random_range(18..60),
            u if u < 0.95 => rng.random_range(60..80),
            _ => rng.random_range(80..100),
        };
        let birth = ymd(LAST_YEAR - age, 12, 31) - Days::new(rng.random_range(0..365));
        let id = self.ids.issue(self.node, birth, 0, PLANTED_SEQUENCE_START);
        let death_date = (age >= 65 && rng.random_bool(0.08))
            .then(|| ymd(FIRST_YEAR, 1, 1) + Days::new(rng.random_range(0..(365 * 4))));
        let person = PersonRow {
            person_id: id.as_str().to_string(),
            name: person_name(rng),
            gender: if rng.random_bool(0.5) { "M" } else { "F" },
            birth_date: id.birth_date(),
            household_id: Some(household_id),
            county_code: self.node,
            township,
            village,
            death_date,
        };
        self.people += 1;
        let records = self.records(rng, &person, head);
        (person, records)
    }

    fn household_slot(&mut self, rng: &mut impl Rng) -> (String, String, String, bool) {
        let head = match &mut self.household {
            Some((_, _, _, left)) if *left > 0 => {
                *left -= 1;
                false
            }
            _ => {
                let (township, village) = self.geography.place(rng);
                let id = format!("{}{:07}", self.node, self.households);
                self.households += 1;
                self.household = Some((id, township, village, rng.random_range(0..=4)));
                true
            }
        };
        let (id, township, village, _) = self.household.as_ref().expect("set above");
        (id.clone(), township.clone(), village.clone(), head)
    }

    fn records(&mut self, rng: &mut impl Rng, person: &PersonRow, head: bool) -> PersonRecords {
        let mut out = PersonRecords::default();
        let account = rng
            .random_bool(0.99)
            .then(|| format!("6217{}{:08}", self.node, self.people));
        let payee = Payee::at_home(person, account.as_deref());
        let alive = |period: NaiveDate| person.death_date.is_none_or(|d| period <= d);
        let age_at_start = full_years_between(person.birth_date, ymd(FIRST_YEAR, 1, 1));
        let months = window();

        let on_payroll = (22..=58).contains(&age_at_start) && rng.random_bool(0.04);
        if on_payroll {
            out.payroll = Some(self.payroll_row(rng, person));
        } else if rng.random_bool(0.07) {
            let amount = yuan(rng.random_range(20..=60) * 10);
            for period in span(rng, &months).into_iter().filter(|p| alive(*p)) {
                out.payments.push(payee.pay(rng, "DIBAO", period, amount));
            }
        } else if age_at_start >= 60 && rng.random_bool(0.02) {
            let amount = yuan(rng.random_range(50..=90) * 10);
            for period in span(rng, &months).into_iter().filter(|p| alive(*p)) {
                out.payments.push(payee.pay(rng, "TEKUN", period, amount));
            }
        }

        if rng.random_bool(0.9) {
            let eligible =
                |p: NaiveDate| full_years_between(person.birth_date, p) >= 80 && alive(p);
            for &period in months.iter().filter(|p| eligible(**p)) {
                let amount = if full_years_between(person.birth_date, period) >= 90 {
                    20000
                } else {
                    10000
                };
                out.payments.push(payee.pay(rng, "GAOLING", period, amount));
            }
        }

        if rng.random_bool(0.03) {
            let cert = self.cert_row(rng, person);
            let valid = |p: NaiveDate| alive(p) && cert.revoked_on.is_none_or(|r| p < r);
            if rng.random_bool(0.7) {
                let amount = yuan(rng.random_range(6..=10) * 10);
                for &period in months.iter().filter(|p| valid(**p)) {
                    out.payments
                        .push(payee.pay(rng, "CANJI_SHENGHUO", period, amount));
                }
            }
            if cert.level <= 2 && rng.random_bool(0.8) {
                let amount = yuan(rng.random_range(8..=15) * 10);
                for &period in months.iter().filter(|p| valid(**p)) {
                    out.payments
                        .push(payee.pay(rng, "CANJI_HULI", period, amount));
                }
            }
            out.cert = Some(cert);
        }

        let student = rng.random_bool(0.3);
        for year in FIRST_YEAR..=LAST_YEAR {
            let school_year = ymd(year, 9, 1);
            let age = full_years_between(person.birth_date, school_year);
            if student && (16..=21).contains(&age) && alive(school_year) {
                let amount = if rng.random_bool(0.5) {
                    yuan(3000)
                } else {
                    yuan(1500)
                };
                out.payments
                    .push(payee.pay(rng, "YULU", school_year, amount));
            }
        }
        if head && rng.random_bool(0.45) {
            let amount = rng.random_range(15_000..=200_000);
            for year in FIRST_YEAR..=LAST_YEAR {
                let period = ymd(year, 4, 1);
                if alive(period) {
                    out.payments.push(payee.pay(rng, "GENGDI", period, amount));
                }
            }
        }
        out
    }

    fn payroll_row(&self, rng: &mut impl Rng, person: &PersonRow) -> PayrollRow {
        let at_city = rng.random_bool(0.15);
        let holder = if at_city { NodeCode::CITY } else { self.node };
        // An extract taken as the payments end: no one starts or leaves after it.
        let extracted = ymd(LAST_YEAR, 12, 31);
        let earliest = add_years(person.birth_date, 22);
        let latest = (earliest + Days::new(3000)).min(extracted);
        let start =
            earliest + Days::new(rng.random_range(0..=(latest - earliest).num_days()) as u64);
        let end = rng
            .random_bool(0.2)
            .then(|| start + Days::new(rng.random_range(400..6000)))
            .filter(|end| *end <= extracted);
        employment(rng, person, holder, start, end)
    }

    fn cert_row(&self, rng: &mut impl Rng, person: &PersonRow) -> CertRow {
        let issued_on = ymd(2005, 1, 1) + Days::new(rng.random_range(0..(365 * 16)));
        let revoked_on = rng
            .random_bool(0.1)
            .then(|| ymd(FIRST_YEAR, 1, 1) + Days::new(rng.random_range(0..(365 * 4))));
        let level = rng.random_range(1..=4);
        certificate(rng, person, level, issued_on, revoked_on)
    }
}

/// A payroll row of `person`, held by node `holder`.
pub fn employment(
    rng: &mut impl Rng,
    person: &PersonRow,
    holder: NodeCode,
    start_date: NaiveDate,
    end_date: Option<NaiveDate>,
) -> PayrollRow {
    const EMPLOYERS: &[(&str, &str)] = &[
        ("民政局", "GOV"),
        ("财政局", "GOV"),
        ("农业农村局", "GOV"),
        ("人民医院", "PUBLIC_INSTITUTION"),
        ("第一中学", "PUBLIC_INSTITUTION"),
        ("疾病预防控制中心", "PUBLIC_INSTITUTION"),
    ];
    let (unit, employer_type) = EMPLOYERS.choose(rng).expect("non-empty");
    PayrollRow {
        person_id: person.person_id.clone(),
        name: person.name.clone(),
        employer: format!("{}{unit}", holder.info().name),
        employer_type,
        county_code: holder,
        start_date,
        end_date,
    }
}

/// A disability certificate of `person`.
pub fn certificate(
    rng: &mut impl Rng,
    person: &PersonRow,
    level: i32,
    issued_on: NaiveDate,
    revoked_on: Option<NaiveDate>,
) -> CertRow {
    let category = CATEGORIES.choose(rng).expect("non-empty");
    CertRow {
        cert_no: format!(
            "{}{}{level}{}",
            &person.person_id,
            issued_on.year() % 100,
            rng.random_range(0..10)
        ),
        person_id: person.person_id.clone(),
        category,
        level,
        issued_on,
        revoked_on,
    }
}

/// A run of consecutive months inside the window.
fn span(rng: &mut impl Rng, months: &[NaiveDate]) -> Vec<NaiveDate> {
    let start = rng.random_range(0..months.len());
    let len = rng.random_range(6..=months.len());
    months[start..(start + len).min(months.len())].to_vec()
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    #[test]
    fn payroll_dates_fall_within_working_life_and_before_the_extract() {
        let node = NodeCode::counties().next().expect("ten counties");
        let mut people = CountyPeople::new(node, Geography::of(node, 7));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let extracted = ymd(LAST_YEAR, 12, 31);
        let mut employed = 0;
        for _ in 0..20_000 {
            let (person, records) = people.next(&mut rng);
            let Some(row) = records.payroll else { continue };
            employed += 1;
            assert!(
                row.start_date >= add_years(person.birth_date, 22),
                "{row:?}"
            );
            assert!(row.start_date <= extracted, "{row:?}");
            assert!(
                row.end_date
                    .is_none_or(|end| end > row.start_date && end <= extracted),
                "{row:?}"
            );
        }
        assert!(employed > 100, "{employed} persons on payroll");
    }
}
