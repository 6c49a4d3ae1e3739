//! Panics in a call's work become errors that say so. A panic inside DataFusion (a bug of
//! its own, as a plan's text it cannot print) must fail that one call with a message, not
//! drop the client's connection with an HTTP/2 error that names nothing.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use tonic::Status;

/// What a caught panic says.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

/// `work`, whose panic becomes an internal error: `{server} failed while {doing}: …`.
pub(crate) async fn caught<T>(
    server: &str,
    doing: &str,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(failed(server, doing, panic.as_ref())))
}

/// `stream`, which ends with an internal error where polling it panics.
pub(crate) fn caught_stream<T>(
    server: Arc<str>,
    doing: &'static str,
    stream: impl Stream<Item = Result<T, Status>> + Send,
) -> impl Stream<Item = Result<T, Status>> + Send {
    AssertUnwindSafe(stream)
        .catch_unwind()
        .map(move |item| item.unwrap_or_else(|panic| Err(failed(&server, doing, panic.as_ref()))))
}

/// What a panic that says `message` tells the caller where the query caused it: arrow's,
/// when a column of text or lists would pass the 2 GiB its 32-bit offsets reach in one
/// batch of rows, as a long constant selected over many rows does.
pub fn too_large(message: &str) -> Option<String> {
    message.contains("offset overflow").then(|| {
        format!(
            "cannot hold this answer: a column of text or lists would pass 2 GiB in one batch \
             of rows ({message}); select shorter values"
        )
    })
}

fn failed(server: &str, doing: &str, panic: &(dyn Any + Send)) -> Status {
    let message = panic_message(panic);
    if let Some(why) = too_large(message) {
        return Status::resource_exhausted(format!("{server} {why}"));
    }
    tracing::error!(%server, doing, message, "a call's work panicked");
    Status::internal(format!("{server} failed while {doing}: {message}"))
}

#[cfg(test)]
mod tests {
    use futures::{TryStreamExt, stream};

    use super::*;

    /// The status of `server`'s work that panicked saying `message` while `doing`.
    async fn panicked(server: &str, doing: &str, message: &'static str) -> Status {
        caught(server, doing, async move {
            if true {
                panic!("{message}");
            }
            Ok(1)
        })
        .await
        .unwrap_err()
    }

    #[tokio::test]
    async fn a_panic_fails_the_call_with_what_it_said() {
        let planned = panicked(
            "sunlight city",
            "planning the statement",
            "end byte index 25 is not a char boundary",
        )
        .await;
        assert_eq!(planned.code(), tonic::Code::Internal);
        assert_eq!(
            planned.message(),
            "sunlight city failed while planning the statement: end byte index 25 is not a char boundary"
        );
        assert_eq!(caught("", "", async { Ok(7) }).await.unwrap(), 7);

        let batches = stream::iter([1, 2, 3]).map(|i| match i {
            3 => panic!("third"),
            i => Ok(i),
        });
        let sent = caught_stream(
            "sunlight node 140215".into(),
            "running the statement",
            batches,
        );
        let mut sent = Box::pin(sent);
        assert_eq!(sent.try_next().await.unwrap(), Some(1));
        assert_eq!(sent.try_next().await.unwrap(), Some(2));
        let failed = sent.try_next().await.unwrap_err();
        assert!(
            failed.message().ends_with("running the statement: third"),
            "{failed}"
        );
        assert!(
            sent.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test]
    async fn a_column_past_its_offsets_is_told_as_too_large() {
        let overflowed = panicked(
            "sunlight node 140215",
            "running the statement",
            "byte array offset overflow",
        )
        .await;
        assert_eq!(overflowed.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            overflowed.message(),
            "sunlight node 140215 cannot hold this answer: a column of text or lists would \
             pass 2 GiB in one batch of rows (byte array offset overflow); select shorter values"
        );
    }
}
