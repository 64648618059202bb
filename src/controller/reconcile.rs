//! One reconciliation of one Release: look at the world, decide, act once,
//! record. Level-based: why the reconcile ran does not matter.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams},
    api::{Patch, PatchParams},
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::{
        controller::Action,
        events::{Event, EventType},
        finalizer::{self, finalizer},
    },
};
use serde_json::json;
use tracing::{Span, debug, field, info, instrument, warn};

use super::{Context, conditions, housekeeping, outcomes, status, validate};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

use crate::{
    api::{
        Color, Environment, Phase, Release, ReleaseStatus, checks::CheckPhase, status::StepState,
    },
    environment, freeze,
    labels::{FIELD_MANAGER, FINALIZER},
    runbook::{
        self, Effect, Observed, execute, observe, planner, preflight,
        render::{self, Shipped},
        steps::{self, Step},
        verify,
    },
};

/// The condition saying which Environment's rules apply.
const ENVIRONMENT: &str = "Environment";

/// Why a reconcile failed; one variant per operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a Release's status failed.
    #[error("writing status of Release {namespace}/{name}: {source}")]
    WriteStatus {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// Removing the finalizer of an unreadable Release failed.
    #[error("removing the finalizer of Release {namespace}/{name}: {source}")]
    RemoveFinalizer {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// Reading the Release itself failed.
    #[error("reading Release {namespace}/{name}: {source}")]
    Read {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// Reading the namespace or the Environments failed.
    #[error("{what} {namespace}: {source}")]
    Environment {
        /// What was being read.
        what: &'static str,
        /// The Release's namespace.
        namespace: String,
        /// Cause.
        source: kube::Error,
    },
    /// Reading the release's children failed.
    #[error(transparent)]
    Observe(crate::runbook::observe::ObserveError),
    /// A runbook side effect failed.
    #[error(transparent)]
    Execute(crate::runbook::execute::ExecError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer of Release {namespace}/{name}: {source}")]
    Finalizer {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Cause.
        source: Box<finalizer::Error<Error>>,
    },
}

impl Error {
    /// A stable, low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::WriteStatus { .. } => "write_status",
            Error::RemoveFinalizer { .. } => "remove_finalizer",
            Error::Observe(_) => "observe",
            Error::Environment { .. } => "environment",
            Error::Read { .. } => "read",
            Error::Execute(e) => e.category(),
            Error::Finalizer { source, .. } => match source.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.category()
                }
                _ => "finalizer",
            },
        }
    }
}

/// The reconcile entry point handed to the controller.
#[instrument(skip_all, fields(release = field::Empty, namespace = field::Empty, revision = field::Empty, phase = field::Empty))]
pub async fn reconcile(
    guard: Arc<DeserializeGuard<Release>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer("Release");
    let result = match &guard.0 {
        Ok(release) => reconcile_release(release, &ctx).await,
        Err(invalid) => stall_unreadable(invalid, &ctx).await,
    };
    if result.is_ok() {
        ctx.backoff.reset(&key_of(&guard));
    }
    result
}

/// Retries a failed reconcile with per-object exponential backoff.
pub fn error_policy(
    guard: Arc<DeserializeGuard<Release>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&["Release", error.category()])
        .inc();
    let delay = ctx.backoff.next_delay(&key_of(&guard));
    warn!(%error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

fn key_of(guard: &DeserializeGuard<Release>) -> String {
    format!(
        "{}/{}",
        guard.namespace().unwrap_or_default(),
        guard.name_any()
    )
}

async fn reconcile_release(cached: &Release, ctx: &Context) -> Result<Action, Error> {
    let (namespace, name) = (cached.namespace().unwrap_or_default(), cached.name_any());
    // The watch cache can lag behind this controller's own last status
    // write; planning from a stale status would forget what the last
    // reconcile recorded. Read the Release itself before deciding.
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace);
    let fresh = api.get_opt(&name).await.map_err(|source| Error::Read {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    let Some(fresh) = fresh else {
        return Ok(Action::await_change());
    };
    let release = &fresh;
    let span = Span::current();
    span.record("release", name.as_str());
    span.record("namespace", namespace.as_str());
    if let Some(status) = &release.status {
        if let Some(rev) = status.revision {
            span.record("revision", rev);
        }
        if let Some(phase) = status.phase {
            span.record("phase", field::debug(phase));
        }
    }
    finalizer(&api, FINALIZER, Arc::new(release.clone()), |event| async {
        match event {
            finalizer::Event::Apply(release) => apply(&release, ctx).await,
            finalizer::Event::Cleanup(release) => cleanup(&release, ctx).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        namespace,
        name,
        source: Box::new(source),
    })
}

async fn apply(release: &Release, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let generation = release.metadata.generation.unwrap_or_default();
    let old = release.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.observed_generation = Some(generation);

    // The Environment's defaults fill in what the Release leaves unset; the
    // rest of the reconcile works on that effective Release.
    // Which rules a new revision obeys must be read consistently: an
    // Environment (approval, freeze) created just before must not be missed.
    // A revision already running reads the API server's cache, which can
    // lag by a moment but answers without waiting for it to catch up (a
    // consistent list can take 100 ms, and a rollback must not).
    let may_start = old.phase.is_none_or(Phase::is_terminal)
        || old.revision_hash.as_deref() != Some(Shipped::of(&release.spec).hash().as_str());
    let (resolution, environments) = resolve_environment(release, ctx, may_start).await?;
    let effective = Release {
        spec: environment::with_defaults(&release.spec, &environment::Defaults::of(&resolution)),
        ..release.clone()
    };
    let release = &effective;
    let frozen = match &resolution {
        environment::Resolution::One { name, freeze, .. } => {
            freeze::in_force(freeze, now).map_err(|e| (name.clone(), e))
        }
        _ => Ok(None),
    };
    let cycle = match &resolution {
        environment::Resolution::One { name, .. } => {
            environment::promotion_cycle(&environments, name)
        }
        _ => None,
    };
    let problems = match (&resolution, &frozen) {
        (_, Err((env, e))) => Err(vec![validate::Problem {
            path: format!("Environment {env}"),
            message: format!("{e}; the platform team must fix the Environment"),
        }]),
        (environment::Resolution::One { name, .. }, _) if cycle.is_some() => {
            Err(vec![validate::Problem {
                path: format!("Environment {name}"),
                message: format!(
                    "its promotion order has a cycle ({}): no version could ever be promoted; the platform team must fix the Environments",
                    cycle.clone().unwrap_or_default().join(" → ")
                ),
            }])
        }
        (environment::Resolution::Conflict(names), _) => Err(vec![validate::Problem {
            path: "metadata.namespace".into(),
            message: format!(
                "the namespace is selected by more than one Environment ({}); their namespaceSelectors must not overlap",
                names.join(", ")
            ),
        }]),
        _ => validate::validate(&release.spec),
    };
    let frozen = frozen.ok().flatten();
    match problems {
        Err(problems) => {
            let reason = match resolution {
                environment::Resolution::Conflict(_) => "EnvironmentConflict",
                environment::Resolution::One { .. }
                    if frozen.is_none() && !problems.iter().any(|p| p.path.starts_with("spec")) =>
                {
                    "InvalidEnvironment"
                }
                _ => "InvalidSpec",
            };
            let message = validate::describe(&problems);
            let was_stalled_same = conditions::get(&old.conditions, conditions::STALLED)
                .is_some_and(|c| c.status == "True" && c.message == message);
            conditions::stalled(&mut new.conditions, reason, &message, generation, now);
            write_status(release, &old, &new, ctx).await?;
            if !was_stalled_same {
                ctx.metrics.stalled.with_label_values(&[reason]).inc();
                warn!(%message, "release cannot run as written");
                publish(
                    ctx,
                    release,
                    EventType::Warning,
                    reason,
                    "Validate",
                    message,
                )
                .await;
            }
            // Nothing to do until the spec changes; the watch brings that.
            Ok(Action::await_change())
        }
        Ok(validated) => {
            let world = observe::world(&ctx.client, release)
                .await
                .map_err(Error::Observe)?;
            let measured = measure_due_checks(release, &validated, &old, now, ctx).await;
            let name = release.name_any();
            let template_hash = render::template_hash(&release.spec);
            let gates = gates(
                release,
                &resolution,
                &environments,
                &old,
                &template_hash,
                ctx,
            )
            .await;
            let observed = Observed {
                now,
                name: &name,
                gates,
                template_hash,
                generation,
                spec: &release.spec,
                hash: Shipped::of(&release.spec).hash(),
                status: &measured,
                world,
                requests: observe::requests(release),
                frozen,
            };
            let mut plan = planner::plan(&observed);
            record_environment(
                &mut plan.status,
                &resolution,
                &release.namespace().unwrap_or_default(),
                generation,
                now,
            );
            if let Some(effect) = &plan.effect {
                debug!(?effect, "acting");
                let started = std::time::Instant::now();
                let applied = execute::execute(&ctx.client, release, &validated, effect)
                    .await
                    .map_err(Error::Execute)?;
                ctx.metrics
                    .api_writes
                    .with_label_values(&[effect.resource()])
                    .inc();
                if let Effect::PointService { .. } = effect {
                    let direction = if plan.status.phase == Some(Phase::RollingBack) {
                        "back"
                    } else {
                        "forward"
                    };
                    ctx.metrics
                        .traffic_switch
                        .with_label_values(&[direction])
                        .observe(started.elapsed().as_secs_f64());
                }
                if let Some((color, generation)) = applied.generation {
                    plan.status
                        .applied_generations
                        .insert(color.as_str().to_owned(), generation);
                }
            }
            if plan.status.history != old.history {
                write_deployment_log(release, &plan.status, ctx).await?;
            }
            write_status(release, &old, &plan.status, ctx).await?;
            let happened = outcomes::between(&old, &plan.status, now);
            record_outcomes(release, &happened, ctx);
            record_phase(release, &old, &plan.status, now, ctx);
            if !happened.notify.is_empty() && !release.spec.notify.is_empty() {
                let updated = Release {
                    status: Some(plan.status.clone()),
                    ..release.clone()
                };
                ctx.dispatcher.send(&updated, &happened.notify, now);
            }
            let mut tidy_after = None;
            if plan.effect.is_none() && plan.status.phase.is_some_and(Phase::is_terminal) {
                match housekeeping::tidy(
                    &ctx.client,
                    release,
                    &plan.status,
                    ctx.settings.finished_job_ttl,
                    now,
                )
                .await
                {
                    Ok(tidied) => {
                        let writes = tidied.jobs.len() + tidied.records.len();
                        if writes > 0 {
                            info!(jobs = ?tidied.jobs, records = ?tidied.records, "cleaned up");
                            ctx.metrics
                                .api_writes
                                .with_label_values(&["cleanup"])
                                .inc_by(writes as u64);
                        }
                        tidy_after = tidied.next;
                    }
                    // Cleanup never holds a release up; the next reconcile retries.
                    Err(error) => warn!(%error, "cleanup failed"),
                }
            }
            for note in plan.notes {
                let kind = if note.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                info!(reason = %note.reason, message = %note.message, "runbook");
                publish(ctx, release, kind, &note.reason, "Runbook", note.message).await;
            }
            let requeue = match (plan.effect, plan.requeue) {
                (_, Some(after)) => after,
                // The status write or the child's change wakes us; this is a safety net.
                (Some(_), None) => Duration::from_secs(10),
                (None, None) => Duration::from_secs(300),
            };
            Ok(Action::requeue(tidy_after.map_or(requeue, |t| {
                requeue.min(t + Duration::from_secs(1))
            })))
        }
    }
}

/// The Environment's gates for the revision; where the build stands
/// upstream is looked up only while the promotion gate is open.
async fn gates(
    release: &Release,
    resolution: &environment::Resolution,
    environments: &[Environment],
    status: &ReleaseStatus,
    template_hash: &str,
    ctx: &Context,
) -> runbook::Gates {
    let environment::Resolution::One {
        promotion,
        approval,
        ..
    } = resolution
    else {
        return runbook::Gates::default();
    };
    let promotion_open = status.steps.iter().any(|s| {
        s.name == Step::Promote.name() && matches!(s.state, StepState::Pending | StepState::Running)
    });
    let promotion = match promotion {
        Some(p) => {
            let upstream = if promotion_open {
                let hash = status.template_hash.as_deref().unwrap_or(template_hash);
                Some(
                    crate::controller::promotion::upstream(
                        &ctx.client,
                        environments,
                        &p.from,
                        &release.name_any(),
                        hash,
                    )
                    .await,
                )
            } else {
                None
            };
            Some((
                p.from.clone(),
                p.soak.map_or(Duration::ZERO, Into::into),
                upstream,
            ))
        }
        None => None,
    };
    runbook::Gates {
        promotion,
        approval: approval.as_ref().map(|a| a.distinct_from_author),
    }
}

/// Keeps the deployment log ConfigMap (runbook 4.1) in step with the
/// history; written before the status, so a failed write is retried with it.
async fn write_deployment_log(
    release: &Release,
    status: &ReleaseStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let log_name = format!("{name}-deployment-log");
    let body = outcomes::deployment_log(&namespace, &name, &status.history);
    let mut labels = render::labels(
        &name,
        "log",
        status.revision.unwrap_or_default(),
        status.version.as_deref().unwrap_or_default(),
    );
    labels.remove(crate::labels::VERSION);
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": log_name,
            "labels": labels,
            "ownerReferences": [render::owner(release)],
        },
        "data": {"DEPLOYMENTS.md": body},
    });
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &log_name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(|source| {
        Error::Execute(execute::ExecError::Object {
            action: "writing the deployment log",
            kind: "ConfigMap",
            namespace: namespace.clone(),
            name: log_name.clone(),
            source,
        })
    })?;
    ctx.metrics
        .api_writes
        .with_label_values(&["configmaps"])
        .inc();
    Ok(())
}

/// Sets when the Release entered its phase: when the phase's first step
/// started, or now.
fn record_phase(
    release: &Release,
    old: &ReleaseStatus,
    new: &ReleaseStatus,
    now: Timestamp,
    ctx: &Context,
) {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let gauge = &ctx.metrics.phase_since;
    if let Some(before) = old.phase.filter(|p| Some(*p) != new.phase) {
        let _ = gauge.remove_label_values(&[&namespace, &name, planner::phase_name(before)]);
    }
    let Some(phase) = new.phase else { return };
    let since = new
        .steps
        .iter()
        .filter(|s| Step::from_name(&s.name).is_some_and(|step| step.phase() == phase))
        .find_map(|s| s.started_at.as_ref().map(|t| t.0))
        .filter(|_| !phase.is_terminal())
        .or_else(|| {
            new.history
                .first()
                .and_then(|h| h.finished_at.as_ref())
                .map(|t| t.0)
        })
        .unwrap_or(now);
    gauge
        .with_label_values(&[&namespace, &name, planner::phase_name(phase)])
        .set(since.as_millisecond() as f64 / 1000.0);
}

/// The delivery metrics of what a status write recorded.
fn record_outcomes(release: &Release, happened: &outcomes::Happened, ctx: &Context) {
    let namespace = release.namespace().unwrap_or_default();
    let name = release.name_any();
    let m = &ctx.metrics;
    for step in &happened.finished {
        let result = if step.state == StepState::Failed {
            "Failed"
        } else {
            "Succeeded"
        };
        m.step_duration
            .with_label_values(&[step.name.as_str(), result])
            .observe(step.seconds);
    }
    let Some(ended) = &happened.ended else {
        return;
    };
    let result = planner::phase_name(ended.result);
    m.releases
        .with_label_values(&[namespace.as_str(), name.as_str(), result])
        .inc();
    if ended.deployed {
        let outcome = if ended.result == Phase::Ready {
            "success"
        } else {
            "failure"
        };
        m.deployments
            .with_label_values(&[namespace.as_str(), name.as_str(), outcome])
            .inc();
    }
    if let Some(reason) = &ended.rollback_reason {
        m.rollbacks
            .with_label_values(&[namespace.as_str(), name.as_str(), reason.as_str()])
            .inc();
    }
    if let Some(seconds) = ended.time_to_restore {
        m.time_to_restore
            .with_label_values(&[namespace.as_str(), name.as_str()])
            .observe(seconds);
    }
}

/// The Environment whose selector matches the Release's namespace.
async fn resolve_environment(
    release: &Release,
    ctx: &Context,
    consistent: bool,
) -> Result<(environment::Resolution, Vec<Environment>), Error> {
    let namespace = release.namespace().unwrap_or_default();
    let err = |what: &'static str| {
        let namespace = namespace.clone();
        move |source| Error::Environment {
            what,
            namespace,
            source,
        }
    };
    let labels = Api::<Namespace>::all(ctx.client.clone())
        .get_metadata(&namespace)
        .await
        .map_err(err("reading the labels of namespace"))?
        .metadata
        .labels
        .unwrap_or_default();
    let params = if consistent {
        ListParams::default()
    } else {
        ListParams::default().match_any()
    };
    let environments = Api::<Environment>::all(ctx.client.clone())
        .list(&params)
        .await
        .map_err(err("listing the Environments for namespace"))?;
    let resolution = environment::resolve(&labels, &environments.items);
    Ok((resolution, environments.items))
}

/// Records which Environment's rules apply, or that none do.
fn record_environment(
    status: &mut ReleaseStatus,
    resolution: &environment::Resolution,
    namespace: &str,
    generation: i64,
    now: Timestamp,
) {
    let desired = match resolution {
        environment::Resolution::One { name, .. } => {
            status.environment = Some(name.clone());
            conditions::Desired::truthy(
                ENVIRONMENT,
                "Matched",
                format!("the rules of Environment {name} apply"),
            )
        }
        _ => {
            status.environment = None;
            conditions::Desired::falsy(
                ENVIRONMENT,
                "NoEnvironment",
                format!("namespace {namespace} matches no Environment: no environment rules apply"),
            )
        }
    };
    conditions::set(&mut status.conditions, desired, generation, now);
}

/// Takes the measurements that are due for the checks of the step the
/// revision is in (Verify: PreCutover, Observe: PostCutover) and returns the
/// status with them recorded. Measurements are observations: the planner
/// decides from them like from any other state of the world.
async fn measure_due_checks(
    release: &Release,
    validated: &validate::Validated,
    status: &ReleaseStatus,
    now: Timestamp,
    ctx: &Context,
) -> ReleaseStatus {
    let mut measured = status.clone();
    if release
        .status
        .as_ref()
        .and_then(|s| s.revision_hash.as_deref())
        != Some(Shipped::of(&release.spec).hash().as_str())
    {
        return measured;
    }
    let (step, phase) = match steps::current(&status.steps) {
        Some((_, Step::Preflight)) => {
            check_dependencies(release, validated, &mut measured, now, ctx).await;
            return measured;
        }
        Some((_, Step::Verify)) => (Step::Verify, CheckPhase::PreCutover),
        Some((_, Step::Observe)) => (Step::Observe, CheckPhase::PostCutover),
        _ => return measured,
    };
    let since = steps::started_at(&status.steps, step).unwrap_or(now);
    let due = verify::due(&release.spec, phase, &status.checks, since, now);
    if due.is_empty() {
        return measured;
    }
    let target = verify::Target {
        release,
        color: status.target_color.unwrap_or(Color::Blue),
        revision: status.revision.unwrap_or_default(),
        phase,
        validated,
        statuses: &status.checks,
    };
    let results = futures::future::join_all(
        due.iter()
            .map(|check| verify::measure(&ctx.client, &ctx.http, &target, check)),
    )
    .await;
    for (check, result) in due.iter().zip(results) {
        let Some((measurement, final_failure)) = result else {
            continue;
        };
        verify::record(
            &mut measured.checks,
            check,
            phase,
            &measurement,
            final_failure,
            now,
        );
        if verify::is_failure(&measurement) {
            let value = measurement
                .value
                .as_deref()
                .map(|v| format!(" (measured {v})"))
                .unwrap_or_default();
            let note = format!(
                "check {} failed a measurement{value}: {}",
                check.name, measurement.message
            );
            warn!(check = %check.name, %note, "check failed");
            publish(
                ctx,
                release,
                EventType::Warning,
                "CheckFailed",
                &format!("Check{}", check.name),
                note,
            )
            .await;
        }
    }
    measured
}

/// Checks the preflight dependencies (and capacity) that are not ready yet.
async fn check_dependencies(
    release: &Release,
    validated: &validate::Validated,
    status: &mut ReleaseStatus,
    now: Timestamp,
    ctx: &Context,
) {
    let Some(declared) = preflight::declared(&release.spec) else {
        return;
    };
    let timeout = declared
        .timeout
        .map_or(preflight::DEFAULT_TIMEOUT, Into::into);
    let due: Vec<_> = declared
        .dependencies
        .iter()
        .filter(|d| preflight::due(&status.dependencies, &d.name, now))
        .collect();
    let results = futures::future::join_all(
        due.iter()
            .map(|d| preflight::check(&ctx.client, &ctx.http, release, d, timeout)),
    )
    .await;
    for (dependency, measurement) in due.iter().zip(results) {
        preflight::record(
            &mut status.dependencies,
            &dependency.name,
            &measurement,
            now,
        );
    }
    if declared.capacity && preflight::due(&status.dependencies, preflight::CAPACITY, now) {
        let measurement = preflight::capacity(&ctx.client, release, validated).await;
        preflight::record(
            &mut status.dependencies,
            preflight::CAPACITY,
            &measurement,
            now,
        );
    }
}

async fn cleanup(release: &Release, ctx: &Context) -> Result<Action, Error> {
    // Children carry owner references; the garbage collector removes them.
    info!("release deleted; its children are garbage-collected with it");
    if let Some(phase) = release.status.as_ref().and_then(|s| s.phase) {
        let (namespace, name) = (release.namespace().unwrap_or_default(), release.name_any());
        let _ = ctx.metrics.phase_since.remove_label_values(&[
            &namespace,
            &name,
            planner::phase_name(phase),
        ]);
    }
    publish(
        ctx,
        release,
        EventType::Normal,
        "Deleted",
        "Cleanup",
        "release deleted".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// Writes status only when something other than timestamps changed.
async fn write_status(
    release: &Release,
    old: &ReleaseStatus,
    new: &ReleaseStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if old == new {
        return Ok(());
    }
    let (namespace, name) = (release.namespace().unwrap_or_default(), release.name_any());
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.metrics
        .api_writes
        .with_label_values(&["releases/status"])
        .inc();
    status::apply(&api, &name, new)
        .await
        .map_err(|source| Error::WriteStatus {
            namespace,
            name,
            source,
        })
}

/// A Release whose stored form does not even decode (possible when the CRD
/// schema is looser than the types, or after a CRD change): report it as
/// Stalled and let deletion proceed, never crash-loop.
async fn stall_unreadable(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    // Untyped access: the typed API would fail to decode the server's reply
    // for the very reason this object is here.
    let resource = ApiResource::erase::<Release>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    if invalid.metadata.deletion_timestamp.is_some() {
        let finalizers: Vec<String> = invalid
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| f.as_str() != FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": invalid.metadata.resource_version}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::RemoveFinalizer {
                namespace,
                name,
                source,
            })?;
        return Ok(Action::await_change());
    }
    let detail = match api.get(&name).await {
        Ok(object) => decode_error_with_path(&object).unwrap_or_else(|| invalid.error.clone()),
        Err(_) => invalid.error.clone(),
    };
    let generation = invalid.metadata.generation.unwrap_or_default();
    let message = format!("the Release cannot be read: {detail}");
    let mut status = ReleaseStatus {
        observed_generation: Some(generation),
        ..ReleaseStatus::default()
    };
    conditions::stalled(
        &mut status.conditions,
        "Unreadable",
        &message,
        generation,
        Timestamp::now(),
    );
    let patch = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "status": status,
    });
    ctx.metrics
        .api_writes
        .with_label_values(&["releases/status"])
        .inc();
    api.patch_status(
        &name,
        &PatchParams::apply(crate::labels::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    ctx.metrics.stalled.with_label_values(&["Unreadable"]).inc();
    warn!(%namespace, %name, %message, "unreadable release");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(resource.api_version.clone()),
        kind: Some(resource.kind.clone()),
        name: Some(name),
        namespace: Some(namespace),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "Unreadable".into(),
        note: Some(truncate(message)),
        action: "Validate".into(),
        secondary: None,
    };
    ctx.metrics.api_writes.with_label_values(&["events"]).inc();
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        warn!(%error, "publishing an event failed");
    }
    Ok(Action::await_change())
}

/// Decodes the raw object again to learn which field could not be read.
fn decode_error_with_path(object: &DynamicObject) -> Option<String> {
    let value = serde_json::to_value(object).ok()?;
    match serde_path_to_error::deserialize::<_, Release>(value) {
        Ok(_) => None,
        Err(e) => Some(format!("{}: {}", e.path(), e.inner())),
    }
}

/// Publishes an event on a Release; a failure to publish is logged, never fatal.
pub(crate) async fn publish(
    ctx: &Context,
    release: &Release,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note)),
        action: action.into(),
        secondary: None,
    };
    ctx.metrics.api_writes.with_label_values(&["events"]).inc();
    if let Err(error) = ctx.recorder.publish(&event, &release.object_ref(&())).await {
        warn!(%error, reason, "publishing an event failed");
    }
}

/// Event notes are limited to 1 kB.
fn truncate(mut note: String) -> String {
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}
