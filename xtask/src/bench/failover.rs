//! The failover benchmark: the VIP's move in a real cluster of network namespaces
//! (`tests::netns`: three `zbs-taskd` release processes, ZooKeeper and a client on the
//! management network, the `probe` health source on the data network). Each trial fails the
//! VIP's holder in one of four ways — its data interface down, its data link silently detached
//! from the switch (interface up), SIGTERM, and a crash (SIGKILL of the process, started again
//! 100 ms later as systemd's `RestartSec=100ms` would) — and measures:
//!
//! - `*_vip_up_ms`: from the injection to the VIP present in another node's namespace (a netlink
//!   address dump every millisecond);
//! - `*_unavailable_ms`: the client's view, from its last answer at the VIP before the first
//!   failed request to its first answer after it (requests every 10 ms, each bounded by 100 ms,
//!   so a request whose SYN went to the old holder costs at most 100 ms of the measure); 0 when
//!   no request failed.
//!
//! After each cut the link is restored and the old node is watched rejoining as a follower:
//! requests that fail then count as `failback_failed_requests` (a fail-back, as keepalived's
//! default preemption does, would fail some). The old node is then restarted (SIGTERM, start) so
//! that its re-entry back-off does not grow over the trials; after a SIGTERM trial it is started
//! again. Every trial begins from a formed cluster: every node healthy, one leader holding the VIP.
//!
//! Then the same trials run with **keepalived** as the VIP's keeper, in a second cluster of the
//! same shape whose daemons hold no VIP (they only answer at whichever node has it): VRRP on the
//! management network, `advert_int 1`, `track_interface` on the data link, a `vrrp_script` that
//! pings the peers' data addresses (interval 1, fall 2, rise 2, FAULT on failure); SIGTERM goes to
//! keepalived; a crash SIGKILLs keepalived's children and then keepalived itself. Its results are
//! the `keepalived_*` keys and `*_ratio` = ours / keepalived (p50 of the client's
//! unavailability). Ours are also written as `taskd_*`, the names the issues use.
//!
//! In a crash the dead holder keeps the VIP on its interface until its restarted process removes
//! it (ours at start, keepalived when it comes back as backup): those two-holder samples are
//! counted apart (`{taskd,keepalived}_crash_vip_on_two_nodes_samples`) from the others
//! (`{taskd,keepalived}_vip_on_two_nodes_samples`, and today's `vip_on_two_nodes_samples`, all
//! trials of ours).
//!
//! What it needs (`ensure_tools`): as root it installs what is missing with apt-get — keepalived,
//! and `ping` (Debian's `iputils-ping`), which keepalived's check script runs; without them the
//! keepalived side is skipped and a note names the package.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tests::netns::{NetnsCluster, Signal};
use tests::prelude::*;

use super::report::{bench_dir, percentile, Report};

/// Trials per scenario when `--trials` is not given.
pub const DEFAULT_TRIALS: usize = 20;
const N_NODES: usize = 3;
const SESSION_TIMEOUT: Duration = Duration::from_millis(4000);
const CLIENT_INTERVAL: Duration = Duration::from_millis(10);
const CLIENT_TIMEOUT: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(30);
/// How long after the old node rejoined the client is still watched for a fail-back.
const FAILBACK_WINDOW: Duration = Duration::from_secs(1);

/// What moves the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keeper {
    Taskd,
    Keepalived,
}

/// How long keepalived is given after a restore to settle (rise 2 × interval 1 s, and a margin).
const KEEPALIVED_SETTLE: Duration = Duration::from_secs(4);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    LinkCut,
    SilentCut,
    Sigterm,
    Crash,
}

impl Scenario {
    const ALL: [Scenario; 4] = [Scenario::LinkCut, Scenario::SilentCut, Scenario::Sigterm, Scenario::Crash];

    fn key(self) -> &'static str {
        match self {
            Scenario::LinkCut => "link_cut",
            Scenario::SilentCut => "silent_cut",
            Scenario::Sigterm => "sigterm",
            Scenario::Crash => "crash",
        }
    }
}

/// After this long with the VIP still only on a crashed keepalived's node, the trial counts as
/// one where the VIP stayed (its restarted keepalived took mastership back).
const KEEPALIVED_CRASH_STAY: Duration = Duration::from_secs(8);

/// How long a crashed process stays down before it is started again (systemd's `RestartSec`).
const CRASH_RESTART_AFTER: Duration = Duration::from_millis(100);

/// The commands the keepalived side needs, and the Debian packages that have them.
const KEEPALIVED_TOOLS: [(&str, &str); 2] = [("keepalived", "keepalived"), ("ping", "iputils-ping")];

/// True when `command` is an executable file on `PATH` or in the sbin dirs (root's tools).
fn have_command(command: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(std::path::PathBuf::from))
        .any(|dir| dir.join(command).is_file())
}

/// Installs (as root, with apt-get) the keepalived side's missing tools; returns the packages
/// still missing afterwards (empty when everything is there).
pub fn ensure_tools() -> Vec<&'static str> {
    let missing = || -> Vec<&'static str> {
        KEEPALIVED_TOOLS.iter().filter(|(command, _)| !have_command(command)).map(|(_, package)| *package).collect()
    };
    let wanted = missing();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if wanted.is_empty() || unsafe { libc::geteuid() } != 0 || !have_command("apt-get") {
        return wanted;
    }
    eprintln!("failover bench: installing {} (apt-get)", wanted.join(" "));
    let install = |packages: &[&str]| {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install(&wanted) {
        // A fresh machine's package lists may be missing or stale.
        let _ = std::process::Command::new("apt-get").args(["update", "-q"]).status();
        install(&wanted);
    }
    missing()
}

/// One failover, in milliseconds from the injection.
#[derive(Clone, Debug)]
struct Trial {
    /// When the trial began (before its wait for a formed cluster).
    started_at: Instant,
    vip_up_ms: f64,
    unavailable_ms: f64,
    failback_failed_requests: usize,
}

pub fn run(trials: usize) -> Result<()> {
    if let Some(reason) = tests::netns::skip_reason() {
        bail!("the failover benchmark cannot run here: {reason}");
    }
    let trials = trials.max(1);
    let cluster = NetnsCluster::builder()
        .nodes(N_NODES)
        .session_timeout(SESSION_TIMEOUT)
        .client_timing(CLIENT_INTERVAL, CLIENT_TIMEOUT)
        .start()
        .context("start the network-namespace cluster")?;
    eprintln!("failover bench: {N_NODES} nodes from {} in {}", cluster.binary().display(), cluster.dir().display());
    let results = measure_all(&cluster, Keeper::Taskd, trials)?;
    let vip_on_two_nodes_samples = cluster.holder_sampler().two_holder_samples().len();
    let vip_samples = cluster.holder_sampler().samples().len();
    let core_files = cluster.core_files().len();
    let crash_lines = cluster.crash_lines().len();
    let settings = format!("{:?}", cluster.settings());
    let taskd_crash_two_holders = crash_two_holder_samples(&cluster, &results);
    drop(cluster);

    let missing_tools = ensure_tools();
    let keepalived_installed = missing_tools.is_empty();
    let mut keepalived_two_holders = (0, 0);
    let keepalived_results = if keepalived_installed {
        let cluster = NetnsCluster::builder()
            .nodes(N_NODES)
            .session_timeout(SESSION_TIMEOUT)
            .client_timing(CLIENT_INTERVAL, CLIENT_TIMEOUT)
            .vip(false)
            // The daemons only answer at the VIP here: they must not stop their API for the
            // cuts, which only keepalived should react to.
            .health_fall_rise(1000, 3)
            .track_interface(false)
            .start()
            .context("start the network-namespace cluster for keepalived")?;
        cluster.start_keepalived()?;
        eprintln!("failover bench: keepalived on {N_NODES} nodes in {}", cluster.dir().display());
        let keepalived_results = measure_all(&cluster, Keeper::Keepalived, trials)?;
        let in_crashes = crash_two_holder_samples(&cluster, &keepalived_results);
        let all = cluster.holder_sampler().two_holder_samples().len();
        keepalived_two_holders = (all.saturating_sub(in_crashes), in_crashes);
        Some(keepalived_results)
    } else {
        None
    };

    let mut report = Report::new("failover");
    let mut failback_failed_requests = 0;
    for (scenario, scenario_trials) in &results {
        let key = scenario.key();
        let mut unavailable: Vec<f64> = scenario_trials.iter().map(|trial| trial.unavailable_ms).collect();
        let mut vip_up: Vec<f64> = scenario_trials.iter().map(|trial| trial.vip_up_ms).collect();
        report.set(&format!("{key}_unavailable_ms_p50"), percentile(&mut unavailable, 0.5));
        report.set(&format!("{key}_unavailable_ms_p99"), percentile(&mut unavailable, 0.99));
        report.set(&format!("{key}_unavailable_ms_max"), percentile(&mut unavailable, 1.0));
        report.set(&format!("{key}_vip_up_ms_p50"), percentile(&mut vip_up, 0.5));
        report.set(&format!("{key}_vip_up_ms_p99"), percentile(&mut vip_up, 0.99));
        report.set(&format!("{key}_vip_up_ms_max"), percentile(&mut vip_up, 1.0));
        report.set(&format!("taskd_{key}_vip_up_ms_p50"), percentile(&mut vip_up, 0.5));
        report.set(&format!("taskd_{key}_vip_up_ms_p99"), percentile(&mut vip_up, 0.99));
        report.set(&format!("taskd_{key}_unavailable_ms_p50"), percentile(&mut unavailable, 0.5));
        failback_failed_requests += scenario_trials.iter().map(|trial| trial.failback_failed_requests).sum::<usize>();
    }
    report.set("failback_failed_requests", failback_failed_requests as f64);
    report.set("trials", trials as f64);
    report.set("vip_on_two_nodes_samples", vip_on_two_nodes_samples as f64);
    report
        .set("taskd_vip_on_two_nodes_samples", vip_on_two_nodes_samples.saturating_sub(taskd_crash_two_holders) as f64);
    report.set("taskd_crash_vip_on_two_nodes_samples", taskd_crash_two_holders as f64);
    report.set("vip_samples", vip_samples as f64);
    report.set("core_files", core_files as f64);
    report.set("crash_lines", crash_lines as f64);
    report.set("n_nodes", N_NODES as f64);
    report.set("session_timeout_ms", SESSION_TIMEOUT.as_millis() as f64);
    report.note(format!(
        "3 zbs-taskd release processes in network namespaces, standalone ZooKeeper in its own; probe health source (fall/rise and timing: {settings})"
    ));
    report.note("client: GET http://<VIP>/api/v1/status every 10 ms from a client namespace, 100 ms bound per request");
    match &keepalived_results {
        Some(keepalived_results) => {
            let mut keepalived_failback = 0;
            for (scenario, scenario_trials) in keepalived_results {
                let key = scenario.key();
                let moved: Vec<&Trial> = scenario_trials.iter().filter(|trial| !trial.vip_up_ms.is_nan()).collect();
                report.set(&format!("keepalived_{key}_vip_stayed_trials"), (scenario_trials.len() - moved.len()) as f64);
                let mut unavailable: Vec<f64> = moved.iter().map(|trial| trial.unavailable_ms).collect();
                let mut vip_up: Vec<f64> = moved.iter().map(|trial| trial.vip_up_ms).collect();
                let keepalived_p50 = percentile(&mut unavailable, 0.5);
                report.set(&format!("keepalived_{key}_unavailable_ms_p50"), keepalived_p50);
                report.set(&format!("keepalived_{key}_unavailable_ms_p99"), percentile(&mut unavailable, 0.99));
                report.set(&format!("keepalived_{key}_vip_up_ms_p50"), percentile(&mut vip_up, 0.5));
                report.set(&format!("keepalived_{key}_vip_up_ms_p99"), percentile(&mut vip_up, 0.99));
                report.set(&format!("keepalived_{key}_unavailable_ms_p50"), keepalived_p50);
                if let Some(ours) = report.results.get(&format!("{key}_unavailable_ms_p50")).copied() {
                    report.set(&format!("{key}_unavailable_ratio"), if keepalived_p50 > 0.0 { ours / keepalived_p50 } else { f64::NAN });
                }
                if let (Some(ours), Some(theirs)) = (
                    report.results.get(&format!("{key}_vip_up_ms_p50")).copied(),
                    report.results.get(&format!("keepalived_{key}_vip_up_ms_p50")).copied(),
                ) {
                    report.set(&format!("{key}_vip_up_ratio"), if theirs > 0.0 { ours / theirs } else { f64::NAN });
                }
                keepalived_failback += scenario_trials.iter().map(|trial| trial.failback_failed_requests).sum::<usize>();
            }
            report.set("keepalived_failback_failed_requests", keepalived_failback as f64);
            report.set("keepalived_vip_on_two_nodes_samples", keepalived_two_holders.0 as f64);
            report.set("keepalived_crash_vip_on_two_nodes_samples", keepalived_two_holders.1 as f64);
            report.note("keepalived: VRRP advert_int 1, equal priorities, track_interface data0, vrrp_script pinging the peers' data addresses (interval 1, fall 2, rise 2)");
        }
        None => report.note(format!(
            "keepalived was not run: missing here, and not installable now: apt-get install {}; the keepalived_* keys are absent",
            missing_tools.join(" ")
        )),
    }
    report.write()?;
    let plot = bench_dir().join("failover.svg");
    std::fs::write(&plot, svg_plot(&results)).with_context(|| format!("write {}", plot.display()))?;
    println!("plot: {}", plot.display());
    Ok(())
}

fn measure_all(cluster: &NetnsCluster, keeper: Keeper, trials: usize) -> Result<Vec<(Scenario, Vec<Trial>)>> {
    let mut results = Vec::new();
    for scenario in Scenario::ALL {
        let mut scenario_trials = Vec::with_capacity(trials);
        for index in 0..trials {
            let trial = match run_trial(cluster, keeper, scenario) {
                Ok(trial) => trial,
                Err(error) => {
                    cluster.keep_dir_on_drop();
                    return Err(error.context(format!("{keeper:?} {} trial {}", scenario.key(), index + 1)));
                }
            };
            eprintln!(
                "failover bench: {keeper:?} {} trial {:>2}: VIP up after {:>7.1} ms, client unavailable {:>7.1} ms, fail-back failures {}",
                scenario.key(),
                index + 1,
                trial.vip_up_ms,
                trial.unavailable_ms,
                trial.failback_failed_requests
            );
            scenario_trials.push(trial);
        }
        results.push((scenario, scenario_trials));
    }
    Ok(results)
}

fn run_trial(cluster: &NetnsCluster, keeper: Keeper, scenario: Scenario) -> Result<Trial> {
    let started_at = Instant::now();
    cluster.wait_formed(WAIT)?;
    let old = cluster.wait_for_vip_holder(None, WAIT)?;
    let old_id = cluster.node(old).node_id.clone();
    cluster.client().wait_answered_by(&old_id, Instant::now(), WAIT)?;

    let injected_at = Instant::now();
    match (scenario, keeper) {
        (Scenario::LinkCut, _) => cluster.cut_data_link(old)?,
        (Scenario::SilentCut, _) => cluster.cut_data_link_silently(old)?,
        (Scenario::Sigterm, Keeper::Taskd) => cluster.signal(old, Signal::SIGTERM)?,
        (Scenario::Sigterm, Keeper::Keepalived) => cluster.signal_keepalived(old, Signal::SIGTERM)?,
        (Scenario::Crash, Keeper::Taskd) => cluster.kill(old)?,
        (Scenario::Crash, Keeper::Keepalived) => cluster.kill_keepalived(old)?,
    }
    let mut crashed_restarted = scenario != Scenario::Crash;
    loop {
        if !crashed_restarted && injected_at.elapsed() >= CRASH_RESTART_AFTER {
            restart_crashed(cluster, keeper, old)?;
            crashed_restarted = true;
        }
        if cluster.vip_holders()?.into_iter().any(|node| node != old) {
            break;
        }
        if scenario == Scenario::Crash && keeper == Keeper::Keepalived && injected_at.elapsed() > KEEPALIVED_CRASH_STAY
        {
            // The restarted keepalived became master again before a backup's master-down timer
            // ran out: the address never left the old node. Not a failover: counted apart.
            eprintln!("failover bench: keepalived kept the VIP on the crashed node (restarted as master)");
            std::thread::sleep(KEEPALIVED_SETTLE);
            return Ok(Trial {
                started_at,
                vip_up_ms: f64::NAN,
                unavailable_ms: f64::NAN,
                failback_failed_requests: 0,
            });
        }
        if injected_at.elapsed() > WAIT {
            bail!("the VIP did not move within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let vip_up = injected_at.elapsed();
    if !crashed_restarted {
        std::thread::sleep(CRASH_RESTART_AFTER.saturating_sub(injected_at.elapsed()));
        restart_crashed(cluster, keeper, old)?;
    }
    // Any node but the old one: keepalived can move the VIP twice (two backups become master at
    // once and the lower address yields).
    cluster.wait_until(WAIT, "the client answered by a node other than the old holder", || {
        cluster
            .client()
            .samples_since(injected_at)
            .iter()
            .any(|sample| sample.answered_by.as_ref().is_some_and(|id| *id != old_id))
    })?;
    let unavailable =
        cluster.client().longest_outage_since(injected_at).map(|outage| outage.duration()).unwrap_or_default();

    let restored_at = Instant::now();
    if keeper == Keeper::Keepalived {
        match scenario {
            Scenario::LinkCut | Scenario::SilentCut => cluster.restore_data_link(old)?,
            Scenario::Sigterm => {
                cluster.stop_keepalived(old, Signal::SIGTERM)?;
                cluster.start_keepalived_on(old)?;
            }
            Scenario::Crash => {}
        }
        std::thread::sleep(KEEPALIVED_SETTLE);
        if scenario == Scenario::Crash && cluster.vip_holders()?.len() > 1 {
            // keepalived restarted as backup does not remove the address its killed instance
            // left: the crash's two-holder interval ends here, as an operator's clean-up would
            // end it, so the next trial starts from one holder.
            eprintln!("failover bench: keepalived left the VIP on the crashed node; removing it");
            cluster.remove_vip_from(old)?;
        }
        return Ok(Trial {
            started_at,
            vip_up_ms: vip_up.as_secs_f64() * 1000.0,
            unavailable_ms: unavailable.as_secs_f64() * 1000.0,
            failback_failed_requests: cluster.client().failures_since(restored_at),
        });
    }
    match scenario {
        Scenario::LinkCut | Scenario::SilentCut => {
            cluster.restore_data_link(old)?;
            cluster.wait_until(WAIT, "the old holder rejoining as a follower", || {
                cluster.try_status(old).is_some_and(|status| {
                    !status.stopping
                        && !status.leader
                        && status.members.len() == N_NODES
                        && tests::netns::health_valid(&status)
                })
            })?;
            std::thread::sleep(FAILBACK_WINDOW);
        }
        Scenario::Sigterm => {}
        Scenario::Crash => {
            // Restarted already: watched rejoining as a follower, like a restored link.
            cluster.wait_until(WAIT, "the crashed holder rejoining as a follower", || {
                cluster
                    .try_status(old)
                    .is_some_and(|status| !status.stopping && !status.leader && status.members.len() == N_NODES)
            })?;
            std::thread::sleep(FAILBACK_WINDOW);
        }
    }
    let failback_failed_requests = cluster.client().failures_since(restored_at);
    // A fresh process, so that the re-entry back-off does not grow from trial to trial.
    match scenario {
        Scenario::LinkCut | Scenario::SilentCut => {
            cluster.signal(old, Signal::SIGTERM)?;
            cluster.wait_exit(old, WAIT)?;
            cluster.restart(old)?;
        }
        Scenario::Sigterm => {
            cluster.wait_exit(old, WAIT)?;
            cluster.restart(old)?;
        }
        Scenario::Crash => {}
    }
    Ok(Trial {
        started_at,
        vip_up_ms: vip_up.as_secs_f64() * 1000.0,
        unavailable_ms: unavailable.as_secs_f64() * 1000.0,
        failback_failed_requests,
    })
}

/// Starts the crashed holder's process again (ours, or keepalived), as systemd would.
fn restart_crashed(cluster: &NetnsCluster, keeper: Keeper, old: usize) -> Result<()> {
    match keeper {
        Keeper::Taskd => cluster.restart(old).map(drop),
        Keeper::Keepalived => cluster.start_keepalived_on(old).map(drop),
    }
}

/// Two-holder samples taken during the crash trials (from the first crash trial's start on; the
/// crash trials run last).
fn crash_two_holder_samples(cluster: &NetnsCluster, results: &[(Scenario, Vec<Trial>)]) -> usize {
    let Some(first_crash) = results
        .iter()
        .filter(|(scenario, _)| *scenario == Scenario::Crash)
        .flat_map(|(_, trials)| trials.iter().map(|trial| trial.started_at))
        .min()
    else {
        return 0;
    };
    cluster.holder_sampler().samples_since(first_crash).iter().filter(|sample| sample.holders.len() > 1).count()
}

/// Per-trial times as an SVG scatter plot (plotters): one column per scenario and measure, the
/// median marked. A drawing error (none is expected on a string backend) gives an SVG saying so.
fn svg_plot(results: &[(Scenario, Vec<Trial>)]) -> String {
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for (scenario, trials) in results {
        columns.push((format!("{} vip up", scenario.key()), trials.iter().map(|trial| trial.vip_up_ms).collect()));
        columns.push((
            format!("{} unavailable", scenario.key()),
            trials.iter().map(|trial| trial.unavailable_ms).collect(),
        ));
    }
    super::plot::trial_scatter("zbs-taskd VIP failover, per trial", "ms", &columns).unwrap_or_else(|error| {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"40\"><text x=\"10\" y=\"25\">{}</text></svg>\n",
            format!("{error:#}").replace('&', "&amp;").replace('<', "&lt;")
        )
    })
}
