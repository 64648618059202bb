//! The objects a revision applies, built from the spec. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, Deployment, DeploymentSpec},
        batch::v1::{Job, JobSpec},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        runtime::RawExtension,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    api::{Color, Release, ReleaseSpec, release::Workload},
    labels::{COLOR, MANAGED_BY, RELEASE, REVISION, ROLE, VERSION},
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
}

impl Shipped {
    /// The shipped part of a spec.
    pub fn of(spec: &ReleaseSpec) -> Self {
        Self {
            version: spec.version.clone(),
            workload: spec.workload.clone(),
            config: spec.config.clone(),
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
) -> Deployment {
    let name = release.metadata.name.clone().unwrap_or_default();
    let mut meta_labels = labels(&name, "workload", revision, &shipped.version);
    meta_labels.insert(COLOR.to_owned(), color.as_str().to_owned());

    let mut template = template.clone();
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
    let full = format!("{release}-{what}-r{revision}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    let keep = 63 - hash.len() - 1;
    let mut cut = keep;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", full[..cut].trim_end_matches('-'))
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
        let d = deployment(&r, &shipped, &template, Color::Green, 7);
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
