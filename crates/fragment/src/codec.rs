//! The datafusion-proto extension codec for fragments: encodes [`TableLeafExec`] as a
//! `sunlight.v1.TableLeaf` message.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use sunlight_proto::v1::TableLeaf;

use crate::TableLeafExec;

/// Encodes and decodes the extension nodes of fragments.
#[derive(Debug, Clone, Copy, Default)]
pub struct FragmentCodec;

impl PhysicalExtensionCodec for FragmentCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Plan("a table leaf has no inputs".into()));
        }
        let leaf = TableLeaf::decode(buf)
            .map_err(|e| DataFusionError::Plan(format!("malformed table leaf: {e}")))?;
        let table = leaf
            .table
            .parse()
            .map_err(|e: sunlight_domain::Error| DataFusionError::Plan(e.to_string()))?;
        let projection = leaf
            .projected
            .then(|| leaf.projection.iter().map(|i| *i as usize).collect());
        let limit = leaf.limit.map(|l| l as usize);
        Ok(Arc::new(TableLeafExec::try_new(
            table,
            projection,
            leaf.partitions as usize,
            limit,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let leaf = node.downcast_ref::<TableLeafExec>().ok_or_else(|| {
            DataFusionError::NotImplemented(format!("{} cannot be shipped to a node", node.name()))
        })?;
        if leaf.persons() {
            return Err(DataFusionError::Internal(
                "a leaf with the person census column is made at a node and never travels".into(),
            ));
        }
        let message = TableLeaf {
            table: leaf.table().name().to_string(),
            projection: leaf
                .projection()
                .unwrap_or_default()
                .iter()
                .map(|i| *i as u32)
                .collect(),
            projected: leaf.projection().is_some(),
            partitions: leaf.partitions() as u32,
            limit: leaf.limit().map(|l| l as u64),
        };
        message
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }
}
