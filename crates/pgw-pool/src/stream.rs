//! One byte stream type for every kind of connection the pooler holds: TCP, a Unix socket,
//! or TLS (rustls) over TCP, on either side. An enum rather than a trait object so that
//! the hot path has no dynamic dispatch.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connection to a client or a server.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// A Unix-domain socket.
    Unix(UnixStream),
    /// TLS accepted from a client.
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS opened to a server.
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Nothing (while a stream is moved between threads); every operation fails.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was moved")
}

impl Stream {
    /// Re-registers a plain TCP or Unix stream with the current thread's runtime, so that
    /// the thread that uses it also hears about its events (a stream belongs to the
    /// runtime that registered it). TLS streams stay where they are.
    pub fn rehome(&mut self) -> io::Result<()> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Tcp(s) => *self = Stream::Tcp(TcpStream::from_std(s.into_std()?)?),
            Stream::Unix(s) => *self = Stream::Unix(UnixStream::from_std(s.into_std()?)?),
            other => *self = other,
        }
        Ok(())
    }

    /// Whether the peer has closed or sent something (an idle server should send nothing):
    /// from the readiness the runtime already has, with one non-blocking read only when
    /// it says readable. TLS streams are not checked.
    pub fn closed_or_talking(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        match self {
            Stream::Tcp(s) => match s.poll_read_ready(&mut cx) {
                Poll::Pending => false,
                Poll::Ready(Err(_)) => true,
                Poll::Ready(Ok(())) => {
                    !matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            Stream::Unix(s) => match s.poll_read_ready(&mut cx) {
                Poll::Pending => false,
                Poll::Ready(Err(_)) => true,
                Poll::Ready(Ok(())) => {
                    !matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            Stream::Gone => true,
            _ => false,
        }
    }

    /// Waits until a read would find something (or the end). TLS streams answer at once:
    /// their reader may hold decrypted bytes that no socket readiness shows.
    pub async fn readable(&self) -> io::Result<()> {
        // poll_read_ready uses the stream's one reader waker, as a read does; readable()
        // would queue a waiter under a lock on every call.
        match self {
            Stream::Tcp(s) => std::future::poll_fn(|cx| s.poll_read_ready(cx)).await,
            Stream::Unix(s) => std::future::poll_fn(|cx| s.poll_read_ready(cx)).await,
            _ => Ok(()),
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::TlsServer(_) | Stream::TlsClient(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}
