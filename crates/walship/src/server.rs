//! HTTP on `addr`: `/status` (JSON), `/metrics` (Prometheus text) and `/healthz`.
//!
//! The endpoints only read the [`StatusBoard`]; they never touch a database or a replica, so a
//! scrape cannot slow replication down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::status::{ReplicaState, StatusBoard};
use crate::{Error, Result};

/// Where to listen for `addr`: `:PORT` means loopback (Litestream binds every interface, which
/// exposes the metrics to the network without being asked); `HOST:PORT` is taken as given.
pub fn listen_addr(addr: &str) -> Result<SocketAddr> {
    let invalid = |why: &str| Error::Listen {
        addr: addr.to_string(),
        reason: format!(
            "not a listen address ({why}): write :PORT for loopback or HOST:PORT, \
             e.g. 127.0.0.1:9090"
        ),
    };
    if let Some(port) = addr.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| invalid("bad port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
    let port = port.parse::<u16>().map_err(|_| invalid("bad port"))?;
    match host {
        "localhost" => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        _ => host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, port))
            .map_err(|_| invalid("the host must be an IP address or localhost")),
    }
}

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    board: Arc<StatusBoard>,
}

impl Server {
    /// Binds `addr` (see [`listen_addr`]); fails at once, with the fix, when it is taken.
    pub async fn bind(addr: &str, board: Arc<StatusBoard>) -> Result<Server> {
        let sa = listen_addr(addr)?;
        let listener = TcpListener::bind(sa).await.map_err(|e| Error::Listen {
            addr: addr.to_string(),
            reason: format!("cannot listen on {sa}: {e}; choose a free port in `addr`"),
        })?;
        Ok(Server { listener, board })
    }

    /// The address actually bound (the port is chosen by the system for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::Io {
            path: "listener".into(),
            source: e,
        })
    }

    /// Serves until `stop` turns true.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let app = Router::new()
            .route("/status", get(status))
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(self.board);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| Error::Io {
                path: "HTTP server".into(),
                source: e,
            })
    }
}

async fn status(State(board): State<Arc<StatusBoard>>) -> Response {
    Json(board.report()).into_response()
}

async fn metrics(State(board): State<Arc<StatusBoard>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&board.report()),
    )
        .into_response()
}

/// 200 while every replica works; 503 naming the failing ones (or the databases still
/// starting) otherwise, so a supervisor can alert on it or wait for it. Lagging replicas still
/// count as healthy: they are uploading.
async fn healthz(State(board): State<Arc<StatusBoard>>) -> Response {
    let report = board.report();
    if board.is_starting() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "starting (asking the replicas where TXIDs stand):\n{}\n",
                report.starting.join("\n")
            ),
        )
            .into_response();
    }
    let failing: Vec<String> = report
        .databases
        .iter()
        .flat_map(|d| {
            d.replicas
                .iter()
                .filter(|r| r.state == ReplicaState::Failing)
                .map(move |r| {
                    format!(
                        "{} ({}): {}",
                        d.path,
                        r.name,
                        r.last_error.as_deref().unwrap_or("failing")
                    )
                })
        })
        .collect();
    if failing.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failing replicas:\n{}\n", failing.join("\n")),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_means_loopback() {
        assert_eq!(
            listen_addr(":9090").unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(
            listen_addr("0.0.0.0:9090").unwrap(),
            "0.0.0.0:9090".parse().unwrap()
        );
        assert_eq!(
            listen_addr("localhost:80").unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            listen_addr("[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
    }

    #[test]
    fn bad_addresses_say_what_to_write() {
        for bad in ["9090", ":http", "example.com:80", ":99999"] {
            let msg = listen_addr(bad).unwrap_err().to_string();
            assert!(msg.contains("127.0.0.1:9090"), "{bad}: {msg}");
        }
    }
}
