//! The Events recorded about an object (`events.k8s.io/v1`, the API the
//! operator's recorder writes and `kubectl events` reads).

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;

use super::wait::poll_until;

/// One Event, reduced to what tests assert on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// `Normal` or `Warning`.
    pub type_: String,
    /// The PascalCase reason.
    pub reason: String,
    /// The human-readable note.
    pub note: String,
    /// Who recorded it.
    pub reporting_controller: String,
    /// Which instance of the controller recorded it.
    pub reporting_instance: String,
}

/// The Events in `api`'s namespace about the object of `kind` named `name`,
/// oldest first.
pub async fn events_about(
    api: &Api<Event>,
    kind: &str,
    name: &str,
) -> Result<Vec<RecordedEvent>, String> {
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Events: {e}"))?;
    let mut events: Vec<&Event> = list
        .items
        .iter()
        .filter(|event| {
            event.regarding.as_ref().is_some_and(|regarding| {
                regarding.kind.as_deref() == Some(kind) && regarding.name.as_deref() == Some(name)
            })
        })
        .collect();
    events.sort_by_key(|event| {
        event
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    Ok(events
        .into_iter()
        .map(|event| RecordedEvent {
            type_: event.type_.clone().unwrap_or_default(),
            reason: event.reason.clone().unwrap_or_default(),
            note: event.note.clone().unwrap_or_default(),
            reporting_controller: event.reporting_controller.clone().unwrap_or_default(),
            reporting_instance: event.reporting_instance.clone().unwrap_or_default(),
        })
        .collect())
}

/// Polls until an Event of `type_` with `reason` about `kind`/`name` exists,
/// and returns it. Panics after `timeout`, listing the Events seen.
pub async fn wait_for_event(
    api: &Api<Event>,
    kind: &str,
    name: &str,
    type_: &str,
    reason: &str,
    timeout: Duration,
) -> RecordedEvent {
    let what = format!("a {type_} Event with reason {reason} about {kind} {name}");
    poll_until(&what, timeout, || async {
        let events = events_about(api, kind, name).await?;
        events
            .iter()
            .find(|event| event.type_ == type_ && event.reason == reason)
            .cloned()
            .ok_or_else(|| format!("Events about it: {events:?}"))
    })
    .await
}
