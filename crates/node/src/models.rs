//! Problem models where the data lives: node-local rules and the node's half of linkage
//! (keyed tokens of identifiers out, matched tokens back).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, Date32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Date32Type};
use sunlight_domain::{Table, from_date32};
use sunlight_flightsql::{Statement, parse};
use sunlight_models::{Linkage, ModelPackage};
use sunlight_policy::Token;
use sunlight_proto::v1::model_step::Phase;
use sunlight_proto::v1::{ModelStep, ModelStepReply};

use crate::catalog::DataRoot;
use crate::config::LinkageConfig;
use crate::hits::HitTables;
use crate::node::Node;
use crate::{Error, Result};

/// Runs model steps over one node.
pub struct ModelRunner {
    node: Arc<Node>,
    hits: HitTables,
    linkage: LinkageConfig,
}

impl ModelRunner {
    /// A runner over `node`, writing hits under `root`.
    pub fn new(node: Arc<Node>, root: DataRoot, linkage: LinkageConfig) -> Self {
        Self {
            hits: HitTables::new(node.clone(), root),
            node,
            linkage,
        }
    }

    /// The node's hit tables.
    pub fn hits(&self) -> &HitTables {
        &self.hits
    }

    /// Runs one step.
    pub async fn step(&self, step: ModelStep) -> Result<ModelStepReply> {
        let package: ModelPackage =
            serde_json::from_slice(&step.package_json).map_err(|e| Error::Model {
                model: "?".into(),
                reason: format!("malformed package: {e}"),
            })?;
        let refuse = |reason: &str| Error::Model {
            model: package.id.clone(),
            reason: reason.to_string(),
        };
        if !matches!(step.phase(), Phase::Outcomes | Phase::Install) {
            self.check_standards(&package, step.standards_sha256.as_deref())
                .await?;
        }
        let started = Instant::now();
        let mut reply = ModelStepReply {
            linkage_epoch: self.linkage.epoch,
            ..Default::default()
        };
        match (step.phase(), &package.linkage) {
            (Phase::Outcomes, _) => {
                reply.summary = Some(self.hits.outcome_summary(&package.id).await?);
            }
            (Phase::Install, _) => self.hits.install(&package).await?,
            (Phase::Local, None) => {
                let ids = self.local_hits(&package).await?;
                let summary = self.hits.record(&package, &step.run_id, ids, step.shadow);
                reply.summary = Some(summary.await?);
            }
            (Phase::Local, Some(_)) => return Err(refuse("spans nodes; run it through linkage")),
            (_, None) => return Err(refuse("is node-local; it has no linkage steps")),
            (Phase::Tokens, Some(_)) => {
                let rows = self.link_rows(&package).await?;
                let mut counts: BTreeMap<Token, u32> = BTreeMap::new();
                let mut periods = BTreeSet::new();
                for row in &rows {
                    *counts.entry(row.token).or_default() += 1;
                    periods.extend(row.period);
                }
                reply.tokens = counts.keys().map(|t| t.to_vec()).collect();
                reply.counts = counts.into_values().collect();
                reply.periods = periods.into_iter().collect();
            }
            (Phase::Cover, Some(Linkage::CoveredBy { cover })) => {
                reply.tokens = self.cover_tokens(&package, cover, &step.periods).await?;
            }
            (Phase::Cover, Some(Linkage::Duplicate)) => {
                return Err(refuse("a duplicate linkage has no cover step"));
            }
            (Phase::Apply, Some(_)) => {
                let matched: HashSet<&[u8]> = step.tokens.iter().map(Vec::as_slice).collect();
                let ids = self
                    .link_rows(&package)
                    .await?
                    .into_iter()
                    .filter(|row| matched.contains(row.token.as_slice()))
                    .map(|row| row.payment_id)
                    .collect();
                let summary = self.hits.record(&package, &step.run_id, ids, step.shadow);
                reply.summary = Some(summary.await?);
            }
        }
        if let Some(summary) = reply.summary.as_mut() {
            summary.seconds = started.elapsed().as_secs_f64();
        }
        Ok(reply)
    }

    /// Refuses `package` where its rule or cover reads `subsidy_standards` and this node's
    /// copy is not `expected`, the city's: its hits would be found by other standards.
    async fn check_standards(&self, package: &ModelPackage, expected: Option<&str>) -> Result<()> {
        let Some(expected) = expected else {
            return Ok(());
        };
        let cover = match &package.linkage {
            Some(Linkage::CoveredBy { cover }) => Some(cover.as_str()),
            _ => None,
        };
        let state = self.node.state();
        for sql in std::iter::once(package.rule.as_str()).chain(cover) {
            let statement = parse(state, sql)?;
            let reads_standards = state
                .resolve_table_references(&statement)?
                .iter()
                .any(|t| t.table() == Table::SubsidyStandards.name());
            if reads_standards {
                return self.node.hold_standards(expected).await;
            }
        }
        Ok(())
    }

    async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let (_, stream) = self.node.query(&Statement::new(sql)).await?;
        Ok(futures::TryStreamExt::try_collect(stream).await?)
    }

    async fn local_hits(&self, package: &ModelPackage) -> Result<BTreeSet<String>> {
        let mut ids = BTreeSet::new();
        for batch in self.collect(&package.rule).await? {
            let column = string_column(&batch, 0, &package.id)?;
            ids.extend(column.iter().flatten().map(str::to_string));
        }
        Ok(ids)
    }

    fn token(&self, model: &str, value: &str) -> Result<Token> {
        let tokens = self
            .node
            .privacy()
            .policy
            .persons
            .tokenizer()
            .ok_or_else(|| Error::Model {
                model: model.to_string(),
                reason: "this node has no linkage key; set [linkage] key in its config".into(),
            })?;
        Ok(tokens.token(value))
    }

    /// The rule's rows with their tokens; rows with a null link value never link.
    async fn link_rows(&self, package: &ModelPackage) -> Result<Vec<LinkRow>> {
        let mut rows = Vec::new();
        for batch in self.collect(&package.rule).await? {
            let ids = string_column(&batch, 0, &package.id)?;
            let keys = string_column(&batch, 1, &package.id)?;
            let periods = match package.linkage {
                Some(Linkage::CoveredBy { .. }) => Some(date_column(&batch, 2, &package.id)?),
                _ => None,
            };
            for i in 0..batch.num_rows() {
                if ids.is_null(i) || keys.is_null(i) {
                    continue;
                }
                let (value, period) = match periods {
                    Some(p) if p.is_null(i) => continue,
                    Some(p) => (link_value(keys.value(i), p.value(i)), Some(p.value(i))),
                    None => (keys.value(i).to_string(), None),
                };
                rows.push(LinkRow {
                    payment_id: ids.value(i).to_string(),
                    token: self.token(&package.id, &value)?,
                    period,
                });
            }
        }
        Ok(rows)
    }

    async fn cover_tokens(
        &self,
        package: &ModelPackage,
        cover: &str,
        periods: &[i32],
    ) -> Result<Vec<Vec<u8>>> {
        let mut periods = periods.to_vec();
        periods.sort_unstable();
        periods.dedup();
        let mut tokens = BTreeSet::new();
        for batch in self.collect(cover).await? {
            let people = string_column(&batch, 0, &package.id)?;
            let starts = date_column(&batch, 1, &package.id)?;
            let ends = date_column(&batch, 2, &package.id)?;
            for i in 0..batch.num_rows() {
                if people.is_null(i) || starts.is_null(i) {
                    continue;
                }
                let from = periods.partition_point(|p| *p < starts.value(i));
                let to = if ends.is_null(i) {
                    periods.len()
                } else {
                    periods.partition_point(|p| *p <= ends.value(i))
                };
                for &p in periods.get(from..to).unwrap_or_default() {
                    tokens.insert(self.token(&package.id, &link_value(people.value(i), p))?);
                }
            }
        }
        Ok(tokens.into_iter().map(|t| t.to_vec()).collect())
    }
}

/// One row of a rule that links across nodes.
struct LinkRow {
    payment_id: String,
    token: Token,
    period: Option<i32>,
}

/// What a person and a day link on: `PERSON|YYYY-MM-DD`.
fn link_value(person: &str, day: i32) -> String {
    format!("{person}|{}", from_date32(day))
}

/// Column `i` as UTF-8 text, whichever string type the plan produced.
fn string_column(batch: &RecordBatch, i: usize, model: &str) -> Result<StringArray> {
    arrow::compute::cast(batch.column(i), &DataType::Utf8)
        .ok()
        .and_then(|a| a.as_string_opt::<i32>().cloned())
        .ok_or_else(|| Error::Model {
            model: model.to_string(),
            reason: format!("column {} must be text", batch.schema().field(i).name()),
        })
}

fn date_column<'a>(batch: &'a RecordBatch, i: usize, model: &str) -> Result<&'a Date32Array> {
    batch
        .column(i)
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(|| Error::Model {
            model: model.to_string(),
            reason: format!("column {} must be a date", batch.schema().field(i).name()),
        })
}
