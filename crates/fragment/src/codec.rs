//! The datafusion-proto extension codec for fragments: encodes [`TableLeafExec`] as a
//! `sunlight.v1.TableLeaf` message. [`SubqueryValues`] encodes the value of a scalar
//! subquery that already ran at the city as a literal, or as an IN list.

use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr_with_converter;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::physical_expr_node::ExprType;
use datafusion_proto::protobuf::{PhysicalExprNode, PhysicalInListNode, PhysicalPlanNode};
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
        Ok(Arc::new(
            TableLeafExec::try_new(table, projection, leaf.partitions as usize, limit)?
                .with_copy(leaf.copy_sha256),
        ))
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
            copy_sha256: leaf.copy().map(str::to_string),
        };
        message
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }
}

/// Encodes a fragment whose expressions read scalar subqueries of the city's plan. Their
/// values are known once the city has run the subqueries, and each travels as a literal,
/// since a node never sees the subquery itself; membership in a subquery's list of values
/// travels as an IN list of them.
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
        if let Some(listed) = self.membership_in_list(expr, codec)? {
            return Ok(listed);
        }
        if !expr.is::<ScalarSubqueryExpr>() {
            return serialize_physical_expr_with_converter(expr, codec, self);
        }
        let literal: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(subquery_value(expr)?));
        serialize_physical_expr_with_converter(&literal, codec, self)
    }
}

impl SubqueryValues {
    /// `array_has(L, x)`, where `L` is a subquery's list of values, as `x IN (…)` over
    /// the values of `L` that are not NULL: the same answer, which a node finds in a hash
    /// set, rather than comparing each row with a copy of the whole list. `None` for any
    /// other expression, and for a list that is NULL or holds no value.
    fn membership_in_list(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<Option<PhysicalExprNode>> {
        let Some(function) = expr.downcast_ref::<ScalarFunctionExpr>() else {
            return Ok(None);
        };
        let [list, needle] = function.args() else {
            return Ok(None);
        };
        if function.fun().name() != "array_has" || !list.is::<ScalarSubqueryExpr>() {
            return Ok(None);
        }
        let ScalarValue::List(lists) = subquery_value(list)? else {
            return Ok(None);
        };
        if lists.is_null(0) {
            return Ok(None);
        }
        let values = lists.value(0);
        let literals = (0..values.len())
            .filter(|&i| values.is_valid(i))
            .map(|i| {
                let value: Arc<dyn PhysicalExpr> =
                    Arc::new(Literal::new(ScalarValue::try_from_array(&values, i)?));
                serialize_physical_expr_with_converter(&value, codec, self)
            })
            .collect::<Result<Vec<_>>>()?;
        if literals.is_empty() {
            return Ok(None);
        }
        let needle = serialize_physical_expr_with_converter(needle, codec, self)?;
        Ok(Some(PhysicalExprNode {
            expr_id: None,
            expr_type: Some(ExprType::InList(Box::new(PhysicalInListNode {
                expr: Some(Box::new(needle)),
                list: literals,
                negated: false,
            }))),
        }))
    }
}

/// The value of a scalar subquery that already ran at the city.
fn subquery_value(expr: &Arc<dyn PhysicalExpr>) -> Result<ScalarValue> {
    let no_rows = RecordBatch::new_empty(SchemaRef::new(Schema::empty()));
    match expr.evaluate(&no_rows)? {
        ColumnarValue::Scalar(value) => Ok(value),
        ColumnarValue::Array(_) => Err(DataFusionError::Internal(
            "a scalar subquery gave an array".into(),
        )),
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

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, StringArray};
    use arrow::datatypes::{DataType, Field};
    use datafusion::config::ConfigOptions;
    use datafusion::functions_nested::array_has::array_has_udf;
    use datafusion::logical_expr::physical_planning_context::{
        ScalarSubqueryResults, SubqueryIndex,
    };
    use datafusion::physical_expr::expressions::{InListExpr, col};
    use datafusion_proto::physical_plan::from_proto::parse_physical_expr;

    use super::*;

    #[test]
    fn membership_in_a_subquerys_list_travels_as_an_in_list_that_answers_alike() {
        let schema = Schema::new(vec![Field::new("x", DataType::Utf8, true)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema.clone()),
            vec![Arc::new(StringArray::from(vec![
                Some("a"),
                Some("c"),
                None,
                Some("b"),
            ]))],
        )
        .unwrap();
        let index = SubqueryIndex::new(0);
        let results = ScalarSubqueryResults::new(1);
        let values = [Some("a"), None, Some("b")].map(|v| ScalarValue::Utf8(v.map(String::from)));
        let value = ScalarValue::List(ScalarValue::new_list(&values, &DataType::Utf8, true));
        results.set(index, value.clone()).unwrap();
        let list = ScalarSubqueryExpr::new(value.data_type(), true, index, results);
        let membership: Arc<dyn PhysicalExpr> = Arc::new(
            ScalarFunctionExpr::try_new(
                array_has_udf(),
                vec![Arc::new(list), col("x", &schema).unwrap()],
                &schema,
                Arc::new(ConfigOptions::default()),
            )
            .unwrap(),
        );

        let proto = SubqueryValues
            .physical_expr_to_proto(&membership, &FragmentCodec)
            .unwrap();
        let decoded =
            parse_physical_expr(&proto, &TaskContext::default(), &schema, &FragmentCodec).unwrap();
        assert!(decoded.is::<InListExpr>(), "{decoded}");
        let answer = |e: &Arc<dyn PhysicalExpr>| e.evaluate(&batch).unwrap().to_array(4).unwrap();
        let expected = BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]);
        assert_eq!(answer(&membership).as_ref(), &expected);
        assert_eq!(answer(&decoded).as_ref(), &expected);
    }
}
