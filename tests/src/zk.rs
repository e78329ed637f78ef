//! A real ZooKeeper for tests and `cargo xtask zk`: one server or an ensemble from Debian's `zookeeper` package on loopback ports, with fault injection.
//!
//! [`ZooKeeper`] owns its JVMs and a temp dir: dropping it stops every process it started (by
//! pid) and removes the dir, unless the thread is panicking (a failed test), in which case the
//! dir with every server's `zookeeper.log` is kept and its path printed. Each server gets its
//! own `server-<id>/` with `conf/zoo.cfg`, `data/` and `zookeeper.log`.
//!
//! [`DetachedZooKeeper`] is the same servers started in their own session so that they outlive
//! the process that started them (`cargo xtask zk start`); their pids and ports are kept in a
//! state file in their dir so that a later process can find, check and stop them.
//!
//! Readiness means more than `ruok`: ZooKeeper answers `imok` as soon as its port is open,
//! before it serves requests, so start-up also waits until `srvr` reports a `Mode:` (the server
//! has loaded its data and, in an ensemble, joined a quorum).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The server jar of Debian's `libzookeeper-java`; its manifest's `Class-Path` names its dependencies.
pub const DEFAULT_ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// The slf4j binding and log4j jars (pulled in by `libzookeeper-java`) that make the server write a log.
const LOGGING_JARS: [&str; 2] = ["/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"];

/// What to tell a developer or CI whose machine lacks the server or a JRE.
pub const INSTALL_HINT: &str =
    "install it with `apt-get install -y zookeeper` (Debian's ZooKeeper server; it pulls in a JRE)";

/// The only address the fixture binds: tests never expose a server beyond the machine.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long one four-letter-word exchange may take before it counts as no answer.
pub const FOUR_LETTER_WORD_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often start-up and the `wait_*` helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How many times start-up picks fresh ports when another process took one in between.
const PORT_ATTEMPTS: usize = 3;

/// The name of the state file a detached server set keeps in its dir.
const DETACHED_STATE_FILE: &str = "zookeeper.json";

/// Settings for starting ZooKeeper; small time values by default so that tests run fast.
#[derive(Clone, Debug)]
pub struct ZooKeeperBuilder {
    n_servers: usize,
    tick_time: Duration,
    init_limit_ticks: u32,
    sync_limit_ticks: u32,
    min_session_timeout: Duration,
    max_session_timeout: Duration,
    force_sync: bool,
    jvm_max_heap_mb: u32,
    start_timeout: Duration,
    keep_dir: bool,
    java: Option<PathBuf>,
    zookeeper_jar: PathBuf,
    netns: Option<Placement>,
}

/// Where a server runs inside a network namespace ([`ZooKeeperBuilder::in_netns`]).
#[derive(Clone, Debug)]
struct Placement {
    namespace: String,
    address: Ipv4Addr,
    client_port: u16,
}

impl Default for ZooKeeperBuilder {
    fn default() -> Self {
        ZooKeeperBuilder {
            n_servers: 1,
            tick_time: Duration::from_millis(500),
            init_limit_ticks: 10,
            sync_limit_ticks: 5,
            min_session_timeout: Duration::from_millis(1000),
            max_session_timeout: Duration::from_secs(30),
            force_sync: false,
            jvm_max_heap_mb: 256,
            start_timeout: Duration::from_secs(60),
            keep_dir: false,
            java: None,
            zookeeper_jar: PathBuf::from(DEFAULT_ZOOKEEPER_JAR),
            netns: None,
        }
    }
}

impl ZooKeeperBuilder {
    /// Starts from the defaults: one server, `tickTime=500`, sessions of 1–30 s, no fsync, 256 MiB heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of servers: 1 runs a standalone server, more run an ensemble.
    pub fn servers(mut self, n_servers: usize) -> Self {
        self.n_servers = n_servers;
        self
    }

    /// Sets ZooKeeper's `tickTime`, the unit of its heartbeats and of `initLimit`/`syncLimit`.
    pub fn tick_time(mut self, tick_time: Duration) -> Self {
        self.tick_time = tick_time;
        self
    }

    /// Sets `initLimit` and `syncLimit`, in ticks: how long followers may take to connect and sync to a leader.
    pub fn quorum_limits(mut self, init_limit_ticks: u32, sync_limit_ticks: u32) -> Self {
        self.init_limit_ticks = init_limit_ticks;
        self.sync_limit_ticks = sync_limit_ticks;
        self
    }

    /// Sets `minSessionTimeout` and `maxSessionTimeout`, the bounds the server clamps a client's session timeout to.
    pub fn session_timeout_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_session_timeout = min;
        self.max_session_timeout = max;
        self
    }

    /// Turns fsync of the transaction log (`forceSync`) on or off; off by default for speed.
    pub fn force_sync(mut self, force_sync: bool) -> Self {
        self.force_sync = force_sync;
        self
    }

    /// Sets the JVM's maximum heap (`-Xmx`) in MiB.
    pub fn jvm_max_heap_mb(mut self, jvm_max_heap_mb: u32) -> Self {
        self.jvm_max_heap_mb = jvm_max_heap_mb;
        self
    }

    /// Sets how long start-up (and a restart) may take before it fails; generous by default for busy CI machines.
    pub fn start_timeout(mut self, start_timeout: Duration) -> Self {
        self.start_timeout = start_timeout;
        self
    }

    /// Keeps the temp dir after drop even when the test passed.
    pub fn keep_dir(mut self, keep_dir: bool) -> Self {
        self.keep_dir = keep_dir;
        self
    }

    /// Uses this `java` instead of `$JAVA_HOME/bin/java` or the one on `PATH`.
    pub fn java(mut self, java: impl Into<PathBuf>) -> Self {
        self.java = Some(java.into());
        self
    }

    /// Uses this server jar instead of Debian's [`DEFAULT_ZOOKEEPER_JAR`].
    pub fn zookeeper_jar(mut self, zookeeper_jar: impl Into<PathBuf>) -> Self {
        self.zookeeper_jar = zookeeper_jar.into();
        self
    }

    /// Runs the (single) server inside the network namespace `namespace` (`ip netns exec`),
    /// listening on `address:client_port` there; the fixture's own checks (`ruok`, `srvr`) are
    /// made from a thread inside that namespace. For [`crate::netns`]: each namespace is its own
    /// network, so the fixed port is free.
    pub fn in_netns(mut self, namespace: impl Into<String>, address: Ipv4Addr, client_port: u16) -> Self {
        self.netns = Some(Placement { namespace: namespace.into(), address, client_port });
        self
    }

    /// Starts the servers in a new temp dir and waits until every one serves requests.
    ///
    /// The servers die with the thread that calls this (`PR_SET_PDEATHSIG`), so that a test
    /// binary killed by a signal leaks no JVM: call it on the thread that owns the fixture.
    pub fn start(self) -> Result<ZooKeeper> {
        let launcher = Launcher::new(self)?;
        let dir = tempfile::Builder::new().prefix("zbs-zk-").tempdir().context("create a temp dir for ZooKeeper")?;
        let (specs, children) = match launcher.launch_all(dir.path(), Detach::No) {
            Ok(launched) => launched,
            Err(error) => {
                let kept = dir.keep();
                return Err(error.context(format!("start ZooKeeper (its dir is kept in {})", kept.display())));
            }
        };
        let servers = specs
            .into_iter()
            .zip(children)
            .map(|(spec, child)| Server {
                spec,
                process: Mutex::new(ServerProcess { child: Some(child), paused: false }),
            })
            .collect();
        Ok(ZooKeeper { launcher, servers, dir: Some(dir) })
    }

    /// Starts the servers in `dir` in their own session, so that they outlive this process, and records them there.
    ///
    /// `dir` must not exist or be empty. On failure the processes are stopped and `dir` is kept for their logs.
    pub fn start_detached(self, dir: &Path) -> Result<DetachedZooKeeper> {
        let launcher = Launcher::new(self)?;
        if dir.exists() {
            let mut entries = fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))?;
            ensure!(entries.next().is_none(), "{} is not empty", dir.display());
        }
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))?;
        let (specs, children) = launcher
            .launch_all(&dir, Detach::Yes)
            .with_context(|| format!("start ZooKeeper (its dir is kept in {})", dir.display()))?;
        let servers = specs
            .iter()
            .zip(&children)
            .map(|(spec, child)| DetachedServer {
                id: spec.id,
                pid: child.id(),
                client_port: spec.client_port,
                config_path: spec.config_path(),
                log_path: spec.log_path(),
            })
            .collect();
        // The children are not waited for: they are in their own session and init reaps them
        // once this process has exited.
        drop(children);
        let detached = DetachedZooKeeper { dir, servers };
        detached.save()?;
        Ok(detached)
    }
}

/// What a server is doing, as far as the fixture knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// The process runs (it may or may not be serving yet).
    Running,
    /// The process is stopped with SIGSTOP.
    Paused,
    /// No process: stopped, killed, or exited by itself.
    Stopped,
}

/// A server's role as `srvr` reports it on its `Mode:` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerMode {
    Standalone,
    Leader,
    Follower,
    Observer,
    ReadOnly,
}

impl ServerMode {
    /// Reads the mode from a `srvr` or `stat` reply; an error if the server does not serve requests.
    pub fn from_srvr_reply(reply: &str) -> Result<ServerMode> {
        let Some(mode) = reply.lines().find_map(|line| line.strip_prefix("Mode:")) else {
            bail!("the server reports no mode (not serving requests?): {:?}", reply.trim());
        };
        match mode.trim() {
            "standalone" => Ok(ServerMode::Standalone),
            "leader" => Ok(ServerMode::Leader),
            "follower" => Ok(ServerMode::Follower),
            "observer" => Ok(ServerMode::Observer),
            "read-only" => Ok(ServerMode::ReadOnly),
            other => bail!("unknown server mode {other:?}"),
        }
    }
}

/// Sends a four-letter word (`ruok`, `srvr`, `stat`, `mntr`, ...) to a server and returns its whole reply.
///
/// `timeout` bounds the connect and the whole exchange: a paused server makes this fail.
pub fn four_letter_word(addr: SocketAddr, word: &str, timeout: Duration) -> Result<String> {
    ensure!(
        word.len() == 4 && word.bytes().all(|byte| byte.is_ascii_lowercase()),
        "{word:?} is not a four-letter word"
    );
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to ZooKeeper at {addr}"))?;
    stream.set_write_timeout(Some(timeout)).context("set the write timeout")?;
    stream.write_all(word.as_bytes()).with_context(|| format!("send {word:?} to {addr}"))?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        ensure!(!remaining.is_zero(), "{addr} did not answer {word:?} within {timeout:?}");
        stream.set_read_timeout(Some(remaining)).context("set the read timeout")?;
        let n_read = stream.read(&mut buffer).with_context(|| format!("read the answer to {word:?} from {addr}"))?;
        if n_read == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..n_read]);
    }
    String::from_utf8(reply).with_context(|| format!("decode the answer to {word:?} from {addr}"))
}

/// Whether a server at `addr` answers `ruok` with `imok` within [`FOUR_LETTER_WORD_TIMEOUT`].
pub fn answers_imok(addr: SocketAddr) -> bool {
    matches!(four_letter_word(addr, "ruok", FOUR_LETTER_WORD_TIMEOUT), Ok(reply) if reply == "imok")
}

/// One or more real ZooKeeper servers on loopback ports, owned by a test and stopped on drop.
///
/// Servers are addressed by index, `0..n_servers()`; server `i` has `myid` `i + 1`. A bad
/// index is a bug in the test and panics.
pub struct ZooKeeper {
    launcher: Launcher,
    servers: Vec<Server>,
    /// `None` only during drop, after the dir was kept or removed.
    dir: Option<tempfile::TempDir>,
}

impl ZooKeeper {
    /// Returns a builder to change the defaults.
    pub fn builder() -> ZooKeeperBuilder {
        ZooKeeperBuilder::new()
    }

    /// Starts one standalone server with the defaults.
    pub fn start() -> Result<ZooKeeper> {
        ZooKeeperBuilder::new().start()
    }

    /// Starts a 3-server ensemble with the defaults.
    pub fn start_ensemble() -> Result<ZooKeeper> {
        ZooKeeperBuilder::new().servers(3).start()
    }

    /// How many servers the fixture has, whatever their state.
    pub fn n_servers(&self) -> usize {
        self.servers.len()
    }

    /// The client connect string, `127.0.0.1:port,...`, of every server.
    pub fn connect_string(&self) -> String {
        self.servers.iter().map(|server| server.spec.client_addr().to_string()).collect::<Vec<_>>().join(",")
    }

    /// Server `server`'s client port.
    pub fn client_port(&self, server: usize) -> u16 {
        self.server(server).spec.client_port
    }

    /// Every server's client port, in index order.
    pub fn client_ports(&self) -> Vec<u16> {
        self.servers.iter().map(|server| server.spec.client_port).collect()
    }

    /// Server `server`'s client address.
    pub fn client_addr(&self, server: usize) -> SocketAddr {
        self.servers[server].spec.client_addr()
    }

    /// Server `server`'s process id, if it has a process.
    pub fn pid(&self, server: usize) -> Option<u32> {
        let mut process = self.server(server).lock();
        process.reap();
        process.child.as_ref().map(Child::id)
    }

    /// Server `server`'s state.
    pub fn state(&self, server: usize) -> ServerState {
        self.server(server).lock().state()
    }

    /// The temp dir holding every server's config, data and log.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => Path::new(""),
        }
    }

    /// Server `server`'s log, its JVM's stdout and stderr across restarts.
    pub fn log_path(&self, server: usize) -> PathBuf {
        self.server(server).spec.log_path()
    }

    /// Sends a four-letter word to server `server`, waiting at most [`FOUR_LETTER_WORD_TIMEOUT`].
    pub fn four_letter_word(&self, server: usize, word: &str) -> Result<String> {
        self.servers[server].spec.four_letter_word(word)
    }

    /// Server `server`'s mode, from `srvr`.
    pub fn mode(&self, server: usize) -> Result<ServerMode> {
        let reply = self.four_letter_word(server, "srvr")?;
        ServerMode::from_srvr_reply(&reply)
            .with_context(|| format!("read the mode of ZooKeeper server {}", self.server(server).spec.id))
    }

    /// The index of the one running server that reports itself leader, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.n_servers())
            .filter(|&server| self.state(server) == ServerState::Running)
            .filter(|&server| matches!(self.mode(server), Ok(ServerMode::Leader)))
            .collect();
        match leaders[..] {
            [leader] => Some(leader),
            _ => None,
        }
    }

    /// Waits until exactly one running server reports itself leader and returns its index.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            ensure!(
                Instant::now() < deadline,
                "no single ZooKeeper leader within {timeout:?}; logs in {}",
                self.dir().display()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until server `server` answers `ruok` and serves requests (`srvr` reports a mode).
    pub fn wait_serving(&self, server: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let server = self.server(server);
        loop {
            let ready = {
                let mut process = server.lock();
                let Some(child) = process.child.as_mut() else {
                    bail!("ZooKeeper server {} has no process", server.spec.id);
                };
                server.spec.readiness(child, true)?
            };
            if ready {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "ZooKeeper server {} did not serve within {timeout:?}; its log is {}",
                server.spec.id,
                server.spec.log_path().display()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops server `server` gracefully (SIGTERM, SIGKILL after a grace period) and reaps it.
    pub fn stop_server(&self, server: usize) -> Result<()> {
        let server = self.server(server);
        let mut process = server.lock();
        process.terminate()?;
        process.wait_or_kill(STOP_GRACE)
    }

    /// Kills server `server` with SIGKILL, as a crash would, and reaps it.
    pub fn kill_server(&self, server: usize) -> Result<()> {
        let server = self.server(server);
        let mut process = server.lock();
        let Some(child) = process.child.as_mut() else {
            bail!("ZooKeeper server {} is not running", server.spec.id);
        };
        child.kill().with_context(|| format!("kill ZooKeeper server {}", server.spec.id))?;
        process.wait_or_kill(STOP_GRACE)
    }

    /// Freezes server `server` with SIGSTOP: its sockets stay open but it answers nothing.
    pub fn pause_server(&self, server: usize) -> Result<()> {
        let server = self.server(server);
        let mut process = server.lock();
        ensure!(process.state() == ServerState::Running, "ZooKeeper server {} is not running", server.spec.id);
        process.signal(Signal::SIGSTOP)?;
        process.paused = true;
        // SIGSTOP takes effect asynchronously: wait until every thread is stopped, or a request
        // sent right after this call could still be answered.
        if let Some(pid) = process.child.as_ref().map(Child::id) {
            wait_all_threads_stopped(pid, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Thaws server `server` with SIGCONT after [`ZooKeeper::pause_server`].
    pub fn resume_server(&self, server: usize) -> Result<()> {
        let server = self.server(server);
        let mut process = server.lock();
        ensure!(process.state() == ServerState::Paused, "ZooKeeper server {} is not paused", server.spec.id);
        process.signal(Signal::SIGCONT)?;
        process.paused = false;
        Ok(())
    }

    /// Starts a stopped server again with the same ports and data, and waits until it is ready.
    ///
    /// Ready means it answers `imok` and, if a quorum of the servers is running with it,
    /// also serves requests; a lone server of an ensemble cannot serve, so it is not waited for.
    /// Like [`ZooKeeperBuilder::start`], the new process dies with the calling thread.
    pub fn start_server(&self, index: usize) -> Result<()> {
        let n_running_others =
            (0..self.n_servers()).filter(|&other| other != index && self.state(other) == ServerState::Running).count();
        let quorum = self.n_servers() / 2 + 1;
        let require_serving = n_running_others + 1 >= quorum;
        let server = self.server(index);
        let mut process = server.lock();
        ensure!(process.state() == ServerState::Stopped, "ZooKeeper server {} still has a process", server.spec.id);
        process.child = Some(self.launcher.spawn(&server.spec, Detach::No)?);
        process.paused = false;
        let deadline = Instant::now() + self.launcher.settings.start_timeout;
        let Some(child) = process.child.as_mut() else {
            bail!("ZooKeeper server {} has no process", server.spec.id);
        };
        server.spec.wait_ready(child, deadline, require_serving)
    }

    /// Stops server `server` if it runs (or is paused), then starts it again as [`ZooKeeper::start_server`] does.
    pub fn restart_server(&self, server: usize) -> Result<()> {
        if self.state(server) != ServerState::Stopped {
            self.stop_server(server)?;
        }
        self.start_server(server)
    }

    fn server(&self, server: usize) -> &Server {
        match self.servers.get(server) {
            Some(found) => found,
            None => panic!("no ZooKeeper server {server}: the fixture has {}", self.servers.len()),
        }
    }
}

impl fmt::Debug for ZooKeeper {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ZooKeeper")
            .field("connect_string", &self.connect_string())
            .field("dir", &self.dir())
            .finish()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        // Every server gets SIGTERM first so that they shut down in parallel.
        for server in &self.servers {
            if let Err(error) = server.lock().terminate() {
                eprintln!("ZooKeeper fixture: {error:#}");
            }
        }
        for server in &self.servers {
            if let Err(error) = server.lock().wait_or_kill(STOP_GRACE) {
                eprintln!("ZooKeeper fixture: {error:#}");
            }
        }
        let Some(dir) = self.dir.take() else {
            return;
        };
        if thread::panicking() {
            let kept = dir.keep();
            eprintln!(
                "ZooKeeper fixture: the test failed; config, data and logs of {} kept in {}",
                self.connect_string(),
                kept.display()
            );
        } else if self.launcher.settings.keep_dir {
            let kept = dir.keep();
            eprintln!("ZooKeeper fixture: dir kept in {}", kept.display());
        } else {
            let path = dir.path().to_path_buf();
            if let Err(error) = dir.close() {
                eprintln!("ZooKeeper fixture: remove {}: {error}", path.display());
            }
        }
    }
}

/// ZooKeeper servers started by [`ZooKeeperBuilder::start_detached`], found again from their state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachedZooKeeper {
    /// The dir holding the state file and every server's config, data and log.
    pub dir: PathBuf,
    pub servers: Vec<DetachedServer>,
}

/// One detached server: enough to find its process again and to check that it is still ours.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachedServer {
    /// The server's `myid`.
    pub id: u32,
    pub pid: u32,
    pub client_port: u16,
    /// The `zoo.cfg` on the process's command line: a pid whose command line lacks it is not ours.
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl DetachedServer {
    /// Whether the recorded pid is still a `java` process running this server's config.
    pub fn is_running(&self) -> Result<bool> {
        is_zookeeper_process(self.pid, &self.config_path)
    }

    /// The server's client address.
    pub fn client_addr(&self) -> SocketAddr {
        client_addr(self.client_port)
    }
}

impl DetachedZooKeeper {
    /// Reads the state file in `dir`; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<DetachedZooKeeper>> {
        let path = dir.join(DETACHED_STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("read {}", path.display())),
        };
        let detached = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        Ok(Some(detached))
    }

    /// The client connect string, `127.0.0.1:port,...`, of every server.
    pub fn connect_string(&self) -> String {
        connect_string(self.servers.iter().map(|server| server.client_port))
    }

    /// Stops every server whose pid is still ours (SIGTERM, SIGKILL after a grace period) and removes the dir.
    ///
    /// A recorded pid that now belongs to another process (or to none) is left alone.
    pub fn stop(self) -> Result<()> {
        for server in &self.servers {
            if server.is_running()? {
                signal_pid(server.pid, Signal::SIGCONT)?;
                signal_pid(server.pid, Signal::SIGTERM)?;
            }
        }
        for server in &self.servers {
            let deadline = Instant::now() + STOP_GRACE;
            while server.is_running()? && Instant::now() < deadline {
                thread::sleep(POLL_INTERVAL);
            }
            if server.is_running()? {
                signal_pid(server.pid, Signal::SIGKILL)?;
                let deadline = Instant::now() + STOP_GRACE;
                while server.is_running()? {
                    ensure!(
                        Instant::now() < deadline,
                        "ZooKeeper server {} (pid {}) survived SIGKILL",
                        server.id,
                        server.pid
                    );
                    thread::sleep(POLL_INTERVAL);
                }
            }
        }
        fs::remove_dir_all(&self.dir).with_context(|| format!("remove {}", self.dir.display()))
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join(DETACHED_STATE_FILE);
        let text = serde_json::to_string_pretty(self).context("encode the ZooKeeper state")?;
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    }
}

/// Whether `pid` is a `java` process with `config_path` on its command line.
pub fn is_zookeeper_process(pid: u32, config_path: &Path) -> Result<bool> {
    let cmdline_path = format!("/proc/{pid}/cmdline");
    let cmdline = match fs::read(&cmdline_path) {
        Ok(cmdline) => cmdline,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error).with_context(|| format!("read {cmdline_path}")),
    };
    let mut args = cmdline.split(|&byte| byte == 0).map(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)));
    let is_java = args.next().and_then(|program| program.file_name()).is_some_and(|name| name == "java");
    Ok(is_java && args.any(|arg| arg == config_path))
}

/// Whether to put a server in its own session (to outlive us) or tie it to the starting thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detach {
    Yes,
    No,
}

/// Where a server listens and keeps its files.
#[derive(Clone, Debug)]
struct ServerSpec {
    id: u32,
    /// Where it listens for clients: loopback, or its address in its namespace.
    address: Ipv4Addr,
    /// The namespace it runs in, if not the test's own.
    namespace: Option<String>,
    client_port: u16,
    quorum_port: u16,
    election_port: u16,
    dir: PathBuf,
}

impl ServerSpec {
    fn config_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }

    fn config_path(&self) -> PathBuf {
        self.config_dir().join("zoo.cfg")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.address, self.client_port))
    }

    /// A four-letter word to the server, from inside its namespace when it has one.
    fn four_letter_word(&self, word: &str) -> Result<String> {
        let address = self.client_addr();
        match &self.namespace {
            Some(namespace) => {
                crate::netns::in_netns(namespace, || four_letter_word(address, word, FOUR_LETTER_WORD_TIMEOUT))?
            }
            None => four_letter_word(address, word, FOUR_LETTER_WORD_TIMEOUT),
        }
    }

    /// One look: `Ok(true)` once ready, an error if the process has exited.
    fn readiness(&self, child: &mut Child, require_serving: bool) -> Result<bool> {
        if let Some(status) = child.try_wait().context("check the ZooKeeper process")? {
            bail!(
                "ZooKeeper server {} exited during start-up ({status}); the end of {}:\n{}",
                self.id,
                self.log_path().display(),
                log_tail(&self.log_path())
            );
        }
        if !matches!(self.four_letter_word("ruok"), Ok(reply) if reply == "imok") {
            return Ok(false);
        }
        if !require_serving {
            return Ok(true);
        }
        let serving = self.four_letter_word("srvr").is_ok_and(|reply| ServerMode::from_srvr_reply(&reply).is_ok());
        Ok(serving)
    }

    fn wait_ready(&self, child: &mut Child, deadline: Instant, require_serving: bool) -> Result<()> {
        while !self.readiness(child, require_serving)? {
            ensure!(
                Instant::now() < deadline,
                "ZooKeeper server {} was not ready in time; the end of {}:\n{}",
                self.id,
                self.log_path().display(),
                log_tail(&self.log_path())
            );
            thread::sleep(POLL_INTERVAL);
        }
        Ok(())
    }
}

/// A server of an owned fixture.
struct Server {
    spec: ServerSpec,
    process: Mutex<ServerProcess>,
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, ServerProcess> {
        // A panic while holding the lock leaves the state consistent (it is a pid and a flag).
        self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The process of a server, if it has one; unreaped, so its pid cannot be reused under us.
struct ServerProcess {
    child: Option<Child>,
    paused: bool,
}

impl ServerProcess {
    /// Forgets a process that has exited by itself.
    fn reap(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.child = None;
                self.paused = false;
            }
        }
    }

    fn state(&mut self) -> ServerState {
        self.reap();
        match (&self.child, self.paused) {
            (None, _) => ServerState::Stopped,
            (Some(_), true) => ServerState::Paused,
            (Some(_), false) => ServerState::Running,
        }
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        match &self.child {
            Some(child) => signal_pid(child.id(), signal),
            None => bail!("no process to send {signal} to"),
        }
    }

    /// Sends SIGTERM, and SIGCONT to a paused process so that it can act on it; no-op without a process.
    fn terminate(&mut self) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM)?;
        if self.paused {
            self.signal(Signal::SIGCONT)?;
            self.paused = false;
        }
        Ok(())
    }

    /// Waits for the process to exit, SIGKILLs it after `grace`, and reaps it.
    fn wait_or_kill(&mut self, grace: Duration) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let pid = child.id();
        wait_or_kill(child, grace).with_context(|| format!("stop ZooKeeper (pid {pid})"))?;
        self.child = None;
        self.paused = false;
        Ok(())
    }
}

fn wait_or_kill(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait().context("wait for the process")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            child.kill().context("kill the process")?;
            return child.wait().context("wait for the killed process");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How to run a server: the checked `java` and class path, and the settings.
struct Launcher {
    java: PathBuf,
    classpath: String,
    settings: ZooKeeperBuilder,
}

impl Launcher {
    /// Checks the settings and that Java and the ZooKeeper package are installed.
    fn new(settings: ZooKeeperBuilder) -> Result<Launcher> {
        ensure!(settings.n_servers >= 1, "a ZooKeeper needs at least one server");
        ensure!(settings.tick_time >= Duration::from_millis(1), "tickTime must be at least 1 ms");
        ensure!(
            settings.min_session_timeout <= settings.max_session_timeout,
            "minSessionTimeout {:?} exceeds maxSessionTimeout {:?}",
            settings.min_session_timeout,
            settings.max_session_timeout
        );
        ensure!(
            settings.init_limit_ticks >= 1 && settings.sync_limit_ticks >= 1,
            "initLimit and syncLimit must be at least one tick"
        );
        ensure!(
            settings.zookeeper_jar.is_file(),
            "the ZooKeeper server is not installed ({} is missing): {INSTALL_HINT}",
            settings.zookeeper_jar.display()
        );
        let java = match &settings.java {
            Some(java) => java.clone(),
            None => find_java()?,
        };
        let version = Command::new(&java)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match version {
            Ok(status) if status.success() => {}
            Ok(status) => bail!("`{} -version` failed ({status}): {INSTALL_HINT}", java.display()),
            Err(error) => bail!("cannot run Java at {}: {error}; {INSTALL_HINT}", java.display()),
        }
        let mut classpath = vec![settings.zookeeper_jar.display().to_string()];
        classpath.extend(LOGGING_JARS.iter().filter(|jar| Path::new(jar).is_file()).map(|jar| jar.to_string()));
        Ok(Launcher { java, classpath: classpath.join(":"), settings })
    }

    /// Picks ports, writes configs, starts every server and waits until all serve.
    ///
    /// Another process may take a picked port before the JVM binds it; then the servers are
    /// stopped and started again on fresh ports, a few times.
    fn launch_all(&self, root: &Path, detach: Detach) -> Result<(Vec<ServerSpec>, Vec<Child>)> {
        let mut attempt = 1;
        loop {
            let specs = self.plan(root)?;
            for spec in &specs {
                self.write_config(spec, &specs)?;
            }
            match self.spawn_and_wait(&specs, detach) {
                Ok(children) => return Ok((specs, children)),
                Err(error) if attempt < PORT_ATTEMPTS && specs.iter().any(lost_a_port) => {
                    eprintln!("ZooKeeper fixture: a port was taken, trying fresh ports: {error:#}");
                    for spec in &specs {
                        let _ = fs::rename(&spec.dir, root.join(format!("attempt-{attempt}-server-{}", spec.id)));
                    }
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn plan(&self, root: &Path) -> Result<Vec<ServerSpec>> {
        let n_servers = self.settings.n_servers;
        if let Some(placement) = &self.settings.netns {
            ensure!(n_servers == 1, "a ZooKeeper in a network namespace has one server, not {n_servers}");
            return Ok(vec![ServerSpec {
                id: 1,
                address: placement.address,
                namespace: Some(placement.namespace.clone()),
                client_port: placement.client_port,
                quorum_port: 0,
                election_port: 0,
                dir: root.join("server-1"),
            }]);
        }
        let ports = free_loopback_ports(3 * n_servers)?;
        Ok((0..n_servers)
            .map(|index| ServerSpec {
                id: index as u32 + 1,
                address: LOOPBACK,
                namespace: None,
                client_port: ports[3 * index],
                quorum_port: ports[3 * index + 1],
                election_port: ports[3 * index + 2],
                dir: root.join(format!("server-{}", index + 1)),
            })
            .collect())
    }

    fn spawn_and_wait(&self, specs: &[ServerSpec], detach: Detach) -> Result<Vec<Child>> {
        let mut children = Vec::with_capacity(specs.len());
        let mut result = Ok(());
        for spec in specs {
            match self.spawn(spec, detach) {
                Ok(child) => children.push(child),
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
        }
        if result.is_ok() {
            let deadline = Instant::now() + self.settings.start_timeout;
            result = specs
                .iter()
                .zip(children.iter_mut())
                .try_for_each(|(spec, child)| spec.wait_ready(child, deadline, true));
        }
        match result {
            Ok(()) => Ok(children),
            Err(error) => {
                for child in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(error)
            }
        }
    }

    fn write_config(&self, spec: &ServerSpec, all: &[ServerSpec]) -> Result<()> {
        let settings = &self.settings;
        for dir in [spec.config_dir(), spec.data_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let mut config = format!(
            "# Written by the zbs-taskd-rs ZooKeeper fixture.\n\
             tickTime={tick}\n\
             initLimit={init}\n\
             syncLimit={sync}\n\
             dataDir={data}\n\
             clientPort={client_port}\n\
             clientPortAddress={client_address}\n\
             minSessionTimeout={min_session}\n\
             maxSessionTimeout={max_session}\n\
             forceSync={force_sync}\n\
             maxClientCnxns=0\n\
             4lw.commands.whitelist=*\n\
             admin.enableServer=false\n\
             preAllocSize=4096\n",
            tick = settings.tick_time.as_millis(),
            init = settings.init_limit_ticks,
            sync = settings.sync_limit_ticks,
            data = spec.data_dir().display(),
            client_port = spec.client_port,
            client_address = spec.address,
            min_session = settings.min_session_timeout.as_millis(),
            max_session = settings.max_session_timeout.as_millis(),
            force_sync = if settings.force_sync { "yes" } else { "no" },
        );
        if all.len() > 1 {
            for peer in all {
                config
                    .push_str(&format!("server.{}={LOOPBACK}:{}:{}\n", peer.id, peer.quorum_port, peer.election_port));
            }
            let myid_path = spec.data_dir().join("myid");
            fs::write(&myid_path, format!("{}\n", spec.id))
                .with_context(|| format!("write {}", myid_path.display()))?;
        }
        let config_path = spec.config_path();
        fs::write(&config_path, config).with_context(|| format!("write {}", config_path.display()))?;
        let log4j_path = spec.config_dir().join("log4j.properties");
        fs::write(
            &log4j_path,
            "log4j.rootLogger=INFO, CONSOLE\n\
             log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n\n",
        )
        .with_context(|| format!("write {}", log4j_path.display()))
    }

    fn spawn(&self, spec: &ServerSpec, detach: Detach) -> Result<Child> {
        let log_path = spec.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("duplicate the log file handle")?;
        let main_class = if self.settings.n_servers == 1 {
            "org.apache.zookeeper.server.ZooKeeperServerMain"
        } else {
            "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        };
        let log4j_config = spec.config_dir().join("log4j.properties");
        let mut command = match &spec.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(&self.java);
                command
            }
            None => Command::new(&self.java),
        };
        command
            .arg(format!("-Xmx{}m", self.settings.jvm_max_heap_mb))
            .arg("-Xms32m")
            .arg("-Xss512k")
            // One GC thread, C1 only and no perf-data file: a faster start and a lighter JVM.
            .arg("-XX:+UseSerialGC")
            .arg("-XX:TieredStopAtLevel=1")
            .arg("-XX:-UsePerfData")
            .arg("-Djava.net.preferIPv4Stack=true")
            .arg("-Djava.awt.headless=true")
            .arg(format!("-Dlog4j.configuration=file:{}", log4j_config.display()))
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            // Peers are on loopback: a connect that takes a second is a paused peer, not a slow network.
            .arg("-Dzookeeper.cnxTimeout=1000")
            .arg("-cp")
            .arg(format!("{}:{}", self.classpath, spec.config_dir().display()))
            .arg(main_class)
            .arg(spec.config_path())
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        match detach {
            Detach::Yes => {
                // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        nix::unistd::setsid().map_err(std::io::Error::from)?;
                        Ok(())
                    });
                }
            }
            Detach::No => {
                let parent = nix::unistd::getpid();
                // SAFETY: the closure runs between fork and exec and only calls prctl(2) and
                // getppid(2), which are async-signal-safe.
                unsafe {
                    command.pre_exec(move || {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                        // The parent may have died before the prctl: then nobody would stop us.
                        if nix::unistd::getppid() != parent {
                            return Err(std::io::Error::other("the test process exited"));
                        }
                        Ok(())
                    });
                }
            }
        }
        command.spawn().with_context(|| format!("start ZooKeeper server {} with {}", spec.id, self.java.display()))
    }
}

/// Whether a failed server's log says that a port it was given was taken.
fn lost_a_port(spec: &ServerSpec) -> bool {
    fs::read_to_string(spec.log_path())
        .is_ok_and(|log| log.contains("Address already in use") || log.contains("BindException"))
}

/// Finds `java`: `$JAVA_HOME/bin/java`, else the first on `PATH`.
fn find_java() -> Result<PathBuf> {
    if let Some(java_home) = std::env::var_os("JAVA_HOME") {
        let java = Path::new(&java_home).join("bin/java");
        if java.is_file() {
            return Ok(java);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("java"))
        .find(|java| java.is_file())
        .ok_or_else(|| anyhow!("no `java` on PATH: {INSTALL_HINT}"))
}

/// Distinct ports that were free on 127.0.0.1 a moment ago: all are bound at once, then released.
fn free_loopback_ports(n_ports: usize) -> Result<Vec<u16>> {
    let listeners = (0..n_ports)
        .map(|_| TcpListener::bind(SocketAddrV4::new(LOOPBACK, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("bind a free loopback port")?;
    listeners.iter().map(|listener| Ok(listener.local_addr().context("read a bound port")?.port())).collect()
}

fn client_addr(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(LOOPBACK, port))
}

fn connect_string(ports: impl Iterator<Item = u16>) -> String {
    ports.map(|port| format!("{LOOPBACK}:{port}")).collect::<Vec<_>>().join(",")
}

/// Waits until every thread of `pid` is in the stopped state (`T` in `/proc/<pid>/task/*/stat`).
fn wait_all_threads_stopped(pid: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let tasks =
            std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("list the threads of pid {pid}"))?;
        let mut all_stopped = true;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses and may hold spaces.
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
            if !matches!(state, Some('T' | 't') | None) {
                all_stopped = false;
                break;
            }
        }
        if all_stopped {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "pid {pid} did not stop within {timeout:?} of SIGSTOP");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal_pid(pid: u32, signal: Signal) -> Result<()> {
    let raw_pid = i32::try_from(pid).with_context(|| format!("convert pid {pid}"))?;
    kill(Pid::from_raw(raw_pid), signal).with_context(|| format!("send {signal} to pid {pid}"))
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    const N_LINES: usize = 30;
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        return String::from("(unreadable log)");
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(N_LINES)..].join("\n")
}
