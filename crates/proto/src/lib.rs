//! Generated gRPC and protobuf code of package `sunlight.v1`, and Arrow Flight's session
//! messages (see `proto/`).

/// Package `sunlight.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("sunlight.v1");
}

/// Arrow Flight's session messages (package `arrow.flight.protocol`), which the
/// `arrow-flight` crate does not carry yet.
#[allow(missing_docs, clippy::all)]
pub mod flight {
    tonic::include_proto!("arrow.flight.protocol");
}
