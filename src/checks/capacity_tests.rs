use k8s_openapi::api::core::v1::{
    Container, NodeCondition, NodeSpec, NodeStatus, PodStatus, ResourceQuotaSpec,
    ResourceQuotaStatus, ResourceRequirements, Taint,
};
use kube::api::ObjectMeta;
use proptest::prelude::*;

use super::*;
use crate::checks::Outcome;

fn map(pairs: &[(&str, &str)]) -> ResourceMap {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        resources: Some(ResourceRequirements {
            requests: (!requests.is_empty()).then(|| map(requests)),
            limits: (!limits.is_empty()).then(|| map(limits)),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

fn spec(requests: &[(&str, &str)]) -> PodSpec {
    PodSpec {
        containers: vec![container("app", requests, &[])],
        ..PodSpec::default()
    }
}

fn node(name: &str, allocatable: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(map(allocatable)),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..NodeCondition::default()
            }]),
            ..NodeStatus::default()
        }),
    }
}

fn running_on(node: &str, requests: &[(&str, &str)]) -> Pod {
    Pod {
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..spec(requests)
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

fn quota(name: &str, hard: &[(&str, &str)], used: &[(&str, &str)]) -> ResourceQuota {
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(map(hard)),
            ..ResourceQuotaSpec::default()
        }),
        status: Some(ResourceQuotaStatus {
            hard: Some(map(hard)),
            used: Some(map(used)),
        }),
    }
}

#[test]
fn pod_resources_follow_the_scheduler() {
    let spec = PodSpec {
        containers: vec![
            container(
                "app",
                &[("cpu", "250m"), ("memory", "64Mi")],
                &[("cpu", "1")],
            ),
            // A limit without a request stands in for the request.
            container("sidecar", &[], &[("cpu", "100m"), ("memory", "32Mi")]),
        ],
        init_containers: Some(vec![container("migrate", &[("cpu", "2")], &[])]),
        overhead: Some(map(&[("memory", "1Mi")])),
        ..PodSpec::default()
    };
    let r = pod_resources(&spec).unwrap();
    assert_eq!(r.requests["cpu"], 2000, "the init container's 2 beats 350m");
    assert_eq!(r.requests["memory"], 97 * (1 << 20) * 1000);
    assert_eq!(r.limits["cpu"], 1100);
}

#[test]
fn a_bad_quantity_names_its_container() {
    let err = pod_resources(&spec(&[("cpu", "lots")])).unwrap_err();
    assert!(err.contains("container app request cpu"), "{err}");
}

#[test]
fn fits_when_quota_and_nodes_have_room() {
    let report = fits(
        &spec(&[("cpu", "500m"), ("memory", "128Mi")]),
        3,
        &[quota(
            "compute",
            &[("requests.cpu", "4"), ("pods", "10")],
            &[("requests.cpu", "2"), ("pods", "4")],
        )],
        &[
            node("a", &[("cpu", "1"), ("memory", "1Gi"), ("pods", "110")]),
            node("b", &[("cpu", "1"), ("memory", "1Gi"), ("pods", "110")]),
        ],
        &[],
    )
    .unwrap();
    assert!(report.fits, "{report:?}");
    assert_eq!(report.measurement(3).outcome, Outcome::Pass);
}

#[test]
fn quota_headroom_is_hard_minus_used() {
    let report = fits(
        &spec(&[("cpu", "500m"), ("memory", "128Mi")]),
        3,
        &[quota(
            "compute",
            &[
                ("requests.cpu", "2"),
                ("limits.memory", "1Gi"),
                ("count/pods", "5"),
            ],
            &[("requests.cpu", "1"), ("count/pods", "3")],
        )],
        &[node("a", &[("cpu", "8"), ("memory", "8Gi")])],
        &[],
    )
    .unwrap();
    assert!(!report.fits);
    assert_eq!(
        report.shortfalls,
        [
            "ResourceQuota compute: count/pods needs 3 (3 × 1), 2 left of 5",
            "ResourceQuota compute limits limits.memory, but the pods do not set it, so they would be rejected",
            "ResourceQuota compute: requests.cpu needs 1500m (3 × 500m), 1 left of 2",
        ]
    );
}

#[test]
fn node_room_subtracts_running_pods_and_skips_unschedulable_nodes() {
    let mut cordoned = node("cordoned", &[("cpu", "8")]);
    if let Some(spec) = cordoned.spec.as_mut() {
        spec.unschedulable = Some(true);
    }
    let mut tainted = node("gpu", &[("cpu", "8")]);
    if let Some(spec) = tainted.spec.as_mut() {
        spec.taints = Some(vec![Taint {
            key: "gpu".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }]);
    }
    let nodes = [
        node("a", &[("cpu", "2"), ("memory", "1Gi")]),
        cordoned,
        tainted,
    ];
    let pods = [
        running_on("a", &[("cpu", "1500m")]),
        running_on("b", &[("cpu", "1")]),
    ];
    let report = fits(&spec(&[("cpu", "250m")]), 3, &[], &nodes, &pods).unwrap();
    assert_eq!(report.node_room, 2);
    assert_eq!(
        report.shortfalls,
        [
            "the nodes have room for 2 of 3 new pods (a: 2 (cpu), cordoned: 0 (cordoned), gpu: 0 (taint gpu:NoSchedule))"
        ]
    );
    assert_eq!(report.measurement(3).outcome, Outcome::Fail);

    // A toleration opens the tainted node.
    let mut tolerant = spec(&[("cpu", "250m")]);
    tolerant.tolerations = Some(vec![Toleration {
        key: Some("gpu".into()),
        operator: Some("Exists".into()),
        ..Toleration::default()
    }]);
    assert!(fits(&tolerant, 3, &[], &nodes, &pods).unwrap().fits);
}

#[test]
fn node_selector_and_pod_count_limit_room() {
    let mut labelled = node("a", &[("cpu", "8"), ("pods", "3")]);
    labelled.metadata.labels = Some([("zone".to_owned(), "x".to_owned())].into());
    let other = node("b", &[("cpu", "8"), ("pods", "3")]);
    let mut template = spec(&[("cpu", "100m")]);
    template.node_selector = Some([("zone".to_owned(), "x".to_owned())].into());
    let pods = [running_on("a", &[])];
    let report = fits(&template, 3, &[], &[labelled, other], &pods).unwrap();
    assert_eq!(report.node_room, 2);
    assert!(
        report.shortfalls[0].contains("a: 2 (pods)")
            && report.shortfalls[0].contains("b: 0 (nodeSelector zone=x)"),
        "{:?}",
        report.shortfalls
    );
}

proptest! {
    /// Asking for fewer replicas never turns a fit into a misfit.
    #[test]
    fn fewer_replicas_still_fit(
        cpu_m in 1u32..2000, replicas in 1u32..20, fewer in 0u32..20,
        node_cpus in proptest::collection::vec(0u32..8, 0..4), quota_cpu in 0u32..20,
    ) {
        let template = spec(&[("cpu", &format!("{cpu_m}m"))]);
        let nodes: Vec<Node> = node_cpus.iter().enumerate()
            .map(|(i, c)| node(&format!("n{i}"), &[("cpu", &c.to_string())])).collect();
        let quotas = [quota("q", &[("requests.cpu", &quota_cpu.to_string())], &[])];
        let many = fits(&template, replicas, &quotas, &nodes, &[]).unwrap();
        let few = fits(&template, replicas.min(fewer.max(1)), &quotas, &nodes, &[]).unwrap();
        if many.fits { prop_assert!(few.fits); }
        // The node room matches the arithmetic.
        let room: u64 = node_cpus.iter().map(|c| u64::from(*c) * 1000 / u64::from(cpu_m)).sum();
        prop_assert_eq!(u64::from(many.node_room), room.min(u64::from(replicas)));
    }
}
