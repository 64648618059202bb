//! An HTTP server on loopback whose answers a test changes while it runs:
//! the stand-in for an application's health endpoint, API or metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Serves, on `127.0.0.1` and a free port:
///
/// * `GET /metrics`: the metric values set with [`HttpTarget::set_metric`] in
///   Prometheus' text format, always promptly and with status 200, so that a
///   scrape never fails because of the settings below;
/// * any other path and method: the status set with
///   [`HttpTarget::set_status`] (200 at first) after the latency set with
///   [`HttpTarget::set_latency`] (none at first).
///
/// Stops when dropped.
#[derive(Debug)]
pub struct HttpTarget {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    status: StatusCode,
    latency: Duration,
    metrics: BTreeMap<String, f64>,
    requests: u64,
    scrapes: u64,
}

impl HttpTarget {
    pub async fn start() -> HttpTarget {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding an HTTP target on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the HTTP target's address: {e}"));
        let shared = Arc::new(Mutex::new(Shared {
            status: StatusCode::OK,
            latency: Duration::ZERO,
            metrics: BTreeMap::new(),
            requests: 0,
            scrapes: 0,
        }));
        let app = Router::new()
            .route("/metrics", get(metrics))
            .fallback(answer)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("HTTP target on {addr} stopped: {e}");
            }
        });
        HttpTarget {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The status code of every answer but `/metrics`'s.
    pub fn set_status(&self, code: u16) {
        self.lock().status = StatusCode::from_u16(code)
            .unwrap_or_else(|e| panic!("{code} is not an HTTP status code: {e}"));
    }

    /// How long every answer but `/metrics`'s is held back.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Sets one sample in `/metrics`, given as a series in the text format,
    /// e.g. `http_requests_total{code="500"}` or `queue_depth`.
    pub fn set_metric(&self, series: &str, value: f64) {
        self.lock().metrics.insert(series.to_owned(), value);
    }

    /// Adds `delta` to a sample (absent ones start at 0), as a counter grows.
    pub fn add_to_metric(&self, series: &str, delta: f64) {
        *self.lock().metrics.entry(series.to_owned()).or_insert(0.0) += delta;
    }

    pub fn remove_metric(&self, series: &str) {
        self.lock().metrics.remove(series);
    }

    /// Requests answered on paths other than `/metrics`.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// Requests answered on `/metrics`.
    pub fn scrapes(&self) -> u64 {
        self.lock().scrapes
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A test that panicked while holding the lock has already failed; the
/// settings themselves are still consistent.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn metrics(State(shared): State<Arc<Mutex<Shared>>>) -> Response {
    let body = {
        let mut shared = lock(&shared);
        shared.scrapes += 1;
        shared
            .metrics
            .iter()
            .fold(String::new(), |mut body, (series, value)| {
                let _ = writeln!(body, "{series} {value}");
                body
            })
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn answer(State(shared): State<Arc<Mutex<Shared>>>) -> Response {
    let (status, latency) = {
        let mut shared = lock(&shared);
        shared.requests += 1;
        (shared.status, shared.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    (status, format!("{}\n", status.as_u16())).into_response()
}
