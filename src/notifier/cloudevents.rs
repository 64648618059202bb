//! The generic webhook payload: a CloudEvents 1.0 event in structured mode
//! (the whole event as one JSON document).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Message, text};
use crate::api::GROUP;

/// The `Content-Type` of a structured-mode JSON event.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// The CloudEvents version the events follow.
pub const SPEC_VERSION: &str = "1.0";
/// The prefix of every event `type`.
pub const TYPE_PREFIX: &str = "dev.lockkeeper.release.";

/// The event for `message`.
pub fn render(message: &Message) -> Value {
    let details: Vec<Value> = message
        .details
        .iter()
        .map(|detail| {
            let (step, state, said) = text::detail_line(detail);
            json!({"step": step, "state": state, "message": said})
        })
        .collect();
    let mut data = json!({
        "namespace": message.namespace,
        "release": message.release,
        "revision": message.revision,
        "version": message.version,
        "event": text::kind_name(message.kind),
        "summary": text::summary(message),
        "changes": message.changes,
        "details": details,
    });
    if let Some(uid) = &message.uid {
        data["uid"] = json!(uid);
    }
    if let Some(reason) = text::reason(message) {
        data["reason"] = json!(reason);
    }
    json!({
        "specversion": SPEC_VERSION,
        "id": event_id(message),
        "source": source(&message.namespace, &message.release),
        "type": event_type(message),
        "subject": format!("revisions/{}", message.revision),
        "time": message.time.to_string(),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// The event `id`: the same for every delivery of one event of one
/// revision, so that a receiver can drop retried duplicates; different for a
/// later Release of the same name when the uid is known.
pub fn event_id(message: &Message) -> String {
    let release = match &message.uid {
        Some(uid) => format!("uid:{uid}"),
        None => format!("name:{}/{}", message.namespace, message.release),
    };
    let digest = Sha256::digest(format!(
        "{release}\nrevision:{}\nevent:{}",
        message.revision,
        text::kind_name(message.kind)
    ));
    hex::encode(&digest[..16])
}

/// The event `source`: the Release's API path.
pub fn source(namespace: &str, release: &str) -> String {
    format!("/apis/{GROUP}/v1alpha1/namespaces/{namespace}/releases/{release}")
}

/// The event `type`, e.g. `dev.lockkeeper.release.rolledback`.
pub fn event_type(message: &Message) -> String {
    format!(
        "{TYPE_PREFIX}{}",
        text::kind_name(message.kind).to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::notify::NotifyOn, notifier::tests::message};

    #[test]
    fn event_has_the_required_attributes() {
        let event = render(&message());
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            event["source"],
            "/apis/lockkeeper.dev/v1alpha1/namespaces/prod/releases/shop"
        );
        assert_eq!(event["type"], "dev.lockkeeper.release.rolledback");
        assert_eq!(event["subject"], "revisions/7");
        assert_eq!(event["time"], "2025-03-01T12:00:00Z");
        assert_eq!(event["datacontenttype"], "application/json");
        let id = event["id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        let data = &event["data"];
        assert_eq!(data["revision"], 7);
        assert_eq!(data["version"], "v1.4.2");
        assert_eq!(data["event"], "RolledBack");
        assert_eq!(data["uid"], "0b8f-uid");
        assert_eq!(data["changes"]["features"][0], "Faster checkout");
        assert_eq!(
            data["reason"],
            "check http-health failed: GET <url> answered 500"
        );
        assert_eq!(data["details"][0]["step"], "preflight");
        assert!(!event.to_string().contains("shop.prod.svc"));
    }

    #[test]
    fn ids_are_stable_per_release_revision_and_event() {
        let m = message();
        let id = event_id(&m);
        let mut later = m.clone();
        later.time = "2025-03-01T12:05:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        later.summary = "different words".into();
        assert_eq!(event_id(&later), id, "a retry keeps its id");
        for changed in [
            Message {
                revision: 8,
                ..m.clone()
            },
            Message {
                kind: NotifyOn::Failed,
                ..m.clone()
            },
            Message {
                uid: Some("another".into()),
                ..m.clone()
            },
            Message {
                uid: None,
                ..m.clone()
            },
        ] {
            assert_ne!(event_id(&changed), id);
        }
    }

    #[test]
    fn every_kind_has_a_lower_case_type() {
        let mut m = message();
        m.kind = NotifyOn::AwaitingApproval;
        assert_eq!(event_type(&m), "dev.lockkeeper.release.awaitingapproval");
    }
}
