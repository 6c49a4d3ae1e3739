//! The generator's planted hits equal each model's rule, written here in SQL straight
//! from DOMAIN.md and run by centralized DataFusion over the written files. Rules that
//! say "the same node" run over one node's files at a time.

use std::collections::BTreeSet;
use std::path::Path;

use sunlight_domain::{NodeCode, ProblemModel};

use crate::oracle::{city_context, context, strings};
use crate::support::shared_city;

/// Joins a disbursement `d` with the standard `s` of its type valid at its period.
const STANDARD: &str = "JOIN subsidy_standards s ON s.subsidy_type = d.subsidy_type \
    AND s.valid_from <= d.period AND (s.valid_to IS NULL OR d.period <= s.valid_to)";

fn rule(model: ProblemModel) -> String {
    match model {
        ProblemModel::PayrollOnDibao => format!(
            "SELECT DISTINCT d.payment_id FROM disbursements d {STANDARD} \
             JOIN payroll p ON p.person_id = d.person_id AND p.start_date <= d.period \
               AND (p.end_date IS NULL OR p.end_date >= d.period) \
             WHERE s.excludes_payroll"
        ),
        ProblemModel::UnderageElderlyAllowance => format!(
            "WITH a AS (SELECT d.payment_id, d.period, s.min_age, \
               TRY_CAST(substr(d.person_id, 7, 4) || '-' || substr(d.person_id, 11, 2) || '-' \
                 || substr(d.person_id, 13, 2) AS DATE) AS birth \
             FROM disbursements d {STANDARD} WHERE s.min_age IS NOT NULL) \
             SELECT payment_id FROM a WHERE birth IS NOT NULL AND \
               date_part('year', period) - date_part('year', birth) \
               - CASE WHEN date_part('month', period) * 100 + date_part('day', period) \
                   < date_part('month', birth) * 100 + date_part('day', birth) THEN 1 ELSE 0 END \
               < min_age"
        ),
        ProblemModel::DuplicatePayment => "SELECT DISTINCT d.payment_id FROM disbursements d \
             JOIN disbursements o ON o.person_id = d.person_id AND o.subsidy_type = d.subsidy_type \
               AND o.period = d.period AND o.payment_id <> d.payment_id"
            .to_string(),
        ProblemModel::DeceasedRecipient => "SELECT DISTINCT d.payment_id FROM disbursements d \
             JOIN persons p ON p.person_id = d.person_id \
             WHERE p.death_date IS NOT NULL AND p.death_date < d.period"
            .to_string(),
        ProblemModel::SharedAccount => "WITH r AS (SELECT d.payment_id, d.account_no, d.period, \
               CASE WHEN p.household_id IS NULL THEN 'person:' || d.person_id \
                    ELSE 'household:' || p.household_id END AS household \
             FROM disbursements d LEFT JOIN persons p ON p.person_id = d.person_id \
             WHERE d.account_no IS NOT NULL), \
             g AS (SELECT account_no, period FROM r GROUP BY account_no, period \
                   HAVING count(DISTINCT household) >= 2) \
             SELECT DISTINCT r.payment_id FROM r JOIN g ON r.account_no = g.account_no AND r.period = g.period"
            .to_string(),
        ProblemModel::OverStandard => format!("SELECT d.payment_id FROM disbursements d {STANDARD} WHERE d.amount > s.cap"),
        ProblemModel::DisabilityWithoutCert => format!(
            "SELECT d.payment_id FROM disbursements d {STANDARD} WHERE s.requires_cert_level IS NOT NULL \
             EXCEPT \
             SELECT d.payment_id FROM disbursements d {STANDARD} \
             JOIN disability_certs c ON c.person_id = d.person_id AND c.level <= s.requires_cert_level \
               AND c.issued_on <= d.period AND (c.revoked_on IS NULL OR c.revoked_on > d.period)"
        ),
    }
}

/// Whether the rule reads records of every node ("on any node").
fn spans_nodes(model: ProblemModel) -> bool {
    matches!(
        model,
        ProblemModel::PayrollOnDibao | ProblemModel::DuplicatePayment
    )
}

/// Each rule's hits over `city`, by centralized DataFusion.
pub async fn hits(city: &Path, model: ProblemModel) -> BTreeSet<String> {
    if spans_nodes(model) {
        return strings(&city_context(city).await, &rule(model)).await;
    }
    let mut all = BTreeSet::new();
    for node in NodeCode::all() {
        all.extend(strings(&context(city, &[node]), &rule(model)).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_hits_equal_every_rule() {
    let city = shared_city();
    for model in ProblemModel::ALL {
        let expected = city.report.truth.of(model);
        assert!(!expected.is_empty(), "{model} has no planted hits");
        let found = hits(city.dir.path(), model).await;
        let missed: Vec<_> = expected.difference(&found).collect();
        let extra: Vec<_> = found.difference(expected).collect();
        assert!(
            missed.is_empty() && extra.is_empty(),
            "{model}: planted but not found {missed:?}; found but not planted {extra:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn truth_file_matches_the_report() {
    let city = shared_city();
    let read = sunlight_datagen::GroundTruth::read(city.dir.path()).unwrap();
    assert_eq!(read, city.report.truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_seed_writes_the_same_city() {
    let a = crate::support::generated_city(120, 5);
    let b = crate::support::generated_city(120, 5);
    assert_eq!(a.report.truth, b.report.truth);
    assert_eq!(a.report.rows, b.report.rows);
    let sql = "SELECT payment_id || person_id || CAST(amount AS VARCHAR) || CAST(period AS VARCHAR) FROM disbursements";
    let node: NodeCode = "140221".parse().unwrap();
    assert_eq!(
        strings(&context(a.dir.path(), &[node]), sql).await,
        strings(&context(b.dir.path(), &[node]), sql).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jule_story_is_on_140215() {
    let city = shared_city();
    let ctx = context(city.dir.path(), &["140215".parse().unwrap()]);
    let sql = "SELECT count(DISTINCT person_id), count(*), CAST(sum(amount) AS BIGINT) FROM disbursements \
               WHERE township = '聚乐乡' AND subsidy_type = 'YULU' AND period = DATE '2021-09-01' \
               AND person_id IN (SELECT person_id FROM disbursements WHERE township = '聚乐乡' \
                 AND subsidy_type = 'YULU' AND period = DATE '2021-09-01' \
                 GROUP BY person_id HAVING count(DISTINCT village) = 2)";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let row = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        row.contains("| 10 ") && row.contains("| 20 ") && row.contains("| 60000 "),
        "{row}"
    );
}
