//! The Lockkeeper API, group `lockkeeper.dev`, version `v1alpha1`.

pub mod checks;
mod duration;
pub mod environment;
pub mod notify;
pub mod release;
pub mod schema;
pub mod status;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::{DURATION_PATTERN, Duration, ParseDurationError};
pub use environment::{Environment, EnvironmentSpec, EnvironmentStatus};
pub use release::{PrometheusEndpoint, Release, ReleaseSpec, RollbackPolicy};
pub use schema::Embedded;
pub use status::{Color, Phase, ReleaseStatus};

/// The API group.
pub const GROUP: &str = "lockkeeper.dev";

/// A key of a Secret in the Release's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}
