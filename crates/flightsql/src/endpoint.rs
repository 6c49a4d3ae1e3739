//! [`FlightSqlEndpoint`]: the Flight service of a [`FlightSqlServer`], with `GetSchema` and
//! `PollFlightInfo`. arrow-flight's Flight SQL implements every Flight call but these two,
//! which clients use to learn an answer's columns without running the query (ADBC's
//! `ExecuteSchema`) and to execute a query incrementally. Descriptors and tickets that
//! carry no Flight SQL message, and the calls Flight SQL does not use, are refused with
//! what to send instead.

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::Any;
use arrow_flight::{
    Action, Criteria, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::{FlightSqlServer, SqlEngine};

/// Flight SQL over an engine, as one Flight service.
pub struct FlightSqlEndpoint<E: SqlEngine>(FlightSqlServer<E>);

impl<E: SqlEngine> FlightSqlServer<E> {
    /// The Flight service of this server, `GetSchema` and `PollFlightInfo` included. Serve it behind a
    /// [`crate::TokenTable`] interceptor, which puts the [`crate::Caller`] into each request.
    pub fn into_service(self) -> FlightServiceServer<FlightSqlEndpoint<E>> {
        FlightServiceServer::new(FlightSqlEndpoint(self)).max_decoding_message_size(MAX_REQUEST)
    }
}

/// The largest request a Flight SQL server decodes, gRPC's usual 4 MiB: a statement, a
/// prepared statement's handle or, at a node, a fragment of the city's plan.
pub const MAX_REQUEST: usize = 4 << 20;

type Inner<E> = FlightSqlServer<E>;

/// What a client sends this server: Flight SQL commands.
pub(crate) const SEND_INSTEAD: &str = "send a Flight SQL command: CommandStatementQuery for SQL, a \
     prepared statement, or a catalog command such as CommandGetTables";

/// Refuses `descriptor` unless it carries a Flight SQL message, naming what it carries.
fn sql_descriptor(descriptor: &FlightDescriptor) -> Result<(), Status> {
    if descriptor.r#type() != DescriptorType::Cmd {
        return Err(Status::invalid_argument(format!(
            "the descriptor names a path ({}); {SEND_INSTEAD}",
            descriptor.path.join("/")
        )));
    }
    match Any::decode(descriptor.cmd.as_ref()) {
        Ok(any) if !any.type_url.is_empty() => Ok(()),
        Ok(_) => Err(Status::invalid_argument(format!(
            "the descriptor's command is empty; {SEND_INSTEAD}"
        ))),
        Err(e) => Err(Status::invalid_argument(format!(
            "the descriptor's command is not a Flight SQL message ({e}); {SEND_INSTEAD}"
        ))),
    }
}

#[tonic::async_trait]
impl<E: SqlEngine> FlightService for FlightSqlEndpoint<E> {
    type HandshakeStream = <Inner<E> as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner<E> as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner<E> as FlightService>::DoGetStream;
    type DoPutStream = <Inner<E> as FlightService>::DoPutStream;
    type DoExchangeStream = <Inner<E> as FlightService>::DoExchangeStream;
    type DoActionStream = <Inner<E> as FlightService>::DoActionStream;
    type ListActionsStream = <Inner<E> as FlightService>::ListActionsStream;

    /// The schema `GetFlightInfo` gives for `request`'s descriptor: a statement's, a
    /// prepared statement's or a catalog call's. It plans a statement and runs nothing.
    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let info = self.get_flight_info(request).await?;
        Ok(Response::new(SchemaResult {
            schema: info.into_inner().schema,
        }))
    }

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(&self.0, request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(format!(
            "ListFlights is not served: flights here are answers to queries; {SEND_INSTEAD}"
        )))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        sql_descriptor(request.get_ref())?;
        FlightService::get_flight_info(&self.0, request).await
    }

    /// The whole `GetFlightInfo` at the first poll: planning is quick, and the query runs
    /// when its ticket is read.
    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let info = self.get_flight_info(request).await?;
        Ok(Response::new(PollInfo {
            info: Some(info.into_inner()),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        Any::decode(request.get_ref().ticket.as_ref()).map_err(|e| {
            Status::invalid_argument(format!(
                "the ticket is not one this server issued ({e}): send the ticket of an \
                 endpoint of GetFlightInfo's answer"
            ))
        })?;
        FlightService::do_get(&self.0, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.0, request).await
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(format!(
            "DoExchange is not served: {SEND_INSTEAD}"
        )))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.0, request).await
    }

    async fn list_actions(
        &self,
        request: Request<arrow_flight::Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.0, request).await
    }
}
