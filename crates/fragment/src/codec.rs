//! The datafusion-proto extension codec for fragments: encodes [`TableLeafExec`] as a
//! `sunlight.v1.TableLeaf` message. [`SubqueryValues`] encodes the value of a scalar
//! subquery that already ran at the city as a literal.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalPlanNode};
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

/// Encodes a fragment whose expressions read scalar subqueries of the city's plan. Their
/// values are known once the city has run the subqueries, and each travels as a literal,
/// since a node never sees the subquery itself.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SubqueryValues;

impl PhysicalProtoConverterExtension for SubqueryValues {
    fn proto_to_execution_plan(
        &self,
        proto: &PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.default_proto_to_execution_plan(proto, ctx)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalPlanNode> {
        PhysicalPlanNode::try_from_physical_plan_with_converter(Arc::clone(plan), codec, self)
    }

    fn proto_to_physical_expr(
        &self,
        proto: &PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<PhysicalExprNode> {
        if !expr.is::<ScalarSubqueryExpr>() {
            return serialize_physical_expr_with_converter(expr, codec, self);
        }
        let no_rows = RecordBatch::new_empty(SchemaRef::new(Schema::empty()));
        let ColumnarValue::Scalar(value) = expr.evaluate(&no_rows)? else {
            return Err(DataFusionError::Internal(
                "a scalar subquery gave an array".into(),
            ));
        };
        let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(value));
        serialize_physical_expr_with_converter(&literal, codec, self)
    }
}

/// Whether an expression of `plan` reads the value of a scalar subquery, which is only
/// known once the subquery has run.
pub fn reads_scalar_subquery(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| {
        let mut found = false;
        node.apply_expressions(&mut |expr| {
            found = expr.exists(|e| Ok(e.is::<ScalarSubqueryExpr>()))?;
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        Ok(found)
    })
    .unwrap_or(false)
}
