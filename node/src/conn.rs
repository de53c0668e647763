//! Limits on client connections, shared by the HTTP and gRPC servers so that slow or idle
//! clients cannot exhaust the node's file descriptors: a connection beyond `--max-connections`
//! (HTTP and gRPC together) is closed as soon as it is accepted. Each admitted connection holds
//! a permit for as long as it is open, and may be given a deadline for its first bytes (the
//! gRPC server has no header deadline of its own). (Requests have their own limit, in
//! [`crate::http`].)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Admits connections while fewer than the limit are open.
#[derive(Clone)]
pub struct Gate {
    open: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A gate for at most `max` open connections.
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Gate {
        Gate {
            open: Arc::new(Semaphore::new(max.max(1))),
            metrics,
        }
    }

    /// The stream with its permit, or `None` (counted) when the limit is reached: the caller
    /// drops the stream, which closes it.
    pub fn admit(&self, stream: TcpStream) -> Option<Limited> {
        match Arc::clone(&self.open).try_acquire_owned() {
            Ok(permit) => {
                let _ = stream.set_nodelay(true);
                Some(Limited {
                    inner: stream,
                    _permit: permit,
                    first: None,
                })
            }
            Err(_) => {
                self.metrics.connections_refused.inc();
                None
            }
        }
    }
}

/// An admitted connection: the permit goes back when it is dropped.
pub struct Limited {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    first: Option<FirstBytes>,
}

/// Bytes the client still owes, and by when.
struct FirstBytes {
    left: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Limited {
    /// Reading fails with `TimedOut` (which closes the connection) if the client has not sent
    /// its first `bytes` bytes within `within` of now: a client that connects and sends nothing,
    /// or too little to begin, does not hold the connection. Must be called within the runtime.
    pub fn first_bytes_within(mut self, bytes: usize, within: Duration) -> Limited {
        self.first = Some(FirstBytes {
            left: bytes,
            deadline: Box::pin(tokio::time::sleep(within)),
        });
        self
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(first) = &mut this.first {
            match &read {
                Poll::Ready(Ok(())) => {
                    first.left = first.left.saturating_sub(buf.filled().len() - before);
                    if first.left == 0 {
                        this.first = None;
                    }
                }
                // Polling the deadline wakes this reader when it passes.
                Poll::Pending if first.deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent too little before the header deadline",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for Gate {
    type Stream = Limited;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Limited, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(
            self.admit(stream)
                .map(|s| (s, service))
                .ok_or_else(|| io::Error::other("the connection limit is reached")),
        )
    }
}
