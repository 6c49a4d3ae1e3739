//! Planted cases: records made to be hits of one model, boundary cases on both sides of
//! every rule, and decoys that look suspicious but are not hits. Each planted payment
//! carries the models it is a hit of; that list is the ground truth.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use sunlight_domain::{NodeCode, ProblemModel, ResidentId, full_years_between};

use crate::calendar::{add_years, months, ymd};
use crate::county::{PLANTED_SEQUENCE_START, SequenceAllocator, certificate, employment};
use crate::names::{Geography, JULE_TOWNSHIP, JULE_VILLAGES, person_name};
use crate::payments::{Payee, yuan};
use crate::rows::{CertRow, PaymentRow, PayrollRow, PersonRow};

use ProblemModel::*;

/// Planted records of one node.
#[derive(Debug, Default)]
pub struct NodePlants {
    pub persons: Vec<PersonRow>,
    pub payments: Vec<(PaymentRow, Vec<ProblemModel>)>,
    pub payroll: Vec<PayrollRow>,
    pub certs: Vec<CertRow>,
}

/// Planted records of every node.
pub type CityPlan = BTreeMap<NodeCode, NodePlants>;

/// Plans the planted cases: each scenario `repeats` times in every county, and the
/// 聚乐乡 story once on 140215.
pub fn plan(seed: u64, repeats: usize) -> CityPlan {
    let mut planter = Planter {
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x706c_616e_7473),
        geographies: NodeCode::all()
            .map(|n| (n, Geography::of(n, seed)))
            .collect(),
        ids: SequenceAllocator::default(),
        plan: NodeCode::all()
            .map(|n| (n, NodePlants::default()))
            .collect(),
        households: 0,
        accounts: 0,
    };
    let counties: Vec<NodeCode> = NodeCode::counties().collect();
    for &c in &counties {
        for repeat in 0..repeats {
            let others: Vec<NodeCode> = counties.iter().copied().filter(|n| *n != c).collect();
            let d = *others.choose(&mut planter.rng).expect("ten counties");
            planter.payroll_cases(c, d);
            planter.underage_cases(c, repeat);
            planter.duplicate_cases(c, d);
            planter.deceased_cases(c, d);
            planter.shared_account_cases(c);
            planter.over_standard_cases(c);
            planter.certificate_cases(c, d);
        }
    }
    planter.jule_story("140215".parse().expect("known node"));
    planter.plan
}

struct Planter {
    rng: ChaCha8Rng,
    geographies: BTreeMap<NodeCode, Geography>,
    ids: SequenceAllocator,
    plan: CityPlan,
    households: u64,
    accounts: u64,
}

impl Planter {
    /// A new person of `node` born on `birth`, not yet in any registry.
    fn stranger(&mut self, node: NodeCode, birth: NaiveDate) -> PersonRow {
        let id = self.ids.issue(node, birth, PLANTED_SEQUENCE_START, 1000);
        let (township, village) = self.geographies[&node].place(&mut self.rng);
        self.households += 1;
        PersonRow {
            person_id: id.as_str().to_string(),
            name: person_name(&mut self.rng),
            gender: if self.rng.random_bool(0.5) { "M" } else { "F" },
            birth_date: id.birth_date(),
            household_id: Some(format!("{node}9{:06}", self.households)),
            county_code: node,
            township,
            village,
            death_date: None,
        }
    }

    /// A new unregistered person born up to `days` days after `earliest`.
    fn stranger_born(&mut self, node: NodeCode, earliest: NaiveDate, days: u64) -> PersonRow {
        let birth = earliest + Days::new(self.rng.random_range(0..days));
        self.stranger(node, birth)
    }

    /// A new person in `node`'s registry.
    fn person(&mut self, node: NodeCode, birth: NaiveDate) -> PersonRow {
        let person = self.stranger(node, birth);
        self.register(node, &person);
        person
    }

    /// A new registered person aged between `min` and `max` on 2021-01-01.
    fn aged(&mut self, node: NodeCode, min: i32, max: i32) -> PersonRow {
        let birth = add_years(ymd(2021, 1, 1), -self.rng.random_range(min..=max))
            - Days::new(self.rng.random_range(1..365));
        self.person(node, birth)
    }

    fn register(&mut self, node: NodeCode, person: &PersonRow) {
        self.plan
            .get_mut(&node)
            .expect("every node")
            .persons
            .push(person.clone());
    }

    fn account(&mut self) -> String {
        self.accounts += 1;
        format!("6228{:012}", self.accounts)
    }

    /// Pays `person` at `node` for each period; `hit` names the models each row is a hit of.
    fn pay(
        &mut self,
        node: NodeCode,
        payee: &Payee<'_>,
        subsidy_type: &str,
        periods: &[NaiveDate],
        amount_fen: i128,
        hit: impl Fn(NaiveDate) -> Vec<ProblemModel>,
    ) {
        for &period in periods {
            let row = payee.pay(&mut self.rng, subsidy_type, period, amount_fen);
            self.plan
                .get_mut(&node)
                .expect("every node")
                .payments
                .push((row, hit(period)));
        }
    }

    /// Pays `person` at home, to a fresh account of their own.
    fn pay_home(
        &mut self,
        node: NodeCode,
        person: &PersonRow,
        subsidy_type: &str,
        periods: &[NaiveDate],
        amount_fen: i128,
        hit: impl Fn(NaiveDate) -> Vec<ProblemModel>,
    ) {
        let account = self.account();
        self.pay(
            node,
            &Payee::at_home(person, Some(&account)),
            subsidy_type,
            periods,
            amount_fen,
            hit,
        );
    }

    fn payroll(
        &mut self,
        holder: NodeCode,
        person: &PersonRow,
        start: NaiveDate,
        end: Option<NaiveDate>,
    ) {
        let row = employment(&mut self.rng, person, holder, start, end);
        self.plan
            .get_mut(&holder)
            .expect("every node")
            .payroll
            .push(row);
    }

    fn cert(
        &mut self,
        holder: NodeCode,
        person: &PersonRow,
        level: i32,
        issued: NaiveDate,
        revoked: Option<NaiveDate>,
    ) {
        let row = certificate(&mut self.rng, person, level, issued, revoked);
        self.plan
            .get_mut(&holder)
            .expect("every node")
            .certs
            .push(row);
    }

    fn payroll_cases(&mut self, c: NodeCode, d: NodeCode) {
        let when = |hit: bool| if hit { vec![PayrollOnDibao] } else { vec![] };
        // Employed on the same node; the first and last day of employment are periods.
        let p = self.aged(c, 30, 50);
        self.payroll(c, &p, ymd(2022, 4, 1), Some(ymd(2022, 9, 1)));
        self.pay_home(c, &p, "DIBAO", &months(2022, 1, 12), yuan(500), |m| {
            when(m >= ymd(2022, 4, 1) && m <= ymd(2022, 9, 1))
        });
        // Employment held on another county's node, still employed.
        let p = self.aged(c, 60, 64);
        self.payroll(d, &p, ymd(2019, 3, 1), None);
        self.pay_home(c, &p, "TEKUN", &months(2023, 1, 6), yuan(800), |_| {
            when(true)
        });
        // Employment held by the city's node, starting mid-month.
        let p = self.aged(c, 30, 50);
        self.payroll(NodeCode::CITY, &p, ymd(2021, 6, 15), None);
        self.pay_home(c, &p, "DIBAO", &months(2021, 1, 12), yuan(450), |m| {
            when(m >= ymd(2021, 7, 1))
        });
        // Decoy: employment ended the day before the first payment.
        let p = self.aged(c, 30, 50);
        self.payroll(d, &p, ymd(2015, 1, 1), Some(ymd(2021, 2, 28)));
        self.pay_home(c, &p, "DIBAO", &months(2021, 3, 6), yuan(500), |_| {
            when(false)
        });
        // Decoy: payroll people may draw subsidies that do not exclude them.
        let p = self.aged(c, 35, 55);
        self.payroll(c, &p, ymd(2010, 9, 1), None);
        self.pay_home(
            c,
            &p,
            "GENGDI",
            &[ymd(2022, 4, 1), ymd(2023, 4, 1)],
            yuan(1200),
            |_| when(false),
        );
    }

    fn underage_cases(&mut self, c: NodeCode, repeat: usize) {
        let under = |birth: NaiveDate| {
            move |m: NaiveDate| {
                if full_years_between(birth, m) < 80 {
                    vec![UnderageElderlyAllowance]
                } else {
                    vec![]
                }
            }
        };
        // Turns 80 on the first of a month: that month's payment is not a hit.
        let month = self.rng.random_range(3..=10);
        let birth = ymd(2023 - 80, month, 1);
        let p = self.person(c, birth);
        self.pay_home(
            c,
            &p,
            "GAOLING",
            &months(2023, month - 2, 5),
            yuan(100),
            under(p.birth_date),
        );
        // Turns 80 on the second: the first of that month is still a hit.
        let birth = ymd(2022 - 80, month, 2);
        let p = self.person(c, birth);
        self.pay_home(
            c,
            &p,
            "GAOLING",
            &months(2022, month - 2, 5),
            yuan(100),
            under(p.birth_date),
        );
        // Far too young.
        let p = self.aged(c, 70, 76);
        self.pay_home(
            c,
            &p,
            "GAOLING",
            &months(2022, 1, 6),
            yuan(100),
            under(p.birth_date),
        );
        // Decoy: an ID whose birth-date part is not a date is a data-quality error, not a hit.
        let mut p = self.stranger(c, ymd(1955, 6, 1));
        let body = format!("{}19430231{}", c, &p.person_id[14..17]);
        p.person_id = format!("{body}{}", ResidentId::check_char(&body));
        p.birth_date = ymd(1943, 2, 28);
        self.register(c, &p);
        self.pay_home(c, &p, "GAOLING", &months(2022, 1, 3), yuan(100), |_| vec![]);
        if repeat == 0 {
            // Born on a leap day: 80 on 2024-02-29, so February is a hit and March is not.
            let p = self.person(c, ymd(1944, 2, 29));
            self.pay_home(
                c,
                &p,
                "GAOLING",
                &months(2024, 1, 4),
                yuan(100),
                under(p.birth_date),
            );
        }
    }

    fn duplicate_cases(&mut self, c: NodeCode, d: NodeCode) {
        // Paid twice for one month in two villages of the same county.
        let p = self.aged(c, 30, 60);
        let account = self.account();
        self.pay(
            c,
            &Payee::at_home(&p, Some(&account)),
            "DIBAO",
            &months(2022, 1, 6),
            yuan(400),
            |m| {
                if m == ymd(2022, 3, 1) {
                    vec![DuplicatePayment]
                } else {
                    vec![]
                }
            },
        );
        let (township, village) = self.geographies[&c].place(&mut self.rng);
        let elsewhere = Payee {
            person: &p,
            township: &township,
            village: &village,
            account_no: Some(&account),
        };
        self.pay(
            c,
            &elsewhere,
            "DIBAO",
            &[ymd(2022, 3, 1)],
            yuan(400),
            |_| vec![DuplicatePayment],
        );
        // Paid by two counties for three overlapping months; unknown to the second's registry.
        let p = self.aged(c, 30, 60);
        let overlap = |m: NaiveDate| {
            if (ymd(2023, 4, 1)..=ymd(2023, 6, 1)).contains(&m) {
                vec![DuplicatePayment]
            } else {
                vec![]
            }
        };
        self.pay_home(c, &p, "DIBAO", &months(2023, 1, 6), yuan(500), overlap);
        let (township, village) = self.geographies[&d].place(&mut self.rng);
        let account = self.account();
        let moved = Payee {
            person: &p,
            township: &township,
            village: &village,
            account_no: Some(&account),
        };
        self.pay(d, &moved, "DIBAO", &months(2023, 4, 6), yuan(500), overlap);
        // Decoy: two subsidy types in one month.
        let p = self.aged(c, 40, 60);
        let account = self.account();
        let payee = Payee::at_home(&p, Some(&account));
        self.pay(
            c,
            &payee,
            "DIBAO",
            &months(2022, 3, 3),
            yuan(300),
            |_| vec![],
        );
        self.pay(
            c,
            &payee,
            "GENGDI",
            &[ymd(2022, 4, 1)],
            yuan(900),
            |_| vec![],
        );
    }

    fn deceased_cases(&mut self, c: NodeCode, d: NodeCode) {
        // Paid for seven months after death.
        let mut p = self.stranger_born(c, ymd(1950, 3, 3), 300);
        p.death_date = Some(ymd(2022, 5, 20));
        self.register(c, &p);
        self.pay_home(c, &p, "DIBAO", &months(2022, 1, 12), yuan(500), |m| {
            if m > ymd(2022, 5, 20) {
                vec![DeceasedRecipient]
            } else {
                vec![]
            }
        });
        // Died on the first of a month: that month's payment is not a hit.
        let mut p = self.stranger_born(c, ymd(1936, 1, 1), 300);
        p.death_date = Some(ymd(2022, 5, 1));
        self.register(c, &p);
        self.pay_home(c, &p, "GAOLING", &months(2022, 3, 6), yuan(150), |m| {
            if m > ymd(2022, 5, 1) {
                vec![DeceasedRecipient]
            } else {
                vec![]
            }
        });
        // Decoy: a death recorded only in another county's registry.
        let p = self.aged(c, 82, 90);
        let mut elsewhere = p.clone();
        elsewhere.death_date = Some(ymd(2021, 3, 10));
        // A registry row carries the code of the node that holds it.
        elsewhere.county_code = d;
        self.register(d, &elsewhere);
        self.pay_home(c, &p, "GAOLING", &months(2022, 1, 3), yuan(150), |_| vec![]);
    }

    fn shared_account_cases(&mut self, c: NodeCode) {
        let shared = |hit: bool| if hit { vec![SharedAccount] } else { vec![] };
        // A yearly payment to another household lands on a monthly recipient's card.
        let owner = self.aged(c, 30, 60);
        let other = self.aged(c, 30, 60);
        let account = self.account();
        self.pay(
            c,
            &Payee::at_home(&owner, Some(&account)),
            "DIBAO",
            &months(2022, 1, 6),
            yuan(500),
            |m| shared(m == ymd(2022, 4, 1)),
        );
        self.pay(
            c,
            &Payee::at_home(&other, Some(&account)),
            "GENGDI",
            &[ymd(2022, 4, 1)],
            yuan(800),
            |_| shared(true),
        );
        // Decoy: one household's members share a card.
        let first = self.aged(c, 30, 60);
        let mut second = self.stranger(c, ymd(1990, 5, 5));
        second.household_id = first.household_id.clone();
        (second.township, second.village) = (first.township.clone(), first.village.clone());
        self.register(c, &second);
        let account = self.account();
        for person in [&first, &second] {
            self.pay(
                c,
                &Payee::at_home(person, Some(&account)),
                "DIBAO",
                &months(2022, 1, 3),
                yuan(300),
                |_| shared(false),
            );
        }
        // Someone missing from the registry counts as a household of their own.
        let known = self.aged(c, 30, 60);
        let unknown = self.stranger(c, ymd(1980, 8, 8));
        let account = self.account();
        self.pay(
            c,
            &Payee::at_home(&known, Some(&account)),
            "DIBAO",
            &months(2023, 1, 3),
            yuan(500),
            |m| shared(m == ymd(2023, 2, 1)),
        );
        self.pay(
            c,
            &Payee::at_home(&unknown, Some(&account)),
            "DIBAO",
            &[ymd(2023, 2, 1)],
            yuan(500),
            |_| shared(true),
        );
        // Two people without a household id are two households.
        let account = self.account();
        for _ in 0..2 {
            let mut person = self.stranger_born(c, ymd(1975, 1, 1), 3000);
            person.household_id = None;
            self.register(c, &person);
            self.pay(
                c,
                &Payee::at_home(&person, Some(&account)),
                "DIBAO",
                &[ymd(2023, 5, 1)],
                yuan(500),
                |_| shared(true),
            );
        }
        // Decoy: payments without an account never group.
        for _ in 0..2 {
            let person = self.aged(c, 30, 60);
            self.pay(
                c,
                &Payee::at_home(&person, None),
                "DIBAO",
                &[ymd(2023, 7, 1)],
                yuan(500),
                |_| shared(false),
            );
        }
        // Decoy: one person, two subsidies, one card, one month.
        let person = self.aged(c, 30, 60);
        let account = self.account();
        let payee = Payee::at_home(&person, Some(&account));
        self.pay(c, &payee, "DIBAO", &[ymd(2023, 4, 1)], yuan(500), |_| {
            shared(false)
        });
        self.pay(c, &payee, "GENGDI", &[ymd(2023, 4, 1)], yuan(700), |_| {
            shared(false)
        });
    }

    fn over_standard_cases(&mut self, c: NodeCode) {
        let over = |hit: bool| if hit { vec![OverStandard] } else { vec![] };
        // One fen over the cap is a hit; the cap itself is not.
        let p = self.aged(c, 30, 60);
        let account = self.account();
        let payee = Payee::at_home(&p, Some(&account));
        self.pay(
            c,
            &payee,
            "DIBAO",
            &[ymd(2022, 1, 1), ymd(2022, 3, 1)],
            yuan(600),
            |_| over(false),
        );
        self.pay(
            c,
            &payee,
            "DIBAO",
            &[ymd(2022, 2, 1)],
            yuan(600) + 1,
            |_| over(true),
        );
        let p = self.aged(c, 40, 60);
        let account = self.account();
        let payee = Payee::at_home(&p, Some(&account));
        self.pay(c, &payee, "GENGDI", &[ymd(2022, 4, 1)], yuan(2000), |_| {
            over(false)
        });
        self.pay(c, &payee, "GENGDI", &[ymd(2023, 4, 1)], yuan(2500), |_| {
            over(true)
        });
        let p = self.aged(c, 17, 19);
        self.pay_home(c, &p, "YULU", &[ymd(2022, 9, 1)], yuan(3500), |_| {
            over(true)
        });
    }

    fn certificate_cases(&mut self, c: NodeCode, d: NodeCode) {
        let missing = |hit: bool| {
            if hit {
                vec![DisabilityWithoutCert]
            } else {
                vec![]
            }
        };
        // A level-3 certificate does not qualify for care that needs level 2.
        let p = self.aged(c, 30, 70);
        self.cert(c, &p, 3, ymd(2015, 6, 1), None);
        self.pay_home(c, &p, "CANJI_HULI", &months(2022, 1, 3), yuan(120), |_| {
            missing(true)
        });
        // Paid before the certificate was issued.
        let p = self.aged(c, 30, 70);
        self.cert(c, &p, 4, ymd(2022, 3, 15), None);
        self.pay_home(
            c,
            &p,
            "CANJI_SHENGHUO",
            &months(2022, 1, 6),
            yuan(80),
            |m| missing(m < ymd(2022, 3, 15)),
        );
        // Issued on the first of a month: that month is covered.
        let p = self.aged(c, 30, 70);
        self.cert(c, &p, 2, ymd(2022, 4, 1), None);
        self.pay_home(
            c,
            &p,
            "CANJI_SHENGHUO",
            &months(2022, 3, 3),
            yuan(80),
            |m| missing(m < ymd(2022, 4, 1)),
        );
        // Revoked on the first of a month: that month is no longer covered.
        let p = self.aged(c, 30, 70);
        self.cert(c, &p, 1, ymd(2010, 1, 1), Some(ymd(2023, 7, 1)));
        self.pay_home(c, &p, "CANJI_HULI", &months(2023, 5, 5), yuan(120), |m| {
            missing(m >= ymd(2023, 7, 1))
        });
        // The certificate is held only by another county.
        let p = self.aged(c, 30, 70);
        self.cert(d, &p, 2, ymd(2016, 1, 1), None);
        self.pay_home(
            c,
            &p,
            "CANJI_SHENGHUO",
            &months(2022, 1, 3),
            yuan(80),
            |_| missing(true),
        );
        // No certificate anywhere.
        let p = self.aged(c, 30, 70);
        self.pay_home(
            c,
            &p,
            "CANJI_SHENGHUO",
            &months(2024, 1, 2),
            yuan(80),
            |_| missing(true),
        );
        // Decoy: a revoked certificate beside a valid one.
        let p = self.aged(c, 30, 70);
        self.cert(c, &p, 1, ymd(2012, 1, 1), Some(ymd(2020, 1, 1)));
        self.cert(c, &p, 4, ymd(2016, 1, 1), None);
        self.pay_home(
            c,
            &p,
            "CANJI_SHENGHUO",
            &months(2022, 1, 3),
            yuan(80),
            |_| missing(false),
        );
    }

    /// 云州区 聚乐乡, 2021: ten students paid 雨露计划 in two merged villages at once.
    fn jule_story(&mut self, node: NodeCode) {
        let period = ymd(2021, 9, 1);
        for _ in 0..10 {
            let mut student = self.stranger_born(node, ymd(2002, 1, 1), 900);
            student.township = JULE_TOWNSHIP.to_string();
            student.village = JULE_VILLAGES[0].to_string();
            self.register(node, &student);
            let account = self.account();
            for village in JULE_VILLAGES {
                let payee = Payee {
                    person: &student,
                    township: JULE_TOWNSHIP,
                    village,
                    account_no: Some(&account),
                };
                self.pay(node, &payee, "YULU", &[period], yuan(3000), |_| {
                    vec![DuplicatePayment]
                });
            }
        }
    }
}
