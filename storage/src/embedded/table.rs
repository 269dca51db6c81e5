//! The embedded store read by DataFusion: [`ScopedTable`], a table provider that can only
//! return rows of one tenant scope.
//!
//! The scope is applied twice, both times beneath whatever asks:
//! 1. Only the Parquet files of the scope's partition directories (its organisation,
//!    workspaces and days) are listed, so another tenant's file is never opened.
//! 2. Every row the Parquet scan yields passes the scope's own predicate (the *wall*: the
//!    organisation, and per workspace the namespaces granted) in a filter the provider puts
//!    above its scan, so a misplaced file, a wrong statistic or a filter a caller forgot can
//!    never widen a read.
//!
//! Filters a query pushes down (the time range, column conditions) prune row groups by the
//! files' statistics and are evaluated with the wall above the scan: they only narrow. The wall
//! is built from values (`lit`), never from text, like every other condition here.
//!
//! The store's own reads ([`super::EmbeddedStore`]'s search, histogram, streams and scans) build
//! the physical plan directly with [`ScopedTable::plan`]; registered in a DataFusion session,
//! the same provider answers DataFrame queries with the same wall.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use auth::{Namespaces, TenantScope};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::execution_props::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use futures_util::StreamExt;
use schemas::Table;

use super::wall::WallExec;
use crate::{ScanRequest, StoreError};

/// One table of the embedded store as one tenant scope may see it.
#[derive(Debug)]
pub struct ScopedTable {
    schema: SchemaRef,
    /// The Parquet files of the scope's partition directories, with their sizes.
    files: Vec<PartitionedFile>,
    /// What every returned row satisfies.
    wall: Expr,
}

impl ScopedTable {
    /// `files` must come from the scope's partition directories; `wall` from [`wall_of_scope`]
    /// or [`wall_of_request`] for the same scope.
    pub(super) fn new(table: Table, files: Vec<(PathBuf, u64)>, wall: Expr) -> Result<ScopedTable, StoreError> {
        let files = files
            .into_iter()
            .map(|(path, size)| {
                let location = ObjectPath::from_absolute_path(&path).map_err(|e| StoreError::Unavailable(format!("file {}: {e}", path.display())))?;
                let meta = ObjectMeta { location, last_modified: chrono::DateTime::UNIX_EPOCH, size, e_tag: None, version: None };
                Ok(PartitionedFile::new_from_meta(meta))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ScopedTable { schema: schemas::arrow_schema::schema(table), files, wall })
    }

    /// The physical plan of a read: DataFusion's Parquet scan of the scope's files, its row
    /// groups pruned by the wall and `filters`, under a [`WallExec`] that keeps only
    /// the rows satisfying both, then `projection` (indices into the table's schema; `None`:
    /// every column).
    pub fn plan(&self, projection: Option<&Vec<usize>>, filters: &[Expr]) -> DfResult<Arc<dyn ExecutionPlan>> {
        let predicate = filters.iter().fold(self.wall.clone(), |all, f| all.and(f.clone()));
        // The scan reads the projection's columns first, then those only the predicate needs.
        let read: Option<Vec<usize>> = projection.map(|p| {
            let mut columns = p.clone();
            for c in predicate.column_refs() {
                if let Ok(i) = self.schema.index_of(&c.name)
                    && !columns.contains(&i)
                {
                    columns.push(i);
                }
            }
            columns
        });
        // Pruning by row-group statistics only: the page index would be read and decoded for
        // every column of every file per query, and prunes nothing here (only the time column
        // keeps statistics, and a row group's times fill about one page).
        let source = ParquetSource::new(self.schema.clone()).with_predicate(physical(&predicate, &self.schema)?).with_enable_page_index(false);
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
            .with_file_groups(self.file_groups())
            .with_projection_indices(read.clone())?
            .build();
        let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let wall = physical(&predicate, &scan.schema())?;
        let output = projection.map(|p| (0..p.len()).collect());
        Ok(Arc::new(WallExec::new(scan, wall, output)?))
    }

    /// The files spread over as many groups as there are cores (each group is read by one
    /// task), largest first so the groups come out about even.
    fn file_groups(&self) -> Vec<FileGroup> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let groups = cores.min(self.files.len()).max(1);
        let mut files = self.files.clone();
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut out: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups];
        for f in files {
            if let Some(smallest) = out.iter_mut().min_by_key(|(bytes, _)| *bytes) {
                smallest.0 += f.object_meta.size;
                smallest.1.push(f);
            }
        }
        out.into_iter().map(|(_, files)| FileGroup::new(files)).collect()
    }

    /// The index of `column` in the table's schema.
    pub fn column(&self, column: &str) -> Option<usize> {
        self.schema.index_of(column).ok()
    }

    /// `from_ns <= timestamp < to_ns`, as literals of the table's time type.
    pub fn time_range(&self, from_ns: i64, to_ns: i64) -> Expr {
        let Ok(field) = self.schema.field_with_name("timestamp") else { return lit(false) };
        let at = |ns: i64| match field.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, tz) => ScalarValue::TimestampMillisecond(Some(ns.div_euclid(1_000_000)), tz.clone()),
            DataType::Timestamp(_, tz) => ScalarValue::TimestampNanosecond(Some(ns), tz.clone()),
            _ => ScalarValue::Int64(Some(ns)),
        };
        col("timestamp").gt_eq(lit(at(from_ns))).and(col("timestamp").lt(lit(at(to_ns))))
    }
}

#[async_trait]
impl TableProvider for ScopedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used for pruning and evaluated again above the scan by the plan itself.
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], _limit: Option<usize>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.plan(projection, filters)
    }
}

/// `e` as a physical expression over `schema`.
fn physical(e: &Expr, schema: &SchemaRef) -> DfResult<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    create_physical_expr(e, &df_schema, &ExecutionProps::new(), &PhysicalPlanningContext::default())
}

/// The wall of a search scope: its organisation, and for workload logs each granted workspace
/// with the namespaces granted in it. A scope that can match nothing is `false`.
pub(crate) fn wall_of_scope(scope: &TenantScope) -> Expr {
    let mut parts = Vec::new();
    if let Some(org) = scope.org_id() {
        parts.push(col("org_id").eq(lit(org)));
    }
    if let Some(grants) = scope.grants() {
        let per_workspace = grants.iter().filter(|g| !g.namespaces().is_empty()).map(|g| {
            let ws = col("workspace").eq(lit(g.workspace()));
            match g.namespaces() {
                Namespaces::All => ws,
                Namespaces::Only(set) => ws.and(col("project").in_list(set.iter().map(|p| lit(p.as_str())).collect(), false)),
            }
        });
        parts.push(datafusion::logical_expr::utils::disjunction(per_workspace).unwrap_or_else(|| lit(false)));
    }
    conjunction(parts).unwrap_or_else(|| lit(true))
}

/// The wall of a scan request: its organisation and workspaces, on the columns `table` has.
/// A condition on a column the table lacks matches nothing (fail closed).
pub(crate) fn wall_of_request(req: &ScanRequest) -> Expr {
    let schema = schemas::arrow_schema::schema(req.table);
    let has = |c: &str| schema.index_of(c).is_ok();
    let mut parts = Vec::new();
    if let Some(org) = &req.org_id {
        parts.push(if has("org_id") { col("org_id").eq(lit(org.as_str())) } else { lit(false) });
    }
    if let Some(ws) = &req.workspaces {
        parts.push(if has("workspace") { col("workspace").in_list(ws.iter().map(|w| lit(w.as_str())).collect(), false) } else { lit(false) });
    }
    conjunction(parts).unwrap_or_else(|| lit(true))
}

/// Runs `plan` to the end on the current Tokio runtime, handing each batch to `f`. Called
/// from a blocking thread (the store's reads run in `spawn_blocking`), which may wait on the
/// runtime; an error from `f` stops the read.
pub(super) fn each_batch(plan: Arc<dyn ExecutionPlan>, mut f: impl FnMut(&RecordBatch) -> Result<(), StoreError>) -> Result<(), StoreError> {
    let unreadable = |e: datafusion::error::DataFusionError| StoreError::Unavailable(format!("reading stored files: {e}"));
    tokio::runtime::Handle::current().block_on(async {
        let mut stream = datafusion::physical_plan::execute_stream(plan, task_context()).map_err(unreadable)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(unreadable)?;
            if batch.num_rows() > 0 {
                f(&batch)?;
            }
        }
        Ok(())
    })
}

/// The execution context of every read: DataFusion's defaults (8,192-row batches, the local
/// file system), made once rather than per query.
fn task_context() -> Arc<TaskContext> {
    static CONTEXT: std::sync::OnceLock<Arc<TaskContext>> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(|| Arc::new(TaskContext::default())).clone()
}
