//! The objects a revision applies, built from the spec. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, Deployment, DeploymentSpec},
        batch::v1::{Job, JobSpec},
        core::v1::{
            ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec, Secret,
            TypedLocalObjectReference,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        runtime::RawExtension,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use kube::api::{ApiResource, DynamicObject};

use super::JobKind;
use crate::{
    api::{
        Color, Release, ReleaseSpec,
        release::{BackupSpec, ConfigCheck, ConfigSpec, VolumeBackup, Workload},
        status::BackupRecord,
    },
    labels::{
        BACKUP_OF, COLOR, JOB, MANAGED_BY, ORIGINAL_LABELS, ORIGINAL_TYPE, RELEASE, REVISION, ROLE,
        VERSION,
    },
};

/// What a revision ships: the part of the spec whose change starts a new
/// revision. Recorded per revision (a ControllerRevision) so a rollback can
/// recreate the previous version exactly.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Shipped {
    /// The version.
    pub version: String,
    /// The workload.
    pub workload: Workload,
    /// Release-owned config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::api::release::ConfigSpec>,
    /// The migration: its rollback runs from this record, with this
    /// revision's image, even after the spec has moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::api::release::MigrationSpec>,
    /// The backups, whose restore Jobs run from this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::api::release::BackupSpec>,
}

impl Shipped {
    /// The shipped part of a spec.
    pub fn of(spec: &ReleaseSpec) -> Self {
        Self {
            version: spec.version.clone(),
            workload: spec.workload.clone(),
            config: spec.config.clone(),
            migration: spec.migration.clone(),
            backup: spec.backup.clone(),
        }
    }

    /// A stable hash: equal for equal content, whatever the key order.
    pub fn hash(&self) -> String {
        // serde_json maps are sorted (no preserve_order feature), so the
        // serialisation is canonical.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&bytes)[..10])
    }
}

/// The hash of the version and the pod template alone: equal wherever the
/// same build runs, whatever each environment's config.
pub fn template_hash(spec: &ReleaseSpec) -> String {
    let bytes = serde_json::to_vec(&json!({
        "version": spec.version,
        "template": spec.workload.template,
    }))
    .unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..10])
}

/// `<release>-<color>`.
pub fn deployment_name(release: &str, color: Color) -> String {
    format!("{release}-{}", color.as_str())
}

/// `<release>-r<revision>`.
pub fn record_name(release: &str, revision: i64) -> String {
    format!("{release}-r{revision}")
}

/// The owner reference every child carries, so it is garbage-collected with
/// the Release.
pub fn owner(release: &Release) -> OwnerReference {
    OwnerReference {
        api_version: "lockkeeper.dev/v1alpha1".into(),
        kind: "Release".into(),
        name: release.metadata.name.clone().unwrap_or_default(),
        uid: release.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The labels of a child object.
pub fn labels(release: &str, role: &str, revision: i64, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RELEASE.to_owned(), release.to_owned()),
        (ROLE.to_owned(), role.to_owned()),
        (REVISION.to_owned(), revision.to_string()),
        (VERSION.to_owned(), version.to_owned()),
        (MANAGED_BY.to_owned(), "lockkeeper".to_owned()),
    ])
}

/// The pod selector of a color; fixed for the Deployment's lifetime.
pub fn color_selector(release: &str, color: Color) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RELEASE.to_owned(), release.to_owned()),
        (COLOR.to_owned(), color.as_str().to_owned()),
    ])
}

/// The Deployment of `color` running `revision` of `shipped`.
pub fn deployment(
    release: &Release,
    shipped: &Shipped,
    template: &PodTemplateSpec,
    color: Color,
    revision: i64,
    claims: &BTreeMap<String, String>,
) -> Deployment {
    let name = release.metadata.name.clone().unwrap_or_default();
    let mut meta_labels = labels(&name, "workload", revision, &shipped.version);
    meta_labels.insert(COLOR.to_owned(), color.as_str().to_owned());

    let mut template = revision_template(template, shipped.config.as_ref(), revision);
    rename_claims(&mut template, claims);
    let pod_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let pod_labels = pod_meta.labels.get_or_insert_with(BTreeMap::new);
    pod_labels.extend(color_selector(&name, color));
    pod_labels.insert(REVISION.to_owned(), revision.to_string());
    pod_labels.insert(VERSION.to_owned(), shipped.version.clone());

    let deadline = shipped.workload.progress_deadline.map_or(600, |d| {
        i32::try_from(d.get().as_secs().max(1)).unwrap_or(i32::MAX)
    });
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(&name, color)),
            namespace: release.metadata.namespace.clone(),
            labels: Some(meta_labels),
            owner_references: Some(vec![owner(release)]),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(shipped.workload.replicas),
            selector: LabelSelector {
                match_labels: Some(color_selector(&name, color)),
                ..LabelSelector::default()
            },
            template,
            progress_deadline_seconds: Some(deadline),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// The record of what `revision` ships.
pub fn revision_record(release: &Release, shipped: &Shipped, revision: i64) -> ControllerRevision {
    let name = release.metadata.name.clone().unwrap_or_default();
    let mut meta_labels = labels(&name, "revision", revision, &shipped.version);
    meta_labels.insert("lockkeeper.dev/revision-hash".into(), shipped.hash());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(record_name(&name, revision)),
            namespace: release.metadata.namespace.clone(),
            labels: Some(meta_labels),
            owner_references: Some(vec![owner(release)]),
            ..ObjectMeta::default()
        },
        data: RawExtension(serde_json::to_value(shipped).unwrap_or(json!({}))),
        revision: Some(revision),
    }
}

/// Reads a record back.
pub fn shipped_from_record(record: &ControllerRevision) -> Result<Shipped, String> {
    serde_json::from_value(record.data.0.clone())
        .map_err(|e| format!("the record cannot be read: {e}"))
}

/// `<release>-<what>-r<revision>`, shortened with a hash when it would
/// exceed the 63 characters a Job's pods can carry in their labels.
pub fn child_name(release: &str, what: &str, revision: i64) -> String {
    shortened(format!("{release}-{what}-r{revision}"), 63)
}

/// `full`, or its first characters and a hash of it when longer than
/// `limit`; distinct inputs stay distinct.
fn shortened(full: String, limit: usize) -> String {
    if full.len() <= limit {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    let mut cut = limit - hash.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", full[..cut].trim_end_matches(['-', '.']))
}

/// The name of a runbook Job of `revision`.
pub fn job_name(release: &str, kind: &JobKind, revision: i64) -> String {
    child_name(release, &kind.what(), revision)
}

/// `<name>-r<revision>`: a revision's copy of a release-owned ConfigMap.
pub fn config_map_name(name: &str, revision: i64) -> String {
    format!("{name}-r{revision}")
}

/// The immutable copy of ConfigMap or Secret `original` taken before
/// `revision`.
pub fn backup_copy_name(release: &str, original: &str, revision: i64) -> String {
    shortened(format!("{release}-backup-r{revision}-{original}"), 253)
}

/// The VolumeSnapshot of `claim` taken before `revision`.
pub fn snapshot_name(release: &str, claim: &str, revision: i64) -> String {
    shortened(format!("{release}-{claim}-r{revision}"), 253)
}

/// The claim restored from `claim`'s snapshot taken before `revision`.
pub fn restored_claim_name(claim: &str, revision: i64) -> String {
    shortened(format!("{claim}-restored-r{revision}"), 253)
}

/// What the backups of `revision` will be called.
pub fn backup_record(release: &str, spec: &BackupSpec, revision: i64) -> BackupRecord {
    let copies = |names: &[String]| {
        names
            .iter()
            .map(|n| (n.clone(), backup_copy_name(release, n, revision)))
            .collect()
    };
    BackupRecord {
        revision,
        config_maps: copies(&spec.config_maps),
        secrets: copies(&spec.secrets),
        volume_snapshots: spec
            .volumes
            .iter()
            .map(|v| {
                let claim = v.persistent_volume_claim.clone();
                let snapshot = snapshot_name(release, &claim, revision);
                (claim, snapshot)
            })
            .collect(),
        jobs: spec
            .jobs
            .iter()
            .map(|j| job_name(release, &JobKind::Backup(j.name.clone()), revision))
            .collect(),
    }
}

/// The pod template a revision runs: references to release-owned
/// ConfigMaps point at that revision's copies.
pub fn revision_template(
    template: &PodTemplateSpec,
    config: Option<&ConfigSpec>,
    revision: i64,
) -> PodTemplateSpec {
    let mut template = template.clone();
    let owned: Vec<&str> = config
        .map(|c| c.config_maps.iter().map(|m| m.name.as_str()).collect())
        .unwrap_or_default();
    if owned.is_empty() {
        return template;
    }
    let rename = |name: &mut String| {
        if owned.contains(&name.as_str()) {
            *name = config_map_name(name, revision);
        }
    };
    let Some(pod) = template.spec.as_mut() else {
        return template;
    };
    for volume in pod.volumes.iter_mut().flatten() {
        if let Some(cm) = volume.config_map.as_mut() {
            rename(&mut cm.name);
        }
        let sources = volume.projected.as_mut().and_then(|p| p.sources.as_mut());
        for source in sources.into_iter().flatten() {
            if let Some(cm) = source.config_map.as_mut() {
                rename(&mut cm.name);
            }
        }
    }
    let containers = pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten());
    for container in containers {
        for from in container.env_from.iter_mut().flatten() {
            if let Some(cm) = from.config_map_ref.as_mut() {
                rename(&mut cm.name);
            }
        }
        for var in container.env.iter_mut().flatten() {
            if let Some(cm) = var
                .value_from
                .as_mut()
                .and_then(|v| v.config_map_key_ref.as_mut())
            {
                rename(&mut cm.name);
            }
        }
    }
    template
}

/// Points claim references at their restored claims.
fn rename_claims(template: &mut PodTemplateSpec, claims: &BTreeMap<String, String>) {
    if claims.is_empty() {
        return;
    }
    let volumes = template.spec.as_mut().and_then(|p| p.volumes.as_mut());
    for volume in volumes.into_iter().flatten() {
        if let Some(pvc) = volume.persistent_volume_claim.as_mut()
            && let Some(to) = claims.get(&pvc.claim_name)
        {
            pvc.claim_name.clone_from(to);
        }
    }
}

/// A revision's immutable copies of the release-owned ConfigMaps.
pub fn config_maps(release: &Release, config: &ConfigSpec, revision: i64) -> Vec<ConfigMap> {
    let name = release.metadata.name.clone().unwrap_or_default();
    config
        .config_maps
        .iter()
        .map(|c| ConfigMap {
            metadata: ObjectMeta {
                name: Some(config_map_name(&c.name, revision)),
                namespace: release.metadata.namespace.clone(),
                labels: Some(labels(&name, "config", revision, &release.spec.version)),
                owner_references: Some(vec![owner(release)]),
                ..ObjectMeta::default()
            },
            data: Some(c.data.clone()),
            immutable: Some(true),
            ..ConfigMap::default()
        })
        .collect()
}

/// The metadata of a backup copy of `original`.
fn copy_meta(release: &Release, original: &ObjectMeta, copy: &str, revision: i64) -> ObjectMeta {
    let name = release.metadata.name.clone().unwrap_or_default();
    let original_labels =
        serde_json::to_string(&original.labels.clone().unwrap_or_default()).unwrap_or_default();
    ObjectMeta {
        name: Some(copy.to_owned()),
        namespace: release.metadata.namespace.clone(),
        labels: Some(labels(&name, "backup", revision, &release.spec.version)),
        annotations: Some(BTreeMap::from([
            (
                BACKUP_OF.to_owned(),
                original.name.clone().unwrap_or_default(),
            ),
            (ORIGINAL_LABELS.to_owned(), original_labels),
        ])),
        owner_references: Some(vec![owner(release)]),
        ..ObjectMeta::default()
    }
}

/// An immutable copy of a ConfigMap, byte for byte.
pub fn config_map_copy(
    release: &Release,
    original: &ConfigMap,
    copy: &str,
    revision: i64,
) -> ConfigMap {
    ConfigMap {
        metadata: copy_meta(release, &original.metadata, copy, revision),
        data: original.data.clone(),
        binary_data: original.binary_data.clone(),
        immutable: Some(true),
    }
}

/// An immutable copy of a Secret, byte for byte. Copies are Opaque (a
/// copy of a service-account token must not be managed as one); the
/// original type is kept in an annotation.
pub fn secret_copy(release: &Release, original: &Secret, copy: &str, revision: i64) -> Secret {
    let mut metadata = copy_meta(release, &original.metadata, copy, revision);
    if let Some(t) = &original.type_ {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ORIGINAL_TYPE.to_owned(), t.clone());
    }
    Secret {
        metadata,
        data: original.data.clone(),
        immutable: Some(true),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The `snapshot.storage.k8s.io/v1` VolumeSnapshot API.
pub fn volume_snapshot_resource() -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: "VolumeSnapshot".into(),
        plural: "volumesnapshots".into(),
    }
}

/// The `snapshot.storage.k8s.io/v1` VolumeSnapshotClass API.
pub fn volume_snapshot_class_resource() -> ApiResource {
    ApiResource {
        kind: "VolumeSnapshotClass".into(),
        plural: "volumesnapshotclasses".into(),
        ..volume_snapshot_resource()
    }
}

/// A VolumeSnapshot of `volume.persistentVolumeClaim` taken before
/// `revision`.
pub fn volume_snapshot(release: &Release, volume: &VolumeBackup, revision: i64) -> DynamicObject {
    let name = release.metadata.name.clone().unwrap_or_default();
    let claim = &volume.persistent_volume_claim;
    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = &volume.volume_snapshot_class_name {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let mut object = DynamicObject::new(
        &snapshot_name(&name, claim, revision),
        &volume_snapshot_resource(),
    )
    .within(release.metadata.namespace.as_deref().unwrap_or_default())
    .data(json!({ "spec": spec }));
    object.metadata.labels = Some(labels(&name, "backup", revision, &release.spec.version));
    object.metadata.annotations = Some(BTreeMap::from([(BACKUP_OF.to_owned(), claim.clone())]));
    object.metadata.owner_references = Some(vec![owner(release)]);
    object
}

/// A claim like `original`, filled from VolumeSnapshot `snapshot`. It is
/// not owned by the Release: it holds the live data from now on, and
/// deleting the Release must not delete it.
pub fn restored_claim(
    release: &Release,
    original: &PersistentVolumeClaim,
    name: &str,
    snapshot: &str,
    revision: i64,
) -> PersistentVolumeClaim {
    let release_name = release.metadata.name.clone().unwrap_or_default();
    let spec = original.spec.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: release.metadata.namespace.clone(),
            labels: Some(labels(
                &release_name,
                "restored",
                revision,
                &release.spec.version,
            )),
            annotations: Some(BTreeMap::from([(
                BACKUP_OF.to_owned(),
                original.metadata.name.clone().unwrap_or_default(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            data_source: Some(TypedLocalObjectReference {
                api_group: Some("snapshot.storage.k8s.io".into()),
                kind: "VolumeSnapshot".into(),
                name: snapshot.to_owned(),
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// The config check (runbook 2.3 `--check-config`): the application
/// container of the revision's pod template, with the revision's config,
/// running the check command once.
pub fn config_check_job(template: &PodTemplateSpec, app: &str, check: &ConfigCheck) -> JobSpec {
    let mut template = template.clone();
    if let Some(pod) = template.spec.as_mut() {
        pod.containers.retain(|c| c.name == app);
        for c in &mut pod.containers {
            c.command = Some(check.command.clone());
            c.args = (!check.args.is_empty()).then(|| check.args.clone());
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            c.ports = None;
        }
        pod.restart_policy = Some("Never".into());
    }
    JobSpec {
        template,
        backoff_limit: Some(0),
        ..JobSpec::default()
    }
}

/// A runbook Job: like [`job`], labelled with which Job it is, and kept
/// until the operator has seen its result (no TTL of its own).
pub fn runbook_job(
    release: &Release,
    kind: &JobKind,
    spec: &JobSpec,
    image: &str,
    revision: i64,
    timeout: std::time::Duration,
) -> Job {
    let name = release.metadata.name.clone().unwrap_or_default();
    let role = match kind {
        JobKind::Backup(_) | JobKind::Restore(_) => "backup",
        JobKind::ConfigCheck => "config",
        JobKind::Migration | JobKind::MigrationVerify | JobKind::MigrationRollback => "migration",
    };
    let mut spec = spec.clone();
    spec.ttl_seconds_after_finished = None;
    let mut job = job(
        release,
        &job_name(&name, kind, revision),
        role,
        &spec,
        image,
        revision,
        timeout,
    );
    let what = kind.what();
    job.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(JOB.to_owned(), what.clone());
    if let Some(pod_labels) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .and_then(|m| m.labels.as_mut())
    {
        pod_labels.insert(JOB.to_owned(), what);
    }
    job
}

/// The image of container `app` (or the first) in `template`.
pub fn app_image(template: &PodTemplateSpec, app: Option<&str>) -> Option<String> {
    let containers = &template.spec.as_ref()?.containers;
    let chosen = match app {
        Some(name) => containers.iter().find(|c| c.name == name),
        None => containers.first(),
    };
    chosen.and_then(|c| c.image.clone())
}

/// A Job the release runs (a check, a migration, a backup): labelled and
/// owned like every child, containers without an image get the version's
/// image, pods never restart in place (the Job's own backoffLimit retries),
/// and the Job is bounded by `timeout`.
pub fn job(
    release: &Release,
    name: &str,
    role: &str,
    spec: &JobSpec,
    image: &str,
    revision: i64,
    timeout: std::time::Duration,
) -> Job {
    let release_name = release.metadata.name.clone().unwrap_or_default();
    let mut spec = spec.clone();
    if let Some(pod) = spec.template.spec.as_mut() {
        for container in &mut pod.containers {
            if container.image.as_deref().is_none_or(str::is_empty) {
                container.image = Some(image.to_owned());
            }
        }
        if pod.restart_policy.is_none() {
            pod.restart_policy = Some("Never".into());
        }
    }
    let labels = labels(&release_name, role, revision, &release.spec.version);
    let pod_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels.clone());
    if spec.active_deadline_seconds.is_none() {
        spec.active_deadline_seconds =
            Some(i64::try_from(timeout.as_secs().max(1)).unwrap_or(i64::MAX));
    }
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: release.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner(release)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// A server-side apply body that sets only a Service's selector.
pub fn service_selector_patch(service: &str, release: &str, color: Color) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service},
        "spec": {"selector": color_selector(release, color)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release() -> Release {
        let spec: ReleaseSpec = serde_json::from_value(json!({
            "version": "v2",
            "workload": {"replicas": 3, "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": [{"name": "app", "image": "shop:v2"}]}}},
            "strategy": {"type": "BlueGreen", "blueGreen": {"activeService": "shop"}},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut r = Release::new("shop", spec);
        r.metadata.namespace = Some("prod".into());
        r.metadata.uid = Some("uid-1".into());
        r
    }

    #[test]
    fn deployment_carries_selector_labels_owner_and_revision() {
        let r = release();
        let shipped = Shipped::of(&r.spec);
        let template = r.spec.workload.template.decode().unwrap_or_default();
        let d = deployment(&r, &shipped, &template, Color::Green, 7, &BTreeMap::new());
        assert_eq!(d.metadata.name.as_deref(), Some("shop-green"));
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(pod_labels.get("app").map(String::as_str), Some("shop"));
        assert_eq!(pod_labels.get(COLOR).map(String::as_str), Some("green"));
        assert_eq!(pod_labels.get(REVISION).map(String::as_str), Some("7"));
        let selector = spec.selector.match_labels.unwrap_or_default();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(
            d.metadata.owner_references.unwrap_or_default()[0].uid,
            "uid-1"
        );
    }

    #[test]
    fn hash_changes_with_what_ships_only() {
        let r = release();
        let a = Shipped::of(&r.spec).hash();
        let mut spec = r.spec.clone();
        spec.changes.features.push("not shipped".into());
        assert_eq!(Shipped::of(&spec).hash(), a);
        spec.version = "v3".into();
        assert_ne!(Shipped::of(&spec).hash(), a);
    }

    #[test]
    fn child_names_fit_in_a_label() {
        let short = child_name("shop", "check-db-pre-m0", 7);
        assert_eq!(short, "shop-check-db-pre-m0-r7");
        let long = child_name(
            &"a".repeat(40),
            &format!("check-{}-post-m12", "b".repeat(63)),
            12345,
        );
        assert!(long.len() <= 63, "{long}");
        assert_ne!(
            long,
            child_name(
                &"a".repeat(40),
                &format!("check-{}-post-m13", "b".repeat(63)),
                12345
            )
        );
    }

    #[test]
    fn record_round_trips() {
        let r = release();
        let shipped = Shipped::of(&r.spec);
        let record = revision_record(&r, &shipped, 4);
        assert_eq!(record.metadata.name.as_deref(), Some("shop-r4"));
        assert_eq!(shipped_from_record(&record), Ok(shipped));
    }
}
