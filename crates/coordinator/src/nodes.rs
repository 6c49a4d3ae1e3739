//! Calls of the nodes' control service (`sunlight.v1.NodeService`), made with the token
//! each node expects of the city.

use std::collections::BTreeMap;
use std::time::Duration;

use sunlight_meta::Replica;
use sunlight_proto::v1::node_service_client::NodeServiceClient;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Request, Status};

/// A node the coordinator calls.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub code: String,
    pub addr: String,
    token: String,
    tls: Option<ClientTlsConfig>,
}

/// Every node registered in `replica`'s metadata by code, reached over `tls` when given.
pub(crate) fn targets(
    replica: &Replica,
    tls: Option<&ClientTlsConfig>,
) -> BTreeMap<String, Target> {
    let records: Vec<_> = replica.read(|state| state.nodes.values().cloned().collect());
    records
        .into_iter()
        .map(|n| {
            let target = Target {
                code: n.code.clone(),
                addr: n.addr,
                token: n.token,
                tls: tls.cloned(),
            };
            (n.code, target)
        })
        .collect()
}

/// A client of `target`'s node service, and `message` with the token it expects. A
/// county's token set runs to tens of megabytes (16 bytes a row), so the limits are wide.
pub(crate) async fn node_call<T>(
    target: &Target,
    message: T,
) -> Result<(NodeServiceClient<Channel>, Request<T>), Status> {
    let channel = sunlight_flightsql::endpoint(&target.addr, target.tls.as_ref())
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "cannot reach node {} at {}: {e}",
                target.code, target.addr
            ))
        })?;
    let mut request = Request::new(message);
    let bearer = format!("Bearer {}", target.token)
        .parse()
        .map_err(|_| Status::internal("the node token is not ASCII"))?;
    request.metadata_mut().insert("authorization", bearer);
    let client = NodeServiceClient::new(channel)
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(1 << 30);
    Ok((client, request))
}
