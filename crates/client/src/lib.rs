//! A Flight SQL client for Sunlight's services, used by the CLI, the demo and the tests.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::Ticket;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

/// A failure to reach a service or run a query there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not a valid endpoint.
    #[error("{addr:?} is not a valid address: {source}")]
    Address {
        /// The address given.
        addr: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source}; is the service running there?")]
    Connect {
        /// The address given.
        addr: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The service answered with an error.
    #[error("{addr} refused the request ({code:?}): {message}")]
    Service {
        /// The service address.
        addr: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The service's message.
        message: String,
    },
    /// The answer could not be decoded.
    #[error("cannot decode the answer of {addr}: {source}")]
    Decode {
        /// The service address.
        addr: String,
        /// The cause.
        source: arrow::error::ArrowError,
    },
}

/// Request header that asks the city for partial results.
pub const PARTIAL_HEADER: &str = "sunlight-partial-results";
/// Response header in which the city lists the nodes that did not answer.
pub const MISSING_HEADER: &str = "sunlight-missing-nodes";
/// Binary response header with why each node listed in [`MISSING_HEADER`] did not
/// answer: a line a node, its code, a space and the reason, in UTF-8.
pub const MISSING_REASONS_HEADER: &str = "sunlight-missing-reasons-bin";
/// Response header with the number of groups held back because they count fewer than
/// k persons (from a node: its own; from the city: all nodes' together).
pub const SUPPRESSED_HEADER: &str = "sunlight-suppressed-groups";
/// Response header with the number of groups a node released that count at least k
/// persons; the city refuses an answer when every group was held back.
pub const RELEASED_HEADER: &str = "sunlight-released-groups";
/// Response header with a node's sketch of every person its groups were formed from.
pub const SKETCH_HEADER: &str = "sunlight-persons-sketch";
/// Response header with a node's sketch of the persons of its released groups less
/// those also in a group it held back; sent only when it held one back.
pub const SHOWN_SKETCH_HEADER: &str = "sunlight-shown-persons-sketch";
/// Response header with the keyed tokens of the groups a node held back, in hex, when
/// it can name them all; the city then asks every node to leave those groups out.
pub const HELD_HEADER: &str = "sunlight-held-groups";

/// How a node's refusal of a fragment begins when the fragment names a shared-person
/// epoch the node does not hold; the city then runs the query again without one.
pub const STALE_SHARED: &str = "stale shared-person epoch";

/// The largest reply the client decodes. A `FlightInfo` repeats its statement, in its
/// descriptor and its ticket, and a row of a county analyst's answer, such as a
/// `string_agg` over a county, is one message however large.
const MAX_REPLY: usize = 1 << 30;

/// Result of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The rows a query returned.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Schema of the result, also when there are no rows.
    pub schema: SchemaRef,
    /// The record batches in order.
    pub batches: Vec<RecordBatch>,
    /// Nodes that did not answer a city query run with partial results allowed.
    pub missing_nodes: Vec<String>,
    /// Why each of [`Self::missing_nodes`] did not answer, by node code.
    pub missing_reasons: BTreeMap<String, String>,
    /// Groups the nodes held back because they count fewer than k persons.
    pub suppressed_groups: u64,
}

impl QueryResult {
    /// A complete result: every node answered and nothing was held back.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        Self {
            schema,
            batches,
            missing_nodes: Vec::new(),
            missing_reasons: BTreeMap::new(),
            suppressed_groups: 0,
        }
    }

    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// An answer being read, a batch at a time, endpoint after endpoint. What the service
/// tells of it besides its rows is known for the endpoints read so far, so in full once
/// [`Answer::next`] has returned `None`.
pub struct Answer<'a> {
    /// Schema of the answer, also when there are no rows.
    pub schema: SchemaRef,
    /// Nodes that did not answer a city query run with partial results allowed.
    pub missing_nodes: Vec<String>,
    /// Why each of [`Self::missing_nodes`] did not answer, by node code.
    pub missing_reasons: BTreeMap<String, String>,
    /// Groups the nodes held back because they count fewer than k persons.
    pub suppressed_groups: u64,
    tickets: std::collections::VecDeque<Ticket>,
    reading: Option<FlightRecordBatchStream>,
    client: &'a mut SqlClient,
}

impl Answer<'_> {
    /// The next batch, or `None` once every endpoint has been read.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(stream) = &mut self.reading {
                match stream.try_next().await {
                    Ok(Some(batch)) => return Ok(Some(batch)),
                    Ok(None) => self.reading = None,
                    Err(e) => return Err(self.client.service_error(e)),
                }
            }
            let Some(ticket) = self.tickets.pop_front() else {
                return Ok(None);
            };
            let stream = self
                .client
                .inner
                .do_get(ticket)
                .await
                .map_err(|e| self.client.service_error(e))?;
            let header = |name| stream.headers().get(name).and_then(|v| v.to_str().ok());
            if let Some(missing) = header(MISSING_HEADER) {
                self.missing_nodes.extend(
                    missing
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            if let Some(reasons) = stream
                .headers()
                .get_bin(MISSING_REASONS_HEADER)
                .and_then(|v| v.to_bytes().ok())
            {
                let reasons = String::from_utf8_lossy(&reasons);
                self.missing_reasons
                    .extend(reasons.lines().filter_map(|line| {
                        let (node, reason) = line.split_once(' ')?;
                        Some((node.to_string(), reason.to_string()))
                    }));
            }
            self.suppressed_groups += header(SUPPRESSED_HEADER)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            self.reading = Some(stream);
        }
    }
}

/// A connection to a Flight SQL endpoint of a node or of the city.
pub struct SqlClient {
    addr: String,
    inner: FlightSqlServiceClient<Channel>,
}

impl SqlClient {
    /// Connects to `addr` (`host:port` or `http://host:port`) with a bearer token.
    pub async fn connect(addr: &str, token: &str) -> Result<Self> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|source| Error::Address {
            addr: addr.into(),
            source,
        })?;
        Self::connect_endpoint(addr, endpoint, token).await
    }

    /// Connects through `endpoint` (for example one with TLS settings) to `addr`.
    pub async fn connect_endpoint(addr: &str, endpoint: Endpoint, token: &str) -> Result<Self> {
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            addr: addr.into(),
            source,
        })?;
        let flight = FlightServiceClient::new(channel).max_decoding_message_size(MAX_REPLY);
        let mut inner = FlightSqlServiceClient::new_from_inner(flight);
        inner.set_token(token.to_string());
        Ok(Self {
            addr: addr.to_string(),
            inner,
        })
    }

    /// Asks the city to answer without the nodes that fail, listing them in
    /// [`QueryResult::missing_nodes`], instead of failing the query.
    pub fn allow_partial_results(&mut self) {
        self.inner.set_header(PARTIAL_HEADER, "true");
    }

    /// Runs `sql` and collects every batch of every endpoint.
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult> {
        let mut answer = self.answer(sql).await?;
        let mut batches = Vec::new();
        while let Some(batch) = answer.next().await? {
            batches.push(batch);
        }
        Ok(QueryResult {
            schema: answer.schema,
            batches,
            missing_nodes: answer.missing_nodes,
            missing_reasons: answer.missing_reasons,
            suppressed_groups: answer.suppressed_groups,
        })
    }

    /// Runs `sql`, whose batches are then read one at a time from the answer.
    pub async fn answer(&mut self, sql: &str) -> Result<Answer<'_>> {
        let info = self
            .inner
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| self.service_error(e))?;
        let schema = std::sync::Arc::new(info.clone().try_decode_schema().map_err(|source| {
            Error::Decode {
                addr: self.addr.clone(),
                source,
            }
        })?);
        Ok(Answer {
            schema,
            missing_nodes: Vec::new(),
            missing_reasons: BTreeMap::new(),
            suppressed_groups: 0,
            tickets: info.endpoint.into_iter().filter_map(|e| e.ticket).collect(),
            reading: None,
            client: self,
        })
    }

    fn service_error(&self, e: FlightError) -> Error {
        let (code, message) = match e {
            FlightError::Tonic(status) => (status.code(), status.message().to_string()),
            other => (tonic::Code::Unknown, other.to_string()),
        };
        Error::Service {
            addr: self.addr.clone(),
            code,
            message,
        }
    }
}
