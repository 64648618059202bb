//! An HTTP server on loopback that records every request it is sent: the
//! stand-in for Slack, Teams or a CloudEvents sink in tests of webhook
//! notifications, whether the sender runs in the test or is the operator in
//! another process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long [`WebhookReceiver::stop`] lets requests in flight finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One request the receiver was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path, e.g. `/services/T0/B0/XYZ`, without the query.
    pub path: String,
    /// The query, without the `?`, if there was one.
    pub query: Option<String>,
    /// The headers by lower-case name; repeated ones joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as sent.
    pub body: Vec<u8>,
    /// The status the receiver answered with.
    pub status: u16,
}

impl ReceivedRequest {
    /// The header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON. Panics, showing the body, if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body of {} {} is not JSON: {e}\n{}",
                self.method,
                self.path,
                self.text()
            )
        })
    }
}

/// A webhook on `127.0.0.1` and a free port. Every method and path is
/// answered `200 ok`, or with the failure set by
/// [`WebhookReceiver::fail_next`], and recorded for
/// [`WebhookReceiver::requests`].
///
/// [`WebhookReceiver::stop`] or dropping it stops it; connections kept
/// alive by clients are closed as well.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping or sending on it starts the server's graceful shutdown.
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    failure: Mutex<Failure>,
    /// The requests received, in order; a watch so that tests can wait on it.
    requests: watch::Sender<Vec<ReceivedRequest>>,
}

/// The answer to the next `left` requests.
#[derive(Debug)]
struct Failure {
    left: usize,
    status: StatusCode,
    body: String,
}

impl WebhookReceiver {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the webhook receiver on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("reading the webhook receiver's address: {e}"));
        let shared = Arc::new(Shared {
            failure: Mutex::new(Failure {
                left: 0,
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: String::new(),
            }),
            requests: watch::Sender::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A send or the sender's drop: either means stop.
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                eprintln!("webhook receiver on {addr} stopped: {e}");
            }
        });
        WebhookReceiver {
            addr,
            shared,
            shutdown: Mutex::new(Some(shutdown)),
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:<port>` followed by `path` (a `/` is put in front
    /// if it lacks one), e.g. `url("/services/T0/SECRET")`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests received so far, in order, failed ones included.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests.borrow().clone()
    }

    /// Waits until at least `count` requests were received and returns them
    /// all. Panics after `timeout`, showing what was received.
    pub async fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let mut requests = self.shared.requests.subscribe();
        match tokio::time::timeout(timeout, requests.wait_for(|r| r.len() >= count)).await {
            Ok(Ok(requests)) => requests.clone(),
            Ok(Err(e)) => panic!("waiting for requests to the webhook receiver: {e}"),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {count} request(s) to the webhook receiver; got {:#?}",
                self.requests()
            ),
        }
    }

    /// Answers the next `count` requests with `status` (and an empty body)
    /// instead of `200 ok`.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.fail_next_with(count, status, "");
    }

    /// Answers the next `count` requests with `status` and `body`, as a
    /// receiver that explains its refusal (and may echo what it was sent).
    pub fn fail_next_with(&self, count: usize, status: u16, body: &str) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|e| panic!("{status} is not an HTTP status code: {e}"));
        *lock(&self.shared.failure) = Failure {
            left: count,
            status,
            body: body.to_owned(),
        };
    }

    /// Stops accepting, so that from its return on connections to
    /// [`WebhookReceiver::addr`] are refused, and closes the connections
    /// clients keep alive once the requests on them are answered. The
    /// requests received before stay readable.
    pub async fn stop(&self) {
        drop(lock(&self.shutdown).take());
        let server = lock(&self.server).take();
        if let Some(mut server) = server
            && tokio::time::timeout(STOP_GRACE, &mut server).await.is_err()
        {
            eprintln!(
                "webhook receiver on {}: requests still open after {STOP_GRACE:?}; aborting",
                self.addr
            );
            server.abort();
            let _ = server.await;
        }
    }
}

/// A test that panicked while holding a lock has already failed; the state
/// itself is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (status, answer) = {
        let mut failure = lock(&shared.failure);
        match failure.left.checked_sub(1) {
            Some(left) => {
                failure.left = left;
                (failure.status, failure.body.clone())
            }
            None => (StatusCode::OK, "ok".to_owned()),
        }
    };
    let mut by_name = BTreeMap::<String, String>::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        by_name
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let request = ReceivedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: by_name,
        body: body.to_vec(),
        status: status.as_u16(),
    };
    shared
        .requests
        .send_modify(|requests| requests.push(request));
    (status, answer)
}
