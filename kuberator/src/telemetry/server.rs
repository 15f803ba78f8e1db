//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::Request;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running telemetry endpoint; it stops when dropped.
#[derive(Debug)]
pub struct Telemetry {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Telemetry {
    /// Where it listens (with the port the system chose, if `:0` was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `address` until the returned value is
/// dropped.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(address: SocketAddr) -> io::Result<Telemetry> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let served =
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer)).await;
                if let Err(error) = served {
                    tracing::debug!(%error, "telemetry connection ended with an error");
                }
            });
        }
    });
    Ok(Telemetry { address, task })
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", super::encode())
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok".to_owned()),
        "/readyz" => match super::readiness() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok".to_owned()),
            Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", reason),
        },
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz".to_owned()),
    };
    let response = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response of static parts is valid");
    Ok(response)
}
