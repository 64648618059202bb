//! Prometheus metrics, all prefixed `lockkeeper_`.

use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The operator's metrics and the registry that serves them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations run, by resource kind.
    pub reconciliations: IntCounterVec,
    /// Reconcile failures, by kind and error category.
    pub failures: IntCounterVec,
    /// Reconcile durations, by kind.
    pub reconcile_duration: HistogramVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Releases the operator stopped on because their spec cannot be run.
    pub stalled: IntCounterVec,
    /// Writes the operator made to the API server, by resource.
    pub api_writes: IntCounterVec,
    /// Time one Service selector switch took (a cutover or a switch back).
    pub traffic_switch: HistogramVec,
    /// Revisions that ended, by release and result (Ready, RolledBack,
    /// Failed).
    pub releases: IntCounterVec,
    /// Revisions that changed what runs, by release and outcome (success,
    /// failure): the deployments of the DORA figures.
    pub deployments: IntCounterVec,
    /// Rollbacks, by release and reason (the step that failed, Aborted or
    /// Superseded).
    pub rollbacks: IntCounterVec,
    /// Time from a failure being detected to the previous version serving
    /// again, by release (DORA time to restore).
    pub time_to_restore: HistogramVec,
    /// Time each runbook step took, by step and result.
    pub step_duration: HistogramVec,
    /// Notifications, by channel kind, event and result (delivered, failed).
    pub notifications: IntCounterVec,
    /// When each Release entered its current phase (unix seconds).
    pub phase_since: GaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new("lockkeeper_reconciliations_total", "Reconciliations run"),
            &["kind"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "lockkeeper_reconcile_failures_total",
                "Reconciliations that ended in an error, by error category",
            ),
            &["kind", "category"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "lockkeeper_reconcile_duration_seconds",
                "Time one reconciliation took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "lockkeeper_leader",
            "1 while this replica holds the leader Lease and acts, 0 on standby",
        )?;
        let stalled = IntCounterVec::new(
            Opts::new(
                "lockkeeper_stalled_total",
                "Times a Release was found unrunnable, by reason",
            ),
            &["reason"],
        )?;
        let api_writes = IntCounterVec::new(
            Opts::new(
                "lockkeeper_api_writes_total",
                "Writes made to the API server, by resource",
            ),
            &["resource"],
        )?;
        let traffic_switch = HistogramVec::new(
            HistogramOpts::new(
                "lockkeeper_traffic_switch_seconds",
                "Time from deciding to move traffic to the Service selector being written",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            &["direction"],
        )?;
        let releases = IntCounterVec::new(
            Opts::new(
                "lockkeeper_releases_total",
                "Revisions that ended, by release and result",
            ),
            &["namespace", "release", "result"],
        )?;
        let deployments = IntCounterVec::new(
            Opts::new(
                "lockkeeper_deployments_total",
                "Revisions that changed what runs, by release and outcome (success or failure); DORA deployment frequency and change failure rate",
            ),
            &["namespace", "release", "outcome"],
        )?;
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "lockkeeper_rollbacks_total",
                "Rollbacks, by release and reason (the failed step, Aborted or Superseded)",
            ),
            &["namespace", "release", "reason"],
        )?;
        let time_to_restore = HistogramVec::new(
            HistogramOpts::new(
                "lockkeeper_time_to_restore_seconds",
                "Time from a revision's failure to the previous version serving again; DORA time to restore",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            &["namespace", "release"],
        )?;
        let step_duration = HistogramVec::new(
            HistogramOpts::new(
                "lockkeeper_step_duration_seconds",
                "Time each runbook step took, by step and result",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            &["step", "result"],
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "lockkeeper_notifications_total",
                "Notifications sent, by channel kind, event and result (delivered or failed)",
            ),
            &["channel", "event", "result"],
        )?;
        let phase_since = GaugeVec::new(
            Opts::new(
                "lockkeeper_release_phase_since_seconds",
                "When each Release entered its current phase, as unix time",
            ),
            &["namespace", "release", "phase"],
        )?;
        registry.register(Box::new(phase_since.clone()))?;
        registry.register(Box::new(releases.clone()))?;
        registry.register(Box::new(deployments.clone()))?;
        registry.register(Box::new(rollbacks.clone()))?;
        registry.register(Box::new(time_to_restore.clone()))?;
        registry.register(Box::new(step_duration.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(traffic_switch.clone()))?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(stalled.clone()))?;
        Ok(Self {
            registry,
            reconciliations,
            failures,
            reconcile_duration,
            leader,
            stalled,
            api_writes,
            traffic_switch,
            releases,
            deployments,
            rollbacks,
            time_to_restore,
            step_duration,
            notifications,
            phase_since,
        })
    }

    /// Starts timing one reconciliation; the duration is recorded on drop.
    pub fn reconcile_timer(&self, kind: &'static str) -> ReconcileTimer {
        self.reconciliations.with_label_values(&[kind]).inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.reconcile_duration.clone(),
            kind,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The registry, for modules that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Records a reconciliation's duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: HistogramVec,
    kind: &'static str,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram
            .with_label_values(&[self.kind])
            .observe(self.start.elapsed().as_secs_f64());
    }
}
