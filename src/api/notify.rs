//! Who is told about a release, and when (runbook 4.2).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// The moments a notification can be sent for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotifyOn {
    /// A revision started its runbook.
    Started,
    /// A revision waits for a person's approval.
    AwaitingApproval,
    /// A revision waits for promotion or a freeze window to end.
    Waiting,
    /// A revision finished and is serving.
    Ready,
    /// A revision failed and its changes were undone.
    RolledBack,
    /// A revision failed, before any change or with automatic rollback off.
    Failed,
}

/// A notification channel. Exactly one of `slack`, `teams`, `webhook` or
/// `email` is set. URLs and credentials come from Secrets and never appear in
/// logs, events or status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.slack), has(self.teams), has(self.webhook), has(self.email)].filter(x, x).size() == 1").message("a notification sets exactly one of slack, teams, webhook or email"))]
pub struct Notification {
    /// The channel's name, used in events and metrics.
    #[schemars(length(min = 1, max = 63), regex(pattern = super::schema::DNS_LABEL_PATTERN))]
    pub name: String,
    /// When to notify. Defaults to AwaitingApproval, Ready, RolledBack and
    /// Failed. Quote the key in YAML (`"on": [Ready]`): YAML 1.1 tools such
    /// as kubectl read a bare `on` as the boolean true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub on: Vec<NotifyOn>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<WebhookChannel>,
    /// A Microsoft Teams incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<WebhookChannel>,
    /// A generic webhook receiving CloudEvents (JSON, structured mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,
    /// E-mail over SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailChannel>,
}

/// A webhook whose URL is kept in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// The Secret key holding the webhook URL.
    pub webhook_secret_ref: SecretKeyRef,
}

/// E-mail settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailChannel {
    /// Recipients.
    #[schemars(
        length(min = 1, max = 32),
        inner(length(min = 3, max = 254), regex(pattern = "^[^@\\s]+@[^@\\s]+$"))
    )]
    pub to: Vec<String>,
    /// The sender address. Defaults to the Secret's `from` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), regex(pattern = "^[^@\\s]+@[^@\\s]+$"))]
    pub from: Option<String>,
    /// A Secret with the SMTP server: keys `host`, `port` (default 587),
    /// `username` and `password` (optional), `from`, and `tls`
    /// (`starttls`, the default; `tls`; or `none` for a local relay).
    pub smtp_secret_ref: SecretRef,
}

/// A Secret in the Release's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
