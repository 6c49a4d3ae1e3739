//! The gRPC status of a query that DataFusion failed, the same at a node and at the city.

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tonic::Status;

/// `InvalidArgument` where the query is at fault: its SQL, its names, arguments a
/// function does not take as it runs (DataFusion's execution errors, such as
/// `date_part('decade', …)`), or values it asks to convert or compute that cannot be (a
/// cast of `'abc'` to a decimal, a division by zero); `ResourceExhausted` where memory
/// ran out; `Internal` otherwise.
pub fn query_status(e: &DataFusionError) -> Status {
    let message = e.to_string();
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_) => Status::invalid_argument(message),
        DataFusionError::ArrowError(arrow, _) if of_the_query(arrow) => {
            Status::invalid_argument(message)
        }
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

/// Whether Arrow failed on what the query asked of the values.
fn of_the_query(e: &ArrowError) -> bool {
    matches!(
        e,
        ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::DivideByZero
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_the_query_cannot_convert_is_the_callers_fault() {
        let cast = DataFusionError::Context(
            "Optimizer rule 'simplify_expressions' failed".into(),
            Box::new(ArrowError::CastError("Cannot cast string 'abc'".into()).into()),
        );
        let status = query_status(&cast);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("Cannot cast string 'abc'"));

        let argument = DataFusionError::Execution("Date part 'decade' not supported".into());
        assert_eq!(query_status(&argument).code(), tonic::Code::InvalidArgument);

        let io = ArrowError::IoError("disk".into(), std::io::Error::other("gone"));
        assert_eq!(query_status(&io.into()).code(), tonic::Code::Internal);
    }
}
