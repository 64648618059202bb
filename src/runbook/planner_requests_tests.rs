//! Examples of what interrupts a run — abort, promote and retry requests,
//! a newer spec — played in the same `Sim`.

use super::*;

#[test]
fn abort_after_cutover_moves_traffic_back_before_scaling_down() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.requests.abort = Some(2);
    let effects = sim.run(60);
    assert_eq!(effects, vec![point(Blue), scale_to_zero(Green)]);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.status.active_color, Some(Blue));
}

#[test]
fn abort_after_the_old_color_scaled_down_restores_it_from_its_record() {
    let mut sim = Sim::ready(spec(
        json!({"strategy": {"blueGreen": {"scaleDownDelay": "0s"}}}),
    ));
    sim.ship("v2");
    sim.run_until(60, |s| s.effects.last() == Some(&scale_to_zero(Blue)));
    sim.requests.abort = Some(2);
    let effects = sim.run(60);
    let restore = Effect::RestoreDeployment {
        color: Blue,
        revision: 1,
    };
    assert_eq!(effects, vec![restore, point(Blue), scale_to_zero(Green)]);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
}

#[test]
fn abort_before_anything_changed_fails_the_revision_and_it_stays_failed() {
    let mut sim = Sim::new(spec(json!({})));
    assert_eq!(sim.step().effect, Some(record(1)));
    sim.requests.abort = Some(1);
    let plan = sim.step();
    assert_eq!(
        (plan.effect, plan.status.phase),
        (None, Some(Phase::Failed))
    );
    assert_eq!(plan.status.stable_revision, None);
    for _ in 0..5 {
        let plan = sim.step();
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::Failed))
        );
    }
    assert!(sim.blue.is_none() && sim.green.is_none());
}

#[test]
fn an_abort_naming_another_revision_does_nothing() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.requests.abort = Some(1);
    sim.ship("v2");
    sim.run(60);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(2), Some(Phase::Ready))
    );
}

#[test]
fn without_auto_cutover_only_a_promote_naming_the_revision_cuts_over() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"autoCutover": false}}}),
    ));
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    sim.requests.promote = Some(1);
    sim.run(60);
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    for _ in 0..10 {
        let plan = sim.step();
        sim.now += secs(60);
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::CuttingOver))
        );
    }
    let message = current_message(&sim.status).unwrap_or_default();
    assert!(message.contains("lockkeeper.dev/promote=2"), "{message}");
    assert_eq!(sim.traffic, ServiceState::Selects(Some(Blue)));
    sim.requests.promote = Some(2);
    assert_eq!(sim.step().effect, Some(point(Green)));
}

#[test]
fn retry_restarts_a_rolled_back_revision_under_the_next_number() {
    let mut sim = Sim::ready(spec(json!({})));
    let v2 = hash_of(&spec(json!({"version": "v2"})));
    sim.bad.insert(v2.clone());
    sim.ship("v2");
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    sim.requests.retry = Some(1);
    for _ in 0..3 {
        let plan = sim.step();
        assert_eq!(
            (plan.effect, plan.status.phase),
            (None, Some(Phase::RolledBack))
        );
    }
    sim.requests.retry = Some(2);
    sim.bad.clear();
    let plan = sim.step();
    assert_eq!(plan.effect, Some(record(3)));
    assert_eq!(plan.status.revision_hash, Some(v2));
    assert!(plan.notes.iter().any(|n| n.reason == "RetryRequested"));
    sim.run(60);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}

#[test]
fn a_newer_spec_before_anything_changed_ends_the_run_and_starts_the_next() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    assert_eq!(sim.step().effect, Some(record(2)));
    sim.ship("v3");
    let plan = sim.step();
    assert_eq!(plan.effect, Some(record(3)));
    let ended = plan.status.history.iter().find(|h| h.revision == 2);
    assert!(
        ended.is_some_and(|h| h.result == Phase::Failed),
        "{ended:?}"
    );
    sim.run(60);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}

#[test]
fn a_newer_spec_mid_deploy_rolls_the_run_back_before_starting_the_next() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(10, |s| s.effects.last() == Some(&apply(Green, 2)));
    sim.edit(|s| {
        s.version = "v3".into();
        s.workload.replicas = 3;
    });
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![
            scale_to_zero(Green),
            record(3),
            apply(Green, 3),
            point(Green),
            scale_to_zero(Blue)
        ]
    );
    let results: Vec<_> = sim
        .status
        .history
        .iter()
        .map(|h| (h.revision, h.result))
        .collect();
    assert_eq!(results[..2], [(3, Phase::Ready), (2, Phase::RolledBack)]);
}

#[test]
fn a_newer_spec_while_waiting_for_a_promote_rolls_back_without_one() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"autoCutover": false}}}),
    ));
    sim.requests.promote = Some(1);
    sim.run(60);
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    sim.ship("v3");
    sim.requests.promote = Some(2);
    let effects = sim.run_until(60, |s| s.status.revision == Some(3));
    assert_eq!(effects, vec![scale_to_zero(Green), record(3)]);
}

#[test]
fn a_rollback_is_recorded_before_anything_is_undone() {
    let mut sim = Sim::new(spec(
        json!({"strategy": {"blueGreen": {"autoCutover": false}}}),
    ));
    sim.run_until(60, |s| s.status.phase == Some(Phase::CuttingOver));
    sim.ship("v2");
    let plan = sim.step();
    assert_eq!(plan.status.phase, Some(Phase::RollingBack));
    assert_eq!(plan.effect, None, "the decision is written before any undo");
    assert!(plan.requeue.is_some());
    // The first undo happens, its status write is lost, and the newer spec
    // is withdrawn: the recorded rollback still finishes rather than the
    // old run promoting a color that is now scaled to zero.
    let plan = sim.reconcile(Crash::AfterEffect);
    assert_eq!(plan.effect, Some(scale_to_zero(Blue)));
    sim.ship("v1");
    sim.requests.promote = Some(1);
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.effects.last(), Some(&scale_to_zero(Blue)));
}

#[test]
fn a_newer_spec_after_cutover_moves_traffic_back_first() {
    let mut sim = Sim::ready(spec(json!({})));
    sim.ship("v2");
    sim.run_until(60, |s| s.status.phase == Some(Phase::Observing));
    sim.ship("v3");
    let effects = sim.run(60);
    assert_eq!(effects[..3], [point(Blue), scale_to_zero(Green), record(3)]);
    assert_eq!(
        (sim.status.revision, sim.status.phase),
        (Some(3), Some(Phase::Ready))
    );
}
