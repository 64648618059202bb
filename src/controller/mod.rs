//! The Release controller: observe, decide, act, record.

pub mod backoff;
pub mod conditions;
pub mod dispatch;
pub mod environments;
pub mod housekeeping;
pub mod outcomes;
pub mod promotion;
mod reconcile;
pub mod status;
pub mod validate;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Namespace, Service},
};
use kube::{
    Api, Client, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller, controller,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{info, warn};

use crate::{
    api::{Environment, Release},
    metrics::Metrics,
};
pub use reconcile::Error;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// First retry delay after a failed reconcile.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a finished Job of the runbook is kept (runbook 4.3).
    pub finished_job_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            finished_job_ttl: Duration::from_secs(3600),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The one event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Retry delays per object.
    pub backoff: backoff::Backoff,
    /// Settings.
    pub settings: Settings,
    /// The HTTP client checks measure with (connection pooling across checks).
    pub http: reqwest::Client,
    /// Sends notifications off the reconcile path.
    pub dispatcher: dispatch::Dispatcher,
}

impl Context {
    /// Builds the shared context.
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "lockkeeper".into(),
            instance,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let dispatcher = dispatch::Dispatcher {
            client: client.clone(),
            http: crate::checks::http_client(Duration::from_secs(10))
                .unwrap_or_else(|_| reqwest::Client::new()),
            recorder: recorder.clone(),
            metrics: metrics.clone(),
        };
        Self {
            recorder,
            backoff: backoff::Backoff::new(settings.backoff_base, settings.backoff_max),
            client,
            metrics,
            settings,
            http: crate::checks::http_client(Duration::from_secs(5))
                .unwrap_or_else(|_| reqwest::Client::new()),
            dispatcher,
        }
    }
}

/// Runs the Release controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: tokio_util::sync::CancellationToken) {
    let scopes: Vec<Option<String>> = if ctx.settings.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.settings.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|scope| {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        async move {
            let client = ctx.client.clone();
            let (releases, deployments, jobs, config_maps) = match &scope {
                Some(ns) => (
                    Api::<DeserializeGuard<Release>>::namespaced(client.clone(), ns),
                    Api::<Deployment>::namespaced(client.clone(), ns),
                    Api::<Job>::namespaced(client.clone(), ns),
                    Api::<ConfigMap>::namespaced(client, ns),
                ),
                None => (
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                    Api::all(client.clone()),
                    Api::all(client),
                ),
            };
            info!(
                namespace = scope.as_deref().unwrap_or("*"),
                "starting the Release controller"
            );
            let services: Api<Service> = match &scope {
                Some(ns) => Api::namespaced(ctx.client.clone(), ns),
                None => Api::all(ctx.client.clone()),
            };
            let children = watcher::Config::default().labels(crate::labels::RELEASE);
            let controller = Controller::new(releases, watcher::Config::default().any_semantic());
            let store = controller.store();
            // Services are the user's, not children: map each to the
            // Releases that steer it, so a Service that appears (or is
            // edited) wakes them.
            let every_release = controller.store();
            let by_namespace = controller.store();
            controller
                // An Environment's change may change the rules (or defaults)
                // of any Release; they are few, so all are looked at again.
                .watches(
                    Api::<Environment>::all(ctx.client.clone()),
                    watcher::Config::default(),
                    move |_: Environment| {
                        every_release
                            .state()
                            .into_iter()
                            .map(|guard| ObjectRef::from_obj(&*guard))
                            .collect::<Vec<_>>()
                    },
                )
                // A namespace's labels decide which Environment governs its
                // Releases: a relabelled namespace wakes them.
                .watches(
                    Api::<Namespace>::all(ctx.client.clone()),
                    watcher::Config::default(),
                    move |namespace: Namespace| {
                        let name = namespace.name_any();
                        by_namespace
                            .state()
                            .into_iter()
                            .filter(|guard| guard.namespace().as_deref() == Some(name.as_str()))
                            .map(|guard| ObjectRef::from_obj(&*guard))
                            .collect::<Vec<_>>()
                    },
                )
                .watches(
                    services,
                    watcher::Config::default(),
                    move |service: Service| {
                        let ns = service.namespace();
                        let name = service.name_any();
                        store
                            .state()
                            .into_iter()
                            .filter(|guard| guard.namespace() == ns)
                            .filter(|guard| guard.0.as_ref().is_ok_and(|r| steers(r, &name)))
                            .map(|guard| ObjectRef::from_obj(&*guard))
                            .collect::<Vec<_>>()
                    },
                )
                .owns(deployments, children.clone())
                .owns(jobs, children.clone())
                .owns(config_maps, children)
                .with_config(controller::Config::default().concurrency(16))
                .graceful_shutdown_on(shutdown.cancelled_owned())
                .run(reconcile::reconcile, reconcile::error_policy, ctx)
                .for_each(|result| async move {
                    if let Err(error) = result {
                        match error {
                            controller::Error::ReconcilerFailed(..) => {}
                            other => warn!(error = %other, "controller stream error"),
                        }
                    }
                })
                .await;
        }
    });
    let environments = environments::run(ctx.client.clone(), shutdown.clone());
    futures::future::join(futures::future::join_all(controllers), environments).await;
}

/// Whether `release` steers the Service named `service`.
fn steers(release: &Release, service: &str) -> bool {
    let strategy = &release.spec.strategy;
    let blue_green = strategy.blue_green.as_ref().is_some_and(|b| {
        b.active_service == service || b.preview_service.as_deref() == Some(service)
    });
    let recreate = strategy
        .recreate
        .as_ref()
        .is_some_and(|r| r.service.as_deref() == Some(service));
    blue_green || recreate
}
