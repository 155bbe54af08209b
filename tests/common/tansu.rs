//! The tansu binary `scripts/stack up` built, for tests that start a broker of their own; shared by the
//! integration and fault suites (each includes this file with `#[path]`).

use std::path::{Path, PathBuf};

/// `COSTSIM_TANSU_BIN`, else the binary under the stack's cache folders.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("COSTSIM_TANSU_BIN") {
        return bin.into();
    }
    let mut caches: Vec<PathBuf> = std::env::var_os("COSTSIM_CACHE_DIR").map(PathBuf::from).into_iter().collect();
    caches.push("/var/cache/costsim-breaker".into());
    if let Some(home) = std::env::var_os("HOME") {
        caches.push(Path::new(&home).join(".cache/costsim-breaker"));
    }
    caches
        .iter()
        .map(|c| c.join("tansu/bin/tansu"))
        .find(|b| b.exists())
        .expect("the tansu binary (run `scripts/stack up` once, or set COSTSIM_TANSU_BIN)")
}

/// Starts a tansu broker of its own with its SQLite storage in `dir`, appending its output to `log`, listening on
/// `listen` and advertising `advertise` (`host:port` each), with SASL required when `authentication`.
pub fn start(dir: &Path, log: &Path, listen: &str, advertise: &str, authentication: bool) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = std::process::Command::new(binary());
    // tansu reads unset options from the environment (clap `env`): none of the stack's may leak in.
    cmd.current_dir(dir)
        .env_remove("SCHEMA_REGISTRY")
        .env_remove("CLUSTER_ID")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "warn")
        .args(["broker", "--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertise}")])
        .args(["--storage-engine", "sqlite://tansu.db?maintenance_interval=5s"]);
    if authentication {
        cmd.arg("--authentication");
    }
    cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("tansu starts")
}
