//! [`NodeFragmentExec`]: one partition per node; partition *i* ships the fragment to node
//! *i* over Arrow Flight and streams back what the node computed.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, displayable,
};
use futures::{TryStreamExt, stream};
use prost::Message;
use sunlight_flightsql::MAX_REQUEST;
use sunlight_fragment::{encode_plan, reads_scalar_subquery, ticket};
use sunlight_policy::{AnswerSketches, PersonSketch, as_planned};
use sunlight_proto::v1::FragmentTicket;
use tokio::sync::OnceCell;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::control::{
    HELD_HEADER, QueryControl, RELEASED_HEADER, SHOWN_SKETCH_HEADER, SKETCH_HEADER,
    SUPPRESSED_HEADER,
};
use crate::error::{Error, NodeError};
use crate::registry::NodeEndpoint;

/// Lazily connected channels to the nodes, shared by all queries.
#[derive(Debug)]
pub struct Channels {
    by_addr: Mutex<HashMap<String, Channel>>,
    tls: Option<ClientTlsConfig>,
}

impl Channels {
    /// Channels to nodes, over mutual TLS when `tls` is given.
    pub fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            by_addr: Mutex::default(),
            tls,
        }
    }

    /// An endpoint for `node`'s address, with the city's TLS settings.
    pub fn endpoint(&self, node: &NodeEndpoint) -> std::result::Result<Endpoint, NodeError> {
        sunlight_flightsql::endpoint(&node.addr, self.tls.as_ref())
            .map_err(|e| unavailable(node, format!("invalid address or TLS settings: {e}")))
    }

    pub(crate) fn get(&self, node: &NodeEndpoint) -> std::result::Result<Channel, NodeError> {
        let mut channels = self.by_addr.lock().expect("not poisoned");
        if let Some(channel) = channels.get(&node.addr) {
            return Ok(channel.clone());
        }
        let channel = self
            .endpoint(node)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(node.addr.clone(), channel.clone());
        Ok(channel)
    }
}

fn unavailable(node: &NodeEndpoint, reason: String) -> NodeError {
    NodeError::Unavailable {
        node: node.code,
        addr: node.addr.clone(),
        reason,
    }
}

/// The number of the next fragment made.
static PARTS: AtomicU64 = AtomicU64::new(0);

/// The metric of the groups a fragment's nodes held back.
const HELD_BACK: &str = "groups_held_back";

/// Runs a fragment on each of a set of nodes; partition *i* is node *i*.
#[derive(Debug)]
pub struct NodeFragmentExec {
    nodes: Vec<NodeEndpoint>,
    fragment: Arc<dyn ExecutionPlan>,
    /// The fragment's properties, with one partition a node.
    properties: Arc<PlanProperties>,
    /// Whether the fragment unites several fragments inside each node ([`Self::uniting`]).
    united: bool,
    /// The fragment as datafusion-proto bytes, encoded once for every node. A fragment
    /// that reads a scalar subquery is encoded when it first runs, after the subquery.
    encoded: OnceLock<Bytes>,
    /// Tells the fragment from the query's others, the same when the query is planned
    /// again ([`Self::identity`]).
    identity: u64,
    /// A number no other fragment has, even one alike: the persons behind each part of an
    /// answer compare apart, so that a query cannot hide a part that differs from another
    /// by a few persons by repeating it.
    part: u64,
    /// The groups its nodes held back and named.
    named: Arc<Mutex<Named>>,
    channels: Arc<Channels>,
    metrics: ExecutionPlanMetricsSet,
    /// Where the plan holds this fragment more than once, the answers its copies share.
    answers: Option<Arc<Answers>>,
}

/// A node's answer to a fragment: the headers it sent, and each batch with its size on
/// the wire.
#[derive(Debug)]
struct Answer {
    metadata: MetadataMap,
    batches: Vec<(RecordBatch, usize)>,
}

/// The nodes' answers to the fragments a plan holds more than once, by the ticket each
/// node is sent: a node is asked once, and every copy reads what it answered.
#[derive(Debug, Default)]
pub(crate) struct Answers(Mutex<HashMap<Bytes, Arc<OnceCell<Asked>>>>);

/// What a node did with a fragment's ticket: its answer, or its failure after the retries.
type Asked = std::result::Result<Arc<Answer>, NodeError>;

impl Answers {
    /// The answer to `ticket`, from `fetch` where no copy has it yet; whether this call
    /// fetched it. A failure is kept as an answer is: the node has had its retries, and
    /// the next copy reads it rather than asking again.
    async fn get_or_fetch(
        &self,
        ticket: &Bytes,
        fetch: impl Future<Output = std::result::Result<Answer, NodeError>>,
    ) -> std::result::Result<(Arc<Answer>, bool), NodeError> {
        let cell = self
            .0
            .lock()
            .expect("not poisoned")
            .entry(ticket.clone())
            .or_default()
            .clone();
        let mut fetched = false;
        let answer = cell
            .get_or_init(|| async {
                fetched = true;
                fetch.await.map(Arc::new)
            })
            .await
            .clone()?;
        Ok((answer, fetched))
    }
}

/// The groups a fragment's nodes named as held back.
#[derive(Debug, Default)]
struct Named {
    /// Groups named, counted once for each node that held them back.
    count: usize,
    tokens: BTreeSet<u64>,
}

impl NodeFragmentExec {
    /// Fails unless `fragment` has as many output partitions as there are `nodes`, one
    /// for each, and when the fragment cannot travel as datafusion-proto.
    pub fn try_new(
        nodes: Vec<NodeEndpoint>,
        fragment: Arc<dyn ExecutionPlan>,
        channels: Arc<Channels>,
    ) -> Result<Self> {
        Self::build(nodes, fragment, channels, false)
    }

    fn build(
        nodes: Vec<NodeEndpoint>,
        fragment: Arc<dyn ExecutionPlan>,
        channels: Arc<Channels>,
        united: bool,
    ) -> Result<Self> {
        let partitions = fragment.output_partitioning().partition_count();
        let properties = match (united, partitions) {
            (false, p) if p == nodes.len() => fragment.properties().clone(),
            (true, 1) => Arc::new(
                PlanProperties::clone(fragment.properties())
                    .with_partitioning(Partitioning::UnknownPartitioning(nodes.len())),
            ),
            // Partition i asks node i: nodes past the partitions would go unasked.
            _ => {
                return Err(DataFusionError::Internal(format!(
                    "a fragment for {} node(s) has {partitions} output partition(s), not one \
                     a node",
                    nodes.len()
                )));
            }
        };
        let encoded = if reads_scalar_subquery(&fragment) {
            OnceLock::new()
        } else {
            OnceLock::from(encode_plan(fragment.clone())?)
        };
        let mut identity = DefaultHasher::new();
        displayable(fragment.as_ref())
            .indent(true)
            .to_string()
            .hash(&mut identity);
        Ok(Self {
            nodes,
            fragment,
            properties,
            united,
            encoded,
            identity: identity.finish(),
            part: PARTS.fetch_add(1, Ordering::Relaxed),
            named: Arc::default(),
            channels,
            metrics: ExecutionPlanMetricsSet::new(),
            answers: None,
        })
    }

    /// This fragment, reading its nodes' answers from `answers`, which its copies in the
    /// plan share.
    pub(crate) fn sharing(&self, answers: Arc<Answers>) -> Self {
        Self {
            nodes: self.nodes.clone(),
            fragment: self.fragment.clone(),
            properties: self.properties.clone(),
            united: self.united,
            encoded: self.encoded.clone(),
            identity: self.identity,
            part: self.part,
            named: Arc::default(),
            channels: self.channels.clone(),
            metrics: ExecutionPlanMetricsSet::new(),
            answers: Some(answers),
        }
    }

    /// The nodes, in partition order.
    pub fn nodes(&self) -> &[NodeEndpoint] {
        &self.nodes
    }

    /// The plan each node runs.
    pub fn fragment(&self) -> &Arc<dyn ExecutionPlan> {
        &self.fragment
    }

    /// How many groups its nodes held back for counting too few persons, once it ran.
    pub fn held_back(&self) -> usize {
        self.metrics
            .clone_inner()
            .sum_by_name(HELD_BACK)
            .map_or(0, |m| m.as_usize())
    }

    /// The groups its nodes held back, once it ran, when they named every one.
    pub fn held_groups(&self) -> Option<BTreeSet<u64>> {
        let named = self.named.lock().expect("not poisoned");
        (named.count == self.held_back()).then(|| named.tokens.clone())
    }

    /// A digest of the plan each node runs, as planned before it runs: a query planned
    /// again has a fragment of the same identity, and only a fragment alike in every
    /// operator has it too.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// The fragment's bytes, encoding it on first use.
    fn encoded(&self) -> Result<Bytes> {
        if let Some(bytes) = self.encoded.get() {
            return Ok(bytes.clone());
        }
        let bytes = encode_plan(self.fragment.clone())?;
        Ok(self.encoded.get_or_init(|| bytes).clone())
    }

    /// `nodes` running `fragment`, which unites each node's rows of several fragments,
    /// such as the sides of a union, and merges them into one partition itself: each
    /// node runs it whole, over its own rows, and answers one partition.
    pub fn uniting(
        &self,
        nodes: Vec<NodeEndpoint>,
        fragment: Arc<dyn ExecutionPlan>,
    ) -> Result<Self> {
        Self::build(nodes, fragment, self.channels.clone(), true)
    }

    /// The same nodes running a larger fragment, which unites as this one does.
    pub fn with_fragment(&self, fragment: Arc<dyn ExecutionPlan>) -> Result<Self> {
        Self::build(
            self.nodes.clone(),
            fragment,
            self.channels.clone(),
            self.united,
        )
    }
}

impl DisplayAs for NodeFragmentExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let codes: Vec<String> = self.nodes.iter().map(|n| n.code.to_string()).collect();
        if let DisplayFormatType::TreeRender = t {
            // A box of the tree holds a few words: the fragment's operators, from the
            // top, stand for it.
            let mut operators = Vec::new();
            top_down(&self.fragment, &mut operators);
            return write!(
                f,
                "nodes={}\nfragment={}",
                codes.join(", "),
                operators.join(", ")
            );
        }
        let shared = match self.answers {
            Some(_) => ", answers shared with its copies",
            None => "",
        };
        write!(
            f,
            "NodeFragmentExec: nodes=[{}]{shared}, fragment:",
            codes.join(", ")
        )?;
        for line in displayable(self.fragment.as_ref())
            .indent(true)
            .to_string()
            .lines()
        {
            write!(f, "\n      {line}")?;
        }
        Ok(())
    }
}

/// The names of `plan`'s operators, each before its inputs.
fn top_down<'a>(plan: &'a Arc<dyn ExecutionPlan>, names: &mut Vec<&'a str>) {
    names.push(plan.name());
    for child in plan.children() {
        top_down(child, names);
    }
}

impl ExecutionPlan for NodeFragmentExec {
    fn name(&self) -> &str {
        "NodeFragmentExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let node = self.nodes.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "fragment has {} nodes, partition {partition} asked",
                self.nodes.len()
            ))
        })?;
        let control = context
            .session_config()
            .get_extension::<QueryControl>()
            .unwrap_or_else(|| Arc::new(QueryControl::new(false, Duration::from_secs(60), 3)));
        let ticket = ticket(&FragmentTicket {
            plan: self.encoded()?.to_vec(),
            query_id: control.query_id.clone(),
            node: node.code.to_string(),
            excluded_groups: control.excluded_in(self.identity),
            shared_persons: control.shared(),
        });
        let size = ticket.encoded_len();
        if size > MAX_REQUEST {
            return Err(DataFusionError::Plan(format!(
                "the query's part for the nodes encodes to {:.1} MiB, and a node takes requests \
                 of {} MiB at the most: shorten the query's lists of values or its CASE, or \
                 split it",
                size as f64 / f64::from(1 << 20),
                MAX_REQUEST >> 20
            )));
        }
        let channel = self
            .channels
            .get(&node)
            .map_err(|e| Error::from(e).into_datafusion())?;
        let rows =
            MetricBuilder::new(&self.metrics).global_counter(format!("rows_from_{}", node.code));
        let bytes =
            MetricBuilder::new(&self.metrics).global_counter(format!("bytes_from_{}", node.code));
        let answered = MetricBuilder::new(&self.metrics)
            .subset_time(format!("time_from_{}", node.code), partition);
        let tally = Tally {
            part: self.part,
            held: MetricBuilder::new(&self.metrics).global_counter(HELD_BACK),
            named: self.named.clone(),
        };
        let schema = self.schema();
        let planned = schema.clone();
        let answers = self.answers.clone();
        let fetch = async move {
            // A partial answer leaves a node that failed one of its fragments out of the
            // fragments that ask after, as out of the first: asked again, it would cost
            // another round of retries, or answer a part of the query and not the rest.
            if control.partial && control.is_missing(node.code) {
                return Ok(stream::iter(Vec::new()));
            }
            // From the call to the node's last batch, retries included.
            let timer = answered.timer();
            let asked = fetch(channel, &node, ticket.clone(), &planned, &control);
            let answer = match answers {
                Some(answers) => answers.get_or_fetch(&ticket.ticket, asked).await,
                None => asked.await.map(|answer| (Arc::new(answer), true)),
            };
            timer.done();
            let (answer, fetched) = match answer {
                Ok(answer) => answer,
                Err(e) if control.partial && !e.is_stale_shared() => {
                    tracing::warn!(node = %node.code, "left out of a partial result: {e}");
                    control.mark_missing(node.code, e.to_string());
                    return Ok(stream::iter(Vec::new()));
                }
                Err(e) => return Err(Error::from(e).into_datafusion()),
            };
            tally.read(&answer.metadata, &control);
            let (row_count, byte_count) =
                answer.batches.iter().fold((0, 0), |(r, b), (batch, size)| {
                    (r + batch.num_rows(), b + size)
                });
            rows.add(row_count);
            // A copy's answer crossed from the node once, with the first.
            if fetched {
                bytes.add(byte_count);
                control.add_received(node.code, row_count as u64, byte_count as u64);
            }
            let batches: Vec<Result<RecordBatch>> = answer
                .batches
                .iter()
                .map(|(batch, _)| Ok(batch.clone()))
                .collect();
            Ok(stream::iter(batches))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream::once(fetch).try_flatten(),
        )))
    }
}

/// Where a fragment counts what each of its nodes says of its groups and persons.
struct Tally {
    part: u64,
    /// The groups held back.
    held: Count,
    named: Arc<Mutex<Named>>,
}

impl Tally {
    /// Reads a node's answer's headers: the groups it held back, and those it named, and
    /// released, and the persons behind them.
    fn read(&self, metadata: &MetadataMap, control: &QueryControl) {
        let groups = |header| {
            metadata
                .get(header)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let suppressed = groups(SUPPRESSED_HEADER);
        self.held.add(suppressed as usize);
        control.add_groups(suppressed, groups(RELEASED_HEADER));
        let sketch = |header| PersonSketch::from_header(metadata.get(header)?.to_str().ok()?);
        if let Some(all) = sketch(SKETCH_HEADER) {
            let shown = sketch(SHOWN_SKETCH_HEADER).unwrap_or_else(|| all.clone());
            control.add_sketch(self.part, AnswerSketches { all, shown });
        }
        if let Some(held) = metadata.get(HELD_HEADER).and_then(|v| v.to_str().ok()) {
            let mut named = self.named.lock().expect("not poisoned");
            for token in held
                .split(',')
                .filter_map(|t| u64::from_str_radix(t, 16).ok())
            {
                named.count += 1;
                named.tokens.insert(token);
            }
        }
    }
}

/// Opens the fragment's stream on `node`, retrying while the node is unavailable, and
/// reads it to the end before the deadline, as `schema`, the fragment's.
async fn fetch(
    channel: Channel,
    node: &NodeEndpoint,
    ticket: arrow_flight::Ticket,
    schema: &SchemaRef,
    control: &QueryControl,
) -> std::result::Result<Answer, NodeError> {
    let read = async {
        let mut attempt = 0;
        let (metadata, response) = loop {
            let mut client = FlightServiceClient::new(channel.clone());
            let mut request = tonic::Request::new(ticket.clone());
            let bearer = format!("Bearer {}", node.token)
                .parse()
                .map_err(|_| unavailable(node, "token is not a valid header".into()))?;
            request.metadata_mut().insert("authorization", bearer);
            match client.do_get(request).await {
                Ok(response) => {
                    let (metadata, response, _) = response.into_parts();
                    break (metadata, response);
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && attempt + 1 < control.attempts =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(status) => return Err(from_status(node, status)),
            }
        };
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let counted = {
            let sizes = sizes.clone();
            response.map_ok(move |data: FlightData| {
                if !data.data_body.is_empty() {
                    sizes
                        .lock()
                        .expect("not poisoned")
                        .push(data.data_header.len() + data.data_body.len());
                }
                data
            })
        };
        let batches: Vec<RecordBatch> =
            FlightRecordBatchStream::new_from_flight_data(counted.map_err(FlightError::from))
                .try_collect()
                .await
                .map_err(|e| match e {
                    FlightError::Tonic(status) => from_status(node, *status),
                    other => unavailable(node, other.to_string()),
                })?;
        let sizes = sizes.lock().expect("not poisoned").clone();
        let batches = batches
            .into_iter()
            .zip(sizes.into_iter().chain(std::iter::repeat(0)))
            .map(|(batch, size)| Ok((planned(node, batch, schema)?, size)))
            .collect::<std::result::Result<_, NodeError>>()?;
        Ok(Answer { metadata, batches })
    };
    let budget = control.remaining();
    match tokio::time::timeout(budget, read).await {
        Ok(result) => result,
        Err(_) => Err(NodeError::Deadline {
            node: node.code,
            addr: node.addr.clone(),
            seconds: budget.as_secs_f64(),
        }),
    }
}

/// `batch`, which `node` sent, as the fragment's `schema` makes it: tokens travel as their
/// bytes and take part in the city's plan as text ([`as_planned`]).
fn planned(
    node: &NodeEndpoint,
    batch: RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, NodeError> {
    let sent = batch.schema();
    let rebuilt = || {
        if sent.fields().len() != schema.fields().len() {
            return Err(ArrowError::SchemaError(format!(
                "{} columns where the fragment makes {}",
                sent.fields().len(),
                schema.fields().len()
            )));
        }
        let (sent, planned) = (sent.fields().iter(), schema.fields().iter());
        if sent
            .zip(planned)
            .all(|(s, p)| s.data_type() == p.data_type())
        {
            return Ok(batch.clone());
        }
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| as_planned(column, field, node.code.as_str()))
            .collect::<arrow::error::Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(schema.clone(), columns, &options)
    };
    rebuilt().map_err(|e| NodeError::Failed {
        node: node.code,
        addr: node.addr.clone(),
        code: tonic::Code::Internal,
        message: format!("its answer does not fit the fragment: {e}"),
    })
}

fn from_status(node: &NodeEndpoint, status: tonic::Status) -> NodeError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            unavailable(node, status.message().to_string())
        }
        code => NodeError::Failed {
            node: node.code,
            addr: node.addr.clone(),
            code,
            message: status.message().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, AsArray, FixedSizeBinaryArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use sunlight_domain::Table;
    use sunlight_fragment::TableLeafExec;

    use super::*;

    fn node(code: &str) -> NodeEndpoint {
        NodeEndpoint {
            code: code.parse().unwrap(),
            addr: "127.0.0.1:1".into(),
            token: String::new(),
        }
    }

    #[test]
    fn a_fragment_has_one_partition_a_node() {
        let leaf = |partitions| {
            Arc::new(TableLeafExec::try_new(Table::Payroll, None, partitions, None).unwrap())
                as Arc<dyn ExecutionPlan>
        };
        let nodes = vec![node("140212"), node("140213")];
        let channels = Arc::new(Channels::new(None));
        assert!(NodeFragmentExec::try_new(nodes.clone(), leaf(2), channels.clone()).is_ok());
        let err = NodeFragmentExec::try_new(nodes, leaf(1), channels)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a fragment for 2 node(s) has 1 output partition(s)"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_is_taken_as_the_fragment_makes_it_or_refused_by_node() {
        let node = node("140212");
        let schema = Arc::new(Schema::new(vec![
            Field::new("person_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let token: ArrayRef =
            Arc::new(FixedSizeBinaryArray::try_from_iter([[7u8; 16]].into_iter()).unwrap());
        let n: ArrayRef = Arc::new(Int64Array::from(vec![3]));
        let sent = RecordBatch::try_from_iter([("person_id", token), ("n", n.clone())]).unwrap();
        let taken = planned(&node, sent, &schema).unwrap();
        assert_eq!(taken.schema(), schema);
        assert_eq!(
            taken.column(0).as_string::<i32>().value(0),
            "BwcHBwcHBwcHBwcHBwcHBw"
        );

        let short = RecordBatch::try_from_iter([("n", n)]).unwrap();
        let err = planned(&node, short, &schema).unwrap_err().to_string();
        assert!(
            err.contains(
                "node 140212 (127.0.0.1:1) failed running the fragment (Internal): its \
                 answer does not fit the fragment: Schema error: 1 columns where the fragment \
                 makes 2"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn copies_of_a_fragment_read_the_first_ones_answer_or_failure() {
        let answers = Answers::default();
        let asked = AtomicU64::new(0);
        let ask = |ticket: &'static [u8]| {
            let asked = &asked;
            async move {
                asked.fetch_add(1, Ordering::Relaxed);
                match ticket {
                    b"down" => Err(unavailable(&node("140212"), "connection refused".into())),
                    _ => Ok(Answer {
                        metadata: MetadataMap::new(),
                        batches: Vec::new(),
                    }),
                }
            }
        };
        for ticket in [b"up".as_slice(), b"down"] {
            let key = Bytes::from_static(ticket);
            let first = answers.get_or_fetch(&key, ask(ticket)).await;
            let copy = answers.get_or_fetch(&key, ask(ticket)).await;
            match (first, copy) {
                (Ok((_, true)), Ok((_, false))) => {}
                (Err(first), Err(copy)) => {
                    assert_eq!(first.to_string(), copy.to_string());
                    assert!(copy.to_string().contains("node 140212"), "{copy}");
                }
                other => panic!("{ticket:?}: {other:?}"),
            }
        }
        assert_eq!(asked.load(Ordering::Relaxed), 2, "each ticket asked once");
    }

    #[tokio::test]
    async fn a_partial_answer_asks_no_fragment_of_a_node_it_left_out() {
        let leaf = Arc::new(TableLeafExec::try_new(Table::Payroll, None, 1, None).unwrap());
        let down = node("140212");
        let fragment =
            NodeFragmentExec::try_new(vec![down.clone()], leaf, Arc::new(Channels::new(None)))
                .unwrap();
        let control = Arc::new(QueryControl::new(true, Duration::from_secs(60), 3));
        control.mark_missing(down.code, "refused the first fragment".into());
        let mut config = datafusion::prelude::SessionConfig::new();
        config.set_extension(control.clone());
        let context = Arc::new(TaskContext::default().with_session_config(config));
        let stream = fragment.execute(0, context).unwrap();
        let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
        assert!(batches.is_empty());
        // Asked, the node at 127.0.0.1:1 would have refused the connection, and been
        // listed with that reason instead.
        assert_eq!(
            control.missing().get(&down.code).map(String::as_str),
            Some("refused the first fragment")
        );
    }
}
