//! The Microsoft Teams incoming-webhook payload: a message carrying one
//! Adaptive Card (schema 1.4, what Teams renders).

use serde_json::{Value, json};

use super::{Message, text};
use crate::api::notify::NotifyOn;

/// The attachment content type of an Adaptive Card.
pub const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

/// The JSON body posted to a Teams incoming webhook.
pub fn render(message: &Message) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": ADAPTIVE_CARD,
            "content": card(message),
        }],
    })
}

/// The Adaptive Card itself.
pub fn card(message: &Message) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": text::headline(message),
        "size": "Large",
        "weight": "Bolder",
        "color": color(message.kind),
        "wrap": true,
    })];
    let summary = text::summary(message);
    if !summary.is_empty() {
        body.push(json!({"type": "TextBlock", "text": summary, "wrap": true}));
    }
    if let Some(reason) = text::reason(message) {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("Reason: {reason}"),
            "wrap": true,
        }));
    }
    body.push(json!({
        "type": "FactSet",
        "facts": [
            fact("Release", &format!("{}/{}", message.namespace, message.release)),
            fact("Revision", &message.revision.to_string()),
            fact("Version", &message.version),
            fact("Event", text::kind_name(message.kind)),
        ],
    }));
    for (title, items) in text::change_sections(&message.changes) {
        body.extend(titled_list(title, items));
    }
    if !message.details.is_empty() {
        let lines = message
            .details
            .iter()
            .map(|detail| {
                let (step, state, said) = text::detail_line(detail);
                if said.is_empty() {
                    format!("{step}: {state}")
                } else {
                    format!("{step}: {state}: {said}")
                }
            })
            .collect();
        body.extend(titled_list("Steps", lines));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": format!("Lockkeeper · {}", message.time),
        "size": "Small",
        "isSubtle": true,
        "wrap": true,
    }));
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    })
}

fn color(kind: NotifyOn) -> &'static str {
    match kind {
        NotifyOn::Started => "Accent",
        NotifyOn::AwaitingApproval | NotifyOn::Waiting => "Warning",
        NotifyOn::Ready => "Good",
        NotifyOn::RolledBack | NotifyOn::Failed => "Attention",
    }
}

fn fact(title: &str, value: &str) -> Value {
    json!({"title": title, "value": value})
}

fn titled_list(title: &str, items: Vec<String>) -> [Value; 2] {
    let list: Vec<String> = items.into_iter().map(|item| format!("- {item}")).collect();
    [
        json!({
            "type": "TextBlock",
            "text": title,
            "weight": "Bolder",
            "spacing": "Medium",
            "wrap": true,
        }),
        json!({"type": "TextBlock", "text": list.join("\n"), "wrap": true}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::tests::message;

    #[test]
    fn payload_is_a_message_with_one_adaptive_card() {
        let payload = render(&message());
        assert_eq!(payload["type"], "message");
        let attachments = payload["attachments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(attachments.len(), 1);
        assert_eq!(attachments[0]["contentType"], ADAPTIVE_CARD);
        let card = &attachments[0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["body"][0]["text"],
            "prod/shop v1.4.2 (revision 7) was rolled back"
        );
        assert_eq!(card["body"][0]["color"], "Attention");
        let facts = card["body"]
            .as_array()
            .and_then(|b| b.iter().find(|e| e["type"] == "FactSet"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            facts["facts"][0],
            json!({"title": "Release", "value": "prod/shop"})
        );
        let all = payload.to_string();
        for expected in [
            "Rolled back to v1.4.1 on blue",
            "Reason: check http-health failed: GET <url> answered 500",
            "- Faster checkout\\n- Pay with wallets",
            "verify/http-health: Failed: answered 500 3 times",
        ] {
            assert!(all.contains(expected), "{expected} not in {all}");
        }
        assert!(!all.contains("shop.prod.svc"), "{all}");
    }

    #[test]
    fn empty_parts_are_left_out() {
        let mut m = message();
        m.reason = None;
        m.details.clear();
        m.changes = Default::default();
        let all = render(&m).to_string();
        assert!(!all.contains("Reason:"), "{all}");
        assert!(!all.contains("Steps"), "{all}");
        assert!(!all.contains("Features"), "{all}");
    }
}
