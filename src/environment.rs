//! Which Environment governs a namespace. Pure: namespace labels and the
//! Environments in, the one that applies (or none, or a conflict) out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use crate::api::{Environment, PrometheusEndpoint, ReleaseSpec, RollbackPolicy};

/// The outcome of matching a namespace against every Environment.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// No Environment selects the namespace: no environment rules apply.
    None,
    /// Exactly one does: its name and defaults.
    One {
        /// The Environment's name.
        name: String,
        /// What its releases inherit.
        defaults: Defaults,
        /// Its freeze windows.
        freeze: Vec<crate::api::environment::FreezeWindow>,
        /// Its promotion gate.
        promotion: Option<crate::api::environment::Promotion>,
        /// Its approval gate.
        approval: Option<crate::api::environment::Approval>,
    },
    /// More than one does; their names, sorted. The release cannot know
    /// whose rules to obey and stalls.
    Conflict(Vec<String>),
}

/// The Environment whose selector matches `labels`.
pub fn resolve(labels: &BTreeMap<String, String>, environments: &[Environment]) -> Resolution {
    let mut matching: Vec<&Environment> = environments
        .iter()
        .filter(|e| selects(&e.spec.namespace_selector, labels))
        .collect();
    matching.sort_by_key(|e| e.name_any());
    match matching.as_slice() {
        [] => Resolution::None,
        [one] => {
            let defaults = one.spec.defaults.clone().unwrap_or_default();
            Resolution::One {
                name: one.name_any(),
                defaults: Defaults {
                    prometheus: defaults.prometheus,
                    rollback: defaults.rollback,
                },
                freeze: one.spec.freeze.clone(),
                promotion: one.spec.promotion.clone(),
                approval: one.spec.approval.clone().filter(|a| a.required),
            }
        }
        many => Resolution::Conflict(many.iter().map(|e| e.name_any()).collect()),
    }
}

/// Whether a label selector matches `labels`, with the API's semantics: all
/// of matchLabels and every expression must hold; an empty selector
/// matches everything.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator the API server would have refused: match nothing.
            _ => false,
        }
    });
    exact && expressions
}

/// A promotion cycle `start` is on or leads to (`a → b → a`), as the
/// names along it; promotion order must be a chain or a tree.
pub fn promotion_cycle(environments: &[Environment], start: &str) -> Option<Vec<String>> {
    fn visit(
        environments: &[Environment],
        name: &str,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == name) {
            let mut cycle = path[at..].to_vec();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        let env = environments.iter().find(|e| e.name_any() == name)?;
        path.push(name.to_owned());
        let from = env.spec.promotion.iter().flat_map(|p| p.from.iter());
        for upstream in from {
            if let Some(cycle) = visit(environments, upstream, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    visit(environments, start, &mut Vec::new())
}

/// A label selector as the API's query syntax (`a=b,c in (d,e),!f`).
pub fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// What a release inherits from its Environment when it says nothing itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defaults {
    /// The Prometheus server checks query.
    pub prometheus: Option<PrometheusEndpoint>,
    /// The rollback policy.
    pub rollback: Option<RollbackPolicy>,
}

impl Defaults {
    /// The defaults of the resolved Environment, if any.
    pub fn of(resolution: &Resolution) -> Self {
        match resolution {
            Resolution::One { defaults, .. } => defaults.clone(),
            _ => Self::default(),
        }
    }
}

/// The spec with the Environment's defaults filled in where the Release
/// says nothing. The Release's own settings always win.
pub fn with_defaults(spec: &ReleaseSpec, defaults: &Defaults) -> ReleaseSpec {
    let mut spec = spec.clone();
    if spec.prometheus.is_none() {
        spec.prometheus = defaults.prometheus.clone();
    }
    if let Some(env) = &defaults.rollback {
        let own = spec.rollback.get_or_insert_with(RollbackPolicy::default);
        own.automatic = own.automatic.or(env.automatic);
        own.restore_config = own.restore_config.or(env.restore_config);
        own.run_migration_rollback = own.run_migration_rollback.or(env.run_migration_rollback);
        own.restore_volumes = own.restore_volumes.or(env.restore_volumes);
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str, selector: serde_json::Value) -> Environment {
        let spec = serde_json::from_value(json!({"namespaceSelector": selector}))
            .unwrap_or_else(|e| panic!("{e}"));
        Environment::new(name, spec)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn one_none_or_a_conflict() {
        let envs = [
            env(
                "production",
                json!({"matchLabels": {"lockkeeper.dev/environment": "production"}}),
            ),
            env(
                "staging",
                json!({"matchLabels": {"lockkeeper.dev/environment": "staging"}}),
            ),
            env(
                "all-prod",
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}]}),
            ),
        ];
        let prod = labels(&[("lockkeeper.dev/environment", "production")]);
        assert!(
            matches!(resolve(&prod, &envs), Resolution::One { name, .. } if name == "production")
        );
        assert_eq!(resolve(&labels(&[]), &envs), Resolution::None);
        let both = labels(&[
            ("lockkeeper.dev/environment", "production"),
            ("tier", "prod"),
        ]);
        assert_eq!(
            resolve(&both, &envs),
            Resolution::Conflict(vec!["all-prod".into(), "production".into()])
        );
    }

    #[test]
    fn promotion_cycles_are_found_with_their_names() {
        let promoting = |name: &str, from: &[&str]| {
            let spec = serde_json::from_value(json!({
                "namespaceSelector": {},
                "promotion": {"from": from},
            }))
            .unwrap_or_else(|e| panic!("{e}"));
            Environment::new(name, spec)
        };
        let envs = [
            promoting("prod", &["staging"]),
            promoting("staging", &["test"]),
            promoting("test", &["staging"]),
            env("dev", json!({})),
        ];
        assert_eq!(
            promotion_cycle(&envs, "prod"),
            Some(vec!["staging".into(), "test".into(), "staging".into()])
        );
        assert_eq!(promotion_cycle(&envs, "dev"), None);
        let chain = [
            promoting("prod", &["staging"]),
            promoting("staging", &["dev"]),
        ];
        assert_eq!(promotion_cycle(&chain, "prod"), None);
    }

    #[test]
    fn selectors_become_queries() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"env": "staging"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "old", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap_or_default();
        assert_eq!(selector_query(&sel), "env=staging,tier in (a,b),!old");
    }

    #[test]
    fn selector_operators_follow_the_api() {
        let sel = |v: serde_json::Value| -> LabelSelector {
            serde_json::from_value(v).unwrap_or_default()
        };
        let l = labels(&[("a", "1")]);
        assert!(selects(&sel(json!({})), &l));
        assert!(selects(
            &sel(json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]})),
            &l
        ));
        assert!(selects(
            &sel(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["2"]}]})),
            &l
        ));
        assert!(!selects(
            &sel(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists"}], "matchLabels": {"c": "3"}})
            ),
            &l
        ));
    }

    #[test]
    fn defaults_fill_only_what_the_release_leaves_unset() {
        let spec: ReleaseSpec = serde_json::from_value(json!({
            "version": "v1",
            "workload": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}},
            "strategy": {"type": "Recreate"},
            "rollback": {"restoreConfig": false}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let defaults = Defaults {
            prometheus: Some(PrometheusEndpoint {
                address: "http://prom:9090".into(),
                bearer_token_secret_ref: None,
            }),
            rollback: Some(RollbackPolicy {
                automatic: Some(false),
                restore_config: Some(true),
                ..RollbackPolicy::default()
            }),
        };
        let effective = with_defaults(&spec, &defaults);
        assert_eq!(
            effective.prometheus.map(|p| p.address).as_deref(),
            Some("http://prom:9090")
        );
        let rollback = effective.rollback.unwrap_or_default();
        assert_eq!(rollback.automatic, Some(false), "inherited");
        assert_eq!(
            rollback.restore_config,
            Some(false),
            "the release's own setting wins"
        );
    }
}
