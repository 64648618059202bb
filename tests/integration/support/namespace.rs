//! A namespace of its own for each test.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config, Resource};
use rand::Rng;

use super::control_plane::cluster;
use super::wait::wait_for;

/// Every test namespace carries this label, so leftovers of killed runs can
/// be found: `kubectl delete namespace -l e2e.lockkeeper.dev/test`.
pub const TEST_NAMESPACE_LABEL: &str = "e2e.lockkeeper.dev/test";

/// A namespace named `<prefix>-<random suffix>`, deleted by
/// [`TestNamespace::cleanup`], or on drop when a test panics first. Set
/// `LOCKKEEPER_KEEP_NAMESPACES=1` to keep them for a post-mortem.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: Config,
    cleaned_up: bool,
}

impl TestNamespace {
    /// Creates the namespace and waits for its `default` ServiceAccount,
    /// without which the API server rejects pods.
    pub async fn new(prefix: &str) -> TestNamespace {
        Self::with_labels(prefix, &[]).await
    }

    /// Like [`TestNamespace::new`], with extra labels on the namespace (for
    /// selectors that pick namespaces, such as an Environment's).
    pub async fn with_labels(prefix: &str, labels: &[(&str, &str)]) -> TestNamespace {
        let cluster = cluster().await;
        let name = format!("{}-{}", dns_label_prefix(prefix), random_suffix());
        let mut all_labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all_labels.insert(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(all_labels),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let client = cluster.client();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("creating test namespace {name}: {e}"));
        let test_namespace = TestNamespace {
            name,
            config: cluster.config().clone(),
            cleaned_up: false,
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &test_namespace.name);
        wait_for(&accounts, "default", Duration::from_secs(60), |_| true).await;
        test_namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client for the calling test's runtime.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone())
            .unwrap_or_else(|e| panic!("building a Kubernetes client: {e}"))
    }

    /// An admin `Api` for `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client(), &self.name)
    }

    /// Sets (`Some`) or removes (`None`) a label on the namespace.
    pub async fn set_label(&self, key: &str, value: Option<&str>) {
        let patch = serde_json::json!({ "metadata": { "labels": { key: value } } });
        Api::<Namespace>::all(self.client())
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("labelling namespace {}: {e}", self.name));
    }

    /// Deletes the namespace without waiting for its contents to go.
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        if keep_namespaces() {
            eprintln!("keeping test namespace {}", self.name);
            return;
        }
        if let Err(e) = delete_namespace(self.client(), &self.name).await {
            panic!("{e}");
        }
    }
}

impl Drop for TestNamespace {
    /// The test's runtime is being torn down (or unwinding from a panic), so
    /// the deletion runs on a runtime of its own, and waits a little for it
    /// so that the process does not exit first.
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if keep_namespaces() {
            eprintln!("keeping test namespace {}", self.name);
            return;
        }
        let (name, config) = (self.name.clone(), self.config.clone());
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("starting a runtime to delete namespace {name}: {e}"))
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let client = Client::try_from(config)
                            .map_err(|e| format!("building a client to delete {name}: {e}"))?;
                        delete_namespace(client, &name).await
                    })
                });
            let _ = done.send(result);
        });
        match finished.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("{e}"),
            Err(_) => eprintln!("namespace {} is still being deleted", self.name),
        }
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<(), String> {
    release_finalizers(&client, name).await;
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(format!("deleting test namespace {name}: {e}")),
    }
}

/// Drops the operator's finalizer from the namespace's Releases: a test that
/// failed may have killed its operator first, and the namespace would then
/// stay Terminating for ever. Best effort: the CRD may not even be installed.
async fn release_finalizers(client: &Client, namespace: &str) {
    let resource = kube::api::ApiResource {
        group: "lockkeeper.dev".into(),
        version: "v1alpha1".into(),
        api_version: "lockkeeper.dev/v1alpha1".into(),
        kind: "Release".into(),
        plural: "releases".into(),
    };
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource);
    let Ok(list) = api.list(&kube::api::ListParams::default()).await else {
        return;
    };
    for release in list.items {
        let Some(name) = release.metadata.name.clone() else {
            continue;
        };
        if release
            .metadata
            .finalizers
            .as_ref()
            .is_none_or(Vec::is_empty)
        {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        let _ = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

fn keep_namespaces() -> bool {
    std::env::var("LOCKKEEPER_KEEP_NAMESPACES").is_ok_and(|v| v == "1")
}

/// The prefix as the start of a DNS label: lowercase alphanumerics and
/// dashes, short enough to leave room for the suffix.
fn dns_label_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "test".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
