//! Plan fragments on the wire. The city cuts a physical plan into fragments whose
//! leaves are [`TableLeafExec`]s; a fragment travels as a datafusion-proto plan inside a
//! Flight ticket, and the node replaces each leaf with a scan of its own table.
#![warn(missing_docs)]

mod allowed;
mod codec;
mod join;
mod leaf;
mod lists;
mod masking;
mod split;

use std::sync::Arc;

use arrow_flight::Ticket;
use arrow_flight::sql::Any;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_proto_converter,
};
use prost::Message;
use sunlight_proto::v1::FragmentTicket;

pub use allowed::{is_values, refusal, refused_function, refused_operator, runs_at_nodes};
use codec::SubqueryValues;
pub use codec::{FragmentCodec, reads_scalar_subquery};
pub use join::Join;
pub use leaf::{PERSONS_COLUMN, TableLeafExec};
pub use lists::{MAX_LIST_VALUES, bounded_list_udfs};
pub use masking::{mask_id, mask_name, masking_udfs};
pub use split::{merge_of, partial_of, unmerged_partial_state, whole_of};

/// Type URL under which a [`FragmentTicket`] is packed into a Flight ticket.
pub const FRAGMENT_TYPE_URL: &str = "type.googleapis.com/sunlight.v1.FragmentTicket";

/// Serializes a fragment plan. A scalar subquery it reads must have run: its value travels
/// as a literal (see [`reads_scalar_subquery`]).
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Bytes> {
    physical_plan_to_bytes_with_proto_converter(plan, &FragmentCodec, &SubqueryValues)
}

/// Deserializes a fragment plan; its leaves come back as [`TableLeafExec`]s. A plan nested
/// deeper than protobuf decodes (100 messages, a few for each step of the plan) is refused
/// as such, not with the path of every message down to the limit.
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    physical_plan_from_bytes_with_extension_codec(bytes, ctx, &FragmentCodec).map_err(|e| {
        match e.to_string().ends_with("recursion limit reached") {
            true => DataFusionError::Plan(
                "the fragment nests its steps deeper than protobuf decodes (100 messages, a \
                 few for each step): the query stacks too many steps for a node to run, such \
                 as a join of some 40 tables; split it"
                    .to_string(),
            ),
            false => e,
        }
    })
}

/// A Flight ticket carrying `fragment`.
pub fn ticket(fragment: &FragmentTicket) -> Ticket {
    let any = Any {
        type_url: FRAGMENT_TYPE_URL.to_string(),
        value: Bytes::from(fragment.encode_to_vec()),
    };
    Ticket::new(any.encode_to_vec())
}

/// Reads a fragment from an already unpacked `Any`, if it is one.
pub fn fragment_of(any: &Any) -> Option<Result<FragmentTicket>> {
    (any.type_url == FRAGMENT_TYPE_URL).then(|| {
        FragmentTicket::decode(any.value.clone())
            .map_err(|e| DataFusionError::Plan(format!("malformed fragment ticket: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::limit::GlobalLimitExec;

    use super::*;

    #[test]
    fn a_plan_too_deep_to_decode_is_refused_as_such() {
        let stacked = |steps: usize| {
            let mut plan: Arc<dyn ExecutionPlan> =
                Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
            for _ in 0..steps {
                plan = Arc::new(GlobalLimitExec::new(plan, 0, Some(1)));
            }
            encode_plan(plan).unwrap()
        };
        let ctx = TaskContext::default();
        decode_plan(&stacked(40), &ctx).unwrap();
        let e = decode_plan(&stacked(60), &ctx).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "Error during planning: the fragment nests its steps deeper than protobuf decodes"
            ),
            "{e}"
        );
    }
}
