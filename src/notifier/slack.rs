//! The Slack incoming-webhook payload: a fallback `text` for notifications
//! and a few Block Kit blocks for the channel.

use serde_json::{Value, json};

use super::{Message, text};
use crate::api::notify::NotifyOn;

/// Slack's limit on a header block's text.
const MAX_HEADER_CHARS: usize = 150;
/// Slack's limit on a section block's text.
const MAX_SECTION_CHARS: usize = 3000;

/// The JSON body posted to a Slack incoming webhook.
pub fn render(message: &Message) -> Value {
    let headline = text::headline(message);
    let summary = text::summary(message);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": text::truncate(&format!("{} {headline}", emoji(message.kind)), MAX_HEADER_CHARS),
            "emoji": true,
        },
    })];
    let mut lead = escape(&summary);
    if let Some(reason) = text::reason(message) {
        lead.push_str(&format!("\n*Reason:* {}", escape(&reason)));
    }
    if !lead.is_empty() {
        blocks.push(section(&lead));
    }
    blocks.push(json!({
        "type": "section",
        "fields": [
            field("Release", &format!("`{}/{}`", message.namespace, message.release)),
            field("Revision", &message.revision.to_string()),
            field("Version", &format!("`{}`", message.version)),
            field("Event", text::kind_name(message.kind)),
        ],
    }));
    for (title, items) in text::change_sections(&message.changes) {
        blocks.push(section(&bullets(title, items.iter().map(|i| escape(i)))));
    }
    if !message.details.is_empty() {
        let lines = message.details.iter().map(|detail| {
            let (step, state, said) = text::detail_line(detail);
            if said.is_empty() {
                format!("`{}` {}", escape(&step), escape(&state))
            } else {
                format!("`{}` {}: {}", escape(&step), escape(&state), escape(&said))
            }
        });
        blocks.push(section(&bullets("Steps", lines)));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("Lockkeeper · {}", message.time)}],
    }));
    let fallback = if summary.is_empty() {
        headline
    } else {
        format!("{headline}: {summary}")
    };
    json!({"text": escape(&fallback), "blocks": blocks})
}

fn emoji(kind: NotifyOn) -> &'static str {
    match kind {
        NotifyOn::Started => ":rocket:",
        NotifyOn::AwaitingApproval => ":raised_hand:",
        NotifyOn::Waiting => ":hourglass_flowing_sand:",
        NotifyOn::Ready => ":white_check_mark:",
        NotifyOn::RolledBack => ":leftwards_arrow_with_hook:",
        NotifyOn::Failed => ":x:",
    }
}

fn section(mrkdwn: &str) -> Value {
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": text::truncate(mrkdwn, MAX_SECTION_CHARS)},
    })
}

fn field(title: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{title}*\n{}", escape(value))})
}

fn bullets(title: &str, lines: impl Iterator<Item = String>) -> String {
    let mut out = format!("*{title}*");
    for line in lines {
        out.push_str("\n• ");
        out.push_str(&line);
    }
    out
}

/// Escapes the three characters Slack gives meaning to in text, so that a
/// change note cannot mention `<!channel>` or forge a link.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::tests::message;

    #[test]
    fn payload_has_text_and_blocks() {
        let payload = render(&message());
        let text = payload["text"].as_str().unwrap_or_default();
        assert_eq!(
            text,
            "prod/shop v1.4.2 (revision 7) was rolled back: Rolled back to v1.4.1 on blue"
        );
        let blocks = payload["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(
            blocks[0]["text"]["text"],
            ":leftwards_arrow_with_hook: prod/shop v1.4.2 (revision 7) was rolled back"
        );
        let all = payload.to_string();
        for expected in [
            "*Reason:* check http-health failed: GET &lt;url&gt; answered 500",
            "*Features*\\n• Faster checkout",
            "*Fixes*\\n• Cart total &lt;!channel&gt; rounding",
            "*Revision*\\n7",
            "`verify/http-health` Failed: answered 500 3 times",
            "Lockkeeper · 2025-03-01T12:00:00Z",
        ] {
            assert!(all.contains(expected), "{expected} not in {all}");
        }
        assert!(!all.contains("shop.prod.svc"), "{all}");
        assert!(!all.contains("<!channel>"), "{all}");
    }

    #[test]
    fn sections_respect_slack_limits() {
        let mut m = message();
        m.changes.features = vec!["x".repeat(10_000); 64];
        m.release = "r".repeat(200);
        let payload = render(&m);
        for block in payload["blocks"].as_array().cloned().unwrap_or_default() {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= MAX_SECTION_CHARS);
                if block["type"] == "header" {
                    assert!(text.chars().count() <= MAX_HEADER_CHARS);
                }
            }
        }
    }
}
