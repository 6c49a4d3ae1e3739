//! Aggregates drawn at random from the keys, figures and filters an analyst combines, over
//! `disbursements` alone or joined with its recipients and their subsidy's standard, or
//! composed into larger queries, each asked of the city and of one DataFusion context
//! over the same files. The city may leave small groups out, saying how many, or refuse
//! by a named rule; it never answers wrong.

use std::ops::RangeInclusive;

use crate::federation::{city_and_oracle, rows};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: &[&str] = &[
    "county_code",
    "township",
    "subsidy_type",
    "date_part('year', period)",
    "department",
    "CASE WHEN amount > 300 THEN 'high' ELSE 'low' END",
    "date_trunc('month', period)",
];

const FIGURES: &[&str] = &[
    "count(*)",
    "sum(amount)",
    "avg(amount)",
    "min(period)",
    "max(amount)",
    "count(DISTINCT person_id)",
    "count(account_no)",
    "count(DISTINCT township)",
    "count(DISTINCT paid_on)",
    "sum(CASE WHEN amount > 500 THEN 1 ELSE 0 END)",
];

/// Figures a node computes only over groups it holds whole: by county.
const BY_COUNTY: &[&str] = &[
    "median(amount)",
    "percentile_cont(0.75) WITHIN GROUP (ORDER BY amount)",
];

const FILTERS: &[&str] = &[
    "subsidy_type IN ('DIBAO', 'GAOLING')",
    "amount BETWEEN 100 AND 600",
    "period >= DATE '2023-01-01'",
    "county_code IN ('140212', '140215', '140226')",
    "village LIKE '%村'",
    "subsidy_type <> 'GENGDI'",
    "county_code = '140221'",
    "period < DATE '2022-06-01' OR amount > 1000",
];

/// Payments with their recipient, joined in their county, and their subsidy's standard.
const JOINED: &str = "disbursements d \
    JOIN persons p ON p.person_id = d.person_id AND p.county_code = d.county_code \
    JOIN subsidy_standards s ON s.subsidy_type = d.subsidy_type";

const JOINED_KEYS: &[&str] = &[
    "d.county_code",
    "d.subsidy_type",
    "p.gender",
    "p.death_date IS NULL",
    "date_part('year', d.period)",
    "s.department",
    "d.amount > s.cap",
];

const JOINED_FIGURES: &[&str] = &[
    "count(*)",
    "sum(d.amount)",
    "count(DISTINCT d.person_id)",
    "min(p.birth_date)",
    "max(d.period)",
    "avg(d.amount)",
    "count(p.death_date)",
    "sum(s.cap - d.amount)",
    "max(s.cap)",
];

const JOINED_FILTERS: &[&str] = &[
    "p.birth_date < DATE '1960-01-01'",
    "d.subsidy_type IN ('DIBAO', 'GAOLING')",
    "p.gender = 'M'",
    "d.county_code IN ('140212', '140222')",
    "s.min_age >= 60",
    "d.period >= DATE '2023-01-01'",
];

/// Conditions on groups; `amount` and `period` are the payments' in the join too.
const HAVING: &[&str] = &[
    "count(*) > 50",
    "sum(amount) > 5000",
    "min(period) < DATE '2022-01-01'",
];

/// Between `counts.start()` and `counts.end()` of `from`, drawn without repeats.
fn some<'a>(rng: &mut ChaCha8Rng, from: &[&'a str], counts: RangeInclusive<usize>) -> Vec<&'a str> {
    let count = rng.random_range(counts);
    from.choose_multiple(rng, count).copied().collect()
}

/// One aggregate over `disbursements`: up to three keys, up to three figures, up to two
/// filters, sometimes a HAVING; ordered by its keys.
fn draw(rng: &mut ChaCha8Rng) -> String {
    let keys = some(rng, KEYS, 0..=3);
    let mut figures = some(rng, FIGURES, 1..=3);
    if keys.contains(&"county_code") && rng.random_bool(0.5) {
        figures.extend(BY_COUNTY.choose(rng));
    }
    let filters = some(rng, FILTERS, 0..=2);
    aggregate("disbursements", &keys, &figures, &filters, rng)
}

/// One aggregate over payments joined with their recipients and standards, drawn as
/// [`draw`] draws one over payments alone.
fn draw_joined(rng: &mut ChaCha8Rng) -> String {
    let keys = some(rng, JOINED_KEYS, 0..=2);
    let figures = some(rng, JOINED_FIGURES, 1..=3);
    let filters = some(rng, JOINED_FILTERS, 0..=2);
    aggregate(JOINED, &keys, &figures, &filters, rng)
}

/// One aggregate composed into a larger query: its groups ranked or summed by a window,
/// aggregated again, joined by county with another, combined with another by a set
/// operation, totalled by ROLLUP, or its rows chosen by a subquery or a county-local
/// join.
fn draw_composed(rng: &mut ChaCha8Rng) -> String {
    let pick = |rng: &mut ChaCha8Rng, from: &[&'static str]| *from.choose(rng).expect("some");
    let (filter, other) = (pick(rng, FILTERS), pick(rng, FILTERS));
    let keys: Vec<&str> = KEYS
        .iter()
        .filter(|k| **k != "subsidy_type")
        .copied()
        .collect();
    let key = pick(rng, &keys);
    let figure = pick(
        rng,
        &[
            "count(*)",
            "sum(amount)",
            "max(amount)",
            "count(DISTINCT person_id)",
        ],
    );
    let set = pick(rng, &["UNION", "INTERSECT", "EXCEPT"]);
    let kind = pick(rng, &["DIBAO", "GAOLING", "TEKUN", "CANJI_HULI"]);
    let shapes = [
        format!(
            "SELECT {key}, {figure}, rank() OVER (ORDER BY {figure} DESC, {key}) FROM \
             disbursements WHERE {filter} GROUP BY 1"
        ),
        format!(
            "SELECT {key}, {figure}, sum(count(*)) OVER (ORDER BY {key}) FROM disbursements \
             WHERE {filter} GROUP BY 1"
        ),
        format!(
            "SELECT subsidy_type, sum(f), max(f), count(*) FROM (SELECT county_code, \
             subsidy_type, {figure} AS f FROM disbursements WHERE {filter} GROUP BY 1, 2) t \
             GROUP BY 1"
        ),
        format!(
            "SELECT a.county_code, a.f, b.n FROM (SELECT county_code, {figure} AS f FROM \
             disbursements WHERE {filter} GROUP BY 1) a JOIN (SELECT county_code, count(*) AS n \
             FROM persons WHERE death_date IS NULL GROUP BY 1) b ON a.county_code = b.county_code"
        ),
        format!(
            "SELECT county_code, subsidy_type FROM disbursements WHERE {filter} GROUP BY 1, 2 \
             {set} SELECT county_code, subsidy_type FROM disbursements WHERE {other} GROUP BY 1, 2"
        ),
        format!(
            "SELECT {key}, subsidy_type, {figure} FROM disbursements WHERE {filter} \
             GROUP BY ROLLUP({key}, subsidy_type)"
        ),
        format!(
            "SELECT {key}, {figure} FROM disbursements WHERE ({filter}) AND subsidy_type IN \
             (SELECT subsidy_type FROM subsidy_standards WHERE excludes_payroll) GROUP BY 1"
        ),
        format!(
            "SELECT {key}, {figure} FROM disbursements WHERE period = (SELECT max(period) \
             FROM disbursements WHERE {other}) GROUP BY 1"
        ),
        format!(
            "SELECT county_code, {figure} FROM disbursements d WHERE ({filter}) AND EXISTS \
             (SELECT 1 FROM persons p WHERE p.county_code = d.county_code \
             AND p.person_id = d.person_id AND p.death_date IS NULL) GROUP BY 1"
        ),
        format!(
            "SELECT p.county_code, p.gender, count(*), count(d.payment_id) FROM persons p \
             LEFT JOIN disbursements d ON d.county_code = p.county_code \
             AND d.person_id = p.person_id AND d.subsidy_type = '{kind}' GROUP BY 1, 2"
        ),
        format!("SELECT DISTINCT county_code, department FROM disbursements WHERE {filter}"),
    ];
    shapes.choose(rng).expect("shapes").clone()
}

/// `figures` by `keys` from `from` where all `filters` hold, sometimes with a HAVING,
/// ordered by the keys.
fn aggregate(
    from: &str,
    keys: &[&str],
    figures: &[&str],
    filters: &[&str],
    rng: &mut ChaCha8Rng,
) -> String {
    let filters: Vec<String> = filters.iter().map(|f| format!("({f})")).collect();
    let columns: Vec<&str> = keys.iter().chain(figures).copied().collect();
    let mut sql = format!("SELECT {} FROM {from}", columns.join(", "));
    if !filters.is_empty() {
        sql += &format!(" WHERE {}", filters.join(" AND "));
    }
    if !keys.is_empty() {
        let positions: Vec<String> = (1..=keys.len()).map(|i| i.to_string()).collect();
        sql += &format!(" GROUP BY {}", positions.join(", "));
        if rng.random_bool(0.3) {
            sql += &format!(" HAVING {}", HAVING.choose(rng).expect("conditions"));
        }
        sql += &format!(" ORDER BY {}", positions.join(", "));
    }
    sql
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_aggregates_are_answered_right_or_refused_by_rule() {
    let (_running, oracle, mut client) = city_and_oracle().await;
    // DataFusion's rewrite of a lone distinct count into groups sums `sum(amount)` again
    // at a wider precision, under a HAVING typed for the narrower: `count(DISTINCT
    // paid_on) … HAVING sum(amount) > 5000` fails in one context (and at a node), where
    // the city answers it. The oracle plans without the rewrite.
    assert!(oracle.remove_optimizer_rule("single_distinct_aggregation_to_group_by"));
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let (mut answered, mut refused) = (0, 0);
    for i in 0..160 {
        let sql = match i % 4 {
            2 => draw_joined(&mut rng),
            3 => draw_composed(&mut rng),
            _ => draw(&mut rng),
        };
        let central = oracle
            .sql(&sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}\n{e}"));
        let federated = match client.query(&sql).await {
            Ok(federated) => federated,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("refused by rule"), "{sql}\n{e}");
                refused += 1;
                continue;
            }
        };
        answered += 1;
        // Only an aggregate drawn alone orders its rows, by its keys; the rest are sets.
        let ordered = sql.contains(" ORDER BY 1");
        let (shown, all) = (rows(&federated.batches, ordered), rows(&central, ordered));
        if federated.suppressed_groups == 0 {
            assert_eq!(shown, all, "{sql}");
        } else {
            // Small groups left out (some a HAVING would drop anyway); every row shown is
            // one of central's.
            assert!(shown.len() <= all.len(), "{sql}");
            assert!(shown.iter().all(|r| all.contains(r)), "{sql}\n{shown:?}");
        }
    }
    assert!(
        answered > 3 * refused,
        "{answered} answered, {refused} refused"
    );
}
