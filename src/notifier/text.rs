//! Wording and limits shared by the renderers.

use super::{Detail, Message};
use crate::api::{notify::NotifyOn, release::Changes};

/// The most items of one `changes` list a message shows.
pub(crate) const MAX_ITEMS: usize = 20;
/// The most characters of one item, summary or reason a message shows.
pub(crate) const MAX_ITEM_CHARS: usize = 300;

/// The event's name as the API spells it.
pub fn kind_name(kind: NotifyOn) -> &'static str {
    match kind {
        NotifyOn::Started => "Started",
        NotifyOn::AwaitingApproval => "AwaitingApproval",
        NotifyOn::Waiting => "Waiting",
        NotifyOn::Ready => "Ready",
        NotifyOn::RolledBack => "RolledBack",
        NotifyOn::Failed => "Failed",
    }
}

/// What the revision did, as the end of a sentence.
fn verb(kind: NotifyOn) -> &'static str {
    match kind {
        NotifyOn::Started => "started",
        NotifyOn::AwaitingApproval => "awaits approval",
        NotifyOn::Waiting => "is waiting",
        NotifyOn::Ready => "is ready",
        NotifyOn::RolledBack => "was rolled back",
        NotifyOn::Failed => "failed",
    }
}

/// `prod/shop v1.4.2 (revision 7) is ready`.
pub(crate) fn headline(message: &Message) -> String {
    one_line(&format!(
        "{}/{} {} (revision {}) {}",
        message.namespace,
        message.release,
        message.version,
        message.revision,
        verb(message.kind)
    ))
}

/// The summary on one bounded line, URLs replaced.
pub(crate) fn summary(message: &Message) -> String {
    bounded(&redact_urls(&message.summary))
}

/// The reason on one bounded line, URLs replaced.
pub(crate) fn reason(message: &Message) -> Option<String> {
    message
        .reason
        .as_deref()
        .map(|reason| bounded(&redact_urls(reason)))
        .filter(|reason| !reason.is_empty())
}

/// A step's name, state and message, each on one bounded line, URLs in
/// the message replaced.
pub(crate) fn detail_line(detail: &Detail) -> (String, String, String) {
    (
        bounded(&detail.step),
        bounded(&detail.state),
        bounded(&redact_urls(&detail.message)),
    )
}

/// The non-empty lists of `changes` with their titles, each at most
/// [`MAX_ITEMS`] bounded lines, plus a count of what was left out.
pub(crate) fn change_sections(changes: &Changes) -> Vec<(&'static str, Vec<String>)> {
    [
        ("Features", &changes.features),
        ("Fixes", &changes.fixes),
        ("Configuration", &changes.config),
        ("Database", &changes.database),
        ("Dependencies", &changes.dependencies),
    ]
    .into_iter()
    .filter(|(_, items)| !items.is_empty())
    .map(|(title, items)| (title, items_shown(items)))
    .collect()
}

fn items_shown(items: &[String]) -> Vec<String> {
    let mut shown: Vec<String> = items.iter().take(MAX_ITEMS).map(|i| bounded(i)).collect();
    if items.len() > MAX_ITEMS {
        shown.push(format!("…and {} more", items.len() - MAX_ITEMS));
    }
    shown
}

/// `text` on one line: runs of whitespace, newlines included, become one
/// space.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` on one line of at most [`MAX_ITEM_CHARS`] characters.
pub(crate) fn bounded(text: &str) -> String {
    truncate(&one_line(text), MAX_ITEM_CHARS)
}

/// At most `max` characters of `text`, the last an ellipsis if cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_owned(),
    }
}

/// Replaces every `scheme://…` in `text` with `<url>`: messages from the
/// runbook's steps may name endpoints that do not belong in a chat.
pub(crate) fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for token in text.split_inclusive(char::is_whitespace) {
        let Some(sep) = token.find("://") else {
            out.push_str(token);
            continue;
        };
        let scheme_start = token[..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(sep, |(i, _)| i);
        if scheme_start == sep {
            out.push_str(token);
            continue;
        }
        let body = token.trim_end_matches(char::is_whitespace);
        let url_end = body
            .trim_end_matches(['"', '\'', ')', ']', '>', ',', ';', '.'])
            .len();
        out.push_str(&token[..scheme_start]);
        out.push_str("<url>");
        out.push_str(&token[url_end.max(scheme_start)..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_replaced_with_their_surroundings_kept() {
        assert_eq!(
            redact_urls("GET http://shop.prod.svc:8080/health answered 500"),
            "GET <url> answered 500"
        );
        assert_eq!(
            redact_urls("see (https://x.example/a?b=c), then"),
            "see (<url>), then"
        );
        assert_eq!(redact_urls("a:// b"), "<url> b");
        assert_eq!(redact_urls("no urls: here"), "no urls: here");
        assert_eq!(redact_urls("://nothing"), "://nothing");
        assert_eq!(redact_urls("line\nhttps://h/p\n"), "line\n<url>\n");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(bounded(" a \n b "), "a b");
    }

    #[test]
    fn long_lists_are_cut() {
        let changes = Changes {
            fixes: (0..25).map(|i| format!("fix {i}")).collect(),
            ..Changes::default()
        };
        let sections = change_sections(&changes);
        assert_eq!(sections.len(), 1);
        let (title, items) = &sections[0];
        assert_eq!(*title, "Fixes");
        assert_eq!(items.len(), MAX_ITEMS + 1);
        assert_eq!(items[MAX_ITEMS], "…and 5 more");
    }
}
