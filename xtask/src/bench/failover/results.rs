//! The failover benchmark's figures: each system's trials and quiet watch turned into
//! `failover.json` keys (pure, from the measured values), and the plot.
//!
//! Keys, for each system S and trial type T run: `{S}_{T}_vip_up_ms_{p50,p99,max}`,
//! `{S}_{T}_unavailable_ms_{p50,p99}`, `{S}_{T}_vip_on_two_nodes_samples`,
//! `{S}_{T}_failback_failed_requests`, `{S}_{T}_vip_stayed_trials` (a crashed keepalived that
//! took its VIP back before anyone else had it; those trials are left out of the percentiles),
//! `{S}_{T}_old_not_rejoined_trials` (ours: the old node not back as a follower within 10 s of
//! its restore, restarted to go on);
//! per system `{S}_vip_on_two_nodes_samples` (every trial type but crash, whose dead holder's
//! leftover is `{S}_crash_vip_on_two_nodes_samples`), `{S}_failback_failed_requests`,
//! `{S}_spurious_failovers` and the quiet watch's parts (`{S}_quiet_*`). Today's keys stay:
//! the unprefixed `{T}_*` and `vip_on_two_nodes_samples` are ours at the bench's settings, and
//! `{T}_vip_up_ratio`/`{T}_unavailable_ratio` ours over keepalived's at defaults (p50s), now
//! with `{T}_tuned_vip_up_ratio` (ours tuned over keepalived tuned).

use std::collections::BTreeMap;
use std::time::Instant;

use ::tests::netns::HolderSample;

use super::quiet::QuietOutcome;
use super::systems::System;
use super::trials::{Trial, TrialType};
use crate::bench::report::{percentile, Report};

/// Everything measured for one system.
#[derive(Clone, Debug)]
pub struct SystemRun {
    pub system: System,
    pub trials: BTreeMap<TrialType, Vec<Trial>>,
    /// Two-holder samples taken during each trial type's trials.
    pub two_holder_samples: BTreeMap<TrialType, usize>,
    pub quiet: Option<QuietOutcome>,
}

/// How many of `samples` fall inside one of the trials' windows and show two holders.
pub fn two_holder_samples_in(samples: &[HolderSample], trials: &[Trial]) -> usize {
    let windows: Vec<(Instant, Instant)> = trials.iter().map(|trial| (trial.started_at, trial.ended_at)).collect();
    samples
        .iter()
        .filter(|sample| sample.holders.len() > 1)
        .filter(|sample| windows.iter().any(|(start, end)| *start <= sample.at && sample.at <= *end))
        .count()
}

/// The VIP-up times of the trials where the VIP moved.
fn vip_up_values(trials: &[Trial]) -> Vec<f64> {
    trials.iter().filter(|trial| trial.vip_moved()).map(|trial| trial.vip_up_ms).collect()
}

fn unavailable_values(trials: &[Trial]) -> Vec<f64> {
    trials.iter().filter(|trial| trial.vip_moved()).map(|trial| trial.unavailable_ms).collect()
}

/// Writes one system's keys.
pub fn set_system_keys(report: &mut Report, run: &SystemRun) {
    let system = run.system.key();
    let mut failback = 0;
    let mut two_holders_outside_crash = 0;
    for (trial_type, trials) in &run.trials {
        let prefix = format!("{system}_{}", trial_type.key());
        let mut vip_up = vip_up_values(trials);
        let mut unavailable = unavailable_values(trials);
        report.set(&format!("{prefix}_vip_up_ms_p50"), percentile(&mut vip_up, 0.5));
        report.set(&format!("{prefix}_vip_up_ms_p99"), percentile(&mut vip_up, 0.99));
        report.set(&format!("{prefix}_vip_up_ms_max"), percentile(&mut vip_up, 1.0));
        report.set(&format!("{prefix}_unavailable_ms_p50"), percentile(&mut unavailable, 0.5));
        report.set(&format!("{prefix}_unavailable_ms_p99"), percentile(&mut unavailable, 0.99));
        report.set(
            &format!("{prefix}_vip_stayed_trials"),
            trials.iter().filter(|trial| !trial.vip_moved()).count() as f64,
        );
        report.set(
            &format!("{prefix}_old_not_rejoined_trials"),
            trials.iter().filter(|trial| !trial.old_rejoined).count() as f64,
        );
        let type_failback: usize = trials.iter().map(|trial| trial.failback_failed_requests).sum();
        report.set(&format!("{prefix}_failback_failed_requests"), type_failback as f64);
        failback += type_failback;
        let two_holders = run.two_holder_samples.get(trial_type).copied().unwrap_or(0);
        report.set(&format!("{prefix}_vip_on_two_nodes_samples"), two_holders as f64);
        if *trial_type == TrialType::Crash {
            report.set(&format!("{system}_crash_vip_on_two_nodes_samples"), two_holders as f64);
        } else {
            two_holders_outside_crash += two_holders;
        }
    }
    report.set(&format!("{system}_vip_on_two_nodes_samples"), two_holders_outside_crash as f64);
    report.set(&format!("{system}_failback_failed_requests"), failback as f64);
    if let Some(quiet) = &run.quiet {
        report.set(&format!("{system}_spurious_failovers"), quiet.spurious_failovers() as f64);
        report.set(&format!("{system}_quiet_vip_moves"), quiet.vip_moves as f64);
        report.set(&format!("{system}_quiet_leader_moves"), quiet.leader_moves as f64);
        report.set(&format!("{system}_quiet_vip_on_two_nodes_samples"), quiet.two_holder_samples as f64);
        report.set(&format!("{system}_quiet_seconds"), quiet.seconds);
    }
}

/// Today's keys (before issue 14) and the ratios, from the systems' keys already set.
pub fn set_legacy_and_ratio_keys(report: &mut Report, runs: &[SystemRun]) {
    if let Some(ours) = runs.iter().find(|run| run.system == System::Taskd) {
        for (trial_type, trials) in &ours.trials {
            let key = trial_type.key();
            let mut vip_up = vip_up_values(trials);
            let mut unavailable = unavailable_values(trials);
            report.set(&format!("{key}_unavailable_ms_p50"), percentile(&mut unavailable, 0.5));
            report.set(&format!("{key}_unavailable_ms_p99"), percentile(&mut unavailable, 0.99));
            report.set(&format!("{key}_unavailable_ms_max"), percentile(&mut unavailable, 1.0));
            report.set(&format!("{key}_vip_up_ms_p50"), percentile(&mut vip_up, 0.5));
            report.set(&format!("{key}_vip_up_ms_p99"), percentile(&mut vip_up, 0.99));
            report.set(&format!("{key}_vip_up_ms_max"), percentile(&mut vip_up, 1.0));
        }
        let all: usize = ours.two_holder_samples.values().sum();
        report.set("vip_on_two_nodes_samples", all as f64);
    }
    let ours_failback: usize = runs
        .iter()
        .filter(|run| run.system.is_ours())
        .flat_map(|run| run.trials.values().flatten())
        .map(|trial| trial.failback_failed_requests)
        .sum();
    report.set("failback_failed_requests", ours_failback as f64);
    for trial_type in TrialType::ALL {
        let key = trial_type.key();
        let ratio = |report: &Report, ours: &str, theirs: &str| -> Option<f64> {
            let ours = report.results.get(ours).copied()?;
            let theirs = report.results.get(theirs).copied()?;
            Some(if theirs > 0.0 { ours / theirs } else { f64::NAN })
        };
        if let Some(value) =
            ratio(report, &format!("taskd_{key}_vip_up_ms_p50"), &format!("keepalived_{key}_vip_up_ms_p50"))
        {
            report.set(&format!("{key}_vip_up_ratio"), value);
        }
        if let Some(value) =
            ratio(report, &format!("taskd_{key}_unavailable_ms_p50"), &format!("keepalived_{key}_unavailable_ms_p50"))
        {
            report.set(&format!("{key}_unavailable_ratio"), value);
        }
        if let Some(value) =
            ratio(report, &format!("taskd_tuned_{key}_vip_up_ms_p50"), &format!("keepalived_tuned_{key}_vip_up_ms_p50"))
        {
            report.set(&format!("{key}_tuned_vip_up_ratio"), value);
        }
    }
}

/// Per-trial VIP-up times of every system, grouped by trial type, as an SVG (log time axis).
/// A drawing error (none is expected on a string backend) gives an SVG saying so.
pub fn svg_plot(runs: &[SystemRun]) -> String {
    let mut groups: Vec<crate::bench::plot::Group> = Vec::new();
    for trial_type in TrialType::ALL {
        let columns: Vec<crate::bench::plot::Column> = runs
            .iter()
            .filter_map(|run| Some((run.system.key().to_string(), vip_up_values(run.trials.get(&trial_type)?))))
            .collect();
        if !columns.is_empty() {
            groups.push((trial_type.key().to_string(), columns));
        }
    }
    crate::bench::plot::grouped_scatter("VIP up after the fault, per trial (ms, log scale)", "ms", &groups)
        .unwrap_or_else(|error| {
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"40\"><text x=\"10\" y=\"25\">{}</text></svg>\n",
                format!("{error:#}").replace('&', "&amp;").replace('<', "&lt;")
            )
        })
}

#[cfg(test)]
mod tests;
