//! Backups before a revision changes anything (runbook 1.3), their
//! restore when it rolls back, and their retention (runbook 4.3).
//!
//! ConfigMaps and Secrets are copied byte for byte into immutable objects
//! the Release owns; claims are snapshotted with CSI VolumeSnapshots. Every
//! write here is idempotent: copies and snapshots have deterministic names
//! and are created once; a restore writes the copy's content back only where
//! it differs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, PostParams},
};

use super::{
    execute::{ExecError, create_once, object_err},
    render,
};
use crate::{
    api::{Release, status::BackupRecord},
    labels::{ORIGINAL_LABELS, ORIGINAL_TYPE, RELEASE, REVISION, ROLE},
};

fn refused(release: &Release, action: &'static str, message: String) -> ExecError {
    ExecError::Refused {
        action,
        namespace: release.namespace().unwrap_or_default(),
        release: release.name_any(),
        message,
    }
}

/// The backups of `revision` as the status recorded them.
fn record(release: &Release, revision: i64) -> Option<BackupRecord> {
    release
        .status
        .as_ref()
        .and_then(|s| s.backups.iter().find(|b| b.revision == revision))
        .cloned()
}

fn no_record(release: &Release, revision: i64) -> ExecError {
    refused(
        release,
        "restoring backups",
        format!("no backups of revision {revision} are recorded"),
    )
}

/// Copies the listed ConfigMaps and Secrets and snapshots the listed claims.
pub async fn take(client: &Client, release: &Release, revision: i64) -> Result<(), ExecError> {
    let ns = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let Some(spec) = &release.spec.backup else {
        return Ok(());
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for original in &spec.config_maps {
        let source = config_maps.get(original).await.map_err(object_err(
            "backing up",
            "ConfigMap",
            &ns,
            original,
        ))?;
        let copy = render::backup_copy_name(&name, original, revision);
        let object = render::config_map_copy(release, &source, &copy, revision);
        create_once(&config_maps, &object)
            .await
            .map_err(object_err(
                "creating the backup copy",
                "ConfigMap",
                &ns,
                &copy,
            ))?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for original in &spec.secrets {
        let source = secrets.get(original).await.map_err(object_err(
            "backing up",
            "Secret",
            &ns,
            original,
        ))?;
        let copy = render::backup_copy_name(&name, original, revision);
        let object = render::secret_copy(release, &source, &copy, revision);
        create_once(&secrets, &object).await.map_err(object_err(
            "creating the backup copy",
            "Secret",
            &ns,
            &copy,
        ))?;
    }
    if !spec.volumes.is_empty() {
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &render::volume_snapshot_resource());
        for volume in &spec.volumes {
            let object = render::volume_snapshot(release, volume, revision);
            let snapshot = object.name_any();
            create_once(&snapshots, &object).await.map_err(object_err(
                "creating",
                "VolumeSnapshot",
                &ns,
                &snapshot,
            ))?;
        }
    }
    Ok(())
}

/// Puts the ConfigMaps and Secrets copied before `revision` back as they
/// were; recreates those that were deleted.
pub async fn restore_config(
    client: &Client,
    release: &Release,
    revision: i64,
) -> Result<(), ExecError> {
    let ns = release.namespace().unwrap_or_default();
    let record = record(release, revision).ok_or_else(|| no_record(release, revision))?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for (original, copy) in &record.config_maps {
        let saved = config_maps.get(copy).await.map_err(object_err(
            "reading the backup copy",
            "ConfigMap",
            &ns,
            copy,
        ))?;
        let current = config_maps.get_opt(original).await.map_err(object_err(
            "reading",
            "ConfigMap",
            &ns,
            original,
        ))?;
        let restored = ConfigMap {
            metadata: restored_meta(
                &saved.metadata,
                original,
                current.as_ref().map(|c| &c.metadata),
            ),
            data: saved.data.clone(),
            binary_data: saved.binary_data.clone(),
            immutable: current.as_ref().and_then(|c| c.immutable),
        };
        let same = current
            .as_ref()
            .is_some_and(|c| c.data == saved.data && c.binary_data == saved.binary_data);
        if !same {
            let immutable = current.as_ref().and_then(|c| c.immutable) == Some(true);
            put_back(
                &config_maps,
                original,
                &restored,
                current.is_some(),
                immutable,
            )
            .await
            .map_err(object_err("restoring", "ConfigMap", &ns, original))?;
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for (original, copy) in &record.secrets {
        let saved = secrets.get(copy).await.map_err(object_err(
            "reading the backup copy",
            "Secret",
            &ns,
            copy,
        ))?;
        let current = secrets
            .get_opt(original)
            .await
            .map_err(object_err("reading", "Secret", &ns, original))?;
        let type_ = match &current {
            Some(c) => c.type_.clone(),
            None => saved.annotations().get(ORIGINAL_TYPE).cloned(),
        };
        let restored = Secret {
            metadata: restored_meta(
                &saved.metadata,
                original,
                current.as_ref().map(|c| &c.metadata),
            ),
            data: saved.data.clone(),
            immutable: current.as_ref().and_then(|c| c.immutable),
            type_,
            ..Secret::default()
        };
        let same = current.as_ref().is_some_and(|c| c.data == saved.data);
        if !same {
            let immutable = current.as_ref().and_then(|c| c.immutable) == Some(true);
            put_back(&secrets, original, &restored, current.is_some(), immutable)
                .await
                .map_err(object_err("restoring", "Secret", &ns, original))?;
        }
    }
    Ok(())
}

/// The metadata a restored object gets: the current object's (so the
/// replace keeps its labels, owners and resourceVersion), or, when it was
/// deleted, its name and the labels it had when copied.
fn restored_meta(
    saved: &kube::api::ObjectMeta,
    original: &str,
    current: Option<&kube::api::ObjectMeta>,
) -> kube::api::ObjectMeta {
    match current {
        Some(meta) => meta.clone(),
        None => kube::api::ObjectMeta {
            name: Some(original.to_owned()),
            namespace: saved.namespace.clone(),
            labels: saved
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINAL_LABELS))
                .and_then(|l| serde_json::from_str(l).ok()),
            ..kube::api::ObjectMeta::default()
        },
    }
}

/// Writes `object` back: a replace guarded by its resourceVersion, a
/// delete and create when the original is immutable, a create when it is
/// gone.
async fn put_back<K>(
    api: &Api<K>,
    name: &str,
    object: &K,
    exists: bool,
    immutable: bool,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    if exists && !immutable {
        api.replace(name, &PostParams::default(), object).await?;
        return Ok(());
    }
    if exists {
        api.delete(name, &DeleteParams::default()).await?;
    }
    let mut fresh = object.clone();
    let meta = fresh.meta_mut();
    meta.resource_version = None;
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.managed_fields = None;
    api.create(&PostParams::default(), &fresh).await?;
    Ok(())
}

/// Creates a claim from each VolumeSnapshot taken before `revision`;
/// returns the claims to mount in place of the originals.
pub async fn restore_volumes(
    client: &Client,
    release: &Release,
    revision: i64,
) -> Result<BTreeMap<String, String>, ExecError> {
    let ns = release.namespace().unwrap_or_default();
    let record = record(release, revision).ok_or_else(|| no_record(release, revision))?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let mut restored = BTreeMap::new();
    for (claim, snapshot) in &record.volume_snapshots {
        let original = claims.get(claim).await.map_err(object_err(
            "reading",
            "PersistentVolumeClaim",
            &ns,
            claim,
        ))?;
        let name = render::restored_claim_name(claim, revision);
        let object = render::restored_claim(release, &original, &name, snapshot, revision);
        create_once(&claims, &object).await.map_err(object_err(
            "restoring from its snapshot",
            "PersistentVolumeClaim",
            &ns,
            &name,
        ))?;
        restored.insert(claim.clone(), name);
    }
    Ok(restored)
}

/// Deletes the backup copies, VolumeSnapshots and per-revision config of
/// every revision not in `keep`.
pub async fn prune(client: &Client, release: &Release, keep: &[i64]) -> Result<(), ExecError> {
    let ns = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let kept = keep
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let selector =
        |roles: &str| format!("{RELEASE}={name},{ROLE} in ({roles}),{REVISION} notin ({kept})");
    let params = ListParams::default().labels(&selector("backup,config"));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    config_maps
        .delete_collection(&DeleteParams::default(), &params)
        .await
        .map_err(object_err(
            "pruning",
            "ConfigMap",
            &ns,
            &selector("backup,config"),
        ))?;
    let params = ListParams::default().labels(&selector("backup"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .delete_collection(&DeleteParams::default(), &params)
        .await
        .map_err(object_err("pruning", "Secret", &ns, &selector("backup")))?;
    if release
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| !b.volumes.is_empty())
    {
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &render::volume_snapshot_resource());
        match snapshots
            .delete_collection(&DeleteParams::default(), &params)
            .await
        {
            Ok(_) => {}
            // The snapshot API went away: there is nothing of it to prune.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(object_err(
                    "pruning",
                    "VolumeSnapshot",
                    &ns,
                    &selector("backup"),
                )(source));
            }
        }
    }
    Ok(())
}
