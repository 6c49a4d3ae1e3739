//! The ground truth: planted hits per model, written beside the data as `truth.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sunlight_domain::ProblemModel;

use crate::{Error, Result};

/// File name of the ground truth under the output folder.
pub const TRUTH_FILE: &str = "truth.json";

/// The payment ids each model must flag, and how the city was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Seed the city was generated with.
    pub seed: u64,
    /// Ordinary people per county, before planted ones.
    pub persons_per_county: usize,
    /// Model id to the sorted payment ids that are its hits.
    pub hits: BTreeMap<String, BTreeSet<String>>,
}

impl GroundTruth {
    pub(crate) fn new(seed: u64, persons_per_county: usize) -> Self {
        let hits = ProblemModel::ALL
            .iter()
            .map(|m| (m.id().to_string(), BTreeSet::new()))
            .collect();
        Self {
            seed,
            persons_per_county,
            hits,
        }
    }

    pub(crate) fn record(&mut self, model: ProblemModel, payment_id: &str) {
        self.hits
            .entry(model.id().to_string())
            .or_default()
            .insert(payment_id.to_string());
    }

    /// The hits of `model`.
    pub fn of(&self, model: ProblemModel) -> &BTreeSet<String> {
        static EMPTY: BTreeSet<String> = BTreeSet::new();
        self.hits.get(model.id()).unwrap_or(&EMPTY)
    }

    /// Reads `truth.json` from a generated city's folder.
    pub fn read(city: &Path) -> Result<Self> {
        let path = city.join(TRUTH_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::Truth { path, source })
    }

    pub(crate) fn write(&self, city: &Path) -> Result<()> {
        let path = city.join(TRUTH_FILE);
        let text = serde_json::to_string_pretty(self).expect("ground truth serializes");
        std::fs::write(&path, text).map_err(|source| Error::Io { path, source })
    }
}
