//! Private instances of the services a scenario restarts, each on a free loopback port in a temporary folder of
//! its own: a PostgreSQL cluster (initdb and pg_ctl), a tansu broker (the binary `scripts/stack` built) and an
//! Alertmanager (flags as in `scripts/stack`). The shared stack is never touched. Each stops when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{DEADLINE, free_port, poll};

/// A temporary folder for one instance, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(kind: &str) -> Folder {
        let dir = std::env::temp_dir().join(format!("costsim-faults-{kind}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(output.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// A PostgreSQL cluster of its own (trust auth, user postgres), stopped and started at will.
pub struct PrivatePostgres {
    folder: Folder,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PrivatePostgres {
    /// The server binaries: `COSTSIM_PG_BINDIR`, else the newest /usr/lib/postgresql/*/bin.
    fn bindir() -> PathBuf {
        if let Some(dir) = std::env::var_os("COSTSIM_PG_BINDIR") {
            return dir.into();
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (or set COSTSIM_PG_BINDIR)")
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin)| bin.join("pg_ctl").exists())
            .collect();
        versions.sort();
        versions.pop().expect("a PostgreSQL version with pg_ctl").1
    }

    /// A command of the server binaries, run as the `postgres` user when we are root (initdb refuses root).
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.folder.0.join("data")
    }

    /// Creates the cluster and starts it.
    pub fn start() -> PrivatePostgres {
        let folder = Folder::new("postgres");
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&folder.0));
        }
        let pg = PrivatePostgres { folder, bin: Self::bindir(), port: free_port() };
        run(pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(pg.data()));
        pg.start_again();
        pg
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off -c max_connections=100",
            self.port,
            self.folder.0.display()
        );
        let log = self.folder.0.join("postgres.log");
        run(self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
            .arg(&log)
            .arg("-D")
            .arg(self.data()));
    }

    /// Stops the server the fast way: every session is terminated, as in a restart by an operator.
    pub fn stop(&self) {
        run(self.command("pg_ctl").args(["stop", "-w", "-t", "60", "-m", "fast", "-D"]).arg(self.data()));
    }

    /// A URL of the `postgres` database of this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["stop", "-m", "immediate", "-D"]).arg(self.data()).output();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Sends SIGTERM, waits up to 10 s, then SIGKILL.
fn stop_child(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A tansu broker of its own, with its SQLite storage kept across restarts.
pub struct PrivateBroker {
    folder: Folder,
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PrivateBroker {
    /// Starts a broker and waits until it answers a metadata request.
    pub async fn start() -> PrivateBroker {
        let mut broker = PrivateBroker { folder: Folder::new("tansu"), child: None, port: free_port() };
        broker.start_again().await;
        broker
    }

    /// The address clients use.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) broker on the same port and storage, and waits until it answers.
    pub async fn start_again(&mut self) {
        let address = self.brokers();
        // The log outlives the folder, for a post-mortem.
        let log = super::processor::log_dir().join(format!("tansu-{}.log", self.port));
        let child = crate::tansu::start(&self.folder.0, &log, &address, &address, false);
        self.child = Some(child);
        let brokers = self.brokers();
        poll("the private broker answers a metadata request", DEADLINE, async || {
            let brokers = brokers.clone();
            tokio::task::spawn_blocking(move || {
                let client: BaseConsumer =
                    rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().ok()?;
                client.fetch_metadata(None, Duration::from_secs(2)).ok().map(|_| ())
            })
            .await
            .unwrap()
        })
        .await;
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// Kills the broker at once (SIGKILL), as a crashed machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An Alertmanager of its own, configured as `scripts/stack` configures the shared one.
pub struct PrivateAlertmanager {
    folder: Folder,
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PrivateAlertmanager {
    /// Starts it and waits until `/-/ready` answers.
    pub async fn start() -> PrivateAlertmanager {
        let folder = Folder::new("alertmanager");
        std::fs::write(
            folder.0.join("alertmanager.yml"),
            "route:\n  receiver: default\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: default\n",
        )
        .unwrap();
        let mut am = PrivateAlertmanager { folder, child: None, port: free_port() };
        am.start_again().await;
        am
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) Alertmanager on the same port and storage, and waits until it is ready.
    pub async fn start_again(&mut self) {
        let dir = &self.folder.0;
        let log = super::processor::log_dir().join(format!("alertmanager-{}.log", self.port));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child =
            Command::new(std::env::var_os("COSTSIM_ALERTMANAGER_BIN").unwrap_or("prometheus-alertmanager".into()))
                .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
                .arg(format!("--storage.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("prometheus-alertmanager starts (scripts/stack up installs it)");
        self.child = Some(child);
        let ready = format!("{}/-/ready", self.url());
        poll("the private Alertmanager is ready", DEADLINE, async || {
            let answer = reqwest::get(&ready).await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

impl Drop for PrivateAlertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A socat TCP proxy in a process group of its own, so that SIGSTOP freezes it and every connection it forked: the
/// connections through it go half-open (both ends' sockets stay open, nothing flows), which a terminated backend or
/// a closed socket never produces.
pub struct StoppableProxy {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl StoppableProxy {
    /// Forwards 127.0.0.1:<fresh port> to `upstream` (`host:port`), and waits until it accepts.
    pub async fn start(upstream: &str) -> StoppableProxy {
        use std::os::unix::process::CommandExt as _;
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("TCP:{upstream}"))
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .expect("socat (scripts/stack up installs it)");
        poll("the proxy accepts", DEADLINE, async || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        })
        .await;
        StoppableProxy { child, port }
    }

    fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        run(Command::new("kill").args([signal, "--", &group]));
    }

    /// Freezes the proxy and its connections.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets them go on.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for StoppableProxy {
    fn drop(&mut self) {
        // Continued first: a stopped process group would hold its sockets until the kill is delivered.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-CONT", "--", &group]).status();
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
