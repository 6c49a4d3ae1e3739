//! Generated gRPC and protobuf code of package `sunlight.v1` (see `proto/`).

/// Package `sunlight.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("sunlight.v1");
}
