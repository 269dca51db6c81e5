//! [`WallExec`]: the filter [`super::ScopedTable`] puts above its Parquet scan.
//!
//! DataFusion's own `FilterExec` copies every row it keeps into new batches (it coalesces its
//! output). A scoped read keeps nearly every row the scan yields (the files are the scope's
//! own), so this filter hands a batch on untouched when all of its rows pass and copies only
//! when some do not; a row the predicate finds false or null is dropped.

use std::fmt;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions};
use futures_util::StreamExt;

/// The rows of `input` that satisfy `predicate`, with the columns of `projection`.
#[derive(Debug)]
pub(super) struct WallExec {
    input: Arc<dyn ExecutionPlan>,
    predicate: Arc<dyn PhysicalExpr>,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl WallExec {
    pub(super) fn new(input: Arc<dyn ExecutionPlan>, predicate: Arc<dyn PhysicalExpr>, projection: Option<Vec<usize>>) -> DfResult<WallExec> {
        let schema: SchemaRef = match &projection {
            Some(p) => Arc::new(input.schema().project(p)?),
            None => input.schema(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            input.properties().output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(WallExec { input, predicate, projection, properties: Arc::new(properties) })
    }
}

/// The rows of `batch` for which `predicate` is true: the batch itself when that is all of them.
fn keep(batch: RecordBatch, predicate: &dyn PhysicalExpr, projection: Option<&[usize]>) -> DfResult<RecordBatch> {
    let verdict = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
    let verdict = verdict.as_boolean_opt().ok_or_else(|| DataFusionError::Internal("the wall's predicate is not boolean".into()))?;
    let kept = if verdict.true_count() == batch.num_rows() { batch } else { filter_record_batch(&batch, verdict)? };
    Ok(match projection {
        Some(p) => kept.project(p)?,
        None => kept,
    })
}

impl DisplayAs for WallExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WallExec: {}", self.predicate)
    }
}

impl ExecutionPlan for WallExec {
    fn name(&self) -> &str {
        "WallExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(&self, f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>) -> DfResult<TreeNodeRecursion> {
        f(&self.predicate)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>, _: ReplaceChildrenOptions) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("WallExec has one input".into()));
        }
        Ok(Arc::new(WallExec::new(children.swap_remove(0), self.predicate.clone(), self.projection.clone())?))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let (predicate, projection) = (self.predicate.clone(), self.projection.clone());
        let kept = input.map(move |batch| keep(batch?, predicate.as_ref(), projection.as_deref()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), kept)))
    }
}
