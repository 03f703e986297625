//! A request body with a deadline: the whole body must arrive within `--body-read-timeout-ms`
//! of its head. Timing each chunk alone (as a per-frame timeout does) would let a client
//! trickle one byte every few seconds forever.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::counters::{self, Refusal};

/// The error a late body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} ms")]
pub struct BodyTimeout(u64);

/// `inner`, failing once `limit` has passed since it was made.
pub struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    pub fn new(inner: Body, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            limit,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            counters::count(Refusal::BodyTimeout);
            let limit_ms = self.limit.as_millis() as u64;
            tracing::debug!(limit_ms, "request body too slow");
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(limit_ms)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_fails_at_the_deadline_and_a_prompt_one_passes() {
        // One byte a second, for 100 seconds.
        let trickle = futures_util::stream::unfold(0, |sent| async move {
            if sent == 100 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
        });
        let late = DeadlineBody::new(Body::from_stream(trickle), Duration::from_secs(5));
        assert!(
            axum::body::to_bytes(Body::new(late), usize::MAX)
                .await
                .is_err(),
            "a body trickled past the deadline fails"
        );

        let prompt = DeadlineBody::new(Body::from("hello"), Duration::from_secs(5));
        let bytes = axum::body::to_bytes(Body::new(prompt), usize::MAX)
            .await
            .expect("a prompt body passes");
        assert_eq!(&bytes[..], b"hello");
    }
}
