//! Limits on client connections, shared by the HTTP and gRPC servers so that slow or idle
//! clients cannot exhaust the node's file descriptors: a connection beyond `--max-connections`
//! (HTTP and gRPC together) is closed as soon as it is accepted. Each admitted connection holds
//! a permit for as long as it is open. A gRPC connection ([`Grpc`]) must also finish its TLS
//! handshake and send the HTTP/2 preface within the header deadline, which HTTP/2 servers do
//! not have. (Requests have their own limit, in [`crate::http`].)

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
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
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

/// An admitted gRPC connection, with or without TLS, that owes its first bytes (the HTTP/2
/// preface, after the TLS handshake) by a deadline: reading fails with `TimedOut`, which closes
/// it, if they have not come.
pub struct Grpc {
    transport: Transport,
    owed: Option<Owed>,
}

enum Transport {
    Plain(Limited),
    Tls(Box<tokio_rustls::server::TlsStream<Limited>>),
}

/// Bytes the client still owes, and by when.
struct Owed {
    bytes: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Grpc {
    /// `stream` (TLS-accepted by `tls` within `within`, if given), owing `bytes` bytes within
    /// `within` of the end of the handshake; `None` if the handshake failed or took too long.
    pub async fn accept(
        stream: Limited,
        tls: Option<&tokio_rustls::TlsAcceptor>,
        bytes: usize,
        within: Duration,
    ) -> Option<Grpc> {
        let transport = match tls {
            None => Transport::Plain(stream),
            Some(tls) => match tokio::time::timeout(within, tls.accept(stream)).await {
                Ok(Ok(s)) => Transport::Tls(Box::new(s)),
                _ => return None,
            },
        };
        Some(Grpc {
            transport,
            owed: Some(Owed {
                bytes,
                deadline: Box::pin(tokio::time::sleep(within)),
            }),
        })
    }

    fn io(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Unpin)> {
        match &mut self.transport {
            Transport::Plain(s) => Pin::new(s),
            Transport::Tls(s) => Pin::new(&mut **s),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite> AsyncReadWrite for T {}

impl AsyncRead for Grpc {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = self.io().poll_read(cx, buf);
        let this = &mut *self;
        if let Some(owed) = &mut this.owed {
            match &read {
                Poll::Ready(Ok(())) => {
                    owed.bytes = owed.bytes.saturating_sub(buf.filled().len() - before);
                    if owed.bytes == 0 {
                        this.owed = None;
                    }
                }
                // Polling the deadline wakes this reader when it passes.
                Poll::Pending if owed.deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not begin within the header deadline",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for Grpc {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Grpc {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.transport {
            Transport::Plain(s) => s.connect_info(),
            Transport::Tls(s) => s.get_ref().0.connect_info(),
        }
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
