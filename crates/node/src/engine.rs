//! The node as a [`SqlEngine`]: local SQL for the county's analysts, and fragments
//! from the city.

use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use sunlight_client::{
    HELD_HEADER, RELEASED_HEADER, SHOWN_SKETCH_HEADER, SKETCH_HEADER, SUPPRESSED_HEADER,
};
use sunlight_flightsql::{Answer, QueryRequest, SqlEngine, Statement, StatementSchemas, TableInfo};
use tonic::Status;

use crate::node::Node;
use crate::served::Served;
use crate::{Error, fragment};

fn answer(schema: arrow::datatypes::SchemaRef, stream: SendableRecordBatchStream) -> Answer {
    Answer {
        schema,
        batches: stream.map_err(|e| Status::from(Error::Query(e))).boxed(),
        headers: Default::default(),
    }
}

impl Node {
    /// SQL at a node is for the county's own analysts; the city sends fragments.
    fn local_analyst(&self, statement: &Statement, request: &QueryRequest) -> Result<(), Status> {
        let user = &request.caller.user;
        if self.privacy().city_users.contains(user) {
            let reason = format!(
                "user {user} is the city's coordinator at node {}: it sends plan fragments, \
                 which pass the node's egress guard, and may not run SQL here",
                self.code()
            );
            self.audit().record(
                user,
                "sql",
                &statement.to_string(),
                &format!("refused: {reason}"),
            );
            return Err(Status::permission_denied(reason));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl SqlEngine for Served {
    fn server_name(&self) -> String {
        format!("sunlight node {}", self.node().code())
    }

    async fn schema(
        &self,
        statement: &Statement,
        request: &QueryRequest,
    ) -> Result<StatementSchemas, Status> {
        let node = self.node();
        node.local_analyst(statement, request)?;
        Ok(node.query_schema(statement).await?)
    }

    async fn execute(
        &self,
        statement: &Statement,
        request: &QueryRequest,
    ) -> Result<Answer, Status> {
        let node = self.node();
        node.local_analyst(statement, request)?;
        let result = node.query(statement).await;
        node.audit().record(
            &request.caller.user,
            "sql",
            &statement.to_string(),
            &match &result {
                Ok(_) => "allowed".to_string(),
                Err(e) => format!("failed: {e}"),
            },
        );
        let (schema, stream) = result?;
        Ok(answer(schema, stream))
    }

    async fn tables(&self) -> Result<Vec<TableInfo>, Status> {
        Ok(self.node().catalog_tables().await?)
    }

    async fn do_get_other(
        &self,
        ticket: arrow_flight::sql::Any,
        request: &QueryRequest,
    ) -> Result<Answer, Status> {
        let Some(fragment) = sunlight_fragment::fragment_of(&ticket) else {
            return Err(Status::unimplemented(format!(
                "unsupported ticket type {}",
                ticket.type_url
            )));
        };
        let fragment = fragment.map_err(Error::Query)?;
        let query = fragment.query_id.clone();
        let node = self.node();
        let result = fragment::run(&node, fragment).await;
        node.audit().record(
            &request.caller.user,
            "fragment",
            &query,
            &match &result {
                Ok(r) => format!("allowed: {} group(s) held back", r.suppressed),
                Err(e) => format!("refused: {e}"),
            },
        );
        let released = result?;
        let mut answer = answer(released.schema, released.stream);
        for (header, groups) in [
            (SUPPRESSED_HEADER, released.suppressed),
            (RELEASED_HEADER, released.released),
        ] {
            answer
                .headers
                .insert(header, groups.to_string().parse().expect("digits"));
        }
        for (header, sketch) in [
            (SKETCH_HEADER, released.sketch),
            (SHOWN_SKETCH_HEADER, released.shown),
        ] {
            if let Some(sketch) = sketch {
                let text = sketch.to_header().parse().expect("base64");
                answer.headers.insert(header, text);
            }
        }
        if let Some(held) = released.held.filter(|h| !h.is_empty()) {
            let tokens: Vec<String> = held.iter().map(|t| format!("{t:016x}")).collect();
            answer
                .headers
                .insert(HELD_HEADER, tokens.join(",").parse().expect("hex"));
        }
        Ok(answer)
    }
}
