//! The operator binary, run as a user runs it: a separate process with a
//! kubeconfig, scoped to the test's namespace so parallel tests never see
//! each other's Releases.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::control_plane::cluster;

/// A running `lockkeeper run` process; killed on drop.
pub struct Operator {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    metrics_port: u16,
}

/// How to start an operator process.
#[derive(Clone, Debug, Default)]
pub struct OperatorOptions {
    /// Namespaces to watch (all when empty).
    pub namespaces: Vec<String>,
    /// Run leader election on a Lease in this namespace.
    pub leader_lease: Option<(String, String)>,
    /// Identity in the election.
    pub identity: Option<String>,
    /// Extra arguments.
    pub extra: Vec<String>,
    /// Kubeconfig to use instead of the admin one (e.g. a ServiceAccount's).
    pub kubeconfig: Option<PathBuf>,
}

impl Operator {
    /// Starts an operator that watches only `namespace`, without leader
    /// election.
    pub async fn for_namespace(namespace: &str) -> Operator {
        Self::start(OperatorOptions {
            namespaces: vec![namespace.to_owned()],
            ..OperatorOptions::default()
        })
        .await
    }

    /// Starts an operator process with `options`.
    pub async fn start(options: OperatorOptions) -> Operator {
        let cluster = cluster().await;
        let metrics_port = free_port();
        let mut args = vec![
            "run".to_owned(),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
        ];
        if !options.namespaces.is_empty() {
            args.push(format!("--namespace={}", options.namespaces.join(",")));
        }
        match &options.leader_lease {
            Some((ns, name)) => {
                args.push("--leader-elect=true".into());
                args.push(format!("--lease-namespace={ns}"));
                args.push(format!("--lease-name={name}"));
            }
            None => args.push("--leader-elect=false".into()),
        }
        if let Some(identity) = &options.identity {
            args.push(format!("--identity={identity}"));
        }
        args.extend(options.extra.iter().cloned());
        let kubeconfig = options
            .kubeconfig
            .clone()
            .unwrap_or_else(|| cluster.kubeconfig_path().to_path_buf());
        args.push(format!("--kubeconfig-path={}", kubeconfig.display()));
        let log = cluster
            .state_dir()
            .join("logs")
            .join(format!("operator-{metrics_port}.log"));
        let mut operator = Operator {
            child: None,
            args,
            log,
            metrics_port,
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        let (args, kubeconfig): (Vec<String>, Option<String>) = {
            let mut kubeconfig = None;
            let args = self
                .args
                .iter()
                .filter_map(|a| match a.strip_prefix("--kubeconfig-path=") {
                    Some(path) => {
                        kubeconfig = Some(path.to_owned());
                        None
                    }
                    None => Some(a.clone()),
                })
                .collect();
            (args, kubeconfig)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening operator log {}: {e}", self.log.display()));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning log handle: {e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockkeeper"));
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if let Some(k) = kubeconfig {
            command.env("KUBECONFIG", k);
        }
        command.env(
            "RUST_LOG",
            std::env::var("LOCKKEEPER_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting the operator: {e}"));
        self.child = Some(child);
    }

    /// Kills the process at once (SIGKILL): a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to shut down (SIGTERM) and waits for it.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The base URL of /metrics, /healthz and /readyz.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}
