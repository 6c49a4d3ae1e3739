//! [`Join`]: the joins a fragment may hold, seen alike by the rules that cut, check and
//! count fragments.

use std::sync::Arc;

use datafusion::common::{JoinType, internal_datafusion_err};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{
    HashJoinExec, JoinOn, JoinOnRef, NestedLoopJoinExec, NestedLoopJoinExecBuilder,
};

/// A join inside a fragment: by hashing equal keys, or, where it has none (a join with the
/// reference table on `amount > cap` alone), by testing every pair of rows.
#[derive(Debug, Clone, Copy)]
pub enum Join<'a> {
    /// A join on equal keys, and perhaps a filter.
    Hash(&'a HashJoinExec),
    /// A join on a filter alone, or on none (every pair of rows).
    Loops(&'a NestedLoopJoinExec),
}

impl<'a> Join<'a> {
    /// `plan` as a join, if it is one of these.
    pub fn of(plan: &'a Arc<dyn ExecutionPlan>) -> Option<Self> {
        match plan.downcast_ref::<HashJoinExec>() {
            Some(hash) => Some(Self::Hash(hash)),
            None => plan.downcast_ref().map(Self::Loops),
        }
    }

    /// The operator's name.
    pub fn name(self) -> &'a str {
        match self {
            Self::Hash(j) => j.name(),
            Self::Loops(j) => j.name(),
        }
    }

    /// The left input, which a node collects and builds from.
    pub fn left(self) -> &'a Arc<dyn ExecutionPlan> {
        match self {
            Self::Hash(j) => j.left(),
            Self::Loops(j) => j.left(),
        }
    }

    /// The right input, which a node streams.
    pub fn right(self) -> &'a Arc<dyn ExecutionPlan> {
        match self {
            Self::Hash(j) => j.right(),
            Self::Loops(j) => j.right(),
        }
    }

    /// The pairs of equal keys; none for a join by nested loops.
    pub fn on(self) -> JoinOnRef<'a> {
        match self {
            Self::Hash(j) => j.on(),
            Self::Loops(_) => &[],
        }
    }

    /// The condition pairs of rows must meet besides equal keys.
    pub fn filter(self) -> Option<&'a JoinFilter> {
        match self {
            Self::Hash(j) => j.filter(),
            Self::Loops(j) => j.filter(),
        }
    }

    /// Which rows the join gives.
    pub fn join_type(self) -> JoinType {
        match self {
            Self::Hash(j) => *j.join_type(),
            Self::Loops(j) => *j.join_type(),
        }
    }

    /// The columns of the joined rows it gives, by index; `None` for all of them.
    pub fn projection(self) -> Option<&'a [usize]> {
        match self {
            Self::Hash(j) => j.projection.as_deref(),
            Self::Loops(j) => j.projection().as_deref(),
        }
    }

    /// The same join over `children`, on the keys `on` (nested loops have none), giving
    /// `projection`.
    pub fn rebuilt(
        self,
        children: Vec<Arc<dyn ExecutionPlan>>,
        on: JoinOn,
        projection: Option<Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self {
            Self::Hash(j) => j
                .builder()
                .with_on(on)
                .with_new_children(children)?
                .with_projection(projection)
                .build_exec(),
            Self::Loops(j) => {
                let [left, right]: [Arc<dyn ExecutionPlan>; 2] =
                    children.try_into().map_err(|c: Vec<_>| {
                        internal_datafusion_err!("a join of {} inputs", c.len())
                    })?;
                let join = NestedLoopJoinExecBuilder::new(left, right, *j.join_type())
                    .with_filter(j.filter().cloned())
                    .with_projection(projection)
                    .build()?;
                Ok(Arc::new(join))
            }
        }
    }
}
