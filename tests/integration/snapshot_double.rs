//! The snapshot double (`support/snapshots.rs`) on the real API server: it
//! must do what the CSI snapshot controller and provisioner it stands in for
//! do, or the operator tests built on it prove nothing. Also the switch that
//! takes the VolumeSnapshot API away and brings it back.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::support::{
    DEFAULT_SNAPSHOT_CLASS_ANNOTATION, DOUBLE_CSI_DRIVER, RESTORED_FROM_ANNOTATION, SnapshotDouble,
    TestNamespace, assert_stays, cluster, create_pvc, create_snapshot_class,
    create_volume_snapshot, snapshot_crds_absent, snapshot_crds_present, snapshot_error_message,
    snapshot_is_ready, volume_snapshot_class_resource, volume_snapshot_content_resource,
    volume_snapshot_contents, volume_snapshot_resource, volume_snapshots, wait_for,
    wait_for_deletion,
};

/// Generous: the machines running these are small and shared.
const TIMEOUT: Duration = Duration::from_secs(90);
/// How long "does not happen" is watched for.
const STAYS: Duration = Duration::from_secs(2);
/// Shared by the tests here; applying it is idempotent.
const CLASS: &str = "lockkeeper-e2e-double";

fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("a valid object literal")
}

fn claim_phase(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn claim_is_bound(claim: &PersistentVolumeClaim) -> bool {
    claim_phase(claim) == Some("Bound")
}

fn uid(object: &DynamicObject) -> String {
    object
        .metadata
        .uid
        .clone()
        .expect("an object read from the API server has a uid")
}

async fn claim_from_snapshot(ns: &TestNamespace, name: &str, snapshot: &str) {
    let claim: PersistentVolumeClaim = object(json!({
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": { "requests": { "storage": "1Gi" } },
            "dataSource": {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": snapshot,
            },
        },
    }));
    ns.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap_or_else(|e| panic!("creating PersistentVolumeClaim {name} from {snapshot}: {e}"));
}

#[tokio::test]
async fn snapshot_becomes_ready_with_a_bound_content() {
    let _crds = snapshot_crds_present().await;
    let ns = TestNamespace::new("snapdouble-ready").await;
    let double = SnapshotDouble::start(ns.name()).await;
    create_snapshot_class(CLASS, false).await;
    create_pvc(ns.name(), "data", "1Gi", None).await;
    create_volume_snapshot(ns.name(), "data-snap", "data", Some(CLASS)).await;

    let snapshots = volume_snapshots(ns.client(), ns.name());
    let ready = wait_for(&snapshots, "data-snap", TIMEOUT, snapshot_is_ready).await;
    let status = &ready.data["status"];
    assert_eq!(status["restoreSize"], "1Gi", "{status:#}");
    assert!(status["creationTime"].is_string(), "{status:#}");
    assert!(status["error"].is_null(), "{status:#}");
    let content_name = status["boundVolumeSnapshotContentName"]
        .as_str()
        .expect("a ready snapshot names its content")
        .to_owned();
    assert_eq!(content_name, format!("snapcontent-{}", uid(&ready)));

    let contents = volume_snapshot_contents(ns.client());
    let content = contents
        .get(&content_name)
        .await
        .expect("reading the bound VolumeSnapshotContent");
    let reference = &content.data["spec"]["volumeSnapshotRef"];
    assert_eq!(reference["name"], "data-snap", "{content:#?}");
    assert_eq!(reference["namespace"], ns.name(), "{content:#?}");
    assert_eq!(reference["uid"], uid(&ready).as_str(), "{content:#?}");
    assert_eq!(content.data["spec"]["driver"], DOUBLE_CSI_DRIVER);
    assert_eq!(content.data["spec"]["volumeSnapshotClassName"], CLASS);
    assert_eq!(content.data["spec"]["deletionPolicy"], "Delete");
    assert!(snapshot_is_ready(&content), "{content:#?}");
    assert_eq!(content.data["status"]["restoreSize"], 1_i64 << 30);
    assert_eq!(double.ready_snapshots(), ["data-snap"]);

    // As the real controller does for policy Delete.
    snapshots
        .delete("data-snap", &DeleteParams::default())
        .await
        .expect("deleting the VolumeSnapshot");
    wait_for_deletion(&contents, &content_name, TIMEOUT).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn snapshot_without_a_class_is_taken_and_the_default_class_is_marked() {
    let _crds = snapshot_crds_present().await;
    let ns = TestNamespace::new("snapdouble-default").await;
    let double = SnapshotDouble::start(ns.name()).await;
    let default_class = format!("{CLASS}-default");
    let class = create_snapshot_class(&default_class, true).await;
    let annotations = class.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get(DEFAULT_SNAPSHOT_CLASS_ANNOTATION)
            .map(String::as_str),
        Some("true"),
        "{class:#?}"
    );
    assert_eq!(class.data["driver"], DOUBLE_CSI_DRIVER);
    let class = create_snapshot_class(&default_class, false).await;
    assert!(
        !class
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(DEFAULT_SNAPSHOT_CLASS_ANNOTATION),
        "applying again without default drops the annotation"
    );

    create_pvc(ns.name(), "data", "512Mi", None).await;
    create_volume_snapshot(ns.name(), "data-snap", "data", None).await;
    let snapshots = volume_snapshots(ns.client(), ns.name());
    let ready = wait_for(&snapshots, "data-snap", TIMEOUT, snapshot_is_ready).await;
    assert_eq!(ready.data["status"]["restoreSize"], "512Mi");
    assert_eq!(double.ready_count(), 1);
    ns.cleanup().await;
}

#[tokio::test]
async fn fail_and_never_annotations_keep_snapshots_unready() {
    let _crds = snapshot_crds_present().await;
    let ns = TestNamespace::new("snapdouble-fail").await;
    let double = SnapshotDouble::start(ns.name()).await;
    create_snapshot_class(CLASS, false).await;
    create_pvc(ns.name(), "broken", "1Gi", Some("fail:disk on fire")).await;
    create_pvc(ns.name(), "stuck", "1Gi", Some("never")).await;
    create_volume_snapshot(ns.name(), "broken-snap", "broken", Some(CLASS)).await;
    create_volume_snapshot(ns.name(), "stuck-snap", "stuck", Some(CLASS)).await;
    create_volume_snapshot(ns.name(), "orphan-snap", "no-such-claim", Some(CLASS)).await;
    let snapshots = volume_snapshots(ns.client(), ns.name());

    let failed = wait_for(&snapshots, "broken-snap", TIMEOUT, |s| {
        snapshot_error_message(s).is_some()
    })
    .await;
    assert_eq!(
        snapshot_error_message(&failed).as_deref(),
        Some("disk on fire")
    );
    assert_eq!(failed.data["status"]["readyToUse"], false);
    assert!(failed.data["status"]["error"]["time"].is_string());

    let orphan = wait_for(&snapshots, "orphan-snap", TIMEOUT, |s| {
        snapshot_error_message(s).is_some()
    })
    .await;
    let message = snapshot_error_message(&orphan).unwrap_or_default();
    assert!(message.contains("no-such-claim"), "{message}");

    wait_for(&snapshots, "stuck-snap", TIMEOUT, |s| {
        s.data["status"]["boundVolumeSnapshotContentName"].is_string()
    })
    .await;
    let stuck = assert_stays(&snapshots, "stuck-snap", STAYS, |s| !snapshot_is_ready(s)).await;
    assert_eq!(stuck.data["status"]["readyToUse"], false);
    assert!(stuck.data["status"]["error"].is_null());

    let mut failed = double.failed_snapshots();
    failed.sort();
    assert_eq!(failed, ["broken-snap", "orphan-snap"]);
    assert_eq!(double.ready_count(), 0);
    ns.cleanup().await;
}

#[tokio::test]
async fn pending_claim_gets_bound_and_its_volume_goes_with_it() {
    let ns = TestNamespace::new("snapdouble-bind").await;
    let double = SnapshotDouble::start(ns.name()).await;
    create_pvc(ns.name(), "data", "2Gi", None).await;

    let claims: Api<PersistentVolumeClaim> = ns.api();
    let bound = wait_for(&claims, "data", TIMEOUT, claim_is_bound).await;
    let volume_name = bound
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("a bound claim names its volume");
    let volumes: Api<PersistentVolume> = Api::all(ns.client());
    let volume = volumes
        .get(&volume_name)
        .await
        .expect("reading the bound PersistentVolume");
    let spec = volume.spec.as_ref().expect("a volume has a spec");
    let claim_ref = spec
        .claim_ref
        .as_ref()
        .expect("a bound volume has a claimRef");
    assert_eq!(claim_ref.namespace.as_deref(), Some(ns.name()));
    assert_eq!(claim_ref.name.as_deref(), Some("data"));
    assert_eq!(claim_ref.uid, bound.metadata.uid);
    assert_eq!(
        spec.capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.as_str()),
        Some("2Gi")
    );
    assert_eq!(
        spec.host_path.as_ref().map(|h| h.path.clone()),
        Some(format!("/tmp/lockkeeper-e2e/{}/data", ns.name()))
    );
    assert_eq!(
        volume.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound")
    );
    assert_eq!(double.provisioned_claims().get("data"), Some(&volume_name));

    claims
        .delete("data", &DeleteParams::default())
        .await
        .expect("deleting the claim");
    wait_for_deletion(&volumes, &volume_name, TIMEOUT).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn pod_mounting_a_claim_becomes_ready() {
    let ns = TestNamespace::new("snapdouble-pod").await;
    let _double = SnapshotDouble::start(ns.name()).await;
    create_pvc(ns.name(), "data", "1Gi", None).await;
    let deployments: Api<Deployment> = ns.api();
    let deployment: Deployment = object(json!({
        "metadata": { "name": "db" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": {
                    "containers": [{
                        "name": "db",
                        "image": "registry.k8s.io/pause:3.10",
                        "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                    }],
                    "volumes": [{
                        "name": "data",
                        "persistentVolumeClaim": { "claimName": "data" },
                    }],
                },
            },
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("creating the Deployment");

    wait_for(&deployments, "db", TIMEOUT, |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
    })
    .await;
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app=db"))
        .await
        .expect("listing the Deployment's pods");
    let nodes: Vec<Option<String>> = pods
        .items
        .iter()
        .map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    assert!(
        nodes
            .iter()
            .all(|n| n.as_deref().is_some_and(|n| n.starts_with("kwok-node-"))),
        "pods on nodes {nodes:?}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn claim_from_a_snapshot_is_bound_once_the_snapshot_is_ready() {
    let _crds = snapshot_crds_present().await;
    let ns = TestNamespace::new("snapdouble-restore").await;
    let double = SnapshotDouble::start(ns.name()).await;
    create_snapshot_class(CLASS, false).await;
    create_pvc(ns.name(), "data", "1Gi", None).await;
    create_pvc(ns.name(), "stuck", "1Gi", Some("never")).await;
    create_volume_snapshot(ns.name(), "data-snap", "data", Some(CLASS)).await;
    create_volume_snapshot(ns.name(), "stuck-snap", "stuck", Some(CLASS)).await;
    // Asked for before the snapshot is ready, as a restore may be.
    claim_from_snapshot(&ns, "restored", "data-snap").await;
    claim_from_snapshot(&ns, "waiting", "stuck-snap").await;

    let claims: Api<PersistentVolumeClaim> = ns.api();
    let restored = wait_for(&claims, "restored", TIMEOUT, claim_is_bound).await;
    let volume_name = restored
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("a bound claim names its volume");
    let volume = Api::<PersistentVolume>::all(ns.client())
        .get(&volume_name)
        .await
        .expect("reading the restored claim's volume");
    let annotations = volume.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get(RESTORED_FROM_ANNOTATION)
            .map(String::as_str),
        Some("data-snap"),
        "{volume:#?}"
    );
    assert_eq!(
        double.restored_claims().get("restored").map(String::as_str),
        Some("data-snap")
    );

    assert_stays(&claims, "waiting", STAYS, |c| {
        claim_phase(c) == Some("Pending")
    })
    .await;
    assert!(!double.restored_claims().contains_key("waiting"));
    ns.cleanup().await;
}

#[tokio::test]
async fn snapshot_api_can_be_taken_away_and_brought_back() {
    let client = cluster().await.client();
    let resources = [
        volume_snapshot_resource(),
        volume_snapshot_class_resource(),
        volume_snapshot_content_resource(),
    ];
    {
        let _absent = snapshot_crds_absent().await;
        for resource in &resources {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
            match api.list(&ListParams::default()).await {
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                other => panic!("listing {} with the API absent: {other:?}", resource.plural),
            }
        }
        match client
            .list_api_group_resources("snapshot.storage.k8s.io/v1")
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => {
                panic!("discovery of snapshot.storage.k8s.io/v1 with the API absent: {other:?}")
            }
        }
    }

    let _present = snapshot_crds_present().await;
    for resource in &resources {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        api.list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing {} with the API present: {e}", resource.plural));
    }
}
