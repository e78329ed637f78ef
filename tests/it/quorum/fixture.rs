//! The quorum tests' fixture: members in this process or as `quorum-member` processes, one shared
//! record of every member's events stamped with the wall clock, and the leadership analysis
//! (who led when; never two at once) the tests assert on.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorum::{Event, MemberInfo, QuorumConfig, QuorumHandle, QuorumServer, ZkConfig};

/// The session timeout every quorum test asks for: short, so that expiry tests stay fast.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// Generous bound for anything that should happen "soon" on a busy 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// The quorum tests run one at a time: each starts JVMs and times failovers, and two at once on
/// two cores would only make every one of them slower and noisier.
pub fn serialize() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Logs of this process's quorum members go to the test's output when `RUST_LOG` is set.
pub fn init_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Microseconds since the Unix epoch: the one clock every member (and process) stamps with.
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as u64).unwrap_or(0)
}

/// What a member reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Leader(i64),
    Follower(i64),
    Members(Vec<String>),
    SessionLost,
    Stopped,
}

/// One event of one member, stamped when the member's handler saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub at_micros: u64,
    pub member: String,
    pub kind: Kind,
}

/// Every member's events, in the order they were recorded.
#[derive(Clone, Default)]
pub struct EventLog {
    inner: Arc<(Mutex<Vec<Record>>, Condvar)>,
}

impl EventLog {
    pub fn push(&self, record: Record) {
        let (records, changed) = &*self.inner;
        records.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(record);
        changed.notify_all();
    }

    pub fn records(&self) -> Vec<Record> {
        self.inner.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Waits until some record satisfies `predicate`; returns the first that does.
    pub fn wait_for(&self, timeout: Duration, what: &str, predicate: impl Fn(&Record) -> bool) -> Result<Record> {
        let deadline = Instant::now() + timeout;
        let (records, changed) = &*self.inner;
        let mut guard = records.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(record) = guard.iter().find(|record| predicate(record)) {
                return Ok(record.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                bail!("timed out after {timeout:?} waiting for {what}; events:\n{}", self.describe());
            }
            guard = changed.wait_timeout(guard, deadline - now).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
    }

    /// Every record, one a line, relative to the first, for failure messages.
    pub fn describe(&self) -> String {
        let records = self.records();
        let start = records.first().map(|record| record.at_micros).unwrap_or(0);
        records
            .iter()
            .map(|record| {
                format!(
                    "{:>10.3} ms  {:<4} {:?}",
                    (record.at_micros - start) as f64 / 1000.0,
                    record.member,
                    record.kind
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Who leads now according to the records (members whose last role record says leader).
    pub fn current_leaders(&self) -> Vec<String> {
        let intervals = leadership_intervals(&self.records(), &[]);
        intervals.into_iter().filter(|interval| interval.end_micros.is_none()).map(|interval| interval.member).collect()
    }

    /// Waits until exactly one member leads and it is not in `excluded`; returns its id.
    pub fn wait_for_single_leader(&self, timeout: Duration, excluded: &[&str]) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders = self.current_leaders();
            if leaders.len() == 1 && !excluded.contains(&leaders[0].as_str()) {
                return Ok(leaders[0].clone());
            }
            if Instant::now() >= deadline {
                bail!("no single leader (now {leaders:?}) within {timeout:?}; events:\n{}", self.describe());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A span of time during which `member` acted as leader; `end_micros` is `None` while it lasts.
#[derive(Debug, Clone)]
pub struct LeaderInterval {
    pub member: String,
    pub start_micros: u64,
    pub end_micros: Option<u64>,
}

/// Leadership intervals from the records. `ended_by_kill` gives, per killed member, the instant
/// it was dead: its open interval ends there.
pub fn leadership_intervals(records: &[Record], ended_by_kill: &[(String, u64)]) -> Vec<LeaderInterval> {
    let mut intervals: Vec<LeaderInterval> = Vec::new();
    for record in records {
        let open =
            intervals.iter_mut().find(|interval| interval.member == record.member && interval.end_micros.is_none());
        match (&record.kind, open) {
            (Kind::Leader(_), None) => intervals.push(LeaderInterval {
                member: record.member.clone(),
                start_micros: record.at_micros,
                end_micros: None,
            }),
            (Kind::Follower(_) | Kind::SessionLost | Kind::Stopped, Some(interval)) => {
                interval.end_micros = Some(record.at_micros)
            }
            _ => {}
        }
    }
    for (member, killed_at) in ended_by_kill {
        for interval in
            intervals.iter_mut().filter(|interval| &interval.member == member && interval.end_micros.is_none())
        {
            interval.end_micros = Some(*killed_at);
        }
    }
    intervals
}

/// Fails when two intervals overlap: two members acting as leader at one recorded instant.
pub fn assert_never_two_leaders(log: &EventLog, ended_by_kill: &[(String, u64)]) {
    let intervals = leadership_intervals(&log.records(), ended_by_kill);
    for (index, first) in intervals.iter().enumerate() {
        for second in &intervals[index + 1..] {
            let first_end = first.end_micros.unwrap_or(u64::MAX);
            let second_end = second.end_micros.unwrap_or(u64::MAX);
            let overlap = first.start_micros < second_end && second.start_micros < first_end;
            assert!(!overlap, "two leaders at once: {first:?} and {second:?}; events:\n{}", log.describe());
        }
    }
}

fn record_of(member: &str, event: &Event) -> Record {
    let kind = match event {
        Event::RoleChanged { leader: true, sequence } => Kind::Leader(*sequence),
        Event::RoleChanged { leader: false, sequence } => Kind::Follower(*sequence),
        Event::MembersChanged(members) => Kind::Members(members.iter().map(|member| member.info.id.clone()).collect()),
        Event::SessionLost => Kind::SessionLost,
        Event::Stopped => Kind::Stopped,
    };
    Record { at_micros: unix_micros(), member: member.to_string(), kind }
}

/// The configuration of a test member.
pub fn member_config(connect_string: &str, service_path: &str, id: &str, priority: i32) -> QuorumConfig {
    member_config_with_timeout(connect_string, service_path, id, priority, SESSION_TIMEOUT)
}

/// Like `member_config`, with another session timeout.
pub fn member_config_with_timeout(
    connect_string: &str,
    service_path: &str,
    id: &str,
    priority: i32,
    session_timeout: Duration,
) -> QuorumConfig {
    let zk = ZkConfig::new(connect_string, session_timeout);
    let mut member = MemberInfo::new(id, format!("127.0.0.1:{}", 10600));
    member.priority = priority;
    QuorumConfig::new(zk, service_path, member).with_priority(true)
}

/// A member running in this process, on its `QuorumServer`'s own thread.
pub struct InProcessMember {
    pub id: String,
    pub server: QuorumServer,
}

impl InProcessMember {
    pub fn start(log: &EventLog, config: QuorumConfig) -> Result<InProcessMember> {
        init_logging();
        let id = config.member.id.clone();
        let server = QuorumServer::new(config)?;
        let handler_log = log.clone();
        let handler_id = id.clone();
        server.initialize(move |event: Event| handler_log.push(record_of(&handler_id, &event)))?;
        server.start()?;
        Ok(InProcessMember { id, server })
    }

    pub fn handle(&self) -> QuorumHandle {
        self.server.handle()
    }

    /// Leaves the quorum and waits until the member has stopped.
    pub fn stop(&self) -> Result<()> {
        self.server.stop();
        if !self.server.wait_stopped(WAIT) {
            bail!("member {} did not stop within {WAIT:?}", self.id);
        }
        Ok(())
    }
}

/// A member running as a `quorum-member` process: it can be killed and paused.
pub struct ProcessMember {
    pub id: String,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<thread::JoinHandle<()>>,
}

impl ProcessMember {
    pub fn start(log: &EventLog, connect_string: &str, service_path: &str, id: &str) -> Result<ProcessMember> {
        let log_dir = std::env::temp_dir().join("zbs-quorum-tests");
        std::fs::create_dir_all(&log_dir).context("create the members' log dir")?;
        let stderr_path = log_dir.join(format!("{}-{id}.log", std::process::id()));
        let stderr =
            std::fs::File::create(&stderr_path).with_context(|| format!("create {}", stderr_path.display()))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_quorum-member"))
            .args(["--zk", connect_string, "--path", service_path, "--id", id])
            .args(["--session-timeout-ms", &SESSION_TIMEOUT.as_millis().to_string()])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("start quorum-member")?;
        let stdout = child.stdout.take().context("take the member's stdout")?;
        let stdin = child.stdin.take();
        let reader_log = log.clone();
        let reader = thread::Builder::new()
            .name(format!("read-{id}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match parse_line(&line) {
                        Some(record) => reader_log.push(record),
                        None => eprintln!("quorum-member printed an unexpected line: {line:?}"),
                    }
                }
            })
            .context("start the member's reader thread")?;
        Ok(ProcessMember { id: id.to_string(), child, stdin, reader: Some(reader) })
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// SIGKILL, reaped; returns the instant (µs) by which the process was certainly dead.
    pub fn kill(&mut self) -> Result<u64> {
        self.child.kill().context("kill the member")?;
        self.child.wait().context("reap the member")?;
        Ok(unix_micros())
    }

    pub fn pause(&self) -> Result<()> {
        kill(self.pid(), Signal::SIGSTOP).context("SIGSTOP the member")
    }

    pub fn resume(&self) -> Result<()> {
        kill(self.pid(), Signal::SIGCONT).context("SIGCONT the member")
    }

    /// Asks the member to leave and waits for the process to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "stop");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if self.child.try_wait().context("poll the member")?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                bail!("member {} did not exit within {WAIT:?}", self.id);
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ok(())
    }
}

impl Drop for ProcessMember {
    fn drop(&mut self) {
        // Our own child, by pid: make sure it never outlives the test.
        let _ = kill(self.pid(), Signal::SIGCONT);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Parses one `quorum-member` line: `<unix µs> <id> <event...>`.
fn parse_line(line: &str) -> Option<Record> {
    let mut words = line.split_whitespace();
    let at_micros: u64 = words.next()?.parse().ok()?;
    let member = words.next()?.to_string();
    let kind = match (words.next()?, words.next()) {
        ("role", Some("leader")) => Kind::Leader(words.next()?.parse().ok()?),
        ("role", Some("follower")) => Kind::Follower(words.next()?.parse().ok()?),
        ("members", Some(_count)) => {
            Kind::Members(words.next().map(|ids| ids.split(',').map(str::to_string).collect()).unwrap_or_default())
        }
        ("session-lost", None) => Kind::SessionLost,
        ("stopped", None) => Kind::Stopped,
        _ => return None,
    };
    Some(Record { at_micros, member, kind })
}

/// A service path of its own for each test, so that nothing leaks from one test to another.
pub fn service_path(test: &str) -> String {
    format!("/zbs/test/{test}/quorum")
}
