//! The `Environment`: the platform team's rules for the releases of the
//! namespaces it selects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Duration,
    release::{PrometheusEndpoint, RollbackPolicy},
};

/// An Environment (dev, test, staging, production) sets the rules every
/// Release in its namespaces obeys: promotion order and soak time, approvals,
/// freeze windows, and defaults. A Release can add checks but not weaken
/// these rules.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lockkeeper.dev",
    version = "v1alpha1",
    kind = "Environment",
    status = "EnvironmentStatus",
    shortname = "lkenv",
    category = "lockkeeper",
    doc = "An Environment sets the rules for the Releases of the namespaces it selects: promotion order and soak time, approvals, freeze windows and defaults.",
    printcolumn(name = "From", type_ = "string", json_path = ".spec.promotion.from"),
    printcolumn(name = "Approval", type_ = "boolean", json_path = ".spec.approval.required"),
    printcolumn(name = "Namespaces", type_ = "integer", json_path = ".status.namespaces"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.promotion) || !(self.metadata.name in self.spec.promotion.from)").message("an Environment cannot promote from itself")
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// The namespaces whose Releases obey this Environment, by label (e.g.
    /// `lockkeeper.dev/environment: production`).
    pub namespace_selector: LabelSelector,
    /// Where a version must have succeeded before it may run here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// Whether a person must approve each revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Windows in which no new revision starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub freeze: Vec<FreezeWindow>,
    /// Defaults for the Releases of this Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<EnvironmentDefaults>,
}

/// A promotion gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Environments one of which must run the same version (the same pod
    /// template) Ready in the same-named Release first.
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub from: Vec<String>,
    /// How long the version must have been Ready there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Duration>,
}

/// An approval gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.distinctFromAuthor || self.required").message("approval.distinctFromAuthor needs approval.required"))]
pub struct Approval {
    /// Each revision waits in AwaitingApproval until a person holding the
    /// `approve` verb on releases approves it.
    pub required: bool,
    /// Four eyes: the approver must not be the user who last changed the
    /// Release's spec.
    #[serde(default)]
    pub distinct_from_author: bool,
}

/// A recurring window in which no new revision starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FreezeWindow {
    /// When the window opens: a cron expression with five fields (minute
    /// hour day-of-month month day-of-week), e.g. `0 18 * * FRI`.
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    /// How long the window stays closed, e.g. `64h`.
    pub duration: Duration,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`. Defaults to UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Why the freeze exists, shown to people waiting on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
}

/// Defaults inherited by the Releases of an Environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentDefaults {
    /// The Prometheus server checks query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusEndpoint>,
    /// The rollback policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
}

/// The observed state of an Environment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and Stalled (e.g. an overlapping selector or a promotion cycle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many namespaces the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<i64>,
}
