//! Installing the project's CustomResourceDefinitions from `crds/`.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::control_plane::cluster;
use super::repo_root;
use super::wait::wait_for;

const FIELD_MANAGER: &str = "lockkeeper-tests";

static INSTALLED: OnceCell<Result<Vec<String>, String>> = OnceCell::const_new();

/// Server-side applies every CustomResourceDefinition in `crds/*.yaml` and
/// waits until each is Established; returns their names. Runs once per test
/// process however many tests call it; applying is idempotent, so test
/// processes sharing a cluster do not disturb each other either.
pub async fn install_crds() -> &'static [String] {
    match INSTALLED.get_or_init(apply_all).await {
        Ok(names) => names,
        Err(message) => panic!("installing CRDs: {message}"),
    }
}

async fn apply_all() -> Result<Vec<String>, String> {
    let crds = read_crds(&repo_root().join("crds"))?;
    let api: Api<CustomResourceDefinition> = Api::all(cluster().await.client());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::with_capacity(crds.len());
    for crd in &crds {
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or("a CustomResourceDefinition in crds/ has no metadata.name")?;
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|e| format!("applying CustomResourceDefinition {name}: {e}"))?;
        names.push(name);
    }
    for name in &names {
        wait_for(&api, name, Duration::from_secs(60), is_established).await;
    }
    Ok(names)
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

fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| format!("parsing {}: {e}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
            if kind != Some("CustomResourceDefinition") {
                return Err(format!(
                    "{} holds a {} document; crds/ is for CustomResourceDefinitions only",
                    file.display(),
                    kind.unwrap_or("kind-less")
                ));
            }
            crds.push(
                serde_yaml::from_value(value)
                    .map_err(|e| format!("parsing a CRD in {}: {e}", file.display()))?,
            );
        }
    }
    Ok(crds)
}
