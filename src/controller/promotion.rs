//! The promotion gate's look upstream: is the same build (version and pod
//! template, by hash) Ready in the same-named Release of a namespace of an
//! environment this one promotes from, and since when?

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    api::{Environment, Phase, Release},
    environment::selector_query,
    runbook::Upstream,
};

/// Where the build with `template_hash` stands in the environments `from`.
/// Errors talking to the API server are reported as not (yet) Ready: the
/// gate looks again.
pub async fn upstream(
    client: &Client,
    environments: &[Environment],
    from: &[String],
    release: &str,
    template_hash: &str,
) -> Upstream {
    let mut why = Vec::new();
    let mut best: Option<(String, Timestamp)> = None;
    for env_name in from {
        let Some(env) = environments.iter().find(|e| &e.name_any() == env_name) else {
            why.push(format!("Environment {env_name} does not exist"));
            continue;
        };
        let query = selector_query(&env.spec.namespace_selector);
        let namespaces = match Api::<Namespace>::all(client.clone())
            .list_metadata(&ListParams::default().labels(&query))
            .await
        {
            Ok(list) => list.items,
            Err(e) => {
                why.push(format!("listing the namespaces of {env_name}: {e}"));
                continue;
            }
        };
        let mut found = false;
        for ns in namespaces {
            let ns = ns.name_any();
            let api: Api<Release> = Api::namespaced(client.clone(), &ns);
            let Ok(Some(upstream)) = api.get_opt(release).await else {
                continue;
            };
            found = true;
            let at = format!("{ns}/{release}");
            match standing(&upstream, template_hash) {
                Ok(since) => {
                    if best.as_ref().is_none_or(|(_, b)| since < *b) {
                        best = Some((at, since));
                    }
                }
                Err(e) => why.push(format!("{at} {e}")),
            }
        }
        if !found {
            why.push(format!(
                "no namespace of Environment {env_name} has a Release {release}"
            ));
        }
    }
    match best {
        Some((at, since)) => Upstream::Ready { at, since },
        None => Upstream::NotYet(why.join("; ")),
    }
}

/// Since when `upstream` has run the build Ready, or why it does not.
fn standing(upstream: &Release, template_hash: &str) -> Result<Timestamp, String> {
    let status = upstream.status.clone().unwrap_or_default();
    if status.template_hash.as_deref() != Some(template_hash) {
        return Err(format!(
            "runs {} (another build)",
            status.version.as_deref().unwrap_or("nothing yet")
        ));
    }
    if status.phase != Some(Phase::Ready) {
        let phase = status
            .phase
            .map_or("Pending", crate::runbook::planner::phase_name);
        return Err(format!("is {phase}"));
    }
    status
        .history
        .iter()
        .find(|h| Some(h.revision) == status.revision && h.result == Phase::Ready)
        .and_then(|h| h.finished_at.as_ref())
        .map(|t| t.0)
        .ok_or_else(|| "has no record of when it became Ready".to_owned())
}
