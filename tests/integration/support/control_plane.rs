//! The control plane shared by all tests of one run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

use super::prometheus::Prometheus;
use super::repo_root;

/// A running cluster: the local control plane from `e2e/cluster/up.sh`, or
/// the cluster named by `KUBECONFIG` when `LOCKKEEPER_EXTERNAL_CLUSTER=1`.
#[derive(Debug)]
pub struct TestCluster {
    state_dir: PathBuf,
    kubeconfig: PathBuf,
    config: Config,
    external: bool,
    prometheus_url: Option<String>,
    prometheus_targets_dir: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
}

static CLUSTER: OnceCell<Result<TestCluster, String>> = OnceCell::const_new();

/// The cluster every test of this run shares, started on first use.
///
/// With `LOCKKEEPER_CLUSTER_STATE` set to a directory that `up.sh` has
/// written, that cluster is used as it is. Otherwise `e2e/cluster/up.sh`
/// runs once (building the binaries on a machine without the cache) and
/// starts, or reuses, the cluster in `LOCKKEEPER_CLUSTER_STATE` or
/// `<repo>/.lockkeeper/cluster`; it is left running for the next run.
pub async fn cluster() -> &'static TestCluster {
    select_tls_provider();
    match CLUSTER.get_or_init(TestCluster::connect).await {
        Ok(cluster) => cluster,
        Err(message) => panic!("no test cluster: {message}"),
    }
}

impl TestCluster {
    async fn connect() -> Result<TestCluster, String> {
        let state_dir = match std::env::var_os("LOCKKEEPER_CLUSTER_STATE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => repo_root().join(".lockkeeper/cluster"),
        };
        let env_file = state_dir.join("env");
        let given = std::env::var_os("LOCKKEEPER_CLUSTER_STATE").is_some_and(|d| !d.is_empty());
        if !(given && env_file.exists()) {
            let dir = state_dir.clone();
            tokio::task::spawn_blocking(move || run_up(&dir))
                .await
                .map_err(|e| format!("running e2e/cluster/up.sh: {e}"))??;
        }
        let env = read_env_file(&env_file)?;
        let var = |key: &str| env.get(key).filter(|v| !v.is_empty()).cloned();

        let kubeconfig = PathBuf::from(
            var("KUBECONFIG")
                .ok_or_else(|| format!("{} sets no KUBECONFIG", env_file.display()))?,
        );
        let config = load_config(&kubeconfig).await?;
        let cluster = TestCluster {
            state_dir,
            kubeconfig,
            config,
            external: var("LOCKKEEPER_EXTERNAL_CLUSTER").as_deref() == Some("1"),
            prometheus_url: var("LOCKKEEPER_PROMETHEUS_URL"),
            prometheus_targets_dir: var("LOCKKEEPER_PROMETHEUS_TARGETS_DIR").map(PathBuf::from),
            bin_dir: var("LOCKKEEPER_BIN_DIR").map(PathBuf::from),
        };
        let version = cluster.client().apiserver_version().await.map_err(|e| {
            format!(
                "the API server in {} does not answer: {e}",
                cluster.kubeconfig.display()
            )
        })?;
        eprintln!(
            "test cluster: Kubernetes {} ({}), KUBECONFIG={}",
            version.git_version,
            if cluster.external {
                "external"
            } else {
                "local"
            },
            cluster.kubeconfig.display()
        );
        Ok(cluster)
    }

    /// A cluster-admin client for the calling test's runtime.
    pub fn client(&self) -> Client {
        client_from(self.config.clone(), "the cluster admin")
    }

    /// The admin connection settings, for building special-purpose clients.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client whose requests the API server treats as coming from the
    /// ServiceAccount `namespace/name` (admin impersonation: the
    /// ServiceAccount need not exist, and RBAC decides as for the real one).
    pub fn client_as_service_account(&self, namespace: &str, name: &str) -> Client {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ]);
        client_from(
            config,
            &format!("impersonating ServiceAccount {namespace}/{name}"),
        )
    }

    /// A one-hour token for an existing ServiceAccount from the TokenRequest
    /// API, for the API server's default audience.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| {
                panic!("requesting a token for ServiceAccount {namespace}/{name}: {e}")
            });
        match issued.status.and_then(|status| status.token) {
            Some(token) if !token.is_empty() => token,
            _ => panic!("the TokenRequest for {namespace}/{name} returned no token"),
        }
    }

    /// A client authenticated only by a bearer token issued to the existing
    /// ServiceAccount `namespace/name`, as a pod running as it would be.
    pub async fn token_for_service_account(&self, namespace: &str, name: &str) -> Client {
        let token = self.service_account_token(namespace, name).await;
        self.client_with_token(&token)
    }

    /// A client that authenticates with `token` and nothing else.
    pub fn client_with_token(&self, token: &str) -> Client {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
        client_from(config, "a bearer token")
    }

    /// Whether this is a cluster named by `KUBECONFIG` rather than the local
    /// control plane, where kwok's pod behaviours are not available.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// The admin kubeconfig file, for tools such as kubectl and helm.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where `up.sh` keeps this cluster's state, logs and PIDs.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The directory holding kubectl and helm built for this cluster
    /// (`None` for an external cluster).
    pub fn bin_dir(&self) -> Option<&Path> {
        self.bin_dir.as_deref()
    }

    /// A handle on the Prometheus started next to the cluster.
    pub fn prometheus(&self) -> Prometheus {
        match (&self.prometheus_url, &self.prometheus_targets_dir) {
            (Some(url), Some(dir)) => Prometheus::new(url.clone(), dir.clone()),
            _ => panic!(
                "no Prometheus recorded in {}; start the cluster with e2e/cluster/up.sh",
                self.state_dir.join("env").display()
            ),
        }
    }
}

/// Selects rustls's crypto provider explicitly, as the operator's main does,
/// so a second provider pulled in by some dependency can never make kube
/// clients panic.
fn select_tls_provider() {
    static SELECTED: std::sync::Once = std::sync::Once::new();
    SELECTED.call_once(|| {
        // An Err means a provider was installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client_from(config: Config, who: &str) -> Client {
    Client::try_from(config)
        .unwrap_or_else(|e| panic!("building a Kubernetes client as {who}: {e}"))
}

async fn load_config(kubeconfig: &Path) -> Result<Config, String> {
    // Read this file explicitly: a KUBECONFIG in the test's environment may
    // name some other cluster.
    let parsed = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("reading kubeconfig {}: {e}", kubeconfig.display()))?;
    Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("loading kubeconfig {}: {e}", kubeconfig.display()))
}

/// Runs `up.sh` with its progress going straight to the terminal, since a
/// first run on a fresh machine builds Kubernetes for several minutes.
fn run_up(state_dir: &Path) -> Result<(), String> {
    let script = repo_root().join("e2e/cluster/up.sh");
    let output = Command::new(&script)
        .arg(state_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed ({}); its log is above. Retry it by hand to see the failure again.",
            script.display(),
            state_dir.display(),
            output.status
        ))
    }
}

/// Reads the `export KEY='value'` lines that `up.sh` writes.
fn read_env_file(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading {}: {e}; is the cluster up?", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| {
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            (key.to_owned(), value.to_owned())
        })
        .collect())
}
