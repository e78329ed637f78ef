//! The quorum benchmark: leader hand-over time against a real ZooKeeper, after a `stop()` of the
//! leader (from the call to the new leader's `RoleChanged`) and after a SIGKILL of a leader
//! process (from the kill; bounded below by the session timeout), next to the floor of the same
//! client library (a session closed on purpose → a watch on its ephemeral node fires).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use crossbeam::channel::{unbounded, Receiver, Sender};
use quorum::zk::NodeKind;
use quorum::{Event, MemberInfo, QuorumConfig, QuorumServer, ZkConfig, ZkSession};
use tests::zk::ZooKeeper;

use super::report::{percentile, Report};

/// Session timeout of every member: the tests' value, so that kill rounds stay short.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
const STOP_ROUNDS: usize = 30;
const KILL_ROUNDS: usize = 5;
const FLOOR_ROUNDS: usize = 30;
const N_MEMBERS: usize = 3;
const WAIT: Duration = Duration::from_secs(30);

pub fn run() -> Result<()> {
    let zookeeper = ZooKeeper::start().context("start ZooKeeper")?;
    let connect = zookeeper.connect_string();
    let mut report = Report::new("quorum");

    let mut floor = measure_floor(&connect).context("measure the client's floor")?;
    report.set("floor_close_to_watch_ms_p50", percentile(&mut floor, 0.5));
    report.set("floor_close_to_watch_ms_p99", percentile(&mut floor, 0.99));

    let mut after_stop = measure_stop_rounds(&connect).context("measure hand-over after stop")?;
    report.set("handover_after_stop_ms_p50", percentile(&mut after_stop, 0.5));
    report.set("handover_after_stop_ms_p99", percentile(&mut after_stop, 0.99));
    report.set("handover_after_stop_ms_max", percentile(&mut after_stop, 1.0));
    report.set("rounds", after_stop.len() as f64);

    let mut after_kill = measure_kill_rounds(&connect).context("measure hand-over after SIGKILL")?;
    report.set("handover_after_kill_ms_p50", percentile(&mut after_kill, 0.5));
    report.set("handover_after_kill_ms_max", percentile(&mut after_kill, 1.0));
    report.set("kill_rounds", after_kill.len() as f64);
    report.set("session_timeout_ms", SESSION_TIMEOUT.as_millis() as f64);
    report.set("n_members", N_MEMBERS as f64);

    report.note("one standalone ZooKeeper (tests fixture, no fsync), members on loopback");
    report.note("stop: from QuorumServer::stop() on the leader to the next member's RoleChanged{leader:true}");
    report.note("kill: from SIGKILL of a quorum-member process to the next member's `role leader` line");
    report.note("floor: ZkSession::close() of a session owning an ephemeral node to another session's watch firing");
    report.write()?;
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The client library alone: how soon a watch on a closed session's ephemeral node fires.
fn measure_floor(connect: &str) -> Result<Vec<f64>> {
    let config = ZkConfig::new(connect, SESSION_TIMEOUT);
    let watcher = ZkSession::connect(&config)?;
    watcher.ensure_path("/bench/floor")?;
    let mut samples = Vec::with_capacity(FLOOR_ROUNDS);
    for round in 0..FLOOR_ROUNDS {
        let owner = ZkSession::connect(&config)?;
        let path = format!("/bench/floor/node-{round}");
        owner.create(&path, b"", NodeKind::Ephemeral)?;
        let (stat, watch) = watcher.exists_and_watch(&path)?;
        if stat.is_none() {
            bail!("the ephemeral node vanished before the close");
        }
        let (fired_sender, fired_receiver) = unbounded();
        let waiter = std::thread::spawn(move || {
            let event = watch.wait();
            let _ = fired_sender.send((Instant::now(), event));
        });
        let closing = Instant::now();
        owner.close(SESSION_TIMEOUT)?;
        let (fired_at, _event) = fired_receiver.recv_timeout(WAIT).context("the watch did not fire")?;
        let _ = waiter.join();
        samples.push(millis(fired_at.saturating_duration_since(closing)));
    }
    watcher.close(SESSION_TIMEOUT)?;
    Ok(samples)
}

struct RoleChange {
    member: usize,
    leader: bool,
    at: Instant,
}

fn start_member(
    connect: &str,
    path: &str,
    index: usize,
    roles: &Sender<RoleChange>,
    joined: &Sender<usize>,
) -> Result<QuorumServer> {
    let config = QuorumConfig::new(
        ZkConfig::new(connect, SESSION_TIMEOUT),
        path,
        MemberInfo::new(format!("bench-{index}"), "127.0.0.1:10600"),
    );
    let server = QuorumServer::new(config)?;
    let roles = roles.clone();
    let joined = joined.clone();
    server.initialize(move |event: Event| match event {
        Event::RoleChanged { leader, .. } => {
            let _ = roles.send(RoleChange { member: index, leader, at: Instant::now() });
        }
        Event::MembersChanged(_) => {
            let _ = joined.send(index);
        }
        Event::SessionLost | Event::Stopped => {}
    })?;
    server.start()?;
    Ok(server)
}

fn wait_joined(joined: &Receiver<usize>, index: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match joined.recv_timeout(remaining) {
            Ok(member) if member == index => return Ok(()),
            Ok(_) => {}
            Err(_) => bail!("member {index} did not join within {WAIT:?}"),
        }
    }
}

/// In-process members; each round stops the leader and times the next one's take-over.
fn measure_stop_rounds(connect: &str) -> Result<Vec<f64>> {
    let path = "/bench/stop/quorum";
    let (role_sender, roles) = unbounded();
    let (joined_sender, joined) = unbounded();
    let mut members: VecDeque<(usize, QuorumServer)> = VecDeque::new();
    for index in 0..N_MEMBERS {
        members.push_back((index, start_member(connect, path, index, &role_sender, &joined_sender)?));
        wait_joined(&joined, index)?;
    }
    // Members joined in order, so the front one leads.
    wait_for_role(&roles, |change| change.member == 0 && change.leader)?;
    let mut samples = Vec::with_capacity(STOP_ROUNDS);
    for next_index in N_MEMBERS..N_MEMBERS + STOP_ROUNDS {
        let (leader_index, leader) = members.pop_front().context("no member left")?;
        std::thread::sleep(Duration::from_millis(20));
        let stop_called = Instant::now();
        leader.stop();
        let taken_over = wait_for_role(&roles, |change| change.member != leader_index && change.leader)?;
        samples.push(millis(taken_over.at.saturating_duration_since(stop_called)));
        if members.front().map(|(index, _)| *index) != Some(taken_over.member) {
            bail!("member {} took over, not the next in line", taken_over.member);
        }
        if !leader.wait_stopped(WAIT) {
            bail!("the old leader did not stop");
        }
        drop(leader);
        members.push_back((next_index, start_member(connect, path, next_index, &role_sender, &joined_sender)?));
        wait_joined(&joined, next_index)?;
    }
    for (_, member) in &members {
        member.stop();
    }
    Ok(samples)
}

/// Waits for a role change matching `predicate`, skipping the others.
fn wait_for_role(roles: &Receiver<RoleChange>, predicate: impl Fn(&RoleChange) -> bool) -> Result<RoleChange> {
    let deadline = Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match roles.recv_timeout(remaining) {
            Ok(change) if predicate(&change) => return Ok(change),
            Ok(_) => {}
            Err(_) => bail!("no such role change within {WAIT:?}"),
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as u64).unwrap_or(0)
}

/// `quorum-member` (from the `tests` crate) built in release next to xtask.
fn member_binary() -> Result<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .args(["build", "--quiet", "--release", "--package", "tests", "--bin", "quorum-member"])
        .current_dir(&workspace)
        .status()
        .context("run cargo build for quorum-member")?;
    if !status.success() {
        bail!("cargo build of quorum-member failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("release").join("quorum-member"))
}

/// A member process and the channel of its `role leader` lines (unix µs).
struct MemberProcess {
    child: Child,
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "stop");
        }
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of a member: (member index, is a leader line, unix µs, is a join line).
type MemberLine = (usize, bool, u64, bool);

fn start_process(
    binary: &PathBuf,
    connect: &str,
    path: &str,
    index: usize,
    lines: &Sender<MemberLine>,
) -> Result<MemberProcess> {
    let mut child = Command::new(binary)
        .args(["--zk", connect, "--path", path, "--id", &format!("bench-{index}")])
        .args(["--session-timeout-ms", &SESSION_TIMEOUT.as_millis().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let stdout = child.stdout.take().context("take the member's stdout")?;
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            let at: u64 = words.next().and_then(|word| word.parse().ok()).unwrap_or(0);
            let _id = words.next();
            let (first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let leader = first == "role" && second == "leader";
            let joined = first == "members";
            let _ = lines.send((index, leader, at, joined));
        }
    });
    Ok(MemberProcess { child })
}

fn wait_for_line(lines: &Receiver<MemberLine>, predicate: impl Fn(&MemberLine) -> bool) -> Result<MemberLine> {
    let deadline = Instant::now() + WAIT;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(remaining) {
            Ok(line) if predicate(&line) => return Ok(line),
            Ok(_) => {}
            Err(_) => bail!("no such member line within {WAIT:?}"),
        }
    }
}

/// Member processes; each round SIGKILLs the leader and times the next one's take-over.
fn measure_kill_rounds(connect: &str) -> Result<Vec<f64>> {
    let binary = member_binary()?;
    let path = "/bench/kill/quorum";
    let (line_sender, lines) = unbounded();
    let mut members: VecDeque<(usize, MemberProcess)> = VecDeque::new();
    for index in 0..N_MEMBERS {
        members.push_back((index, start_process(&binary, connect, path, index, &line_sender)?));
        // A member's members line follows its leader line, if it leads: member 0 leads now.
        wait_for_line(&lines, |line| line.0 == index && line.3)?;
    }
    let mut samples = Vec::with_capacity(KILL_ROUNDS);
    for next_index in N_MEMBERS..N_MEMBERS + KILL_ROUNDS {
        let (leader_index, mut leader) = members.pop_front().context("no member left")?;
        std::thread::sleep(Duration::from_millis(200));
        leader.child.kill().context("kill the leader")?;
        let killed_at = unix_micros();
        leader.child.wait().context("reap the leader")?;
        let taken_over = wait_for_line(&lines, |line| line.0 != leader_index && line.1)?;
        samples.push(taken_over.2.saturating_sub(killed_at) as f64 / 1000.0);
        if members.front().map(|(index, _)| *index) != Some(taken_over.0) {
            bail!("member {} took over, not the next in line", taken_over.0);
        }
        drop(leader);
        members.push_back((next_index, start_process(&binary, connect, path, next_index, &line_sender)?));
        wait_for_line(&lines, |line| line.0 == next_index && line.3)?;
    }
    drop(members);
    Ok(samples)
}
