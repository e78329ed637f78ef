//! systemd's notify protocol as `zbs-taskd` speaks it, over a real `NOTIFY_SOCKET`: the test binds
//! the datagram socket systemd would, starts one daemon against a real ZooKeeper with
//! `WATCHDOG_USEC` set, and reads what arrives: `READY=1` once it serves, `WATCHDOG=1` pings from
//! its event loop, `STOPPING=1` on SIGTERM, and silence while the event loop is wedged.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tests::cluster::daemon_binary;
use tests::cluster_options::{write_daemon_config, DaemonConfig};
use tests::zk::ZooKeeper;
use vip::health::SourceKind;

/// The watchdog period the test hands the daemon: it pings every half of it.
const WATCHDOG_USEC: u64 = 200_000;

/// Generous bound for anything that should happen "soon" on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// One datagram's lines, with the moment the reader got it.
#[derive(Clone, Debug)]
struct Message {
    at: Instant,
    line: String,
}

/// The socket systemd would listen on, read by a thread that keeps every line.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<Message>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> Result<NotifySocket> {
        let socket = UnixDatagram::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        socket.set_read_timeout(Some(Duration::from_millis(50))).context("set the socket's read timeout")?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let messages = messages.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name("notify-reader".to_string())
                .spawn(move || {
                    let mut buffer = vec![0u8; 4096];
                    while !stop.load(std::sync::atomic::Ordering::Acquire) {
                        let Ok(length) = socket.recv(&mut buffer) else { continue };
                        let at = Instant::now();
                        let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                        let mut messages = messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        messages.extend(
                            text.lines()
                                .filter(|line| !line.is_empty())
                                .map(|line| Message { at, line: line.to_string() }),
                        );
                    }
                })
                .context("start the notify reader thread")?
        };
        Ok(NotifySocket { path, messages, stop, reader: Some(reader) })
    }

    fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Lines equal to `line` received in `[from, to)`.
    fn count_between(&self, line: &str, from: Instant, to: Instant) -> usize {
        self.messages().iter().filter(|message| message.line == line && message.at >= from && message.at < to).count()
    }

    /// Waits until `line` has arrived; the moment it did.
    fn wait_for(&self, line: &str, timeout: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            if let Some(message) = self.messages().into_iter().find(|message| message.line == line) {
                return Ok(message.at);
            }
            if started.elapsed() >= timeout {
                bail!("no {line:?} on the notify socket within {timeout:?}; got {:?}", self.lines());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every line so far, for error messages (watchdog pings counted, not listed).
    fn lines(&self) -> Vec<String> {
        let messages = self.messages();
        let n_pings = messages.iter().filter(|message| message.line == "WATCHDOG=1").count();
        let mut lines: Vec<String> =
            messages.into_iter().filter(|message| message.line != "WATCHDOG=1").map(|message| message.line).collect();
        lines.push(format!("({n_pings} x WATCHDOG=1)"));
        lines
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// One `zbs-taskd` started the way systemd starts it: `NOTIFY_SOCKET` and `WATCHDOG_USEC` set.
struct NotifiedDaemon {
    child: Option<Child>,
    exit_status: Option<ExitStatus>,
    dispatcher_port: u16,
    log_path: PathBuf,
    stderr_path: PathBuf,
    socket: NotifySocket,
    // Dropped last: the daemon is stopped before ZooKeeper and before its dir goes.
    zookeeper: ZooKeeper,
    dir_path: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl NotifiedDaemon {
    /// Starts ZooKeeper and the daemon; `extra_env` is added to the daemon's environment.
    fn start(extra_env: &[(&str, &str)]) -> Result<NotifiedDaemon> {
        let binary = daemon_binary()?;
        let zookeeper = ZooKeeper::start().context("start ZooKeeper")?;
        let dir = tempfile::Builder::new().prefix("zbs-notify-").tempdir().context("create the test's temp dir")?;
        let socket = NotifySocket::bind(dir.path().join("notify.sock"))?;
        let address = Ipv4Addr::LOCALHOST;
        let ports = free_ports(address, 2)?;
        let state_dir = dir.path().join("state");
        let health_path = dir.path().join("health");
        let log_path = dir.path().join("taskd.log");
        let stderr_path = dir.path().join("stderr.log");
        fs::write(&health_path, "ok\n").context("write the health file")?;
        let config_path = dir.path().join("taskd.toml");
        let mut config = DaemonConfig {
            node_id: Some("notify-test".to_string()),
            zookeeper_hosts: Some(zookeeper.connect_string()),
            management_address: Some(address.into()),
            data_address: Some(address.into()),
            dispatcher_port: Some(ports[0]),
            runner_port: Some(ports[1]),
            state_dir: Some(state_dir.clone()),
            drain_deadline_ms: Some(2000),
            ..DaemonConfig::default()
        };
        config.log.level = Some("info".to_string());
        config.log.file = Some(log_path.clone());
        config.health.source = SourceKind::File;
        config.health.fall = 2;
        config.health.rise = 2;
        config.health.file.path = health_path.clone();
        config.health.file.interval_ms = 100;
        write_daemon_config(&config_path, "the notify test", &config)?;
        let stderr = fs::File::create(&stderr_path).context("create stderr.log")?;
        let stdout = stderr.try_clone().context("duplicate the stderr handle")?;
        // systemd sets WATCHDOG_PID to the main process's pid, and the daemon (through the
        // sd-notify crate) takes the watchdog as meant for it only when that pid is its own; a
        // shell that execs the daemon knows the pid in advance.
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
            .arg(&binary)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", &socket.path)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
        // async-signal-safe: the daemon dies with the test thread that started it.
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let child = command.spawn().with_context(|| format!("start {}", binary.display()))?;
        Ok(NotifiedDaemon {
            child: Some(child),
            exit_status: None,
            dispatcher_port: ports[0],
            log_path,
            stderr_path,
            socket,
            zookeeper,
            dir_path: dir.path().to_path_buf(),
            dir: Some(dir),
        })
    }

    fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|child| Pid::from_raw(child.id() as i32))
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().context("the daemon was already reaped")?;
        kill(pid, signal).with_context(|| format!("send {signal} to {pid}"))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status {
                return Ok(status);
            }
            let child = self.child.as_mut().context("the daemon was never started")?;
            if let Some(status) = child.try_wait().context("wait for the daemon")? {
                self.exit_status = Some(status);
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() >= timeout {
                bail!("the daemon did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's log and stderr, for a failure message.
    fn logs(&self) -> String {
        let read =
            |path: &Path| fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
        format!(
            "notify lines: {:?}\n--- taskd.log ---\n{}\n--- stderr ---\n{}\n(ZooKeeper at {}, dir {})",
            self.socket.lines(),
            read(&self.log_path),
            read(&self.stderr_path),
            self.zookeeper.connect_string(),
            self.dir_path.display()
        )
    }
}

impl Drop for NotifiedDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("notify test: the daemon's dir is kept in {}", dir.keep().display());
            }
        }
    }
}

/// Runs `scenario` on a started daemon; a failure panics with the daemon's logs.
fn with_daemon(extra_env: &[(&str, &str)], scenario: impl FnOnce(&mut NotifiedDaemon) -> Result<()>) {
    let mut daemon = NotifiedDaemon::start(extra_env).expect("start ZooKeeper and the daemon");
    if let Err(error) = scenario(&mut daemon) {
        panic!("{error:?}\n{}", daemon.logs());
    }
}

#[test]
fn ready_then_watchdog_pings_then_stopping_on_sigterm() {
    with_daemon(&[], |daemon| {
        let ready_at = daemon.socket.wait_for("READY=1", WAIT)?;

        // Pings every WATCHDOG_USEC / 2 = 100 ms: over 1.5 s, well over 3 even on a busy machine.
        let window = Duration::from_millis(1500);
        thread::sleep(window);
        let n_pings = daemon.socket.count_between("WATCHDOG=1", ready_at, ready_at + window);
        ensure!(n_pings >= 3, "only {n_pings} WATCHDOG=1 in the {window:?} after READY=1");
        let pings: Vec<Instant> = daemon
            .socket
            .messages()
            .into_iter()
            .filter(|message| message.line == "WATCHDOG=1")
            .map(|message| message.at)
            .collect();
        let longest_gap = pings.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default();
        eprintln!(
            "notify test: {} pings so far, longest gap {longest_gap:?} (WATCHDOG_USEC {WATCHDOG_USEC})",
            pings.len()
        );

        let signalled = Instant::now();
        daemon.signal(Signal::SIGTERM)?;
        let stopping_at = daemon.socket.wait_for("STOPPING=1", WAIT)?;
        ensure!(stopping_at >= signalled, "STOPPING=1 came before the SIGTERM");
        let status = daemon.wait_exit(WAIT)?;
        ensure!(status.code() == Some(0), "the daemon exited with {status} after SIGTERM, not 0");

        let lines: Vec<String> = daemon.socket.messages().into_iter().map(|message| message.line).collect();
        ensure!(lines.iter().filter(|line| *line == "READY=1").count() == 1, "READY=1 more than once: {lines:?}");
        let ready = lines.iter().position(|line| line == "READY=1");
        let stopping = lines.iter().position(|line| line == "STOPPING=1");
        ensure!(ready < stopping, "STOPPING=1 before READY=1: {lines:?}");
        Ok(())
    });
}

/// With `ZBS_TASKD_DEBUG_HOOKS=1` in its environment, `POST /debug/v1/wedge-loop?ms=N` on the
/// dispatcher API schedules a closure on the server's event loop that blocks that loop's thread
/// for N ms, and answers 202 at once.
#[test]
fn a_wedged_event_loop_stops_the_watchdog_pings() {
    with_daemon(&[("ZBS_TASKD_DEBUG_HOOKS", "1")], |daemon| {
        daemon.socket.wait_for("READY=1", WAIT)?;
        thread::sleep(Duration::from_millis(500));
        let url = format!("http://127.0.0.1:{}/debug/v1/wedge-loop?ms=2000", daemon.dispatcher_port);
        let response = ureq::post(&url).call().with_context(|| format!("POST {url}"))?;
        ensure!(response.status() == 202, "the wedge hook answered {}", response.status());
        let wedged = Instant::now();

        // A ping already on its way when the loop blocked may still arrive: skip 300 ms.
        let quiet_from = wedged + Duration::from_millis(300);
        let quiet_to = wedged + Duration::from_millis(1700);
        thread::sleep(Duration::from_millis(3000));
        let n_during = daemon.socket.count_between("WATCHDOG=1", quiet_from, quiet_to);
        ensure!(n_during == 0, "{n_during} WATCHDOG=1 while the event loop was wedged");
        let n_after = daemon.socket.count_between("WATCHDOG=1", wedged + Duration::from_millis(2000), Instant::now());
        ensure!(n_after >= 1, "the pings did not resume once the loop ran again");

        daemon.signal(Signal::SIGTERM)?;
        daemon.socket.wait_for("STOPPING=1", WAIT)?;
        let status = daemon.wait_exit(WAIT)?;
        ensure!(status.code() == Some(0), "the daemon exited with {status}");
        Ok(())
    });
}

/// `/healthz` answers 503 while the server's loop is wedged (no health poll for 3 s) and 200 again
/// once it runs, answered all along (the route runs on the IO pool, not on the loop).
#[test]
fn healthz_answers_503_while_the_event_loop_is_wedged() {
    with_daemon(&[("ZBS_TASKD_DEBUG_HOOKS", "1")], |daemon| {
        daemon.socket.wait_for("READY=1", WAIT)?;
        let healthz = format!("http://127.0.0.1:{}/healthz", daemon.dispatcher_port);
        let status = || match ureq::get(&healthz).timeout(Duration::from_secs(5)).call() {
            Ok(response) => Ok(response.status()),
            Err(ureq::Error::Status(status, _)) => Ok(status),
            Err(error) => Err(anyhow::anyhow!("GET {healthz}: {error}")),
        };
        ensure!(status()? == 200, "/healthz before the wedge");
        let url = format!("http://127.0.0.1:{}/debug/v1/wedge-loop?ms=8000", daemon.dispatcher_port);
        let response = ureq::post(&url).call().with_context(|| format!("POST {url}"))?;
        ensure!(response.status() == 202, "the wedge hook answered {}", response.status());
        let wedged = Instant::now();
        let mut seen_503 = None;
        while wedged.elapsed() < Duration::from_secs(7) {
            if status()? == 503 {
                seen_503 = Some(wedged.elapsed());
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let seen_503 = seen_503.context("/healthz never answered 503 while the loop was wedged")?;
        eprintln!("healthz: 503 {} ms into the wedge", seen_503.as_millis());
        let deadline = wedged + Duration::from_secs(8) + WAIT;
        while status()? != 200 {
            ensure!(Instant::now() < deadline, "/healthz did not answer 200 once the loop ran again");
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
}

/// `n` distinct TCP ports that were free on `address` a moment ago.
fn free_ports(address: Ipv4Addr, n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(SocketAddrV4::new(address, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("bind a free port on {address}"))?;
    listeners.iter().map(|listener| Ok(listener.local_addr().context("read a bound port")?.port())).collect()
}
