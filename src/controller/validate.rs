//! What the CRD schema cannot say about a Release, checked before anything
//! changes. Pure: a spec in, the decoded pieces or every problem out.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::api::{batch::v1::JobSpec, core::v1::PodTemplateSpec};

use crate::{
    api::{Embedded, ReleaseSpec, checks::CheckPhase, release::StrategyType},
    labels::RESERVED_POD_LABELS,
};

/// One thing wrong with a spec, with the path to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `spec.migration.job`.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Joins problems into one condition message.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The embedded Kubernetes specs of a Release, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The workload's pod template.
    pub template: PodTemplateSpec,
    /// The application container's name.
    pub app_container: String,
    /// The application container's image: the version's image.
    pub image: String,
    /// Migration, its verification and its rollback.
    pub migration: Option<MigrationJobs>,
    /// Backup Jobs and their restores, by backup name.
    pub backup_jobs: BTreeMap<String, (JobSpec, Option<JobSpec>)>,
    /// Job checks, by check name.
    pub check_jobs: BTreeMap<String, JobSpec>,
}

/// The decoded migration Jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationJobs {
    /// The migration.
    pub job: JobSpec,
    /// Its verification.
    pub verify: Option<JobSpec>,
    /// Its down-migration.
    pub rollback: Option<JobSpec>,
}

/// Checks `spec` and decodes its embedded specs.
pub fn validate(spec: &ReleaseSpec) -> Result<Validated, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |path: &str, message: String| {
        problems.push(Problem {
            path: path.to_owned(),
            message,
        });
    };

    let template = match spec.workload.template.decode() {
        Ok(t) => Some(t),
        Err(e) => {
            problem(
                "spec.workload.template",
                format!("not a valid PodTemplateSpec: {e}"),
            );
            None
        }
    };
    let mut app = None;
    if let Some(template) = &template {
        let containers = template
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[]);
        if containers.is_empty() {
            problem(
                "spec.workload.template.spec.containers",
                "must list at least one container".into(),
            );
        }
        for (i, c) in containers.iter().enumerate() {
            if c.image.as_deref().is_none_or(str::is_empty) {
                problem(
                    &format!("spec.workload.template.spec.containers[{i}].image"),
                    format!("container {:?} has no image", c.name),
                );
            }
        }
        let chosen = match &spec.workload.container {
            Some(name) => {
                let found = containers.iter().find(|c| &c.name == name);
                if found.is_none() {
                    problem(
                        "spec.workload.container",
                        format!("no container named {name:?} in the pod template"),
                    );
                }
                found
            }
            None => containers.first(),
        };
        app = chosen.map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()));
        if let Some(labels) = template.metadata.as_ref().and_then(|m| m.labels.as_ref()) {
            for key in RESERVED_POD_LABELS {
                if labels.contains_key(*key) {
                    problem(
                        "spec.workload.template.metadata.labels",
                        format!("label {key} is set by the operator; remove it"),
                    );
                }
            }
        }
    }

    let mut job = |path: &str, embedded: &Embedded<JobSpec>| -> Option<JobSpec> {
        match embedded.decode() {
            Ok(job) => {
                if job
                    .template
                    .spec
                    .as_ref()
                    .is_none_or(|s| s.containers.is_empty())
                {
                    problem(
                        &format!("{path}.template.spec.containers"),
                        "must list at least one container".into(),
                    );
                    return None;
                }
                Some(job)
            }
            Err(e) => {
                problem(path, format!("not a valid JobSpec: {e}"));
                None
            }
        }
    };

    let migration = spec.migration.as_ref().and_then(|m| {
        let main = job("spec.migration.job", &m.job);
        let verify = m
            .verify
            .as_ref()
            .and_then(|v| job("spec.migration.verify", v));
        let rollback = m
            .rollback
            .as_ref()
            .and_then(|r| job("spec.migration.rollback", r));
        main.map(|job| MigrationJobs {
            job,
            verify,
            rollback,
        })
    });

    let mut backup_jobs = BTreeMap::new();
    for (i, b) in spec.backup.iter().flat_map(|b| b.jobs.iter()).enumerate() {
        let main = job(&format!("spec.backup.jobs[{i}].template"), &b.template);
        let restore = b
            .restore
            .as_ref()
            .and_then(|r| job(&format!("spec.backup.jobs[{i}].restore"), r));
        if let Some(main) = main {
            backup_jobs.insert(b.name.clone(), (main, restore));
        }
    }

    let mut check_jobs = BTreeMap::new();
    for (i, c) in spec.verify.iter().enumerate() {
        if let Some(j) = &c.job
            && let Some(spec) = job(&format!("spec.verify[{i}].job.template"), &j.template)
        {
            check_jobs.insert(c.name.clone(), spec);
        }
    }

    check_service_targets(spec, &mut problem);
    check_checks(spec, &mut problem);
    check_config_ownership(spec, &mut problem);

    match (problems.is_empty(), template, app) {
        (true, Some(template), Some((app_container, image))) => Ok(Validated {
            template,
            app_container,
            image,
            migration,
            backup_jobs,
            check_jobs,
        }),
        _ => Err(problems),
    }
}

/// A check that reaches the new color through a Service port needs a Service
/// pointed at that color in the phase it runs in.
fn check_service_targets(spec: &ReleaseSpec, problem: &mut impl FnMut(&str, String)) {
    let preview = spec
        .strategy
        .blue_green
        .as_ref()
        .and_then(|b| b.preview_service.as_ref());
    let recreate_service = spec
        .strategy
        .recreate
        .as_ref()
        .and_then(|r| r.service.as_ref());
    for (i, check) in spec.verify.iter().enumerate() {
        let uses_service = check.http.as_ref().is_some_and(|h| h.url.is_none())
            || check.load.as_ref().is_some_and(|l| l.url.is_none());
        if !uses_service {
            continue;
        }
        let pre = check.when.is_empty() || check.when.contains(&CheckPhase::PreCutover);
        let path = format!("spec.verify[{i}]");
        match spec.strategy.type_ {
            StrategyType::BlueGreen if pre && preview.is_none() => problem(
                &path,
                format!(
                    "check {:?} runs PreCutover against a Service port, but strategy.blueGreen.previewService is not set: set it, give the check a url, or run it only PostCutover",
                    check.name
                ),
            ),
            StrategyType::Recreate if recreate_service.is_none() => problem(
                &path,
                format!(
                    "check {:?} targets a Service port, but strategy.recreate.service is not set: set it or give the check a url",
                    check.name
                ),
            ),
            _ => {}
        }
    }
}

/// Conditions, query templates and body patterns are compiled before a
/// revision starts, so a typo stalls the release instead of failing it
/// halfway.
fn check_checks(spec: &ReleaseSpec, problem: &mut impl FnMut(&str, String)) {
    for (i, check) in spec.verify.iter().enumerate() {
        let path = format!("spec.verify[{i}]");
        if let Some(p) = &check.prometheus {
            if let Err(e) = crate::checks::prometheus::compile_condition(&p.condition) {
                problem(
                    &format!("{path}.prometheus.condition"),
                    format!("check {:?}: {e}", check.name),
                );
            }
            if let Err(e) = crate::checks::prometheus::check_query_template(&p.query) {
                problem(
                    &format!("{path}.prometheus.query"),
                    format!("check {:?}: {e}", check.name),
                );
            }
            if p.address.is_none() && spec.prometheus.is_none() {
                problem(
                    &format!("{path}.prometheus"),
                    format!(
                        "check {:?} has no Prometheus to ask: set spec.prometheus.address or the check's address",
                        check.name
                    ),
                );
            }
        }
        if let Some(body) = check.http.as_ref().and_then(|h| h.expect_body.as_ref())
            && let Err(e) = crate::checks::http::BodyMatcher::compile(body)
        {
            problem(
                &format!("{path}.http.expectBody"),
                format!("check {:?}: {e}", check.name),
            );
        }
    }
}

/// A ConfigMap is either owned by the release (and versioned per revision)
/// or backed up and restored, never both.
fn check_config_ownership(spec: &ReleaseSpec, problem: &mut impl FnMut(&str, String)) {
    let (Some(config), Some(backup)) = (&spec.config, &spec.backup) else {
        return;
    };
    for owned in &config.config_maps {
        if backup.config_maps.contains(&owned.name) {
            problem(
                "spec.backup.configMaps",
                format!(
                    "{:?} is owned by the release (spec.config) and versioned per revision; it needs no backup",
                    owned.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> ReleaseSpec {
        let mut base = json!({
            "version": "v1",
            "workload": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "shop:v1"}]}}},
            "strategy": {"type": "BlueGreen", "blueGreen": {"activeService": "shop"}},
        });
        merge(&mut base, extra);
        serde_json::from_value(base).unwrap_or_else(|e| panic!("test spec does not parse: {e}"))
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        match (base, extra) {
            (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
                for (k, v) in e {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, e) => *b = e,
        }
    }

    #[test]
    fn a_plain_release_is_valid() {
        let v = validate(&spec(json!({}))).unwrap_or_else(|p| panic!("{}", describe(&p)));
        assert_eq!(v.app_container, "app");
        assert_eq!(v.image, "shop:v1");
    }

    #[test]
    fn template_without_containers_or_image_is_named() {
        let problems = validate(&spec(
            json!({"workload": {"template": {"spec": {"containers": [{"name": "app"}]}}}}),
        ))
        .err()
        .unwrap_or_default();
        assert!(
            describe(&problems).contains("containers[0].image"),
            "{problems:?}"
        );
    }

    #[test]
    fn malformed_job_spec_names_the_path() {
        let problems = validate(&spec(
            json!({"migration": {"job": {"template": {"spec": {"containers": "nope"}}}}}),
        ))
        .err()
        .unwrap_or_default();
        let text = describe(&problems);
        assert!(
            text.contains("spec.migration.job") && text.contains("template.spec.containers"),
            "{text}"
        );
    }

    #[test]
    fn job_without_container_is_rejected() {
        let problems = validate(&spec(
            json!({"migration": {"job": {"template": {"spec": {"containers": []}}}}}),
        ))
        .err()
        .unwrap_or_default();
        assert!(describe(&problems).contains("spec.migration.job.template.spec.containers"));
    }

    #[test]
    fn unknown_app_container_and_reserved_labels_are_reported_together() {
        let problems = validate(&spec(json!({
            "workload": {"container": "web", "template": {"metadata": {"labels": {"lockkeeper.dev/color": "blue"}}, "spec": {"containers": [{"name": "app", "image": "x"}]}}}
        })))
        .err()
        .unwrap_or_default();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn precutover_service_check_needs_a_preview_service() {
        let problems = validate(&spec(
            json!({"verify": [{"name": "health", "http": {"port": 8080, "path": "/health"}}]}),
        ))
        .err()
        .unwrap_or_default();
        assert!(
            describe(&problems).contains("previewService"),
            "{problems:?}"
        );
        let ok = validate(&spec(json!({
            "verify": [{"name": "health", "when": ["PostCutover"], "http": {"port": 8080}}]
        })));
        assert!(ok.is_ok());
    }

    #[test]
    fn a_migration_is_decoded_with_its_verify_and_rollback() {
        let job = json!({"template": {"spec": {"containers": [{"name": "m"}]}}});
        let validated = validate(&spec(
            json!({"migration": {"job": job, "verify": job, "rollback": job}}),
        ))
        .unwrap_or_else(|p| panic!("{p:?}"));
        let migration = validated.migration.unwrap_or_else(|| panic!("not decoded"));
        assert!(migration.verify.is_some() && migration.rollback.is_some());
    }

    #[test]
    fn a_condition_that_does_not_parse_stalls_naming_the_check() {
        let problems = validate(&spec(json!({
            "prometheus": {"address": "http://prometheus:9090"},
            "verify": [{"name": "errors", "when": ["PostCutover"], "prometheus": {"query": "up", "condition": "result <"}}]
        })))
        .err()
        .unwrap_or_default();
        let text = describe(&problems);
        assert!(
            text.contains("spec.verify[0].prometheus.condition") && text.contains("errors"),
            "{text}"
        );
    }

    #[test]
    fn owned_config_cannot_also_be_backed_up() {
        let problems = validate(&spec(json!({
            "config": {"configMaps": [{"name": "shop-config", "data": {"a": "1"}}]},
            "backup": {"configMaps": ["shop-config"]}
        })))
        .err()
        .unwrap_or_default();
        assert!(describe(&problems).contains("shop-config"));
    }
}
