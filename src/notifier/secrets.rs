//! Reads the Secrets a notification names into a [`Resolved`] channel.
//!
//! Only [`resolve`] talks to the cluster; turning a Secret's data into a URL
//! or SMTP settings is pure ([`webhook_url`], [`smtp_settings`],
//! [`email_target`]). Values read here are credentials: errors name the
//! Secret and key, never the value, and `Debug` redacts them.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Api, Client};

use super::{Channel, NotifyError};
use crate::api::{
    SecretKeyRef,
    notify::{EmailChannel, Notification},
};

/// The SMTP port when the Secret names none (submission, STARTTLS).
pub const DEFAULT_SMTP_PORT: u16 = 587;

/// A value read from a Secret. `Debug` does not show it and there is no
/// `Display`: reading it takes [`SecretValue::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// An http(s) webhook URL. Its path and query are often the credential
/// (Slack, Teams), so `Debug` shows only the scheme and host.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(reqwest::Url);

impl WebhookUrl {
    /// Parses an http or https URL with a host. The error says what is
    /// wrong without quoting the input.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let url = reqwest::Url::parse(text.trim()).map_err(|_| "is not a valid URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("is not an http or https URL");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("is a URL without a host");
        }
        Ok(WebhookUrl(url))
    }

    /// The URL, for the one place that sends to it.
    pub fn expose(&self) -> &reqwest::Url {
        &self.0
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WebhookUrl({}://{}/<redacted>)",
            self.0.scheme(),
            self.0.host_str().unwrap_or_default()
        )
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    #[default]
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption, for a relay on the node or in the cluster.
    None,
}

/// SMTP credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpLogin {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: SecretValue,
}

/// An SMTP server, from the keys of an e-mail notification's Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Key `host`.
    pub host: String,
    /// Key `port`, [`DEFAULT_SMTP_PORT`] when absent.
    pub port: u16,
    /// Keys `username` and `password`, both or neither.
    pub login: Option<SmtpLogin>,
    /// Key `from`, the default sender.
    pub from: Option<String>,
    /// Key `tls`: `starttls` (default), `tls` or `none`.
    pub tls: SmtpTls,
}

/// Where an e-mail goes and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailTarget {
    /// The server.
    pub smtp: SmtpSettings,
    /// The sender: the notification's `from`, else the Secret's.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// A notification's channel with its credentials read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL.
        url: WebhookUrl,
    },
    /// A Microsoft Teams incoming webhook.
    Teams {
        /// The webhook URL.
        url: WebhookUrl,
    },
    /// A webhook receiving CloudEvents.
    Webhook {
        /// The webhook URL.
        url: WebhookUrl,
    },
    /// An SMTP server and the addresses.
    Email(EmailTarget),
}

impl Resolved {
    /// Which kind of channel this is.
    pub fn channel(&self) -> Channel {
        match self {
            Resolved::Slack { .. } => Channel::Slack,
            Resolved::Teams { .. } => Channel::Teams,
            Resolved::Webhook { .. } => Channel::Webhook,
            Resolved::Email(_) => Channel::Email,
        }
    }
}

/// Reads the Secret(s) `notification` names, in `namespace`.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    notification: &Notification,
) -> Result<Resolved, NotifyError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = async |name: &str| {
        secrets
            .get(name)
            .await
            .map(|secret| secret.data.unwrap_or_default())
            .map_err(|source| match source {
                kube::Error::Api(status) if status.code == 404 => NotifyError::MissingSecret {
                    notification: notification.name.clone(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                },
                source => NotifyError::ReadSecret {
                    notification: notification.name.clone(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source: Box::new(source),
                },
            })
    };
    let webhook = [
        (&notification.slack, Channel::Slack),
        (&notification.teams, Channel::Teams),
        (&notification.webhook, Channel::Webhook),
    ]
    .into_iter()
    .find_map(|(channel, kind)| channel.as_ref().map(|c| (&c.webhook_secret_ref, kind)));
    if let Some((reference, kind)) = webhook {
        let url = webhook_url(namespace, reference, &read(&reference.name).await?)?;
        return Ok(match kind {
            Channel::Slack => Resolved::Slack { url },
            Channel::Teams => Resolved::Teams { url },
            _ => Resolved::Webhook { url },
        });
    }
    let Some(email) = &notification.email else {
        return Err(NotifyError::NoChannel {
            notification: notification.name.clone(),
        });
    };
    let name = &email.smtp_secret_ref.name;
    let smtp = smtp_settings(namespace, name, &read(name).await?)?;
    email_target(&notification.name, namespace, email, smtp).map(Resolved::Email)
}

/// The webhook URL in the key `reference` names.
pub fn webhook_url(
    namespace: &str,
    reference: &SecretKeyRef,
    data: &BTreeMap<String, ByteString>,
) -> Result<WebhookUrl, NotifyError> {
    let keys = Keys {
        namespace,
        name: &reference.name,
        data,
    };
    let text = keys.required(&reference.key)?;
    WebhookUrl::parse(&text).map_err(|problem| keys.invalid(&reference.key, problem))
}

/// The SMTP settings in the data of Secret `namespace/name`.
pub fn smtp_settings(
    namespace: &str,
    name: &str,
    data: &BTreeMap<String, ByteString>,
) -> Result<SmtpSettings, NotifyError> {
    let keys = Keys {
        namespace,
        name,
        data,
    };
    let host = keys.required("host")?;
    let port = match keys.optional("port")? {
        None => DEFAULT_SMTP_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| keys.invalid("port", "is not a port number (1-65535)"))?,
    };
    let tls = match keys.optional("tls")?.as_deref() {
        None => SmtpTls::default(),
        Some(mode) if mode.eq_ignore_ascii_case("starttls") => SmtpTls::StartTls,
        Some(mode) if mode.eq_ignore_ascii_case("tls") => SmtpTls::Tls,
        Some(mode) if mode.eq_ignore_ascii_case("none") => SmtpTls::None,
        Some(_) => return Err(keys.invalid("tls", "is not one of starttls, tls or none")),
    };
    // A password may end in spaces; only the newline a file left is cut.
    let password = keys
        .text("password")?
        .map(|p| p.trim_end_matches(['\r', '\n']).to_owned())
        .filter(|p| !p.is_empty());
    let login = match (keys.optional("username")?, password) {
        (Some(username), Some(password)) => Some(SmtpLogin {
            username,
            password: SecretValue(password),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(keys.missing("password")),
        (None, Some(_)) => return Err(keys.missing("username")),
    };
    Ok(SmtpSettings {
        host,
        port,
        login,
        from: keys.optional("from")?,
        tls,
    })
}

/// The addresses of an e-mail notification: its `from` wins over the
/// Secret's.
pub fn email_target(
    notification: &str,
    namespace: &str,
    channel: &EmailChannel,
    smtp: SmtpSettings,
) -> Result<EmailTarget, NotifyError> {
    let from = channel
        .from
        .clone()
        .or_else(|| smtp.from.clone())
        .ok_or_else(|| NotifyError::NoSender {
            notification: notification.to_owned(),
            namespace: namespace.to_owned(),
            name: channel.smtp_secret_ref.name.clone(),
        })?;
    Ok(EmailTarget {
        smtp,
        from,
        to: channel.to.clone(),
    })
}

/// The data of one Secret, for errors that name it.
struct Keys<'a> {
    namespace: &'a str,
    name: &'a str,
    data: &'a BTreeMap<String, ByteString>,
}

impl Keys<'_> {
    /// A key's text as stored, if present.
    fn text(&self, key: &str) -> Result<Option<String>, NotifyError> {
        match self.data.get(key) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.0.clone())
                .map(Some)
                .map_err(|_| self.invalid(key, "is not UTF-8 text")),
        }
    }

    /// A key's trimmed text; absent when missing or blank.
    fn optional(&self, key: &str) -> Result<Option<String>, NotifyError> {
        Ok(self
            .text(key)?
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty()))
    }

    /// A key's trimmed text, which must be there.
    fn required(&self, key: &str) -> Result<String, NotifyError> {
        self.optional(key)?.ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> NotifyError {
        NotifyError::MissingKey {
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            key: key.to_owned(),
        }
    }

    fn invalid(&self, key: &str, problem: &'static str) -> NotifyError {
        NotifyError::InvalidKey {
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            key: key.to_owned(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    fn reference(key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: "slack-hook".into(),
            key: key.into(),
        }
    }

    const HOOK: &str = "https://hooks.slack.com/services/T000/B000/TOPSECRET";

    #[test]
    fn webhook_url_is_read_and_trimmed() {
        let url = webhook_url(
            "shop",
            &reference("url"),
            &data(&[("url", &format!("{HOOK}\n"))]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.expose().as_str(), HOOK);
    }

    #[test]
    fn a_missing_key_names_the_secret_and_key() {
        let err = webhook_url("shop", &reference("url"), &data(&[("other", HOOK)]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("Secret shop/slack-hook has no key `url`")
        );
    }

    #[test]
    fn a_bad_url_is_not_quoted() {
        for bad in [
            "ftp://host/TOPSECRET",
            "not a url TOPSECRET",
            "mailto:TOPSECRET@example.com",
            "http://[TOPSECRET]/x",
        ] {
            let err = webhook_url("shop", &reference("url"), &data(&[("url", bad)]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with("Secret shop/slack-hook key `url` "),
                "{err}"
            );
            assert!(!err.contains("TOPSECRET"), "{err}");
        }
        let err = webhook_url(
            "shop",
            &reference("url"),
            &BTreeMap::from([("url".to_owned(), ByteString(vec![0xff, 0xfe]))]),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("Secret shop/slack-hook key `url` is not UTF-8 text")
        );
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let url = WebhookUrl::parse(HOOK).unwrap_or_else(|e| panic!("{e}"));
        let resolved = Resolved::Slack { url };
        let shown = format!("{resolved:?}");
        assert!(shown.contains("hooks.slack.com"), "{shown}");
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("T000"),
            "{shown}"
        );

        let smtp = smtp_settings(
            "shop",
            "smtp",
            &data(&[("host", "mail"), ("username", "u"), ("password", "hunter2")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{smtp:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn smtp_defaults() {
        let smtp = smtp_settings("shop", "smtp", &data(&[("host", " mail.example.com\n")]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            smtp,
            SmtpSettings {
                host: "mail.example.com".into(),
                port: 587,
                login: None,
                from: None,
                tls: SmtpTls::StartTls,
            }
        );
    }

    #[test]
    fn smtp_reads_every_key() {
        let smtp = smtp_settings(
            "shop",
            "smtp",
            &data(&[
                ("host", "mail"),
                ("port", "465"),
                ("username", "bot"),
                ("password", " pass word \n"),
                ("from", "bot@example.com"),
                ("tls", "TLS"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(smtp.port, 465);
        assert_eq!(smtp.tls, SmtpTls::Tls);
        assert_eq!(smtp.from.as_deref(), Some("bot@example.com"));
        let login = smtp.login.unwrap_or_else(|| panic!("no login"));
        assert_eq!(login.username, "bot");
        assert_eq!(login.password.expose(), " pass word ");
    }

    #[test]
    fn smtp_errors_name_the_key_not_the_value() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[], "Secret shop/smtp has no key `host`"),
            (
                &[("host", "h"), ("port", "70000")],
                "Secret shop/smtp key `port` is not a port number (1-65535)",
            ),
            (
                &[("host", "h"), ("tls", "ssl3")],
                "Secret shop/smtp key `tls` is not one of starttls, tls or none",
            ),
            (
                &[("host", "h"), ("username", "u")],
                "Secret shop/smtp has no key `password`",
            ),
            (
                &[("host", "h"), ("password", "hunter2")],
                "Secret shop/smtp has no key `username`",
            ),
        ];
        for (pairs, expected) in cases {
            let err = smtp_settings("shop", "smtp", &data(pairs))
                .err()
                .map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(expected));
        }
    }

    #[test]
    fn the_notification_sender_wins() {
        let smtp = smtp_settings(
            "shop",
            "smtp",
            &data(&[("host", "h"), ("from", "default@example.com")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut channel = EmailChannel {
            to: vec!["ops@example.com".into()],
            from: Some("releases@example.com".into()),
            smtp_secret_ref: crate::api::notify::SecretRef {
                name: "smtp".into(),
            },
        };
        let target =
            email_target("mail", "shop", &channel, smtp.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target.from, "releases@example.com");
        assert_eq!(target.to, ["ops@example.com"]);

        channel.from = None;
        let target =
            email_target("mail", "shop", &channel, smtp.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(target.from, "default@example.com");

        let no_from = SmtpSettings { from: None, ..smtp };
        let err = email_target("mail", "shop", &channel, no_from)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("Secret shop/smtp"), "{err}");
    }
}
