//! Writing a Release's status with server-side apply on `/status`.

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{
    api::{Release, ReleaseStatus},
    labels::FIELD_MANAGER,
};

/// Applies `status` to the named Release's status subresource. The operator
/// is the only writer of status, so it owns every field and forces.
pub async fn apply(
    api: &Api<Release>,
    name: &str,
    status: &ReleaseStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": "lockkeeper.dev/v1alpha1",
        "kind": "Release",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}
