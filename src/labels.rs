//! Label, annotation and finalizer keys the operator owns.

/// The field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "lockkeeper";

/// The finalizer on every Release the operator manages.
pub const FINALIZER: &str = "lockkeeper.dev/cleanup";

/// The Release a child belongs to.
pub const RELEASE: &str = "lockkeeper.dev/release";
/// The color of a Deployment or pod.
pub const COLOR: &str = "lockkeeper.dev/color";
/// The revision a child was created for.
pub const REVISION: &str = "lockkeeper.dev/revision";
/// What a child is for (deployment, migration, backup, config, check).
pub const ROLE: &str = "lockkeeper.dev/role";
/// Which runbook Job a Job is (`migrate`, `backup-<name>`, ...).
pub const JOB: &str = "lockkeeper.dev/job";
/// On a backup copy or VolumeSnapshot: the object it was taken of.
pub const BACKUP_OF: &str = "lockkeeper.dev/backup-of";
/// On a Secret's backup copy: the original's type.
pub const ORIGINAL_TYPE: &str = "lockkeeper.dev/original-type";
/// On a backup copy: the original's labels, as JSON.
pub const ORIGINAL_LABELS: &str = "lockkeeper.dev/original-labels";
/// The standard label for who manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The standard version label.
pub const VERSION: &str = "app.kubernetes.io/version";

/// Labels a user's pod template may not set: the operator owns them.
pub const RESERVED_POD_LABELS: &[&str] = &[RELEASE, COLOR, REVISION, ROLE];

/// Request annotations people (or `kubectl release`) put on a Release.
pub mod request {
    /// Promote a revision waiting for cutover; value: the revision number.
    pub const PROMOTE: &str = "lockkeeper.dev/promote";
    /// Abort the running revision and roll back; value: the revision number.
    pub const ABORT: &str = "lockkeeper.dev/abort";
    /// Run a RolledBack or Failed revision again; value: the revision number.
    pub const RETRY: &str = "lockkeeper.dev/retry";
    /// Approve a revision waiting in AwaitingApproval; value: the revision
    /// number. Admission accepts it only from a user allowed the verb
    /// `approve` on the Release who names themself in [`APPROVER`].
    pub const APPROVE: &str = "lockkeeper.dev/approve";
    /// Who approves: the requesting user's name.
    pub const APPROVER: &str = "lockkeeper.dev/approver";
    /// Start a revision inside a freeze window; value: the revision number.
    /// Admission treats it like an approval.
    pub const OVERRIDE_FREEZE: &str = "lockkeeper.dev/override-freeze";
    /// Who overrides the freeze: the requesting user's name.
    pub const OVERRIDE_BY: &str = "lockkeeper.dev/override-by";
    /// Who last created or changed the spec, stamped by the chart's
    /// MutatingAdmissionPolicy; nobody can set it by hand.
    pub const AUTHOR: &str = "lockkeeper.dev/author";
}
