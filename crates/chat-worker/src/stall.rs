//! Slow consumers: a client that stops reading is cut off at the transport.
//!
//! When a client stops reading, the kernel's socket buffers fill, writes to it stay pending, and
//! its socket.io send queue fills (`--send-queue` packets; further messages to it are dropped).
//! socketioxide cannot close a socket whose queue is full (closing sends a packet first), so the
//! cut-off happens below it: every accepted connection is wrapped in a [`StallGuard`] (by
//! `edge::serve`), which
//! fails the connection's reads and writes once a write has been pending for
//! `--write-stall-timeout-ms`. The failed read ends the connection, socketioxide runs the
//! socket's disconnect handler, and every buffer the client held is freed. A client that reads,
//! however slowly, never stalls that long.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection that is cut (reads and writes fail) once a write has stayed pending for
/// `limit`. The stall is timed by a task of its own, so the cut happens even though nothing
/// polls the connection while it waits (engineioxide ignores write errors and would otherwise
/// keep a dead writer and an idle reader forever).
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    shared: Arc<Shared>,
    /// The stall this side is in, if a write is pending.
    stall: Option<u64>,
    /// What the connection holds while it is open (its slot in the per-address count): freed
    /// with the connection, also after an upgrade hands it to the websocket.
    _held: Option<Box<dyn Send + Sync>>,
}

/// Cuts one connection from outside (a socket disconnected for abuse): its reads and writes
/// fail from then on, as for a stall.
#[derive(Clone)]
pub struct Cutter(Arc<Shared>);

impl std::fmt::Debug for Cutter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cutter")
    }
}

impl Cutter {
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::Release);
        self.0.reader.wake();
        self.0.writer.wake();
    }
}

/// What the watch task and the connection share. Allocated once per connection (small).
#[derive(Default)]
struct Shared {
    /// Bumped when a stall starts or ends: a watch acts only on the stall it was started for.
    stalls: AtomicU64,
    cut: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            shared: Arc::default(),
            stall: None,
            _held: None,
        }
    }

    /// A handle that cuts this connection.
    pub fn cutter(&self) -> Cutter {
        Cutter(Arc::clone(&self.shared))
    }

    /// The same connection, holding `held` until it is dropped.
    pub fn holding(mut self, held: Option<Box<dyn Send + Sync>>) -> Self {
        self._held = held;
        self
    }

    fn cut_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading (write stalled)",
        )
    }

    /// A write is pending: starts timing the stall if it is a new one.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.shared.writer.register(cx.waker());
        if self.shared.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::cut_error()));
        }
        if self.stall.is_none() {
            let stall = self.shared.stalls.fetch_add(1, Ordering::AcqRel) + 1;
            self.stall = Some(stall);
            tokio::spawn(watch(Arc::clone(&self.shared), stall, self.limit));
        }
        Poll::Pending
    }

    fn progressed<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if self.stall.take().is_some() {
            // Ends the stall: its watch finds the counter moved on and does nothing.
            self.shared.stalls.fetch_add(1, Ordering::AcqRel);
        }
        result
    }
}

/// Cuts the connection if stall number `stall` is still going on after `limit`.
async fn watch(shared: Arc<Shared>, stall: u64, limit: Duration) {
    tokio::time::sleep(limit).await;
    if shared.stalls.load(Ordering::Acquire) == stall {
        // Per client, so at debug: a client must not be able to write the log.
        crate::metrics::dropped(crate::metrics::Dropped::SlowConsumer, 1);
        tracing::debug!(
            stalled_ms = limit.as_millis() as u64,
            "cutting off a client that stopped reading"
        );
        shared.cut.store(true, Ordering::Release);
        shared.reader.wake();
        shared.writer.wake();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.shared.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::cut_error()));
        }
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_pending() {
            self.shared.reader.register(cx.waker());
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shared.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::cut_error()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            ready => self.progressed(ready),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.shared.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(Self::cut_error()));
        }
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            ready => self.progressed(ready),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_pending_past_the_limit_fails_and_progress_resets_it() {
        // A pipe with room for 8 bytes whose reader never reads.
        let (writer, _reader) = tokio::io::duplex(8);
        let mut guard = StallGuard::new(writer, Duration::from_secs(2));
        guard.write_all(b"12345678").await.unwrap();
        let stalled = guard.write_all(b"more").await.unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        let mut buf = [0u8; 1];
        let cut = guard.read(&mut buf).await.unwrap_err();
        assert_eq!(
            cut.kind(),
            io::ErrorKind::TimedOut,
            "the read side is cut too"
        );

        // A reader that keeps up never trips it.
        let (writer, mut sink) = tokio::io::duplex(8);
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let mut total = 0;
            while total < 64 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                total += sink.read(&mut buf).await.unwrap();
            }
        });
        let mut guard = StallGuard::new(writer, Duration::from_secs(2));
        guard.write_all(&[7u8; 64]).await.unwrap();
        drain.await.unwrap();
    }
}
