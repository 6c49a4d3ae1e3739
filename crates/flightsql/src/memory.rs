//! The memory an engine's queries may hold at once.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};

/// A pool that lets an engine's queries hold at most `limit_mb` MiB between them.
/// Operators that can spill share what the others leave, evenly; the error of one that
/// cannot go on names the largest holders.
pub fn memory_pool(limit_mb: usize) -> Arc<dyn MemoryPool> {
    Arc::new(TrackConsumersPool::new(
        FairSpillPool::new(limit_mb.saturating_mul(1 << 20)),
        NonZeroUsize::new(3).expect("not zero"),
    ))
}
