//! The runbook: prepare → deploy → verify → cut over → complete, or roll
//! back. `planner` decides the next action from what is observed (pure);
//! `observe` gathers that picture; `execute` performs the one side effect
//! the planner asked for; `render` builds the objects it applies.

pub mod execute;
pub mod observe;
pub mod planner;
pub mod preflight;
pub mod render;
pub mod steps;
pub mod verify;

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{Color, ReleaseSpec, ReleaseStatus};

/// What one color's Deployment looks like now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentState {
    /// The revision label of its pod template.
    pub revision: Option<i64>,
    /// `spec.replicas`.
    pub desired: i32,
    /// Pods running the current template.
    pub updated: i32,
    /// Pods available.
    pub available: i32,
    /// True once the Deployment controller has seen the latest spec.
    pub observed_current: bool,
    /// The Deployment controller gave up waiting for progress; its message.
    pub deadline_exceeded: Option<String>,
    /// `metadata.generation`.
    pub generation: i64,
}

impl DeploymentState {
    /// Fully rolled out at `replicas`.
    pub fn is_available(&self, replicas: i32) -> bool {
        self.observed_current
            && self.desired == replicas
            && self.updated >= replicas
            && self.available >= replicas
    }
}

/// What a Service the operator steers looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// It does not exist.
    Missing,
    /// It exists but cannot be steered by selector (ExternalName, or no
    /// selector at all); the reason.
    Unsteerable(String),
    /// It selects this color of the release, or none of them yet.
    Selects(Option<Color>),
}

/// Requests people made through annotations, each naming a revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Promote (cut over) this revision.
    pub promote: Option<i64>,
    /// Abort this revision and roll back.
    pub abort: Option<i64>,
    /// Run this failed revision again.
    pub retry: Option<i64>,
}

/// The release's children and the Services it steers, as observed.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// The blue Deployment.
    pub blue: Option<DeploymentState>,
    /// The green Deployment.
    pub green: Option<DeploymentState>,
    /// The Service carrying production traffic (BlueGreen's active Service
    /// or Recreate's optional Service); `None` when there is none to steer.
    pub traffic_service: Option<ServiceState>,
    /// BlueGreen's preview Service, when configured.
    pub preview_service: Option<ServiceState>,
    /// Pods still present of the color being stopped (gathered only while
    /// stopping).
    pub pods: Option<(Color, u32)>,
    /// Whether the revision record of the stable revision exists (looked up
    /// only while rolling back).
    pub stable_record: bool,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The time of this reconcile.
    pub now: Timestamp,
    /// `metadata.generation` of the Release.
    pub generation: i64,
    /// The spec.
    pub spec: &'a ReleaseSpec,
    /// The revision hash of the spec (version, workload, config).
    pub hash: String,
    /// The status as last written.
    pub status: &'a ReleaseStatus,
    /// The children and Services as they are now.
    pub world: World,
    /// Requests made by people.
    pub requests: Requests,
    /// A freeze window of the Environment in force now.
    pub frozen: Option<crate::freeze::Freeze>,
}

impl Observed<'_> {
    /// One color's Deployment.
    pub fn deployment(&self, color: Color) -> Option<&DeploymentState> {
        match color {
            Color::Blue => self.world.blue.as_ref(),
            Color::Green => self.world.green.as_ref(),
        }
    }
}

/// One side effect, idempotent by construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Record what revision `revision` ships (a ControllerRevision).
    RecordRevision {
        /// The revision.
        revision: i64,
    },
    /// Apply `color`'s Deployment rendered from the current spec.
    ApplyDeployment {
        /// The color.
        color: Color,
        /// The revision it runs.
        revision: i64,
    },
    /// Apply `color`'s Deployment rendered from a recorded revision.
    RestoreDeployment {
        /// The color.
        color: Color,
        /// The recorded revision it runs again.
        revision: i64,
    },
    /// Scale `color`'s Deployment.
    Scale {
        /// The color.
        color: Color,
        /// New replica count.
        replicas: i32,
    },
    /// Point a Service's selector at `color`.
    PointService {
        /// The Service.
        service: String,
        /// The color.
        color: Color,
    },
}

impl Effect {
    /// The API resource the effect writes, for metrics.
    pub fn resource(&self) -> &'static str {
        match self {
            Effect::RecordRevision { .. } => "controllerrevisions",
            Effect::ApplyDeployment { .. }
            | Effect::RestoreDeployment { .. }
            | Effect::Scale { .. } => "deployments",
            Effect::PointService { .. } => "services",
        }
    }
}

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// The planner's answer: the status to write once `effect` (if any) has
/// been performed, and when to look again.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The status to record.
    pub status: ReleaseStatus,
    /// The side effect to perform first.
    pub effect: Option<Effect>,
    /// Look again after this long even without a change (time-based waits).
    pub requeue: Option<Duration>,
    /// Events to publish.
    pub notes: Vec<Note>,
}
