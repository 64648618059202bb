//! Waiting on cluster state with deadlines, never with bare sleeps.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::watch_object;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout_at};

/// Watches `name` until `condition` holds and returns the object then.
/// Panics after `timeout`, showing the last state seen.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    condition: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::<K>::default();
    let mut stream = watch_object(api.clone(), name).default_backoff().boxed();
    loop {
        match timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Some(object)))) => {
                if condition(&object) {
                    return object;
                }
                seen.object(object);
            }
            Ok(Some(Ok(None))) => seen.absent(),
            Ok(Some(Err(error))) => seen.error(error.to_string()),
            Ok(None) => panic!("the watch on {} {name} ended", kind::<K>()),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {} {name} to match the condition; {}",
                kind::<K>(),
                seen.describe()
            ),
        }
    }
}

/// Watches `name` until it no longer exists. Panics after `timeout`, showing
/// the last state seen.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::<K>::default();
    let mut stream = watch_object(api.clone(), name).default_backoff().boxed();
    loop {
        match timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(None))) => return,
            Ok(Some(Ok(Some(object)))) => seen.object(object),
            Ok(Some(Err(error))) => seen.error(error.to_string()),
            Ok(None) => panic!("the watch on {} {name} ended", kind::<K>()),
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {} {name} to be deleted; {}",
                kind::<K>(),
                seen.describe()
            ),
        }
    }
}

/// Watches `name` for the whole `window` and panics as soon as the object
/// fails `condition` or disappears; returns the last state seen. For proving
/// that something does *not* happen within a bounded time.
pub async fn assert_stays<K>(
    api: &Api<K>,
    name: &str,
    window: Duration,
    condition: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let deadline = Instant::now() + window;
    let mut seen = Seen::<K>::default();
    let mut stream = watch_object(api.clone(), name).default_backoff().boxed();
    loop {
        match timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Some(object)))) => {
                if !condition(&object) {
                    panic!(
                        "{} {name} stopped matching the condition within {window:?}:\n{}",
                        kind::<K>(),
                        to_yaml(&object)
                    );
                }
                seen.object(object);
            }
            Ok(Some(Ok(None))) => panic!(
                "{} {name} disappeared within {window:?}; {}",
                kind::<K>(),
                seen.describe()
            ),
            Ok(Some(Err(error))) => seen.error(error.to_string()),
            Ok(None) => panic!("the watch on {} {name} ended", kind::<K>()),
            Err(_) => match seen.last {
                Some(object) => return object,
                None => panic!(
                    "{} {name} was never observed during {window:?}; {}",
                    kind::<K>(),
                    seen.describe()
                ),
            },
        }
    }
}

/// Polls `probe` every 200 ms until it returns `Ok`, for state that cannot be
/// watched (an HTTP endpoint, a query, an authorization decision). `Err`
/// describes the state seen, and the last one is shown if `timeout` passes.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::from("not probed yet");
    loop {
        if timeout_at(deadline, ticks.tick()).await.is_err() {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        match timeout_at(deadline, probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(state)) => last = state,
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what} (probe still running); last seen: {last}"
            ),
        }
    }
}

struct Seen<K> {
    last: Option<K>,
    absent: bool,
    error: Option<String>,
}

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen {
            last: None,
            absent: false,
            error: None,
        }
    }
}

impl<K: Resource + Clone + Serialize> Seen<K> {
    fn object(&mut self, object: K) {
        self.last = Some(object);
        self.absent = false;
    }

    fn absent(&mut self) {
        self.absent = true;
    }

    fn error(&mut self, error: String) {
        self.error = Some(error);
    }

    fn describe(&self) -> String {
        let mut text = match (&self.last, self.absent) {
            (_, true) => "the object did not exist at the last look".to_owned(),
            (Some(object), false) => format!("last state seen:\n{}", to_yaml(object)),
            (None, false) => "nothing was seen".to_owned(),
        };
        if let Some(error) = &self.error {
            text.push_str(&format!("\n(last watch error: {error})"));
        }
        text
    }
}

fn kind<K>() -> &'static str {
    let name = std::any::type_name::<K>();
    name.rsplit("::").next().unwrap_or(name)
}

/// YAML without managedFields, which only bury what a failing test wants.
fn to_yaml<K: Resource + Clone + Serialize>(object: &K) -> String {
    let mut object = object.clone();
    object.meta_mut().managed_fields = None;
    serde_yaml::to_string(&object).unwrap_or_else(|e| format!("<not serializable: {e}>"))
}
