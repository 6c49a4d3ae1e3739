//! The node-local tables of model results: `model_hits` (one row per hit of a run, with
//! the row's class-P columns) and `model_outcomes` (county analysts' verdicts on hits).
//! Both are append-only Parquet folders under the data root.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Decimal128Type, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::JoinType;
use datafusion::prelude::{DataFrame, col, lit};
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use sunlight_models::ModelPackage;
use sunlight_proto::v1::{CaseOpening, Outcome, RunHits, RunSummary, TownshipSummary};

use crate::catalog::DataRoot;
use crate::node::Node;
use crate::{Error, Result};

/// Name of the node-local table of model hits.
pub const MODEL_HITS: &str = "model_hits";
/// Name of the node-local table of outcomes of hits.
pub const MODEL_OUTCOMES: &str = "model_outcomes";
/// Name of the node-local table of installed model versions.
pub const MODEL_VERSIONS: &str = "model_versions";

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Schema of `model_hits`: the hit, its run, and the row's class-P columns.
pub fn hits_schema() -> SchemaRef {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("model_id"),
        Field::new("model_version", DataType::Int32, false),
        utf8("payment_id"),
        utf8("run_id"),
        Field::new("detected_at", timestamp(), false),
        utf8("county_code"),
        utf8("township"),
        utf8("village"),
        utf8("subsidy_type"),
        Field::new("period", DataType::Date32, false),
        Field::new("paid_on", DataType::Date32, false),
        utf8("department"),
    ]))
}

/// Schema of `model_outcomes`; the latest row per (model, payment) stands.
pub fn outcomes_schema() -> SchemaRef {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("model_id"),
        utf8("payment_id"),
        utf8("status"),
        Field::new("recovered", DataType::Decimal128(12, 2), true),
        utf8("note"),
        utf8("recorded_by"),
        Field::new("recorded_at", timestamp(), false),
    ]))
}

/// Schema of `model_versions`: every model version installed here, with its rule, so
/// the county can read exactly what runs over its data.
pub fn versions_schema() -> SchemaRef {
    let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        utf8("model_id"),
        Field::new("model_version", DataType::Int32, false),
        utf8("title_zh"),
        utf8("title_en"),
        utf8("package"),
        Field::new("installed_at", timestamp(), false),
    ]))
}

/// A verdict on a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Confirmed,
    Dismissed,
}

impl Status {
    /// The verdict as `model_outcomes` writes it.
    fn name(self) -> &'static str {
        match self {
            Status::Confirmed => "confirmed",
            Status::Dismissed => "dismissed",
        }
    }
}

/// The hit tables of one node.
pub struct HitTables {
    node: Arc<Node>,
    root: DataRoot,
}

impl HitTables {
    /// The tables of `node` under `root`.
    pub fn new(node: Arc<Node>, root: DataRoot) -> Self {
        Self { node, root }
    }

    /// Sums the hits `ids` by township, with their recorded outcomes; unless `shadow`,
    /// appends them to `model_hits` under `run_id`.
    pub async fn record(
        &self,
        package: &ModelPackage,
        run_id: &str,
        ids: BTreeSet<String>,
        shadow: bool,
    ) -> Result<RunSummary> {
        let ctx = self.node.context();
        let hit_ids = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "hit_id",
                DataType::Utf8,
                false,
            )])),
            vec![Arc::new(StringArray::from_iter_values(&ids)) as ArrayRef],
        )?;
        let rows = ctx
            .read_batch(hit_ids)?
            .join(
                ctx.table("disbursements").await?,
                JoinType::Inner,
                &["hit_id"],
                &["payment_id"],
                None,
            )?
            .select_columns(&[
                "payment_id",
                "county_code",
                "township",
                "village",
                "subsidy_type",
                "period",
                "paid_on",
                "department",
                "person_id",
                "amount",
            ])?
            .collect()
            .await?;
        let outcomes = self.outcomes(&package.id).await?;
        let mut total = Tally::default();
        let mut townships: BTreeMap<String, Tally> = BTreeMap::new();
        let mut verdicts = Verdicts::default();
        let now = chrono::Utc::now().timestamp_millis();
        let mut written = Vec::new();
        for batch in &rows {
            let payments = batch.column(0).as_string::<i32>();
            let township = batch.column(2).as_string::<i32>();
            let persons = batch.column(8).as_string::<i32>();
            let amounts = batch.column(9).as_primitive::<Decimal128Type>();
            for i in 0..batch.num_rows() {
                let (person, cents) = (persons.value(i), amounts.value(i));
                total.add(person, cents);
                townships
                    .entry(township.value(i).to_string())
                    .or_default()
                    .add(person, cents);
                verdicts.add(outcomes.get(payments.value(i)));
            }
            let n = batch.num_rows();
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    &package.id,
                    n,
                ))),
                Arc::new(Int32Array::from_value(package.version as i32, n)),
                batch.column(0).clone(),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    run_id, n,
                ))),
                Arc::new(TimestampMillisecondArray::from_value(now, n).with_timezone("UTC")),
            ];
            columns.extend(batch.columns()[1..8].iter().cloned());
            written.push(RecordBatch::try_new(hits_schema(), columns)?);
        }
        if !shadow && !written.is_empty() {
            let name = format!("{run_id}-{}-v{}.parquet", package.id, package.version);
            self.append(MODEL_HITS, &name, hits_schema(), &written)
                .await?;
        }
        let mut summary = RunSummary {
            hits: total.hits,
            persons: total.persons.len() as u64,
            amount: yuan(total.cents),
            townships: townships
                .into_iter()
                .map(|(township, t)| TownshipSummary {
                    township,
                    hits: t.hits,
                    persons: t.persons.len() as u64,
                    amount: yuan(t.cents),
                })
                .collect(),
            ..Default::default()
        };
        verdicts.fill(&mut summary);
        Ok(summary)
    }

    /// The outcomes recorded for every hit of `model` on this node.
    pub async fn outcome_summary(&self, model: &str) -> Result<RunSummary> {
        let mut verdicts = Verdicts::default();
        for outcome in self.outcomes(model).await?.values() {
            verdicts.add(Some(outcome));
        }
        let mut summary = RunSummary::default();
        verdicts.fill(&mut summary);
        Ok(summary)
    }

    /// The latest verdict per payment of `model`.
    async fn outcomes(&self, model: &str) -> Result<HashMap<String, (Status, i128)>> {
        let batches = self
            .node
            .context()
            .table(MODEL_OUTCOMES)
            .await?
            .filter(col("model_id").eq(lit(model)))?
            .sort(vec![col("recorded_at").sort(true, false)])?
            .select_columns(&["payment_id", "status", "recovered"])?
            .collect()
            .await?;
        let mut latest = HashMap::new();
        for batch in &batches {
            let payments = batch.column(0).as_string::<i32>();
            let statuses = batch.column(1).as_string::<i32>();
            let recovered = batch.column(2).as_primitive::<Decimal128Type>();
            for i in 0..batch.num_rows() {
                let status = match statuses.value(i) {
                    "confirmed" => Status::Confirmed,
                    _ => Status::Dismissed,
                };
                let cents = if recovered.is_null(i) {
                    0
                } else {
                    recovered.value(i)
                };
                latest.insert(payments.value(i).to_string(), (status, cents));
            }
        }
        Ok(latest)
    }

    /// The disbursements rows of `ids`, each of which must be a hit of `model` here, as an
    /// Arrow IPC stream: what an investigator sees of an audited case opening.
    pub async fn open_case(&self, opening: &CaseOpening) -> Result<Vec<u8>> {
        let refuse = |reason: String| Error::Model {
            model: opening.model_id.clone(),
            reason,
        };
        if opening.case_no.trim().is_empty() || opening.reason.trim().is_empty() {
            return Err(refuse(
                "a case opening needs a case number and a reason".into(),
            ));
        }
        if opening.payment_ids.is_empty() {
            return Err(refuse("name at least one hit to open".into()));
        }
        let ids: Vec<_> = opening
            .payment_ids
            .iter()
            .map(|p| lit(p.as_str()))
            .collect();
        let ctx = self.node.context();
        let hits = ctx
            .table(MODEL_HITS)
            .await?
            .filter(
                col("model_id")
                    .eq(lit(opening.model_id.as_str()))
                    .and(col("payment_id").in_list(ids.clone(), false)),
            )?
            .select_columns(&["payment_id"])?
            .distinct()?
            .collect()
            .await?;
        let found: BTreeSet<String> = hits
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        if let Some(missing) = opening.payment_ids.iter().find(|p| !found.contains(*p)) {
            return Err(refuse(format!(
                "payment {missing} is not a hit of this model on this node"
            )));
        }
        let rows = ctx
            .table("disbursements")
            .await?
            .filter(col("payment_id").in_list(ids, false))?
            .sort(vec![col("payment_id").sort(true, false)])?
            .collect()
            .await?;
        tracing::info!(
            case = %opening.case_no,
            investigator = %opening.investigator,
            model = %opening.model_id,
            rows = rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
            "case opened"
        );
        ipc_stream(&sunlight_domain::Table::Disbursements.schema(), &rows)
    }

    /// The rows of `model_hits` of `model` whose `column` is `value`.
    async fn hits_of(&self, model: &str, column: &str, value: &str) -> Result<DataFrame> {
        let hits = self.node.context().table(MODEL_HITS).await?;
        Ok(hits.filter(
            col("model_id")
                .eq(lit(model))
                .and(col(column).eq(lit(value))),
        )?)
    }

    /// The hits run `run_id` of `model` recorded here, by payment, each with the latest
    /// verdict the county's analysts recorded on it and the amount recovered: what an
    /// investigator picks a case's hits from. They hold the rows' class-P columns only.
    pub async fn listed(&self, hits: &RunHits) -> Result<Vec<u8>> {
        let rows = self
            .hits_of(&hits.model_id, "run_id", &hits.run_id)
            .await?
            .sort(vec![col("payment_id").sort(true, false)])?
            .collect()
            .await?;
        let verdicts = self.outcomes(&hits.model_id).await?;
        let hits_schema = hits_schema();
        let payment = hits_schema.index_of("payment_id")?;
        let mut fields = hits_schema.fields().to_vec();
        fields.push(Arc::new(Field::new("verdict", DataType::Utf8, true)));
        fields.push(Arc::new(Field::new(
            "recovered",
            DataType::Decimal128(12, 2),
            true,
        )));
        let schema = Arc::new(Schema::new(fields));
        let mut listed = Vec::new();
        for batch in &rows {
            let verdict: Vec<Option<&(Status, i128)>> = batch
                .column(payment)
                .as_string::<i32>()
                .iter()
                .map(|p| p.and_then(|p| verdicts.get(p)))
                .collect();
            let names: StringArray = verdict
                .iter()
                .map(|v| v.map(|(status, _)| status.name()))
                .collect();
            let recovered = verdict
                .iter()
                .map(|v| v.map(|(_, cents)| *cents))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(12, 2)?;
            let mut columns = batch.columns().to_vec();
            columns.extend([Arc::new(names) as ArrayRef, Arc::new(recovered)]);
            listed.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        ipc_stream(&schema, &listed)
    }

    /// Records an analyst's verdict on a hit of this node.
    pub async fn record_outcome(&self, outcome: &Outcome, user: &str) -> Result<i64> {
        let refuse = |reason: String| Error::Model {
            model: outcome.model_id.clone(),
            reason,
        };
        if !matches!(outcome.status.as_str(), "confirmed" | "dismissed") {
            return Err(refuse(format!(
                "status {:?} must be \"confirmed\" or \"dismissed\"",
                outcome.status
            )));
        }
        let recovered = match outcome.recovered.trim() {
            "" => None,
            text => Some(cents(text).ok_or_else(|| {
                refuse(format!(
                    "recovered amount {text:?} is not a non-negative yuan amount with at most two decimals"
                ))
            })?),
        };
        let known = self
            .hits_of(&outcome.model_id, "payment_id", &outcome.payment_id)
            .await?
            .count()
            .await?;
        if known == 0 {
            return Err(refuse(format!(
                "payment {} is not a hit of this model on this node",
                outcome.payment_id
            )));
        }
        let now = chrono::Utc::now().timestamp_millis();
        let text = |v: &str| Arc::new(StringArray::from(vec![v.to_string()])) as ArrayRef;
        let batch = RecordBatch::try_new(
            outcomes_schema(),
            vec![
                text(&outcome.model_id),
                text(&outcome.payment_id),
                text(&outcome.status),
                Arc::new(
                    Decimal128Array::from(vec![recovered])
                        .with_precision_and_scale(12, 2)
                        .expect("12,2 is a valid decimal type"),
                ),
                text(&outcome.note),
                text(user),
                Arc::new(TimestampMillisecondArray::from(vec![now]).with_timezone("UTC")),
            ],
        )?;
        let name = format!("{now}-{}.parquet", uuid::Uuid::new_v4().simple());
        self.append(MODEL_OUTCOMES, &name, outcomes_schema(), &[batch])
            .await?;
        Ok(now)
    }

    /// Installs `package` unless this version is installed already.
    pub async fn install(&self, package: &ModelPackage) -> Result<()> {
        let installed = self
            .node
            .context()
            .table(MODEL_VERSIONS)
            .await?
            .filter(
                col("model_id")
                    .eq(lit(package.id.as_str()))
                    .and(col("model_version").eq(lit(package.version as i32))),
            )?
            .count()
            .await?;
        if installed > 0 {
            return Ok(());
        }
        let text = |v: &str| Arc::new(StringArray::from(vec![v.to_string()])) as ArrayRef;
        let now = chrono::Utc::now().timestamp_millis();
        let batch = RecordBatch::try_new(
            versions_schema(),
            vec![
                text(&package.id),
                Arc::new(Int32Array::from(vec![package.version as i32])),
                text(&package.title_zh),
                text(&package.title_en),
                text(&serde_json::to_string(package).expect("packages serialize")),
                Arc::new(TimestampMillisecondArray::from(vec![now]).with_timezone("UTC")),
            ],
        )?;
        let name = format!("{}-v{}.parquet", package.id, package.version);
        self.append(MODEL_VERSIONS, &name, versions_schema(), &[batch])
            .await
    }

    /// Writes `batches` as one new Parquet file `name` in the folder `table`.
    async fn append(
        &self,
        table: &str,
        name: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<()> {
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, schema, None).map_err(|e| Error::Arrow(e.into()))?;
        for batch in batches {
            writer.write(batch).map_err(|e| Error::Arrow(e.into()))?;
        }
        writer.close().map_err(|e| Error::Arrow(e.into()))?;
        let location = self.root.folder(table).join(name);
        self.root
            .store()
            .put(&location, bytes.into())
            .await
            .map_err(|source| Error::Store {
                location: self.root.object_url(&location).to_string(),
                source,
            })?;
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    hits: u64,
    persons: HashSet<String>,
    cents: i128,
}

impl Tally {
    fn add(&mut self, person: &str, cents: i128) {
        self.hits += 1;
        self.persons.insert(person.to_string());
        self.cents += cents;
    }
}

#[derive(Default)]
struct Verdicts {
    confirmed: u64,
    dismissed: u64,
    recovered: i128,
}

impl Verdicts {
    fn add(&mut self, outcome: Option<&(Status, i128)>) {
        match outcome {
            Some((Status::Confirmed, cents)) => {
                self.confirmed += 1;
                self.recovered += cents;
            }
            Some((Status::Dismissed, cents)) => {
                self.dismissed += 1;
                self.recovered += cents;
            }
            None => {}
        }
    }

    fn fill(&self, summary: &mut RunSummary) {
        summary.confirmed = self.confirmed;
        summary.dismissed = self.dismissed;
        summary.recovered = yuan(self.recovered);
    }
}

/// `cents` as yuan with two decimals.
fn yuan(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// Cents of a non-negative yuan amount with at most two decimals.
fn cents(text: &str) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 2
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let fraction: i128 = format!("{fraction:0<2}").parse().ok()?;
    Some(whole * 100 + fraction)
}

/// `rows` as an Arrow IPC stream under `schema`, the columns' contract types whatever
/// layout the files read in.
fn ipc_stream(schema: &SchemaRef, rows: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, schema)?;
    for batch in rows {
        writer.write(&RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_as_yuan() {
        assert_eq!(cents("500"), Some(50_000));
        assert_eq!(cents("500.5"), Some(50_050));
        assert_eq!(cents("0.07"), Some(7));
        for bad in ["", "-1", "1.234", "1,5", "abc", ".5"] {
            assert_eq!(cents(bad), None, "{bad}");
        }
        assert_eq!(yuan(50_050), "500.50");
        assert_eq!(yuan(-7), "-0.07");
    }
}
