//! [`FlightSqlServer`]: statements, prepared statements with bound parameters, and the
//! catalog calls that standard clients (ADBC, JDBC) make, over a [`SqlEngine`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::ipc::MetadataVersion;
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionCreatePreparedSubstraitPlanRequest, ActionEndSavepointRequest,
    ActionEndTransactionRequest, Any, Command, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementSubstraitPlan, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlNullOrdering,
    SqlOuterJoinsSupportLevel, SqlSupportedCaseSensitivity, SqlSupportedGroupBy,
    SqlSupportedResultSetConcurrency, SqlSupportedResultSetType, SqlSupportedSubqueries,
    SqlSupportedUnions, SqlTransactionIsolationLevel, SupportedSqlGrammar, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use datafusion::functions;
use datafusion::logical_expr::ScalarUDF;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use prost::Message;
use sunlight_proto::flight::{
    CloseSessionResult, GetSessionOptionsResult, SetSessionOptionsRequest, close_session_result,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::bound::Bound;
use crate::catalog::{
    FOREIGN_KEYS, PRIMARY_KEYS, described_columns, no_foreign_keys, primary_keys, xdbc_types,
};
use crate::endpoint::SEND_INSTEAD;
use crate::panics::{caught, caught_stream};
use crate::session::{Sessions, send_cookie};
use crate::session_sql::SessionStatement;
use crate::statement::Prepared;
use crate::{Answer, Caller, QueryRequest, SqlEngine, Statement, StatementSchemas};

/// Catalog under which every table is listed.
pub const CATALOG: &str = "sunlight";
/// Schema under which every table is listed.
pub const SCHEMA: &str = "public";
/// The type of every table.
const TABLE_TYPE: &str = "TABLE";

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Flight SQL over an engine. Serve it as [`FlightSqlServer::into_service`] behind a
/// [`crate::TokenTable`] interceptor, which puts the [`Caller`] into each request.
pub struct FlightSqlServer<E: SqlEngine> {
    engine: Arc<E>,
    /// The engine's name, as errors and `GetSqlInfo` give it.
    server: Arc<str>,
    sql_info: Arc<SqlInfoData>,
    xdbc_types: Arc<XdbcTypeInfoData>,
    sessions: Arc<Sessions>,
    bound: Arc<Bound>,
}

impl<E: SqlEngine> FlightSqlServer<E> {
    /// Serves `engine`.
    pub fn new(engine: Arc<E>) -> Self {
        let server: Arc<str> = engine.server_name().into();
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, server.as_ref());
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        // What a JDBC or ODBC driver's metadata asks: a read-only catalog of tables that
        // can all be read, unquoted names folded to lower case, NULLs sorted as larger
        // than any value (last ascending, first descending), as DataFusion does.
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlTransactionsSupported, false);
        info.append(SqlInfo::SqlAllTablesAreSelectable, true);
        info.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
        );
        info.append(
            SqlInfo::SqlNullOrdering,
            SqlNullOrdering::SqlNullsSortedHigh as i32,
        );
        info.append(SqlInfo::SqlSupportsColumnAliasing, true);
        info.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        info.append(SqlInfo::SqlNullPlusNullIsNull, true);
        info.append(SqlInfo::SqlSearchStringEscape, "\\");
        info.append(SqlInfo::SqlCatalogTerm, "catalog");
        info.append(SqlInfo::SqlSchemaTerm, "schema");
        dialect_info(&mut info);
        let sql_info = Arc::new(info.build().expect("static SQL info is valid"));
        let sessions = Arc::new(Sessions::new(
            engine.session_options(),
            engine.answer_notes(),
        ));
        Self {
            engine,
            server,
            sql_info,
            xdbc_types: Arc::new(xdbc_types()),
            sessions,
            bound: Arc::default(),
        }
    }

    /// The prepared statement `handle` names, with the values its caller last bound to
    /// it where the handle carries none: the handle it was prepared with, run by a client
    /// that drops the handle a bind answers with ([`Bound`]).
    fn prepared<T>(&self, handle: &[u8], request: &Request<T>) -> Result<Prepared, Status> {
        let mut prepared = Prepared::from_handle(handle)?;
        if let Some(id) = prepared.named()
            && prepared.statement.parameters.is_none()
        {
            prepared.statement.parameters = self.bound.get(&caller(request)?.user, id);
        }
        Ok(prepared)
    }

    /// The caller of `request` and its headers, with those its session's options add.
    fn query_request<T>(&self, request: &Request<T>) -> Result<QueryRequest, Status> {
        let caller = caller(request)?;
        let mut headers = request.metadata().clone();
        self.sessions.apply(&caller.user, &mut headers);
        Ok(QueryRequest { caller, headers })
    }

    /// The schemas of `statement`, planned for `query`. A new statement other than one
    /// about the session: the session's notes of its last answer no longer stand, and if
    /// the statement is refused here, no `DoGet` follows to replace them.
    async fn plan(
        &self,
        statement: &Statement,
        query: &QueryRequest,
    ) -> Result<StatementSchemas, Status> {
        match SessionStatement::parse(&statement.sql, &self.sessions) {
            Some(about_session) => Ok(about_session?.schemas()),
            None => self.plan_query(statement, query).await,
        }
    }

    /// The schemas of `statement`, a query for the engine, planned for `query`.
    async fn plan_query(
        &self,
        statement: &Statement,
        query: &QueryRequest,
    ) -> Result<StatementSchemas, Status> {
        self.sessions
            .record(&query.caller.user, &query.headers, &MetadataMap::new());
        let planned = self.engine.schema(statement, query);
        caught(&self.server, "planning the statement", planned).await
    }

    /// `answer`, whose batches end with an error where making one panics.
    fn sent(&self, answer: Answer, doing: &'static str) -> Answer {
        Answer {
            batches: caught_stream(self.server.clone(), doing, answer.batches).boxed(),
            ..answer
        }
    }

    async fn statement_info(
        &self,
        statement: &Statement,
        ticket: Ticket,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let query = self.query_request(&request)?;
        let (schemas, cookie) = match SessionStatement::parse(&statement.sql, &self.sessions) {
            Some(about_session) => {
                let about_session = about_session?;
                let user = &query.caller.user;
                let cookie = about_session.take_effect(&self.sessions, user, request.metadata())?;
                (about_session.schemas(), cookie)
            }
            None => (self.plan_query(statement, &query).await?, None),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schemas.dataset)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(request.into_inner());
        let mut response = Response::new(info);
        send_cookie(response.metadata_mut(), cookie)?;
        Ok(response)
    }

    async fn run(
        &self,
        statement: &Statement,
        request: &Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let query = self.query_request(request)?;
        if let Some(about_session) = SessionStatement::parse(&statement.sql, &self.sessions) {
            tracing::info!(user = %query.caller.user, %statement, "session statement");
            let user = &query.caller.user;
            return answer(about_session?.run(&self.sessions, user, request.metadata())?);
        }
        tracing::info!(user = %query.caller.user, %statement, "query");
        let started = self.engine.execute(statement, &query);
        let answered = caught(&self.server, "starting the statement", started).await;
        let notes = answered
            .as_ref()
            .map(|a| a.headers.clone())
            .unwrap_or_default();
        self.sessions
            .record(&query.caller.user, &query.headers, &notes);
        answer(self.sent(answered?, "running the statement"))
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no credentials"))
}

const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
const CLOSE_SESSION: &str = "CloseSession";

/// The session actions and what they do.
const SESSION_ACTIONS: [(&str, &str); 3] = [
    (
        SET_SESSION_OPTIONS,
        "Set options of the caller's session, made if the call names none.\n\
         Request Message: SetSessionOptionsRequest\nResponse Message: SetSessionOptionsResult",
    ),
    (
        GET_SESSION_OPTIONS,
        "Get the options of the caller's session.\n\
         Request Message: GetSessionOptionsRequest\nResponse Message: GetSessionOptionsResult",
    ),
    (
        CLOSE_SESSION,
        "End the caller's session.\n\
         Request Message: CloseSessionRequest\nResponse Message: CloseSessionResult",
    ),
];

fn answer(answer: Answer) -> Result<Response<FlightStream<FlightData>>, Status> {
    let batches = answer
        .batches
        .map_err(|status| FlightError::Tonic(Box::new(status)));
    // Arrow aligns each buffer to 64 bytes by default; 8, the least the format allows,
    // keeps the few rows of a partial aggregate small on the wire.
    let options =
        IpcWriteOptions::try_new(8, false, MetadataVersion::V5).expect("8 is an IPC alignment");
    let stream = FlightDataEncoderBuilder::new()
        .with_options(options)
        .with_schema(answer.schema)
        .build(batches)
        .map_err(Status::from);
    let mut response: Response<FlightStream<FlightData>> = Response::new(Box::pin(stream));
    *response.metadata_mut() = answer.headers;
    Ok(response)
}

fn one_batch(
    batch: Result<RecordBatch, FlightError>,
) -> Result<Response<FlightStream<FlightData>>, Status> {
    let batch = batch.map_err(Status::from)?;
    answer(Answer {
        schema: batch.schema(),
        batches: stream::iter([Ok(batch)]).boxed(),
        headers: Default::default(),
    })
}

fn metadata_info(
    schema: &Schema,
    command: impl ProstMessageExt,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn read_only() -> Status {
    Status::permission_denied(
        "updates are refused: Sunlight answers queries only, and a prepared statement \
         runs with one row of values at a time",
    )
}

/// The rest of what the protocol asks, which a JDBC driver's `DatabaseMetaData` reads and
/// fails on where left out: DataFusion's keywords and functions, the query grammar it
/// takes, no limit on names or sizes (0), and nothing of updates, transactions,
/// cancelling or `CONVERT`. Substrait's versions are left out with Substrait.
fn dialect_info(info: &mut SqlInfoDataBuilder) {
    let names = |functions: Vec<Arc<ScalarUDF>>| -> Vec<String> {
        let mut names: Vec<String> = functions.iter().map(|f| f.name().to_string()).collect();
        names.sort();
        names
    };
    let text = [
        functions::string::functions(),
        functions::unicode::functions(),
        functions::regex::functions(),
    ];
    info.append(SqlInfo::SqlKeywords, ALL_KEYWORDS);
    info.append(
        SqlInfo::SqlNumericFunctions,
        names(functions::math::functions()),
    );
    info.append(SqlInfo::SqlStringFunctions, names(text.concat()));
    info.append(
        SqlInfo::SqlDatetimeFunctions,
        names(functions::datetime::functions()),
    );
    info.append(
        SqlInfo::SqlSystemFunctions,
        names(functions::core::functions()),
    );
    // Quoted names keep their case, which the protocol's cases cannot say.
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    info.append(SqlInfo::SqlExtraNameCharacters, "");
    info.append(SqlInfo::SqlProcedureTerm, "procedure");
    info.append(SqlInfo::SqlCatalogAtStart, true);
    for (supported, yes) in [
        (SqlInfo::SqlSupportsExpressionsInOrderBy, true),
        (SqlInfo::SqlSupportsOrderByUnrelated, true),
        (SqlInfo::SqlSupportsLikeEscapeClause, true),
        (SqlInfo::SqlSupportsNonNullableColumns, true),
        (SqlInfo::SqlCorrelatedSubqueriesSupported, true),
        (SqlInfo::SqlSupportsDifferentTableCorrelationNames, false),
        (SqlInfo::SqlSupportsIntegrityEnhancementFacility, false),
        (SqlInfo::SqlSelectForUpdateSupported, false),
        (SqlInfo::SqlStoredProceduresSupported, false),
        (SqlInfo::SqlMaxRowSizeIncludesBlobs, false),
        (SqlInfo::FlightSqlServerBulkIngestion, false),
        (SqlInfo::FlightSqlServerCancel, false),
        (SqlInfo::FlightSqlServerIngestTransactionsSupported, false),
        (SqlInfo::SqlBatchUpdatesSupported, false),
        (SqlInfo::SqlSavepointsSupported, false),
        (SqlInfo::SqlNamedParametersSupported, false),
        (SqlInfo::SqlLocatorsUpdateCopy, false),
        (SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false),
        (SqlInfo::SqlDataDefinitionCausesTransactionCommit, false),
        (SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false),
    ] {
        info.append(supported, yes);
    }
    let bits = |options: &[i32]| options.iter().fold(0_i32, |mask, o| mask | 1 << o);
    info.append(
        SqlInfo::SqlSupportedGroupBy,
        bits(&[
            SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    info.append(
        SqlInfo::SqlSupportedGrammar,
        bits(&[
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    // ANSI92_ENTRY_SQL, whose enum arrow-flight does not export.
    info.append(SqlInfo::SqlAnsi92SupportedLevel, bits(&[0]));
    info.append(
        SqlInfo::SqlSupportedSubqueries,
        bits(&[
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    info.append(
        SqlInfo::SqlSupportedUnions,
        bits(&[
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    info.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    // Read only, and only forward.
    info.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        bits(&[SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly as i32]),
    );
    for none in [
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        SqlInfo::SqlCatalogsSupportedActions,
        SqlInfo::SqlSchemasSupportedActions,
        SqlInfo::SqlSupportedPositionedCommands,
        SqlInfo::SqlSupportedTransactionsIsolationLevels,
    ] {
        info.append(none, 0_i32);
    }
    info.append(
        SqlInfo::SqlSupportsConvert,
        BTreeMap::<i32, Vec<i32>>::new(),
    );
    // Ordinals, not bitmasks: no transactions, no timeouts of the server's own (a
    // coordinator's deadline is its nodes').
    info.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    info.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i32,
    );
    info.append(SqlInfo::FlightSqlServerStatementTimeout, 0_i32);
    info.append(SqlInfo::FlightSqlServerTransactionTimeout, 0_i32);
    for unlimited in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        info.append(unlimited, 0_i64);
    }
}

/// Refuses a bulk ingest into `table`: records are loaded where they are held.
fn no_ingest(table: &str) -> Status {
    Status::permission_denied(format!(
        "bulk ingest into {table} is refused: Sunlight answers queries only; a county's \
         records are loaded at its node with `sunlight import`"
    ))
}

/// Refuses a transaction or savepoint: each query stands alone, and none writes.
fn no_transactions() -> Status {
    Status::unimplemented(
        "transactions are not supported: Sunlight answers read-only queries, each on its \
         own (GetSqlInfo says so)",
    )
}

/// Refuses a Substrait plan: queries come as SQL, which the server plans itself.
fn no_substrait() -> Status {
    Status::unimplemented(
        "Substrait plans are not accepted: send the query as SQL (GetSqlInfo says so)",
    )
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument(format!("{what} is not UTF-8")))
}

#[tonic::async_trait]
impl<E: SqlEngine> FlightSqlService for FlightSqlServer<E> {
    type FlightService = FlightSqlServer<E>;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<FlightStream<HandshakeResponse>>, Status> {
        let caller = caller(&request)?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(caller.token.clone()),
        };
        let mut response: Response<FlightStream<HandshakeResponse>> =
            Response::new(Box::pin(stream::iter([Ok(reply)])));
        let bearer = format!("Bearer {}", caller.token)
            .parse()
            .map_err(|_| Status::internal("token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.clone()),
        };
        let ticket = Ticket::new(handle.as_any().encode_to_vec());
        self.statement_info(&Statement::new(query.query), ticket, request)
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = utf8(&ticket.statement_handle, "statement handle")?;
        self.run(&Statement::new(sql), &request).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let prepared = self.prepared(&query.prepared_statement_handle, &request)?;
        // The ticket carries the values, whether the handle did or they were kept.
        let query = CommandPreparedStatementQuery {
            prepared_statement_handle: Bytes::from(prepared.handle()?),
        };
        let ticket = Ticket::new(query.as_any().encode_to_vec());
        self.statement_info(&prepared.statement, ticket, request)
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let prepared = self.prepared(&query.prepared_statement_handle, &request)?;
        self.run(&prepared.statement, &request).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut prepared = Prepared::from_handle(&query.prepared_statement_handle)?;
        let user = caller(&request)?.user;
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(Status::from)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows != 1 {
            return Err(Status::invalid_argument(format!(
                "a prepared statement takes one row of parameter values at a time, not {rows}"
            )));
        }
        prepared.statement.parameters = batches.into_iter().find(|b| b.num_rows() == 1);
        if let Some(id) = prepared.named()
            && let Some(values) = &prepared.statement.parameters
        {
            self.bound.keep(&user, id, values.clone());
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(Bytes::from(prepared.handle()?)),
        })
    }

    async fn do_put_statement_update(
        &self,
        _query: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(no_ingest(&command.table))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(no_substrait())
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(no_substrait())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(no_substrait())
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(no_transactions())
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(no_transactions())
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(no_transactions())
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Err(no_transactions())
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let prepared = Prepared::new(Statement::new(query.query));
        let schemas = self
            .plan(&prepared.statement, &self.query_request(&request)?)
            .await?;
        let ipc = |schema: &Schema| {
            let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
                .try_into()
                .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
            Ok::<_, Status>(bytes)
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::from(prepared.handle()?),
            dataset_schema: ipc(&schemas.dataset)?,
            parameter_schema: match schemas.has_parameters() {
                true => ipc(&schemas.parameters)?,
                false => Bytes::new(),
            },
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles carry the statement itself: only values kept for it are released.
        let prepared = Prepared::from_handle(&query.prepared_statement_handle)?;
        if let Some(id) = prepared.named() {
            self.bound.forget(&caller(&request)?.user, id);
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for table in self.engine.tables().await? {
            let columns = described_columns(&table.name, &table.schema);
            builder
                .append(CATALOG, SCHEMA, &table.name, TABLE_TYPE, &columns)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(TABLE_TYPE);
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&self.sql_info.schema(), query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&PRIMARY_KEYS, query, request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let tables = self.engine.tables().await?;
        one_batch(primary_keys(&query, &tables).map_err(FlightError::Arrow))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&FOREIGN_KEYS, query, request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(Ok(no_foreign_keys()))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&FOREIGN_KEYS, query, request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(Ok(no_foreign_keys()))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&FOREIGN_KEYS, query, request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(Ok(no_foreign_keys()))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&self.xdbc_types.schema(), query, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(&self.xdbc_types).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}

    async fn get_flight_info_fallback(
        &self,
        command: Command,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(format!(
            "{} is not a command this server answers; {SEND_INSTEAD}",
            command.type_url()
        )))
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let user = caller(&request)?.user;
        let (headers, action) = (request.metadata(), request.get_ref());
        let mut cookie = None;
        let body = match action.r#type.as_str() {
            SET_SESSION_OPTIONS => {
                let asked = SetSessionOptionsRequest::decode(action.body.clone()).map_err(|e| {
                    Status::invalid_argument(format!("bad SetSessionOptionsRequest: {e}"))
                })?;
                let (result, made) = self.sessions.set(&user, headers, asked.session_options);
                cookie = made;
                result.encode_to_vec()
            }
            GET_SESSION_OPTIONS => GetSessionOptionsResult {
                session_options: self.sessions.get(&user, headers)?,
            }
            .encode_to_vec(),
            CLOSE_SESSION => {
                self.sessions.close(&user, headers)?;
                CloseSessionResult {
                    status: close_session_result::Status::Closed as i32,
                }
                .encode_to_vec()
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action {other:?}"
                )));
            }
        };
        let result = arrow_flight::Result::new(body);
        let mut response: Response<FlightStream<arrow_flight::Result>> =
            Response::new(Box::pin(stream::iter([Ok(result)])));
        send_cookie(response.metadata_mut(), cookie)?;
        Ok(response)
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(
            SESSION_ACTIONS
                .iter()
                .map(|(name, description)| {
                    Ok(ActionType {
                        r#type: name.to_string(),
                        description: description.to_string(),
                    })
                })
                .collect(),
        )
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let query = self.query_request(&request)?;
        let started = self.engine.do_get_other(message, &query);
        let started = caught(&self.server, "starting the call", started).await?;
        answer(self.sent(started, "running the call"))
    }
}
