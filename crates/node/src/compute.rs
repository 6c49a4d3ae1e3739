//! The runtime that computes queries, apart from the one that serves calls. A query that
//! computes long between two batches (a cross join, say) would otherwise hold every thread
//! that reads the node's connections: the node would answer no one else, and would not see
//! that its caller had left, so the query would run on to its end for no one. Here the
//! serving threads stay free, and a caller that leaves stops its query.

use std::future::Future;
use std::sync::Arc;

use datafusion::common::runtime::SpawnedTask;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use tokio::runtime::{Builder, Handle, Runtime};

/// Batches a query may compute ahead of its caller.
const AHEAD: usize = 2;

/// The query runtime, one thread per core.
#[derive(Debug)]
pub struct Compute {
    runtime: Option<Runtime>,
}

impl Compute {
    /// Starts the runtime's threads.
    pub fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .thread_name("sunlight-query")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("running until dropped")
            .handle()
    }

    /// Runs `work` on the query runtime. Dropping the returned future stops it there; a
    /// panic in it resumes in the caller.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let task = {
            let _entered = self.handle().enter();
            SpawnedTask::spawn(work)
        };
        task.join_unwind()
            .await
            .expect("a task the runtime was not shut down under")
    }

    /// Executes `plan` on the query runtime: the tasks its operators start run there, as
    /// does the polling of its stream. Dropping the returned stream stops them.
    pub fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let _entered = self.handle().enter();
        Ok(self.stream(execute_stream(plan, task)?))
    }

    /// `stream`, polled on the query runtime. Dropping the returned stream stops it there.
    fn stream(&self, mut stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let _entered = self.handle().enter();
        let mut builder = RecordBatchReceiverStreamBuilder::new(stream.schema(), AHEAD);
        let sender = builder.tx();
        builder.spawn(async move {
            while let Some(batch) = stream.next().await {
                if sender.send(batch).await.is_err() {
                    break;
                }
            }
            Ok(())
        });
        builder.build()
    }
}

impl Drop for Compute {
    /// Stops the threads without waiting for them, as a node may be dropped by a task.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use arrow::datatypes::Schema;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;

    /// A stream that never yields a batch, computing between its polls (and yielding to
    /// its runtime now and then, as DataFusion's operators do), and that sets `dropped`
    /// once it is dropped.
    fn endless(dropped: Arc<AtomicBool>) -> SendableRecordBatchStream {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(dropped);
        let batches = futures::stream::repeat(())
            .then(move |()| {
                let _ = &flag;
                async {
                    std::thread::sleep(Duration::from_millis(5));
                    tokio::task::yield_now().await;
                }
            })
            .filter_map(|()| async { None });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::new(Schema::empty()),
            batches,
        ))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_query_computes_apart_and_stops_when_its_caller_leaves() {
        let compute = Compute::start().unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let mut stream = compute.stream(endless(dropped.clone()));
        // The serving thread stays free while the query computes: this test's one thread
        // times out the wait for a batch.
        let waited = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(
            waited.is_err(),
            "no batch, and no hold on the caller's thread"
        );
        drop(stream);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the query stops once its caller leaves");

        let answer = compute.run(async { 6 * 7 }).await;
        assert_eq!(answer, 42);
    }
}
