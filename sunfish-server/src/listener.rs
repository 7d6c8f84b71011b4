//! The accept loop behind [`crate::run`]: plain TCP or TLS, one HTTP/1.1 connection per
//! accepted stream (hyper), the router as the service, and the `[server]` limits. Both schemes
//! go through the same loop, so every limit applies to them alike.
//!
//! What a client meets at each limit (keys in `conf/default.toml`; `0` turns a limit off):
//! - `max_connections`: a permit is taken *before* `accept`, so past the limit new connections
//!   wait in the kernel's listen backlog: the TCP handshake completes, nothing is read or
//!   answered, until a served connection closes. Once the backlog is full too, the kernel
//!   drops new attempts and clients time out connecting. Served connections are unaffected.
//! - `header_timeout_ms`: a connection whose request head (request line and headers) is not
//!   complete in time is closed without a response (hyper sends no 408). The same clock runs
//!   while a keep-alive connection waits for its next request, so it is also the idle timeout,
//!   and it bounds the TLS handshake.
//! - `max_header_bytes`: request headers larger in total (each `name: value` line with its
//!   CRLF) are answered 431 with a Redfish error body, and the connection stays usable. A head
//!   more than four times larger (at least 8 KiB), or with more than 100 header lines, is
//!   refused by hyper itself while reading: a bare 431 and the connection closed.
//! - `request_timeout_ms`: a request whose response head is not ready in time is answered 503
//!   with Base `OperationTimeout`. The handler is not cancelled: it runs to its end in the
//!   background (a write may still be applied, as the Base message warns), and shutdown waits
//!   for it before storage closes. A response body that streams (SSE) is not timed.
//!
//! Lifecycle: [`serve`] runs until `shutdown` completes, then stops accepting, lets hyper
//! close idle connections and finish in-flight ones (graceful shutdown), abandons TLS
//! handshakes in progress, and waits for timed-out handlers still running.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::error::ApiError;

/// The `[server]` limits as the loop uses them: `None` where the configuration says 0.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: Option<usize>,
    header_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    max_header_bytes: Option<usize>,
}

impl Limits {
    fn from_config(http: &HttpConfig) -> Self {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        Limits {
            max_connections: (http.max_connections > 0).then_some(http.max_connections),
            header_timeout: ms(http.header_timeout_ms),
            request_timeout: ms(http.request_timeout_ms),
            max_header_bytes: (http.max_header_bytes > 0).then_some(http.max_header_bytes),
        }
    }
}

/// Serves `router` on `listener` (TLS when `tls` is given) with the limits of `http` until
/// `shutdown` completes; returns once every connection and every request handler has ended.
/// `cancel` must be cancelled when `shutdown` completes: it ends TLS handshakes in progress.
///
/// # Errors
/// None today: accept errors are logged and retried, connection errors end that connection.
/// The `Result` is kept for the callers' `io::Result` chain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    http: &HttpConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    cancel: CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = Limits::from_config(http);
    let handlers = TaskTracker::new();
    let router = router.layer(axum::middleware::from_fn_with_state(
        RequestLimits {
            max_header_bytes: limits.max_header_bytes,
            timeout: limits.request_timeout,
            handlers: handlers.clone(),
        },
        limit_request,
    ));
    let service = TowerToHyperService::new(router);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    if let Some(max) = limits.max_header_bytes {
        // Backstop only: heads up to this size reach `limit_request`, which answers 431 with
        // a Redfish body; larger ones are refused while reading, before they take memory.
        h1.max_header_size(max.saturating_mul(4).max(8 * 1024));
    }
    let acceptor = tls.map(TlsAcceptor::from);
    let permits = limits.max_connections.map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // The permit comes before accept: past the limit, connections wait in the backlog.
        let permit = match &permits {
            None => None,
            Some(p) => tokio::select! {
                () = &mut shutdown => break,
                p = p.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => break, // closed: never, the loop owns the semaphore
                },
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let conn = Connection {
            peer,
            h1: h1.clone(),
            service: service.clone(),
            watcher: graceful.watcher(),
            handshake_timeout: limits.header_timeout,
            cancel: cancel.clone(),
            _permit: permit,
        };
        tokio::spawn(conn.run(stream, acceptor.clone()));
    }
    drop(listener);
    graceful.shutdown().await;
    handlers.close();
    handlers.wait().await;
    Ok(())
}

/// Errors of one incoming connection that say nothing about the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// One accepted connection, from the TLS handshake to its close. Holds its `max_connections`
/// permit until then.
struct Connection {
    peer: SocketAddr,
    h1: http1::Builder,
    service: TowerToHyperService<Router>,
    watcher: Watcher,
    handshake_timeout: Option<Duration>,
    cancel: CancellationToken,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connection {
    async fn run(self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
        let Some(acceptor) = acceptor else {
            return self.http(stream).await;
        };
        let handshake = async {
            let accept = acceptor.accept(stream);
            match self.handshake_timeout {
                None => accept.await,
                Some(t) => tokio::time::timeout(t, accept).await.unwrap_or_else(|_| {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))
                }),
            }
        };
        let stream = tokio::select! {
            () = self.cancel.cancelled() => return,
            r = handshake => match r {
                Ok(s) => s,
                Err(e) => {
                    // Plain HTTP on the TLS port lands here (rustls: "corrupt message").
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    return;
                }
            },
        };
        self.http(stream).await
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.h1.serve_connection(TokioIo::new(io), self.service);
        if let Err(e) = self.watcher.watch(conn).await {
            // Header timeouts, oversized heads, clients that vanish: theirs, not ours.
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

/// State of [`limit_request`].
#[derive(Clone)]
struct RequestLimits {
    max_header_bytes: Option<usize>,
    timeout: Option<Duration>,
    /// Handlers run here when a timeout is set, so shutdown can wait for those that outlived
    /// their request.
    handlers: TaskTracker,
}

/// Per-request limits in front of the router: header size, then the time to a response head.
async fn limit_request(State(limits): State<RequestLimits>, req: Request, next: Next) -> Response {
    if let Some(max) = limits.max_header_bytes {
        let size = header_bytes(req.headers());
        if size > max {
            return headers_too_large(size, max).into_response();
        }
    }
    let Some(limit) = limits.timeout else {
        return next.run(req).await;
    };
    let what = format!("{} {}", req.method(), req.uri().path());
    // Spawned rather than raced in place: dropping a write half-way could leave it stored
    // without its events or `after` handlers. It finishes in the background instead.
    let handling = limits.handlers.spawn(next.run(req));
    match tokio::time::timeout(limit, handling).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            ApiError::from(sunfish_core::Error::Internal { message: format!("handler of {what}: {e}") }).into_response()
        }
        Err(_) => {
            tracing::warn!(request = %what, limit_ms = limit.as_millis(), "request timed out; it goes on in the background");
            request_timed_out(limit).into_response()
        }
    }
}

/// The size of the header section as sent: `name: value\r\n` per field.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// 503 `OperationTimeout`: the response head was not ready within `server.request_timeout_ms`.
fn request_timed_out(limit: Duration) -> ApiError {
    ApiError::RequestTimeout { limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX) }
}

/// 431 with a Redfish error body: the headers exceed `server.max_header_bytes`.
fn headers_too_large(size: usize, limit: usize) -> ApiError {
    ApiError::HeadersTooLarge { size, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header size counts each field as `name: value\r\n`.
    #[test]
    fn header_bytes_counts_lines() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.append("x-y", "bc".parse().unwrap());
        assert_eq!(header_bytes(&h), (4 + 1 + 4) + (3 + 2 + 4));
    }

    /// 0 turns a limit off.
    #[test]
    fn zero_is_off() {
        let http = HttpConfig {
            max_connections: 0,
            header_timeout_ms: 0,
            request_timeout_ms: 0,
            max_header_bytes: 0,
            ..HttpConfig::default()
        };
        let l = Limits::from_config(&http);
        assert!(l.max_connections.is_none() && l.header_timeout.is_none());
        assert!(l.request_timeout.is_none() && l.max_header_bytes.is_none());
        let l = Limits::from_config(&HttpConfig::default());
        assert_eq!(l.max_connections, Some(1024));
        assert_eq!(l.request_timeout, Some(Duration::from_secs(30)));
    }
}
