//! The in-tree HTTP load generator's pieces shared by the load benchmarks (`benches/http.rs`,
//! `benches/scale.rs`): a bare hyper HTTP/1.1 client per keep-alive connection, one request at
//! a time with a timeout, exact percentiles, and the figures of a process read from `/proc`.
//! Everything talks to 127.0.0.1 only: the addresses come from the benchmarks' own servers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, ETAG};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request that takes longer is counted as a timeout and its connection replaced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Linux reports process CPU time in clock ticks of 1/100 s (`USER_HZ`, fixed by the ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The sending half of one HTTP/1.1 connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// Opens a keep-alive connection (`TCP_NODELAY`) to `addr`; its driver runs as a task.
///
/// # Errors
/// The connection or the HTTP handshake failed (as text, for the benchmark's error count).
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A response as the generators need it: the status and the headers (the body is read and
/// dropped).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
}

impl Answer {
    /// The `ETag` header.
    pub fn etag(&self) -> Option<HeaderValue> {
        self.headers.get(ETAG).cloned()
    }

    /// A header as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why an exchange produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within [`REQUEST_TIMEOUT`].
    Timeout,
    /// The connection failed (refused, reset, closed early, bad HTTP).
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "timeout"),
            Failure::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// Sends one request and reads the whole answer, within [`REQUEST_TIMEOUT`].
///
/// # Errors
/// [`Failure::Timeout`] or [`Failure::Transport`]; either way the connection should be dropped.
pub async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<Answer, Failure> {
    let io = async {
        sender.ready().await.map_err(|e| Failure::Transport(format!("connection: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| Failure::Transport(format!("send: {e}")))?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| Failure::Transport(format!("body: {e}")))?;
        Ok(Answer { status: parts.status, headers: parts.headers })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, io).await.unwrap_or(Err(Failure::Timeout))
}

/// The `p` quantile (0..=1) of ascending latencies in microseconds, in milliseconds (0 when
/// there are none).
pub fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

/// CPU time (user + system) process `pid` (or `self`) has used, in seconds; 0 when it is gone.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<f64>() / TICKS_PER_SECOND
}

/// CPU seconds the whole machine has spent in user, nice and system time (`/proc/stat`), the
/// time processes are charged with.
pub fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    fields.iter().take(3).sum::<f64>() / TICKS_PER_SECOND
}

/// A `Vm*` figure of `/proc/<pid>/status` in KiB (`VmRSS`: resident now; `VmHWM`: the peak
/// resident size), or `None` when the process is gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The resident set size of `pid` in MiB (`VmRSS`), or `None` when the process is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles pick the nearest rank; an empty list is 0.
    #[test]
    fn percentiles() {
        assert!(percentile_ms(&[], 0.5).abs() < f64::EPSILON);
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert!((percentile_ms(&v, 0.5) - 51.0).abs() < 1e-9);
        assert!((percentile_ms(&v, 0.99) - 99.0).abs() < 1e-9);
    }

    /// This process has a resident size.
    #[test]
    fn own_rss() {
        assert!(rss_mib(std::process::id()).is_some_and(|m| m > 0.0));
        assert!(status_kib(u32::MAX, "VmRSS").is_none());
    }
}
