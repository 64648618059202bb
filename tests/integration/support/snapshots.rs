//! The VolumeSnapshot API (`snapshot.storage.k8s.io/v1`) in tests, where no
//! CSI driver runs.
//!
//! Its CustomResourceDefinitions come from `e2e/crds/volumesnapshots.yaml`
//! and are installed or removed under one process-wide lock: a test that uses
//! the API holds the shared guard of [`snapshot_crds_present`] for as long as
//! it runs, and a test that needs the API missing holds the exclusive guard of
//! [`snapshot_crds_absent`], so the API never vanishes from under a test
//! running in parallel.
//!
//! [`SnapshotDouble`] plays the CSI parts the local control plane lacks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::JoinHandle;

use super::control_plane::cluster;
use super::repo_root;
use super::wait::{poll_until, wait_for, wait_for_deletion};

/// The PersistentVolumeClaim annotation that decides what [`SnapshotDouble`]
/// does with snapshots of the claim: absent, they become ready; `fail:<message>`
/// gives them `status.error.message` `<message>`; `never` leaves them unready.
pub const SNAPSHOT_FATE_ANNOTATION: &str = "e2e.lockkeeper.dev/snapshot";
/// The annotation [`SnapshotDouble`] puts on a PersistentVolume it provisions
/// for a claim restored from a VolumeSnapshot; the value is the snapshot's name.
pub const RESTORED_FROM_ANNOTATION: &str = "e2e.lockkeeper.dev/restored-from";
/// The CSI driver name that [`SnapshotDouble`] answers for.
pub const DOUBLE_CSI_DRIVER: &str = "double.csi.lockkeeper.dev";
/// Marks a VolumeSnapshotClass as the cluster's default.
pub const DEFAULT_SNAPSHOT_CLASS_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/is-default-class";

/// Labels the cluster-scoped objects a [`SnapshotDouble`] creates with the
/// namespace it serves, so they can be found and deleted afterwards.
const DOUBLE_NAMESPACE_LABEL: &str = "e2e.lockkeeper.dev/snapshot-double-namespace";
const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";
const SNAPSHOT_API_VERSION: &str = "snapshot.storage.k8s.io/v1";
const SNAPSHOT_PLURALS: [&str; 3] = [
    "volumesnapshotclasses",
    "volumesnapshotcontents",
    "volumesnapshots",
];
const CRDS_FILE: &str = "e2e/crds/volumesnapshots.yaml";
const FIELD_MANAGER: &str = "lockkeeper-tests-snapshots";
const CRD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a snapshot takes to cut, so that "not ready yet" is observable.
const CUT_DELAY: Duration = Duration::from_millis(300);
const POLL_INTERVAL: Duration = Duration::from_millis(150);
const HOST_PATH_ROOT: &str = "/tmp/lockkeeper-e2e";

fn snapshot_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: SNAPSHOT_GROUP.into(),
        version: "v1".into(),
        api_version: SNAPSHOT_API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshot, namespaced.
pub fn volume_snapshot_resource() -> ApiResource {
    snapshot_resource("VolumeSnapshot", "volumesnapshots")
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotClass, cluster-scoped.
pub fn volume_snapshot_class_resource() -> ApiResource {
    snapshot_resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotContent, cluster-scoped.
pub fn volume_snapshot_content_resource() -> ApiResource {
    snapshot_resource("VolumeSnapshotContent", "volumesnapshotcontents")
}

/// The VolumeSnapshots of `namespace`.
pub fn volume_snapshots(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &volume_snapshot_resource())
}

/// All VolumeSnapshotContents.
pub fn volume_snapshot_contents(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &volume_snapshot_content_resource())
}

/// All VolumeSnapshotClasses.
pub fn volume_snapshot_classes(client: Client) -> Api<DynamicObject> {
    Api::all_with(client, &volume_snapshot_class_resource())
}

/// Whether a VolumeSnapshot (or VolumeSnapshotContent) has `status.readyToUse: true`.
pub fn snapshot_is_ready(snapshot: &DynamicObject) -> bool {
    snapshot.data["status"]["readyToUse"].as_bool() == Some(true)
}

/// A VolumeSnapshot's `status.error.message`, if it has one.
pub fn snapshot_error_message(snapshot: &DynamicObject) -> Option<String> {
    snapshot.data["status"]["error"]["message"]
        .as_str()
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------
// Whether the API is installed

/// Shared while the CRDs must stay installed, exclusive while they must stay
/// absent. One lock for the whole test process: the guards hold no client, so
/// they outlive the runtimes of the tests that take them without harm.
static SNAPSHOT_CRDS: RwLock<()> = RwLock::const_new(());
/// Serialises installation among the tests that share the lock.
static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keeps the VolumeSnapshot API installed (from [`snapshot_crds_present`]) or
/// absent (from [`snapshot_crds_absent`]) until dropped.
#[derive(Debug)]
#[must_use = "the VolumeSnapshot API stays as promised only while the guard lives"]
pub struct SnapshotCrdsGuard {
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

/// Installs the VolumeSnapshot CRDs unless they are, waits until the API is
/// served (discovery lists it, lists of each resource succeed), and keeps it
/// installed while the guard lives. Hold it for the whole test, and take it
/// once: the lock is fair, so a second call waits behind a queued
/// [`snapshot_crds_absent`], which waits for the first guard.
pub async fn snapshot_crds_present() -> SnapshotCrdsGuard {
    let shared = SNAPSHOT_CRDS.read().await;
    let client = cluster().await.client();
    {
        let _installing = INSTALLING.lock().await;
        if !crds_established(&client).await {
            install_snapshot_crds(&client).await;
        }
    }
    poll_until("the VolumeSnapshot API to be served", CRD_TIMEOUT, || {
        let client = client.clone();
        async move {
            let state = ApiState::observe(&client).await;
            if state.served() {
                Ok(())
            } else {
                Err(format!("{state:?}"))
            }
        }
    })
    .await;
    SnapshotCrdsGuard {
        _shared: Some(shared),
        _exclusive: None,
    }
}

/// Waits until no test holds the API installed, deletes the VolumeSnapshot
/// CRDs (and so every VolumeSnapshot object) and waits until the API group is
/// no longer served: gone from discovery, lists answered 404. Keeps it absent
/// while the guard lives.
pub async fn snapshot_crds_absent() -> SnapshotCrdsGuard {
    let exclusive = SNAPSHOT_CRDS.write().await;
    let client = cluster().await.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for plural in SNAPSHOT_PLURALS {
        let name = format!("{plural}.{SNAPSHOT_GROUP}");
        match crds.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("deleting CustomResourceDefinition {name}: {e}"),
        }
    }
    for plural in SNAPSHOT_PLURALS {
        wait_for_deletion(&crds, &format!("{plural}.{SNAPSHOT_GROUP}"), CRD_TIMEOUT).await;
    }
    poll_until(
        "the VolumeSnapshot API to be no longer served",
        CRD_TIMEOUT,
        || {
            let client = client.clone();
            async move {
                let state = ApiState::observe(&client).await;
                if state.unserved() {
                    Ok(())
                } else {
                    Err(format!("{state:?}"))
                }
            }
        },
    )
    .await;
    SnapshotCrdsGuard {
        _shared: None,
        _exclusive: Some(exclusive),
    }
}

async fn crds_established(client: &Client) -> bool {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for plural in SNAPSHOT_PLURALS {
        match crds.get_opt(&format!("{plural}.{SNAPSHOT_GROUP}")).await {
            Ok(Some(crd)) if crd.metadata.deletion_timestamp.is_none() && is_established(&crd) => {}
            _ => return false,
        }
    }
    true
}

async fn install_snapshot_crds(client: &Client) {
    let path = repo_root().join(CRDS_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut definitions = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let crd = CustomResourceDefinition::deserialize(document)
            .unwrap_or_else(|e| panic!("parsing a CRD in {}: {e}", path.display()));
        definitions.push(crd);
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in &definitions {
        let name = crd.metadata.name.clone().unwrap_or_default();
        // A CRD still being deleted (its objects being cleaned up) cannot be
        // applied back; wait for it to go first.
        let existing = crds
            .get_opt(&name)
            .await
            .unwrap_or_else(|e| panic!("reading CustomResourceDefinition {name}: {e}"));
        if existing.is_some_and(|c| c.metadata.deletion_timestamp.is_some()) {
            wait_for_deletion(&crds, &name, CRD_TIMEOUT).await;
        }
        crds.patch(&name, &params, &Patch::Apply(crd))
            .await
            .unwrap_or_else(|e| panic!("applying CustomResourceDefinition {name}: {e}"));
    }
    for crd in &definitions {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_for(&crds, &name, CRD_TIMEOUT, is_established).await;
    }
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// What the API server says about the VolumeSnapshot API, from every angle a
/// client may look: both discovery documents, the group-version's resource
/// list, and a list of each resource.
#[derive(Debug)]
struct ApiState {
    in_group_list: Result<bool, String>,
    in_aggregated_discovery: Result<bool, String>,
    /// The resources the group-version lists; `Ok(None)` when it is a 404.
    group_version_resources: Result<Option<Vec<String>>, String>,
    /// Per resource: `Ok(true)` listable, `Ok(false)` a 404.
    listable: Vec<(&'static str, Result<bool, String>)>,
}

impl ApiState {
    async fn observe(client: &Client) -> ApiState {
        let in_group_list = client
            .list_api_groups()
            .await
            .map(|list| list.groups.iter().any(|g| g.name == SNAPSHOT_GROUP))
            .map_err(|e| e.to_string());
        let in_aggregated_discovery = client
            .list_api_groups_aggregated()
            .await
            .map(|list| {
                list.items.iter().any(|g| {
                    g.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some(SNAPSHOT_GROUP)
                })
            })
            .map_err(|e| e.to_string());
        let group_version_resources =
            match client.list_api_group_resources(SNAPSHOT_API_VERSION).await {
                Ok(list) => Ok(Some(list.resources.into_iter().map(|r| r.name).collect())),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
                Err(e) => Err(e.to_string()),
            };
        let mut listable = Vec::new();
        for plural in SNAPSHOT_PLURALS {
            let resource = snapshot_resource("", plural);
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let result = match api.list_metadata(&ListParams::default().limit(1)).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                Err(e) => Err(e.to_string()),
            };
            listable.push((plural, result));
        }
        ApiState {
            in_group_list,
            in_aggregated_discovery,
            group_version_resources,
            listable,
        }
    }

    fn served(&self) -> bool {
        self.in_group_list == Ok(true)
            && self.in_aggregated_discovery == Ok(true)
            && self
                .group_version_resources
                .as_ref()
                .is_ok_and(|resources| {
                    resources.as_ref().is_some_and(|resources| {
                        SNAPSHOT_PLURALS
                            .iter()
                            .all(|plural| resources.iter().any(|r| r == plural))
                    })
                })
            && self.listable.iter().all(|(_, result)| *result == Ok(true))
    }

    fn unserved(&self) -> bool {
        self.in_group_list == Ok(false)
            && self.in_aggregated_discovery == Ok(false)
            && matches!(self.group_version_resources, Ok(None))
            && self.listable.iter().all(|(_, result)| *result == Ok(false))
    }
}

// ---------------------------------------------------------------------------
// Helpers for tests

/// Creates (or updates) the cluster-scoped VolumeSnapshotClass `name` for
/// [`DOUBLE_CSI_DRIVER`] with `deletionPolicy: Delete`, annotated as the
/// cluster default when `default`. Needs the CRDs ([`snapshot_crds_present`]).
pub async fn create_snapshot_class(name: &str, default: bool) -> DynamicObject {
    let annotations = if default {
        json!({ DEFAULT_SNAPSHOT_CLASS_ANNOTATION: "true" })
    } else {
        json!({})
    };
    let class = json!({
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshotClass",
        "metadata": { "name": name, "annotations": annotations },
        "driver": DOUBLE_CSI_DRIVER,
        "deletionPolicy": "Delete",
    });
    volume_snapshot_classes(cluster().await.client())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&class),
        )
        .await
        .unwrap_or_else(|e| panic!("applying VolumeSnapshotClass {name}: {e}"))
}

/// Creates a ReadWriteOnce PersistentVolumeClaim `ns/name` requesting `size`
/// (a quantity such as `1Gi`), with no storage class, and with
/// [`SNAPSHOT_FATE_ANNOTATION`] set to `snapshot_annotation` when given.
pub async fn create_pvc(
    ns: &str,
    name: &str,
    size: &str,
    snapshot_annotation: Option<&str>,
) -> PersistentVolumeClaim {
    let annotations = match snapshot_annotation {
        Some(fate) => json!({ SNAPSHOT_FATE_ANNOTATION: fate }),
        None => json!({}),
    };
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": { "requests": { "storage": size } },
        },
    }))
    .unwrap_or_else(|e| panic!("building PersistentVolumeClaim {ns}/{name}: {e}"));
    Api::<PersistentVolumeClaim>::namespaced(cluster().await.client(), ns)
        .create(&PostParams::default(), &claim)
        .await
        .unwrap_or_else(|e| panic!("creating PersistentVolumeClaim {ns}/{name}: {e}"))
}

/// Creates a VolumeSnapshot `ns/name` of the claim `claim`, of the class
/// `class` (the cluster default when `None`).
pub async fn create_volume_snapshot(
    ns: &str,
    name: &str,
    claim: &str,
    class: Option<&str>,
) -> DynamicObject {
    let mut spec = json!({ "source": { "persistentVolumeClaimName": claim } });
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let snapshot: DynamicObject = serde_json::from_value(json!({
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("building VolumeSnapshot {ns}/{name}: {e}"));
    volume_snapshots(cluster().await.client(), ns)
        .create(&PostParams::default(), &snapshot)
        .await
        .unwrap_or_else(|e| panic!("creating VolumeSnapshot {ns}/{name}: {e}"))
}

// ---------------------------------------------------------------------------
// The double

/// A TEST DOUBLE for the CSI machinery the local control plane cannot run:
/// it plays the external-snapshotter's snapshot controller together with a
/// CSI driver (VolumeSnapshots become ready, or fail, with a bound
/// VolumeSnapshotContent) and a CSI provisioner (Pending
/// PersistentVolumeClaims get a hostPath PersistentVolume that
/// kube-controller-manager binds, so pods mounting them schedule on kwok's
/// Nodes). No data is copied anywhere.
///
/// It serves one namespace (start one double per namespace), polling it
/// every 150 ms from a task on the calling test's runtime that ends when the
/// double is dropped. The fate of each snapshot comes from its claim's
/// [`SNAPSHOT_FATE_ANNOTATION`]:
///
/// - absent: about 300 ms after the VolumeSnapshot appears, and once the claim
///   is Bound, a VolumeSnapshotContent `snapcontent-<snapshot uid>` is created
///   and the snapshot gets `boundVolumeSnapshotContentName`, `creationTime`,
///   `readyToUse: true` and `restoreSize` (the claim's request);
/// - `fail:<message>`: `readyToUse: false` and `error: {message, time}`;
/// - `never`: a content is bound but the snapshot stays `readyToUse: false`.
///
/// A snapshot of a missing claim, or naming a missing VolumeSnapshotClass,
/// gets an error as with the real controller. With no class named, the single
/// default class of the driver is used if there is one; unlike the real
/// controller the double does not insist on one, as parallel tests share the
/// cluster's classes. Snapshots with `source.volumeSnapshotContentName` are
/// bound to that content once it exists.
///
/// A claim whose `dataSource` is a VolumeSnapshot is provisioned only once
/// that snapshot is ready, and its PersistentVolume carries
/// [`RESTORED_FROM_ANNOTATION`]. The double adds no finalizers. It deletes the
/// contents of deleted snapshots (when their policy is Delete) and the volumes
/// of deleted claims, and on drop everything it created for the namespace.
#[derive(Debug)]
pub struct SnapshotDouble {
    namespace: String,
    config: Config,
    record: Arc<Mutex<Record>>,
    task: JoinHandle<()>,
}

/// What the double has done, for tests to inspect.
#[derive(Debug, Default)]
struct Record {
    /// Names of the snapshots made ready, in order.
    ready: Vec<String>,
    /// Names of the snapshots given an error, in order.
    failed: Vec<String>,
    /// Claim name to the name of the PersistentVolume provisioned for it.
    provisioned: BTreeMap<String, String>,
    /// Claim name to the VolumeSnapshot it was restored from.
    restored: BTreeMap<String, String>,
    last_error: Option<String>,
}

impl SnapshotDouble {
    /// Starts serving `namespace`.
    pub async fn start(namespace: &str) -> SnapshotDouble {
        let cluster = cluster().await;
        let client = cluster.client();
        let record = Arc::new(Mutex::new(Record::default()));
        let controller = Controller {
            namespace: namespace.to_owned(),
            claims: Api::namespaced(client.clone(), namespace),
            volumes: Api::all(client.clone()),
            snapshots: volume_snapshots(client.clone(), namespace),
            contents: volume_snapshot_contents(client.clone()),
            classes: volume_snapshot_classes(client),
            record: Arc::clone(&record),
            first_seen: HashMap::new(),
            own_contents: HashMap::new(),
            own_volumes: HashMap::new(),
        };
        SnapshotDouble {
            namespace: namespace.to_owned(),
            config: cluster.config().clone(),
            record,
            task: tokio::spawn(controller.run()),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The VolumeSnapshots it has made ready, in order.
    pub fn ready_snapshots(&self) -> Vec<String> {
        self.record().ready.clone()
    }

    /// How many VolumeSnapshots it has made ready.
    pub fn ready_count(&self) -> usize {
        self.record().ready.len()
    }

    /// The VolumeSnapshots it has given an error, in order.
    pub fn failed_snapshots(&self) -> Vec<String> {
        self.record().failed.clone()
    }

    /// Claim name to the PersistentVolume it provisioned for the claim.
    pub fn provisioned_claims(&self) -> BTreeMap<String, String> {
        self.record().provisioned.clone()
    }

    /// Claim name to the VolumeSnapshot the claim was restored from.
    pub fn restored_claims(&self) -> BTreeMap<String, String> {
        self.record().restored.clone()
    }

    /// The last error it met talking to the API server, if any.
    pub fn last_error(&self) -> Option<String> {
        self.record().last_error.clone()
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SnapshotDouble {
    /// Stops the task and deletes the cluster-scoped objects it created for
    /// the namespace, on a runtime of its own (the test's may be going away).
    /// Best effort: volumes still bound go once their claims do.
    fn drop(&mut self) {
        self.task.abort();
        let (namespace, config) = (self.namespace.clone(), self.config.clone());
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting a runtime to clean up after the double: {e}"))
                .and_then(|runtime| runtime.block_on(delete_created_objects(config, &namespace)));
            let _ = done.send(result);
        });
        match finished.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("snapshot double in {}: {e}", self.namespace),
            Err(_) => eprintln!(
                "snapshot double in {}: still cleaning up its volumes",
                self.namespace
            ),
        }
    }
}

async fn delete_created_objects(config: Config, namespace: &str) -> Result<(), String> {
    let client = Client::try_from(config).map_err(|e| format!("building a client: {e}"))?;
    let mine = ListParams::default().labels(&format!("{DOUBLE_NAMESPACE_LABEL}={namespace}"));
    Api::<PersistentVolume>::all(client.clone())
        .delete_collection(&DeleteParams::background(), &mine)
        .await
        .map_err(|e| format!("deleting its PersistentVolumes: {e}"))?;
    match volume_snapshot_contents(client)
        .delete_collection(&DeleteParams::background(), &mine)
        .await
    {
        Ok(_) => Ok(()),
        // The API was removed meanwhile, and its objects with it.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(format!("deleting its VolumeSnapshotContents: {e}")),
    }
}

/// The double's task.
struct Controller {
    namespace: String,
    claims: Api<PersistentVolumeClaim>,
    volumes: Api<PersistentVolume>,
    snapshots: Api<DynamicObject>,
    contents: Api<DynamicObject>,
    classes: Api<DynamicObject>,
    record: Arc<Mutex<Record>>,
    /// Snapshot uid to when the double first saw it.
    first_seen: HashMap<String, Instant>,
    /// Content name to (snapshot uid, deletion policy), for contents it made.
    own_contents: HashMap<String, (String, String)>,
    /// PersistentVolume name to the uid of the claim it was made for.
    own_volumes: HashMap<String, String>,
}

/// What a claim's [`SNAPSHOT_FATE_ANNOTATION`] asks for.
#[derive(Debug, PartialEq)]
enum Fate {
    Ready,
    Fail(String),
    Never,
    Unknown(String),
}

impl Fate {
    fn of(claim: &PersistentVolumeClaim) -> Fate {
        let value = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SNAPSHOT_FATE_ANNOTATION));
        match value.map(String::as_str) {
            None => Fate::Ready,
            Some("never") => Fate::Never,
            Some(other) => match other.strip_prefix("fail:") {
                Some(message) => Fate::Fail(message.to_owned()),
                None => Fate::Unknown(other.to_owned()),
            },
        }
    }
}

impl Controller {
    async fn run(mut self) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let errors = self.pass().await;
            if errors.is_empty() {
                continue;
            }
            let text = errors.join("; ");
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            if record.last_error.as_deref() != Some(text.as_str()) {
                eprintln!("snapshot double in {}: {text}", self.namespace);
                record.last_error = Some(text);
            }
        }
    }

    /// Looks at the namespace once and acts on what is due; returns the
    /// errors met on the way.
    async fn pass(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        let claims = match self.claims.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => return vec![format!("listing PersistentVolumeClaims: {e}")],
        };
        // The API may be absent on purpose (snapshot_crds_absent); then
        // there is nothing to snapshot and nothing to restore from.
        let snapshots = match self.snapshots.list(&ListParams::default()).await {
            Ok(list) => Some(list.items),
            Err(kube::Error::Api(status)) if status.code == 404 => Some(Vec::new()),
            Err(e) => {
                errors.push(format!("listing VolumeSnapshots: {e}"));
                None
            }
        };
        for claim in &claims {
            if let Err(e) = self.provision(claim, snapshots.as_deref()).await {
                errors.push(e);
            }
        }
        if let Some(snapshots) = &snapshots {
            for snapshot in snapshots {
                if let Err(e) = self.take(snapshot, &claims).await {
                    errors.push(e);
                }
            }
            self.delete_orphaned_contents(snapshots, &mut errors).await;
        }
        self.delete_released_volumes(&claims, &mut errors).await;
        errors
    }

    /// The provisioner's part: a PersistentVolume pre-bound to a Pending
    /// claim, which the PV controller then binds.
    async fn provision(
        &mut self,
        claim: &PersistentVolumeClaim,
        snapshots: Option<&[DynamicObject]>,
    ) -> Result<(), String> {
        let (Some(name), Some(uid), Some(spec)) = (
            claim.metadata.name.as_deref(),
            claim.metadata.uid.as_deref(),
            claim.spec.as_ref(),
        ) else {
            return Ok(());
        };
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        if claim.metadata.deletion_timestamp.is_some()
            || phase.is_some_and(|p| p != "Pending")
            || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
        {
            return Ok(());
        }
        let volume_name = format!("pvc-{uid}");
        if self.own_volumes.contains_key(&volume_name) {
            return Ok(());
        }
        let restored_from = match restore_source(claim) {
            None => None,
            Some(snapshot) => {
                // A provisioner restores only from a snapshot that is ready.
                let ready = snapshots
                    .unwrap_or_default()
                    .iter()
                    .any(|s| s.metadata.name.as_deref() == Some(snapshot) && snapshot_is_ready(s));
                if !ready {
                    return Ok(());
                }
                Some(snapshot.to_owned())
            }
        };
        let Some(size) = requested_storage(claim) else {
            return Err(format!("PersistentVolumeClaim {name} requests no storage"));
        };
        let mut annotations = serde_json::Map::new();
        if let Some(snapshot) = &restored_from {
            annotations.insert(RESTORED_FROM_ANNOTATION.to_owned(), json!(snapshot));
        }
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {
                "name": volume_name,
                "labels": { DOUBLE_NAMESPACE_LABEL: self.namespace },
                "annotations": annotations,
            },
            "spec": {
                "capacity": { "storage": size },
                "accessModes": spec.access_modes.clone()
                    .filter(|modes| !modes.is_empty())
                    .unwrap_or_else(|| vec!["ReadWriteOnce".to_owned()]),
                "volumeMode": spec.volume_mode.as_deref().unwrap_or("Filesystem"),
                "storageClassName": spec.storage_class_name.as_deref().unwrap_or(""),
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {
                    "path": format!("{HOST_PATH_ROOT}/{}/{name}", self.namespace),
                    "type": "DirectoryOrCreate",
                },
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": self.namespace,
                    "name": name,
                    "uid": uid,
                },
            },
        }))
        .map_err(|e| format!("building PersistentVolume {volume_name}: {e}"))?;
        match self.volumes.create(&PostParams::default(), &volume).await {
            Ok(_) => {}
            // Made by an earlier double for this namespace.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => {
                return Err(format!(
                    "creating PersistentVolume {volume_name} for claim {name}: {e}"
                ));
            }
        }
        self.own_volumes.insert(volume_name.clone(), uid.to_owned());
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.provisioned.insert(name.to_owned(), volume_name);
        if let Some(snapshot) = restored_from {
            record.restored.insert(name.to_owned(), snapshot);
        }
        Ok(())
    }

    /// The snapshot controller's and driver's part for one VolumeSnapshot.
    async fn take(
        &mut self,
        snapshot: &DynamicObject,
        claims: &[PersistentVolumeClaim],
    ) -> Result<(), String> {
        let (Some(name), Some(uid)) = (
            snapshot.metadata.name.as_deref(),
            snapshot.metadata.uid.as_deref(),
        ) else {
            return Ok(());
        };
        if snapshot.metadata.deletion_timestamp.is_some() || has_status(snapshot) {
            return Ok(());
        }
        let first_seen = *self
            .first_seen
            .entry(uid.to_owned())
            .or_insert_with(Instant::now);
        if first_seen.elapsed() < CUT_DELAY {
            return Ok(());
        }
        let spec = &snapshot.data["spec"];
        if let Some(content) = spec["source"]["volumeSnapshotContentName"].as_str() {
            return self.bind_existing_content(name, content).await;
        }
        let Some(claim_name) = spec["source"]["persistentVolumeClaimName"].as_str() else {
            return self
                .fail(name, "spec.source names no PersistentVolumeClaim")
                .await;
        };
        let Some(claim) = claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(claim_name))
        else {
            let message = format!("PersistentVolumeClaim {claim_name:?} not found");
            return self.fail(name, &message).await;
        };
        let ready = match Fate::of(claim) {
            Fate::Fail(message) => return self.fail(name, &message).await,
            Fate::Unknown(value) => {
                let message = format!(
                    "the snapshot double knows no fate {value:?} (annotation {SNAPSHOT_FATE_ANNOTATION} on claim {claim_name})"
                );
                return self.fail(name, &message).await;
            }
            Fate::Ready => true,
            Fate::Never => false,
        };
        // The real controller snapshots only claims bound to a volume.
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            return Ok(());
        }
        let requested_class = spec["volumeSnapshotClassName"].as_str();
        let Some((class, deletion_policy)) = self.snapshot_class(requested_class).await? else {
            let message = format!(
                "VolumeSnapshotClass {:?} not found",
                requested_class.unwrap_or_default()
            );
            return self.fail(name, &message).await;
        };
        let size = requested_storage(claim).unwrap_or_default();
        let content_name = format!("snapcontent-{uid}");
        let mut content_spec = json!({
            "deletionPolicy": deletion_policy,
            "driver": DOUBLE_CSI_DRIVER,
            "source": { "volumeHandle": format!("double-volume-{}", claim.metadata.uid.as_deref().unwrap_or_default()) },
            "volumeSnapshotRef": {
                "apiVersion": SNAPSHOT_API_VERSION,
                "kind": "VolumeSnapshot",
                "namespace": self.namespace,
                "name": name,
                "uid": uid,
            },
        });
        if let Some(class) = &class {
            content_spec["volumeSnapshotClassName"] = json!(class);
        }
        let content: DynamicObject = serde_json::from_value(json!({
            "apiVersion": SNAPSHOT_API_VERSION,
            "kind": "VolumeSnapshotContent",
            "metadata": {
                "name": content_name,
                "labels": { DOUBLE_NAMESPACE_LABEL: self.namespace },
            },
            "spec": content_spec,
        }))
        .map_err(|e| format!("building VolumeSnapshotContent {content_name}: {e}"))?;
        match self.contents.create(&PostParams::default(), &content).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => {
                return Err(format!(
                    "creating VolumeSnapshotContent {content_name}: {e}"
                ));
            }
        }
        self.own_contents
            .insert(content_name.clone(), (uid.to_owned(), deletion_policy));

        let now = jiff::Timestamp::now();
        let mut content_status = json!({
            "readyToUse": ready,
            "snapshotHandle": format!("double-snapshot-{uid}"),
        });
        let mut snapshot_status = json!({
            "boundVolumeSnapshotContentName": content_name,
            "readyToUse": ready,
        });
        if ready {
            content_status["creationTime"] = json!(now.as_nanosecond() as i64);
            if let Some(bytes) = quantity_bytes(&size) {
                content_status["restoreSize"] = json!(bytes);
            }
            snapshot_status["creationTime"] = json!(rfc3339(now));
            snapshot_status["restoreSize"] = json!(size);
        }
        self.contents
            .patch_status(
                &content_name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": content_status })),
            )
            .await
            .map_err(|e| {
                format!("setting the status of VolumeSnapshotContent {content_name}: {e}")
            })?;
        self.set_snapshot_status(name, snapshot_status).await?;
        if ready {
            self.lock_record().ready.push(name.to_owned());
        }
        Ok(())
    }

    /// A pre-provisioned snapshot: bound and ready once its content exists.
    async fn bind_existing_content(
        &mut self,
        name: &str,
        content_name: &str,
    ) -> Result<(), String> {
        let Some(content) = self
            .contents
            .get_opt(content_name)
            .await
            .map_err(|e| format!("reading VolumeSnapshotContent {content_name}: {e}"))?
        else {
            return Ok(());
        };
        let mut status = json!({
            "boundVolumeSnapshotContentName": content_name,
            "readyToUse": true,
            "creationTime": rfc3339(jiff::Timestamp::now()),
        });
        if let Some(bytes) = content.data["status"]["restoreSize"].as_i64() {
            status["restoreSize"] = json!(bytes);
        }
        self.set_snapshot_status(name, status).await?;
        self.lock_record().ready.push(name.to_owned());
        Ok(())
    }

    async fn fail(&mut self, name: &str, message: &str) -> Result<(), String> {
        let status = json!({
            "readyToUse": false,
            "error": { "message": message, "time": rfc3339(jiff::Timestamp::now()) },
        });
        self.set_snapshot_status(name, status).await?;
        self.lock_record().failed.push(name.to_owned());
        Ok(())
    }

    async fn set_snapshot_status(&self, name: &str, status: Value) -> Result<(), String> {
        self.snapshots
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("setting the status of VolumeSnapshot {name}: {e}"))
    }

    /// The class to snapshot with and its deletion policy: the one named, or
    /// the driver's only default class, or none. `None` when the named class
    /// does not exist.
    async fn snapshot_class(
        &self,
        requested: Option<&str>,
    ) -> Result<Option<(Option<String>, String)>, String> {
        let policy_of = |class: &DynamicObject| {
            class.data["deletionPolicy"]
                .as_str()
                .unwrap_or("Delete")
                .to_owned()
        };
        if let Some(name) = requested {
            let class = self
                .classes
                .get_opt(name)
                .await
                .map_err(|e| format!("reading VolumeSnapshotClass {name}: {e}"))?;
            return Ok(class.map(|c| (Some(name.to_owned()), policy_of(&c))));
        }
        let classes = self
            .classes
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing VolumeSnapshotClasses: {e}"))?;
        let defaults: Vec<&DynamicObject> = classes
            .items
            .iter()
            .filter(|c| c.data["driver"].as_str() == Some(DOUBLE_CSI_DRIVER))
            .filter(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_SNAPSHOT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
            })
            .collect();
        Ok(Some(match defaults.as_slice() {
            [only] => (only.metadata.name.clone(), policy_of(only)),
            _ => (None, "Delete".to_owned()),
        }))
    }

    /// Deletes the contents (of policy Delete) whose snapshots are gone, as
    /// the snapshot controller does.
    async fn delete_orphaned_contents(
        &mut self,
        snapshots: &[DynamicObject],
        errors: &mut Vec<String>,
    ) {
        let live: HashSet<&str> = snapshots
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .collect();
        let orphans: Vec<(String, String)> = self
            .own_contents
            .iter()
            .filter(|(_, (uid, _))| !live.contains(uid.as_str()))
            .map(|(content, (_, policy))| (content.clone(), policy.clone()))
            .collect();
        for (content, policy) in orphans {
            if policy == "Delete" {
                match self
                    .contents
                    .delete(&content, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => {
                        errors.push(format!("deleting VolumeSnapshotContent {content}: {e}"));
                        continue;
                    }
                }
            }
            self.own_contents.remove(&content);
        }
    }

    /// Deletes the volumes whose claims are gone; volumes are Retain, so the
    /// PV controller would only mark them Released.
    async fn delete_released_volumes(
        &mut self,
        claims: &[PersistentVolumeClaim],
        errors: &mut Vec<String>,
    ) {
        let live: HashSet<&str> = claims
            .iter()
            .filter_map(|c| c.metadata.uid.as_deref())
            .collect();
        let released: Vec<String> = self
            .own_volumes
            .iter()
            .filter(|(_, claim_uid)| !live.contains(claim_uid.as_str()))
            .map(|(volume, _)| volume.clone())
            .collect();
        for volume in released {
            match self
                .volumes
                .delete(&volume, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    errors.push(format!("deleting PersistentVolume {volume}: {e}"));
                    continue;
                }
            }
            self.own_volumes.remove(&volume);
        }
    }

    fn lock_record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the snapshot controller has said anything about this snapshot.
fn has_status(snapshot: &DynamicObject) -> bool {
    let status = &snapshot.data["status"];
    !status["readyToUse"].is_null()
        || !status["error"].is_null()
        || !status["boundVolumeSnapshotContentName"].is_null()
}

/// The VolumeSnapshot a claim is to be restored from, if any.
fn restore_source(claim: &PersistentVolumeClaim) -> Option<&str> {
    let spec = claim.spec.as_ref()?;
    let is_snapshot =
        |group: Option<&str>, kind: &str| group == Some(SNAPSHOT_GROUP) && kind == "VolumeSnapshot";
    if let Some(source) = &spec.data_source
        && is_snapshot(source.api_group.as_deref(), &source.kind)
    {
        return Some(&source.name);
    }
    spec.data_source_ref
        .as_ref()
        .filter(|source| is_snapshot(source.api_group.as_deref(), &source.kind))
        .map(|source| source.name.as_str())
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|quantity| quantity.0.clone())
}

/// Seconds precision, as Kubernetes writes times.
fn rfc3339(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A storage quantity such as `1Gi`, `500M` or `1.5Gi` in bytes, rounded up.
fn quantity_bytes(quantity: &str) -> Option<i64> {
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        _ => return None,
    };
    let bytes = (number.parse::<f64>().ok()? * multiplier).ceil();
    (bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64).then_some(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::quantity_bytes;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536));
        assert_eq!(quantity_bytes("42"), Some(42));
        assert_eq!(quantity_bytes("1e3"), None);
    }
}
