//! The failover benchmark: the VIP's move in a real cluster of network namespaces
//! (`::tests::netns`: three `zbs-taskd` release processes, ZooKeeper and a client on the
//! management network, the `probe` health source on the data network), under several systems
//! that keep the VIP, one after the other in the same namespaces:
//!
//! - `taskd`: ours at the bench's settings (probe every 100 ms, fall 2, rise 3, 4 s sessions);
//! - `taskd_tuned`: ours with tuned keepalived's detection budget, `packaging/profiles/tuned.toml`
//!   (probe every 10 ms, fall 5, rise 20, realtime probe threads);
//! - `taskd_early_takeover`: ours at the bench's settings with `early_takeover_ms = 400`;
//! - `keepalived`: keepalived at its defaults (VRRP `advert_int 1`, ping check);
//! - `keepalived_tuned`: keepalived "fastest stable" (VRRPv3 `advert_int 0.05`, weighted BFD
//!   10 ms × 10, realtime, no swap), the one compared with ours tuned;
//! - `keepalived_fastest`: the same with BFD 10 ms × 5, reported beside it.
//!
//! Under keepalived the daemons hold no VIP and only answer at whichever node has it.
//! Switching system stops everything, rewrites the daemons' configs and starts again
//! ([`systems`]); keepalived's configs come from [`keepalived_conf`].
//!
//! Each system runs `--trials` trials of each trial type ([`trials`]: `link_cut`,
//! `silent_cut`, `sigterm`, `crash`, `host_down`), every one from a settled cluster, and then a
//! quiet watch ([`quiet`]) of `--quiet-minutes` under CPU load counting spurious failovers.
//! The keys and the plot are made in [`results`]; what the bench needs is installed by
//! [`tools`]. `cargo xtask bench failover --systems taskd,keepalived --trial-types crash
//! --trials 3 --quiet-minutes 0` is a short run; the defaults are the full one.
//!
//! When `taskd` is among the systems, a cluster of its own then holds two VIPs of two services
//! ([`two_vips`]) for `--trials` link cuts, timed until the last of them is up.
//!
//! Each trial measures `*_vip_up_ms`, from the injection to the VIP present in another node's
//! namespace (a netlink address dump every millisecond), and `*_unavailable_ms`, the client's
//! view: from its last answer at the VIP before the first failed request to its first answer
//! after it (requests every 10 ms, each bounded by 100 ms; 0 when none failed). After a cut the
//! link is restored and the old node watched rejoining as a follower: requests failing then are
//! `*_failback_failed_requests`.
//!
//! Two-holder samples are counted per trial (between its start and its end) and reported per
//! trial type; a crash's (the dead holder's leftover VIP until its restarted process removes
//! it) are apart from the rest, and so are the quiet watch's.

mod keepalived_conf;
mod quiet;
mod results;
mod systems;
mod tools;
mod trials;
mod two_vips;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::tests::netns::NetnsCluster;
use ::tests::prelude::*;
use anyhow::{bail, Context, Result};

pub use systems::System;
pub use tools::ensure_tools;
pub use trials::TrialType;

use super::report::{bench_dir, Report};
use results::SystemRun;

/// Trials per system and trial type when `--trials` is not given.
pub const DEFAULT_TRIALS: usize = 20;
/// The quiet watch per system when `--quiet-minutes` is not given (issue 14: at least 2).
pub const DEFAULT_QUIET_MINUTES: f64 = 2.0;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The systems, in this order; empty: every one.
    pub systems: Vec<System>,
    /// The trial types; empty: each system's own ([`System::default_trial_types`]).
    pub trial_types: Vec<TrialType>,
    pub trials: usize,
    pub quiet_minutes: f64,
}

impl Options {
    /// The full run with `trials` trials.
    pub fn full(trials: usize) -> Options {
        Options { systems: Vec::new(), trial_types: Vec::new(), trials, quiet_minutes: DEFAULT_QUIET_MINUTES }
    }
}

pub fn run(options: &Options) -> Result<()> {
    if let Some(reason) = ::tests::netns::skip_reason() {
        bail!("the failover benchmark cannot run here: {reason}");
    }
    ensure_quiet(options)?;
    let missing_tools = ensure_tools();
    let keepalived_installed =
        !missing_tools.iter().any(|package| *package == "keepalived" || *package == "iputils-ping");
    let mut systems: Vec<System> =
        if options.systems.is_empty() { System::ALL.to_vec() } else { options.systems.clone() };
    let mut notes = Vec::new();
    if !keepalived_installed {
        systems.retain(|system| system.is_ours());
        notes.push(format!(
            "keepalived was not run: missing here, and not installable now: apt-get install {}; the keepalived_* keys are absent",
            missing_tools.join(" ")
        ));
    }
    let Some(&first) = systems.first() else { bail!("no system to run") };
    let trials = options.trials.max(1);
    let quiet = Duration::from_secs_f64(options.quiet_minutes.max(0.0) * 60.0);
    let cluster = first.daemon_settings().start().context("start the network-namespace cluster")?;
    eprintln!(
        "failover bench: {} nodes from {} in {}",
        systems::N_NODES,
        cluster.binary().display(),
        cluster.dir().display()
    );
    let run_started = Instant::now();
    let mut runs = Vec::new();
    for (index, &system) in systems.iter().enumerate() {
        let system_started = Instant::now();
        let outcome =
            if index == 0 { systems::start_keeper(&cluster, system) } else { systems::switch_to(&cluster, system) }
                .and_then(|()| run_system(&cluster, system, options, trials, quiet));
        match outcome {
            Ok(run) => runs.push(run),
            Err(error) => {
                cluster.keep_dir_on_drop();
                return Err(error.context(format!(
                    "failover bench, system {} (dir kept: {})",
                    system.key(),
                    cluster.dir().display()
                )));
            }
        }
        eprintln!(
            "failover bench: {} done in {:.0} s ({:.0} s so far)",
            system.key(),
            system_started.elapsed().as_secs_f64(),
            run_started.elapsed().as_secs_f64()
        );
    }
    let vip_samples = cluster.holder_sampler().samples().len();
    let core_files = cluster.core_files().len();
    let crash_lines = cluster.crash_lines().len();
    drop(cluster);
    // Issue 17's two VIPs of two services, in a cluster of their own after the others.
    // Its failure is noted, not fatal: the systems' figures above are written whatever happens.
    let two_vips = if systems.contains(&System::Taskd) {
        two_vips::run(trials)
            .inspect_err(|error| {
                eprintln!("failover bench: the two-VIP trials failed: {error:#}");
                notes.push(format!("the two-VIP trials failed, their keys are absent: {error:#}"));
            })
            .ok()
    } else {
        None
    };

    let mut report = Report::new("failover");
    for run in &runs {
        results::set_system_keys(&mut report, run);
    }
    results::set_legacy_and_ratio_keys(&mut report, &runs);
    if let Some(two_vips) = &two_vips {
        two_vips::set_keys(&mut report, two_vips);
    }
    report.set("trials", trials as f64);
    report.set("quiet_minutes", options.quiet_minutes);
    report.set("vip_samples", vip_samples as f64);
    report.set("core_files", core_files as f64);
    report.set("crash_lines", crash_lines as f64);
    report.set("n_nodes", systems::N_NODES as f64);
    report.set("session_timeout_ms", systems::SESSION_TIMEOUT.as_millis() as f64);
    report.set("run_seconds", run_started.elapsed().as_secs_f64());
    report.note("3 zbs-taskd release processes in network namespaces, standalone ZooKeeper in its own; every system in the same namespaces, one after the other");
    report.note("client: GET http://<VIP>/api/v1/status every 10 ms from a client namespace, 100 ms bound per request");
    for run in &runs {
        report.note(run.system.describe());
    }
    report.note(format!("quiet watch load: {}", quiet::Load::describe()));
    for note in notes {
        report.note(note);
    }
    report.write()?;
    let plot = bench_dir().join("failover.svg");
    std::fs::write(&plot, results::svg_plot(&runs)).with_context(|| format!("write {}", plot.display()))?;
    println!("plot: {}", plot.display());
    Ok(())
}

/// Refuses a quiet watch that is not a number of minutes.
fn ensure_quiet(options: &Options) -> Result<()> {
    if !options.quiet_minutes.is_finite() || options.quiet_minutes < 0.0 {
        bail!("--quiet-minutes must be a number of minutes ≥ 0, not {}", options.quiet_minutes);
    }
    Ok(())
}

/// Every trial of one system (the cluster runs it already), then its quiet watch.
fn run_system(
    cluster: &NetnsCluster,
    system: System,
    options: &Options,
    trials: usize,
    quiet: Duration,
) -> Result<SystemRun> {
    let trial_types =
        if options.trial_types.is_empty() { system.default_trial_types() } else { options.trial_types.clone() };
    let mut run = SystemRun { system, trials: BTreeMap::new(), two_holder_samples: BTreeMap::new(), quiet: None };
    for trial_type in trial_types {
        let mut type_trials = Vec::with_capacity(trials);
        for index in 0..trials {
            let trial = trials::run_trial(cluster, system, trial_type)
                .with_context(|| format!("{} {} trial {}", system.key(), trial_type.key(), index + 1))?;
            eprintln!(
                "failover bench: {} {} trial {:>2}: VIP up after {:>7.1} ms, client unavailable {:>7.1} ms, fail-back failures {}",
                system.key(),
                trial_type.key(),
                index + 1,
                trial.vip_up_ms,
                trial.unavailable_ms,
                trial.failback_failed_requests
            );
            type_trials.push(trial);
        }
        let two_holders = results::two_holder_samples_in(&cluster.holder_sampler().samples(), &type_trials);
        run.two_holder_samples.insert(trial_type, two_holders);
        run.trials.insert(trial_type, type_trials);
    }
    if !quiet.is_zero() {
        trials::wait_ready(cluster, system)?;
        run.quiet = Some(quiet::watch(cluster, system, quiet)?);
    }
    Ok(run)
}
