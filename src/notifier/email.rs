//! The e-mail: a subject and a plain-text body, sent over SMTP.

use std::{fmt::Write as _, time::Duration};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        self,
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};

use super::{EmailTarget, Message, SmtpSettings, SmtpTls, cloudevents, retry::Failure, text};
use crate::checks::{describe, fmt_duration};

/// The most characters of a subject.
const MAX_SUBJECT_CHARS: usize = 200;

/// A rendered e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// One line, e.g. `[Lockkeeper] prod/shop v1.4.2 (revision 7) is ready`.
    pub subject: String,
    /// Plain text.
    pub body: String,
}

/// The e-mail for `message`.
pub fn render(message: &Message) -> Email {
    let headline = text::headline(message);
    let subject = text::truncate(&format!("[Lockkeeper] {headline}"), MAX_SUBJECT_CHARS);

    // Writing to a String cannot fail; the results are ignored for that.
    let mut body = format!("{headline}.\n\n");
    let summary = text::summary(message);
    if !summary.is_empty() {
        let _ = writeln!(body, "{summary}\n");
    }
    if let Some(reason) = text::reason(message) {
        let _ = writeln!(body, "Reason: {reason}\n");
    }
    let _ = writeln!(body, "Release:  {}/{}", message.namespace, message.release);
    let _ = writeln!(body, "Revision: {}", message.revision);
    let _ = writeln!(body, "Version:  {}", message.version);
    let _ = writeln!(body, "Event:    {}", text::kind_name(message.kind));
    let _ = writeln!(body, "Time:     {}", message.time);
    let sections = text::change_sections(&message.changes);
    if !sections.is_empty() {
        body.push_str("\nChanges\n");
        for (title, items) in sections {
            let _ = writeln!(body, "  {title}:");
            for item in items {
                let _ = writeln!(body, "    - {item}");
            }
        }
    }
    if !message.details.is_empty() {
        body.push_str("\nSteps\n");
        for detail in &message.details {
            let (step, state, said) = text::detail_line(detail);
            if said.is_empty() {
                let _ = writeln!(body, "  - {step}: {state}");
            } else {
                let _ = writeln!(body, "  - {step}: {state}: {said}");
            }
        }
    }
    body.push_str("\n-- \nSent by Lockkeeper.\n");
    Email { subject, body }
}

/// The e-mail for `message` from and to `target`'s addresses. Its
/// `Message-ID` is derived from the event, so a retried send can be
/// recognised. The error names a bad recipient but never the Secret's sender.
pub(crate) fn compose(message: &Message, target: &EmailTarget) -> Result<lettre::Message, String> {
    let rendered = render(message);
    let from: Mailbox = target
        .from
        .parse()
        .map_err(|e| format!("the sender is not a valid address: {e}"))?;
    let domain = from.email.domain().to_owned();
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(rendered.subject)
        .date(message.time.into())
        .message_id(Some(format!(
            "<{}@{domain}>",
            cloudevents::event_id(message)
        )))
        .user_agent(concat!("lockkeeper/", env!("CARGO_PKG_VERSION")).to_owned())
        .header(ContentType::TEXT_PLAIN);
    if target.to.is_empty() {
        return Err("there are no recipients".to_owned());
    }
    for to in &target.to {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e| format!("recipient {to:?} is not a valid address: {e}"))?;
        builder = builder.to(mailbox);
    }
    builder
        .body(rendered.body)
        .map_err(|e| format!("building the message: {e}"))
}

/// An SMTP transport for `smtp`. Nothing connects until a send; the error
/// is a TLS setup that cannot work (e.g. a host that is no valid name).
pub(crate) fn transport(
    smtp: &SmtpSettings,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = match smtp.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::StartTls | SmtpTls::Tls => {
            let parameters = TlsParameters::new(smtp.host.clone())
                .map_err(|e| format!("setting up TLS to the SMTP server: {}", describe(&e)))?;
            if smtp.tls == SmtpTls::Tls {
                Tls::Wrapper(parameters)
            } else {
                Tls::Required(parameters)
            }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(login) = &smtp.login {
        builder = builder.credentials(Credentials::new(
            login.username.clone(),
            login.password.expose().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// One attempt to hand `email` to the server. SMTP 5xx replies and client
/// errors (e.g. no shared authentication mechanism) will not pass; no
/// connection, a timeout, TLS or network trouble and 4xx replies may.
pub(crate) async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    email: &lettre::Message,
    timeout: Duration,
) -> Result<(), Failure> {
    match tokio::time::timeout(timeout, transport.send(email.clone())).await {
        Err(_) => Err(Failure::transient(format!(
            "no answer from the SMTP server within {}",
            fmt_duration(timeout)
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(&e)),
    }
}

fn classify(error: &smtp::Error) -> Failure {
    let reason = format!("sending to the SMTP server: {}", describe(error));
    if error.is_permanent() || error.is_client() {
        Failure::Permanent(reason)
    } else {
        Failure::transient(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::tests::message;

    #[test]
    fn subject_and_body_tell_the_story() {
        let email = render(&message());
        assert_eq!(
            email.subject,
            "[Lockkeeper] prod/shop v1.4.2 (revision 7) was rolled back"
        );
        for expected in [
            "prod/shop v1.4.2 (revision 7) was rolled back.\n\nRolled back to v1.4.1 on blue\n",
            "Reason: check http-health failed: GET <url> answered 500\n",
            "Release:  prod/shop\n",
            "Revision: 7\n",
            "Event:    RolledBack\n",
            "Time:     2025-03-01T12:00:00Z\n",
            "Changes\n  Features:\n    - Faster checkout\n    - Pay with wallets\n",
            "  - verify/http-health: Failed: answered 500 3 times\n",
        ] {
            assert!(
                email.body.contains(expected),
                "{expected:?} not in {}",
                email.body
            );
        }
        assert!(!email.body.contains("shop.prod.svc"));
    }

    #[test]
    fn a_multi_line_summary_cannot_break_the_subject() {
        let mut m = message();
        m.version = "v1\r\nBcc: someone@example.com".into();
        let email = render(&m);
        assert!(!email.subject.contains(['\r', '\n']), "{}", email.subject);
    }

    fn target(from: &str, to: &[&str]) -> EmailTarget {
        EmailTarget {
            smtp: SmtpSettings {
                host: "localhost".into(),
                port: 25,
                login: None,
                from: None,
                tls: SmtpTls::None,
            },
            from: from.into(),
            to: to.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn compose_sets_headers_and_a_stable_message_id() {
        let m = message();
        let email = compose(
            &m,
            &target("bot@example.com", &["a@example.com", "b@example.com"]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let raw = String::from_utf8_lossy(&email.formatted()).into_owned();
        assert!(raw.contains("From: bot@example.com"), "{raw}");
        assert!(raw.contains("To: a@example.com, b@example.com"), "{raw}");
        assert!(
            raw.contains(&format!(
                "Message-ID: <{}@example.com>",
                cloudevents::event_id(&m)
            )),
            "{raw}"
        );
        assert!(
            raw.contains("Date: Sat, 01 Mar 2025 12:00:00 +0000"),
            "{raw}"
        );
        assert_eq!(email.envelope().to().len(), 2);
    }

    #[test]
    fn bad_addresses_are_refused() {
        let err = compose(&message(), &target("not an address", &["a@example.com"]))
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("the sender is not a valid address"),
            "{err}"
        );
        assert!(!err.contains("not an address"), "{err}");
        let err = compose(&message(), &target("bot@example.com", &["nobody"]))
            .err()
            .unwrap_or_default();
        assert!(err.contains("recipient \"nobody\""), "{err}");
    }
}
