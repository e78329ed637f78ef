//! The health probe's peers across a follower's restart: a follower that restarted a moment ago
//! is still among the other follower's peers, so a silent cut of the leader right after the
//! restart moves leadership once, to a follower that keeps serving. Before, the other follower
//! probed only the leader until its next 1 s poll learnt of the returned member, heard nothing
//! and took its own data network for failed (bench failover: two hand-overs instead of one and
//! that follower's service in re-entry back-off).

use std::time::{Duration, Instant};

use anyhow::ensure;
use tests::netns::{health_valid, NetnsCluster, Signal};
use tests::prelude::*;

use super::{assert_never_two_holders, assert_no_crash, leader_with_pid, with_cluster, HOLD_WINDOW, WAIT};

/// Longer than the other follower's 1 s poll: its peers are the leader alone by then.
const AFTER_LEAVING: Duration = Duration::from_millis(1_500);

#[test]
fn a_silent_cut_right_after_a_follower_restarts_stops_no_follower() {
    with_cluster("cut_after_restart", NetnsCluster::builder(), |cluster| {
        let (leader, _) = leader_with_pid(cluster)?;
        let followers: Vec<usize> = (0..cluster.n_nodes()).filter(|&node| node != leader).collect();
        let (restarted, other) = (followers[0], followers[1]);
        cluster.signal(restarted, Signal::SIGTERM)?;
        cluster.wait_exit(restarted, WAIT)?;
        std::thread::sleep(AFTER_LEAVING);
        let other_log_before = cluster.log(other).len();
        cluster.restart(restarted)?;
        // Cut as soon as it is a member again: the other follower learns of that at its next
        // poll (up to 1 s), or never in time without the memory.
        cluster.wait_until(WAIT, "the restarted follower a member again", || {
            cluster.try_status(restarted).is_some_and(|status| status.members.len() == cluster.n_nodes())
        })?;
        let cut_at = Instant::now();
        cluster.cut_data_link_silently(leader)?;
        let new = cluster.wait_for_vip_holder(Some(leader), WAIT)?;
        let moved_after = cut_at.elapsed();
        std::thread::sleep(HOLD_WINDOW);
        let holders = cluster.vip_holders()?;
        ensure!(holders == [new], "the VIP moved again after it reached node {new}: now on {holders:?}");
        let other_log = cluster.log(other)[other_log_before..].to_string();
        let stops: Vec<&str> = other_log.lines().filter(|line| line.contains("stopping the task server")).collect();
        ensure!(stops.is_empty(), "the follower that did not restart stopped its service: {stops:#?}");
        for follower in followers {
            let status = cluster.try_status(follower);
            ensure!(
                status.as_ref().is_some_and(|status| !status.stopping && health_valid(status)),
                "follower {follower} is not serving with a valid data network: {status:?}"
            );
        }
        eprintln!("cut_after_restart: VIP on node {new} {:.0} ms after the cut", moved_after.as_secs_f64() * 1000.0);
        cluster.restore_data_link(leader)?;
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}
