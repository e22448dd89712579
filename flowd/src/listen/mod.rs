//! Accepting HTTP connections: a bounded number at a time, plain or TLS, with
//! a header-read timeout and an idle timeout that are the same for both.
//!
//! `axum::serve` and axum-server hold any number of connections for as long
//! as the peer keeps them open; ~1,100 idle connections once took the
//! process's last file descriptors (issue 18). This loop is hyper-util's
//! connection builder with three additions: a connection cap (excess
//! connections are closed at once and counted), hyper's header-read timeout,
//! and an idle timeout ([`idle`]: a connection on which no byte moves either
//! way for that long is closed, between requests, in the middle of one, or
//! while its client has stopped reading an answer).

mod idle;

use std::{
    future::Future,
    io,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpStream, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

/// How many connections, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// From the first byte of a request to the end of its header (and the
    /// TLS handshake).
    pub header_read_timeout: Duration,
    /// No byte from the peer for this long closes the connection.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Connection counters, shared with the metrics.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Open now.
    pub open: AtomicU64,
    /// The configured cap.
    pub max: AtomicU64,
    /// Accepted since start.
    pub accepted: AtomicU64,
    /// Closed at once because `max` were open.
    pub rejected: AtomicU64,
    /// `accept` failed (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
}

impl ConnStats {
    pub fn snapshot(&self) -> crate::export::metrics::HttpSnapshot {
        crate::export::metrics::HttpSnapshot {
            open: self.open.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// requests finish for up to 5 s.
pub async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // The connections are HTTP/1.1 only: offering h2 in ALPN (as
    // axum-server's config does) would make clients speak HTTP/2 to it.
    let tls = tls.map(|config| {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    stats
        .max
        .store(limits.max_connections as u64, Ordering::Relaxed);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: count it, back off, keep serving
                    // the connections already open.
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("accepting an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let (app, tls, stats, mut stop) =
            (app.clone(), tls.clone(), stats.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection(stream, app, tls, limits, &mut stop).await {
                tracing::debug!("HTTP connection: {e}");
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Wait (bounded) for the connections to finish their requests.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
    Ok(())
}

/// One connection: TLS handshake (bounded by the header-read timeout), then
/// HTTP/1.1 until the peer closes, goes idle, or flowd stops.
async fn connection(
    stream: TcpStream,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let timed = idle::Idle::new(stream, limits.idle_timeout);
    match tls {
        None => serve_http1(timed, app, limits, stop).await,
        Some(acceptor) => {
            let stream = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(timed))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            serve_http1(stream, app, limits, stop).await
        }
    }
}

/// HTTP/1.1 on `io` with hyper's header-read timeout; on stop, the request
/// in flight finishes and the connection closes.
async fn serve_http1<I>(
    io: I,
    app: Router,
    limits: Limits,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> io::Result<()>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut conn = pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r.map_err(io::Error::other),
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(io::Error::other)
}
