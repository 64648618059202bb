//! The `lockkeeper` binary: `run` the controller, or print the `crd`s.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use lockkeeper::{
    controller::{self, Context, Settings},
    leader::{LeaderElector, LeaseConfig},
    metrics::Metrics,
    server::{self, Health},
    telemetry::{self, LogFormat},
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "lockkeeper",
    version,
    about = "Runs the whole release runbook from one declarative Release"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespaces to watch (repeat or comma-separate); all when unset.
    #[arg(
        long = "namespace",
        env = "LOCKKEEPER_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// How long finished runbook Jobs (migrations, backups, checks) are
    /// kept before they are deleted.
    #[arg(long, env = "LOCKKEEPER_FINISHED_JOB_TTL", default_value = "1h")]
    finished_job_ttl: lockkeeper::api::Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "LOCKKEEPER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(
        long,
        env = "LOCKKEEPER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Elect a leader among replicas through a Lease; only the leader acts.
    #[arg(long, env = "LOCKKEEPER_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockkeeper-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "lockkeeper-leader")]
    lease_name: String,
    /// This replica's identity in the election (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How long the leader tries to renew before stepping down.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often to try to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<lockkeeper::api::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match lockkeeper::crd::to_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rendering the CRDs failed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            telemetry::init(args.log_format, "info,kube=warn,tower=warn,hyper=warn");
            // Fails only when a provider is already installed, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "starting the async runtime failed");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("connecting to the Kubernetes API: {e}"))?;
    let metrics = Metrics::new().map_err(|e| format!("registering metrics: {e}"))?;
    let health = Health::default();
    let shutdown = CancellationToken::new();

    let listener = server::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let settings = Settings {
        namespaces: args.namespaces.clone(),
        finished_job_ttl: args.finished_job_ttl.into(),
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        settings,
        Some(identity.clone()),
    ));

    let result = if args.leader_elect {
        let lease = LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity,
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        };
        if let Err(message) = lease.validate() {
            shutdown.cancel();
            let _ = finish(server).await;
            return Err(message);
        }
        let mut elector = LeaderElector::new(client, lease);
        // A standby replica is healthy and ready: it serves metrics and waits.
        health.set_ready(true);
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.cancelled() => return finish(server).await,
        }
        metrics.leader.set(1);
        let outcome = tokio::select! {
            () = controller::run(ctx, shutdown.clone()) => Ok(()),
            () = elector.hold() => Err("lost the leader lease; exiting so that a fresh start rejoins as standby".to_owned()),
        };
        metrics.leader.set(0);
        shutdown.cancel();
        elector.release().await;
        outcome
    } else {
        health.set_ready(true);
        metrics.leader.set(1);
        controller::run(ctx, shutdown.clone()).await;
        Ok(())
    };
    finish(server).await?;
    result
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), String> {
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("metrics server failed: {e}")),
        Err(e) => Err(format!("metrics server task failed: {e}")),
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
    token.cancel();
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "lockkeeper".into());
    format!("{host}-{}", std::process::id())
}
