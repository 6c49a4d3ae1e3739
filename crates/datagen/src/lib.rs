//! A deterministic synthetic city in the storage layout of `DOMAIN.md`: eleven node
//! folders of Parquet tables, with planted cases for every problem model and a
//! ground-truth file listing the planted hits.
#![warn(missing_docs)]

mod calendar;
mod county;
mod error;
mod names;
mod payments;
mod plants;
mod rows;
mod truth;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use sunlight_domain::{NodeCode, Table, default_standards, standards_batch};

pub use error::{Error, Result};
pub use names::{JULE_TOWNSHIP, JULE_VILLAGES};
pub use truth::{GroundTruth, TRUTH_FILE};

use county::CountyPeople;
use names::{Geography, node_salt};
use plants::NodePlants;
use rows::{
    CertColumns, PaymentColumns, PaymentRow, PayrollColumns, PayrollRow, PersonColumns, TableFile,
};

/// What to generate.
#[derive(Debug, Clone)]
pub struct CityConfig {
    /// Ordinary people per county; planted people come on top.
    pub persons_per_county: usize,
    /// Seed of every random draw: the same seed gives the same files.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct CityReport {
    /// Rows written per node and table.
    pub rows: BTreeMap<NodeCode, BTreeMap<Table, usize>>,
    /// The planted hits.
    pub truth: GroundTruth,
}

impl CityReport {
    /// Rows of `table` over all nodes.
    pub fn total(&self, table: Table) -> usize {
        self.rows.values().filter_map(|t| t.get(&table)).sum()
    }
}

/// The data root of `node` inside a generated city.
pub fn node_root(city: &Path, node: NodeCode) -> PathBuf {
    city.join(node.as_str())
}

/// Writes the city under `out`: `<out>/<node code>/<table>/part-0.parquet` for every node
/// and `<out>/truth.json`. `progress` advances by one per ordinary person.
pub fn generate_city(
    out: &Path,
    config: &CityConfig,
    progress: &ProgressBar,
) -> Result<CityReport> {
    let repeats = 1 + config.persons_per_county / 5000;
    let mut plan = plants::plan(config.seed, repeats);
    let mut truth = GroundTruth::new(config.seed, config.persons_per_county);
    let mut rows = BTreeMap::new();
    let mut city_payroll = Vec::new();
    progress.set_length((config.persons_per_county * NodeCode::counties().count()) as u64);
    for node in NodeCode::counties() {
        let mut writer = NodeWriter::new(out, node);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ node_salt(node));
        let mut people = CountyPeople::new(node, Geography::of(node, config.seed));
        for _ in 0..config.persons_per_county {
            let (person, records) = people.next(&mut rng);
            writer.persons.push(&person)?;
            for payment in records.payments {
                writer.payment(payment)?;
            }
            match records.payroll {
                Some(row) if row.county_code == node => writer.payroll.push(&row)?,
                Some(row) => city_payroll.push(row),
                None => {}
            }
            if let Some(cert) = records.cert {
                writer.certs.push(&cert)?;
            }
            progress.inc(1);
        }
        let planted = plan.remove(&node).unwrap_or_default();
        rows.insert(node, writer.finish(planted, Vec::new(), &mut truth)?);
    }
    let planted = plan.remove(&NodeCode::CITY).unwrap_or_default();
    let city = NodeWriter::new(out, NodeCode::CITY);
    rows.insert(
        NodeCode::CITY,
        city.finish(planted, city_payroll, &mut truth)?,
    );
    truth.write(out)?;
    progress.finish();
    Ok(CityReport { rows, truth })
}

/// The open table files of one node and its payment counter.
struct NodeWriter {
    node: NodeCode,
    root: PathBuf,
    persons: TableFile<PersonColumns>,
    payments: TableFile<PaymentColumns>,
    payroll: TableFile<PayrollColumns>,
    certs: TableFile<CertColumns>,
    next_payment: u64,
}

impl NodeWriter {
    fn new(city: &Path, node: NodeCode) -> Self {
        let root = node_root(city, node);
        Self {
            node,
            persons: TableFile::new(node, &root),
            payments: TableFile::new(node, &root),
            payroll: TableFile::new(node, &root),
            certs: TableFile::new(node, &root),
            root,
            next_payment: 0,
        }
    }

    /// Writes a payment under the next payment id and returns that id.
    fn payment(&mut self, mut row: PaymentRow) -> Result<String> {
        self.next_payment += 1;
        row.payment_id = format!("{}-{:09}", self.node, self.next_payment);
        self.payments.push(&row)?;
        Ok(row.payment_id)
    }

    /// Adds the planted records and extra payroll rows, closes every file and writes the
    /// node's copy of the standards.
    fn finish(
        mut self,
        planted: NodePlants,
        payroll: Vec<PayrollRow>,
        truth: &mut GroundTruth,
    ) -> Result<BTreeMap<Table, usize>> {
        for person in &planted.persons {
            self.persons.push(person)?;
        }
        for (row, hits) in planted.payments {
            let id = self.payment(row)?;
            for model in hits {
                truth.record(model, &id);
            }
        }
        for row in planted.payroll.iter().chain(&payroll) {
            self.payroll.push(row)?;
        }
        for cert in &planted.certs {
            self.certs.push(cert)?;
        }
        std::fs::create_dir_all(&self.root).map_err(|source| Error::Io {
            path: self.root.clone(),
            source,
        })?;
        rows::write_batch(
            &self.root,
            &standards_batch(&default_standards()),
            Table::SubsidyStandards,
        )?;
        Ok(BTreeMap::from([
            (Table::Persons, self.persons.close()?),
            (Table::Disbursements, self.payments.close()?),
            (Table::Payroll, self.payroll.close()?),
            (Table::DisabilityCerts, self.certs.close()?),
            (Table::SubsidyStandards, default_standards().len()),
        ]))
    }
}
