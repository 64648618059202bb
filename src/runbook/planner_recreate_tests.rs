//! Examples of the Recreate runbook — stop the old color, wait for its
//! pods, deploy the other one — played in the same `Sim`.

use super::*;

#[test]
fn recreate_stops_the_old_color_and_waits_for_its_pods_before_deploying() {
    let mut sim = Sim::ready(recreate(json!({})));
    assert_eq!(sim.status.active_color, Some(Blue));
    sim.ship("v2");
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![
            record(2),
            scale_to_zero(Blue),
            apply(Green, 2),
            point(Green)
        ]
    );
    assert_eq!(sim.status.active_color, Some(Green));
    // And the next revision goes back to blue, stopping green first.
    sim.ship("v3");
    let effects = sim.run(60);
    assert_eq!(
        effects,
        vec![record(3), scale_to_zero(Green), apply(Blue, 3), point(Blue)]
    );
}

#[test]
fn recreate_counts_pods_even_when_the_stop_was_not_recorded() {
    let mut sim = Sim::ready(recreate(json!({})));
    sim.ship("v2");
    assert_eq!(sim.step().effect, Some(record(2)));
    let plan = sim.reconcile(Crash::AfterEffect);
    assert_eq!(plan.effect, Some(scale_to_zero(Blue)));
    // Blue's pods are still terminating; the checks in `Sim` refuse an
    // apply of green before they are gone.
    sim.run(60);
    assert_eq!(sim.status.phase, Some(Phase::Ready));
}

#[test]
fn recreate_without_a_service_still_alternates_colors() {
    let mut sim = Sim::ready(recreate(
        json!({"strategy": {"recreate": {"service": null}}}),
    ));
    sim.ship("v2");
    assert_eq!(
        sim.run(60),
        vec![record(2), scale_to_zero(Blue), apply(Green, 2)]
    );
}

#[test]
fn recreate_rollback_brings_the_stopped_version_back_from_its_record() {
    let mut sim = Sim::ready(recreate(json!({})));
    sim.bad.insert(hash_of(&recreate(json!({"version": "v2"}))));
    sim.ship("v2");
    let effects = sim.run(60);
    let restore = Effect::RestoreDeployment {
        color: Blue,
        revision: 1,
    };
    assert_eq!(
        effects,
        vec![
            record(2),
            scale_to_zero(Blue),
            apply(Green, 2),
            restore,
            scale_to_zero(Green)
        ]
    );
    assert_eq!(sim.status.phase, Some(Phase::RolledBack));
    assert_eq!(sim.traffic, ServiceState::Selects(Some(Blue)));
}
