//! A private PostgreSQL cluster for TLS tests (its certificates come from [`Pki`]).
//!
//! [`Cluster`] runs `initdb` and `pg_ctl` (Debian's `/usr/lib/postgresql/<version>/bin`, else `PATH`; as the
//! OS user `postgres` when the tests run as root, since `initdb` refuses root) in a temporary folder, on a free
//! port of 127.0.0.1 and 127.0.0.2, with `ssl` on or off, and stops it and removes the folder when dropped.
//! `scripts/stack up` installs the server binaries when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use crate::pki::Pki;
use crate::pki::{TempDir, run};

/// The user whose `pg_hba.conf` line demands a client certificate (`hostssl ... cert`), the CN of the client's.
pub const CERT_USER: &str = crate::pki::CLIENT_CN;

/// Whether the cluster answers an SSLRequest with TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ssl {
    On,
    Off,
}

/// A running cluster of our own; stopped (immediately) and removed when dropped.
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    /// Its port, on 127.0.0.1 and 127.0.0.2.
    pub port: u16,
}

/// When the tests run as root, the OS user the cluster runs as (initdb refuses root), with its uid and gid.
fn cluster_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid only reads the process's effective user id.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
        assert!(out.status.success(), "running as root, the cluster runs as the OS user postgres, which is missing");
        String::from_utf8(out.stdout).unwrap().trim().parse::<u32>().unwrap()
    };
    Some((id("-u"), id("-g")))
}

/// The folder of `initdb` and `pg_ctl`: the newest Debian server version's, else the one on `PATH`.
fn server_bin() -> PathBuf {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    debian.sort_by_key(|bin| {
        let version = bin.parent().and_then(Path::file_name).and_then(|v| v.to_str()).unwrap_or_default().to_owned();
        version.parse::<u32>().unwrap_or_default()
    });
    if let Some(bin) = debian.pop() {
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists())
        .expect("no PostgreSQL server binaries (initdb): scripts/stack up installs Debian's postgresql")
}

impl Cluster {
    /// Creates and starts a cluster with the test's server certificate; `pg_ctl -w` returns once it accepts
    /// connections (or fails within its timeout).
    pub fn start(pki: &Pki, ssl: Ssl) -> Cluster {
        let owner = cluster_owner();
        let dir = TempDir::new("costsim-pg");
        let bin = server_bin();
        // A port free on every address, so on both loopback addresses the cluster listens on.
        let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
        let give = |path: &Path| {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        };
        give(&dir.0);
        for (from, to) in [("server.crt", "server.crt"), ("server.key", "server.key"), ("ca.crt", "client-ca.crt")] {
            let target = dir.0.join(to);
            std::fs::copy(pki.path(from), &target).unwrap();
            give(&target);
        }
        // PostgreSQL refuses a key others may read.
        std::fs::set_permissions(dir.0.join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let cluster = Cluster { dir, bin, port };
        let data = cluster.data();
        let data = data.to_str().unwrap();
        run(
            &mut cluster.as_owner("initdb", &["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]),
            "initdb",
        );
        let root = cluster.dir.0.display();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1,127.0.0.2'\nunix_socket_directories = '{root}'\n\
             ssl = {}\nssl_cert_file = '{root}/server.crt'\nssl_key_file = '{root}/server.key'\n\
             ssl_ca_file = '{root}/client-ca.crt'\nfsync = off\nshared_buffers = 16MB\nmax_connections = 40\n",
            if ssl == Ssl::On { "on" } else { "off" }
        );
        let mut postgresql_conf = std::fs::read_to_string(cluster.data().join("postgresql.conf")).unwrap();
        postgresql_conf.push_str(&conf);
        std::fs::write(cluster.data().join("postgresql.conf"), postgresql_conf).unwrap();
        // First match wins: the certificate user must present a certificate, everyone else is trusted.
        let hba = format!(
            "local all all trust\nhostssl all {CERT_USER} 127.0.0.0/8 cert\nhost all {CERT_USER} 127.0.0.0/8 reject\n\
             host all all 127.0.0.0/8 trust\n"
        );
        std::fs::write(cluster.data().join("pg_hba.conf"), hba).unwrap();
        let log = cluster.dir.0.join("server.log");
        let log = log.to_str().unwrap();
        let start = cluster.as_owner("pg_ctl", &["-D", data, "-l", log, "-w", "-t", "60", "start"]).output().unwrap();
        if !start.status.success() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("pg_ctl start failed ({}): {}\n{log}", start.status, String::from_utf8_lossy(&start.stdout));
        }
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    /// A server program, run as the cluster's OS user.
    fn as_owner(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if cluster_owner().is_some() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.args(args).current_dir(&self.dir.0);
        cmd
    }

    /// A URL of the cluster's database `postgres` as `user` at `host`, with the query parameters given.
    pub fn url(&self, host: &str, user: &str, params: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("postgres://{user}@{host}:{}/postgres", self.port)).unwrap();
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        url.to_string()
    }

    /// A URL of the cluster's database `postgres` through its Unix socket (`host=` the folder, as libpq reads
    /// it), with the query parameters given.
    pub fn socket_url(&self, params: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("postgres://postgres@localhost/postgres?port={}", self.port)).unwrap();
        url.query_pairs_mut().append_pair("host", self.dir.0.to_str().unwrap()).extend_pairs(params);
        url.to_string()
    }

    /// The tests' own plaintext connection, as the superuser, on one session (so `pg_backend_pid()` is all of
    /// it).
    pub async fn admin(&self) -> PgPool {
        let url = self.url("127.0.0.1", "postgres", &[("sslmode", "disable"), ("application_name", "pg_tls test")]);
        PgPoolOptions::new().max_connections(1).connect(&url).await.expect("the cluster accepts its superuser")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.as_owner("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]).output();
    }
}
