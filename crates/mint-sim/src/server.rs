//! The listener and connection plumbing under the axum app.
//!
//! The "response lost after commit" fault needs the server to close a connection without sending a
//! single byte of the response. Each accepted socket is wrapped in a [`Severable`] stream whose
//! switch the handler can see (through [`Connection`], axum's connect info); once the switch is
//! thrown every write fails, so hyper drops the connection before the status line. No panic, no
//! log spam: hyper reports the failed write to axum, which only traces it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP stream whose writes can be cut off from elsewhere.
#[derive(Debug)]
pub struct Severable {
    stream: TcpStream,
    severed: Arc<AtomicBool>,
}

impl Severable {
    fn check(&self) -> io::Result<()> {
        if self.severed.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection severed by fault injection",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Severable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections are [`Severable`].
#[derive(Debug)]
pub struct SeverableListener {
    listener: TcpListener,
}

impl SeverableListener {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener) -> Self {
        Self { listener }
    }
}

impl Listener for SeverableListener {
    type Io = Severable;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    // Small requests answer faster without Nagle; failure only costs latency.
                    let _ = stream.set_nodelay(true);
                    return (
                        Severable {
                            stream,
                            severed: Arc::new(AtomicBool::new(false)),
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// What a handler knows about its connection: the peer, and the switch that severs it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    severed: Arc<AtomicBool>,
}

impl Connection {
    /// Makes every later write on this connection fail, so the current response is never sent.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, SeverableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, SeverableListener>) -> Self {
        Self {
            peer: *stream.remote_addr(),
            severed: stream.io().severed.clone(),
        }
    }
}
