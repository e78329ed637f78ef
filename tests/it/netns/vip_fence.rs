//! The VIP's fence in the kernel (issue 13): a leader frozen with SIGSTOP cannot release its VIP,
//! so the VIP carries an address lifetime the leader renews while its contact with ZooKeeper is
//! fresh. Frozen for 1.5x the session timeout, its VIP lapses by itself before another node can
//! take over: over the whole run the VIP is never on two nodes, and the old leader's VIP is gone
//! before the new leader's appears. Woken, the old leader rejoins as a follower without the VIP.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tests::netns::{NetnsCluster, Signal};
use tests::prelude::*;

use super::{assert_never_two_holders, assert_no_crash, leader_with_pid, with_cluster, WAIT};

#[test]
fn a_frozen_leaders_vip_lapses_before_another_node_takes_it_and_it_rejoins_without_it() {
    with_cluster("vip_fence", NetnsCluster::builder(), |cluster| {
        let (old, old_pid) = leader_with_pid(cluster)?;
        let old_id = cluster.node(old).node_id.clone();
        let pause = cluster.session_timeout() * 3 / 2;
        let stopped_at = Instant::now();
        cluster.signal(old, Signal::SIGSTOP)?;
        let frozen = (|| -> Result<usize> {
            // Another node takes the VIP while the old leader is still frozen.
            let mut new = None;
            cluster.wait_until(pause, "another node holding the VIP while the leader is frozen", || {
                new = cluster
                    .holder_sampler()
                    .samples_since(stopped_at)
                    .iter()
                    .rev()
                    .find_map(|sample| sample.seen.iter().copied().find(|&node| node != old));
                new.is_some()
            })?;
            let new = new.context("no new holder")?;
            // Stay frozen for the whole pause, as the chaos run's nemesis does.
            thread::sleep(pause.saturating_sub(stopped_at.elapsed()));
            Ok(new)
        })();
        cluster.signal(old, Signal::SIGCONT)?;
        let continued_at = Instant::now();
        let new = frozen?;
        let new_id = cluster.node(new).node_id.clone();

        let samples = cluster.holder_sampler().samples_since(stopped_at);
        let last_old = samples.iter().rposition(|sample| sample.seen.contains(&old));
        let first_new = samples.iter().position(|sample| sample.seen.contains(&new)).context("no sample shows new")?;
        let old_gone_after = last_old.map(|index| samples[index].at.duration_since(stopped_at));
        let new_after = samples[first_new].at.duration_since(stopped_at);
        eprintln!(
            "vip_fence: {old_id}'s VIP last seen {old_gone_after:?} after the SIGSTOP, {new_id}'s first {new_after:?}"
        );
        ensure!(
            last_old.is_some_and(|last_old| last_old < first_new),
            "the frozen leader {old_id} still had the VIP (last seen {old_gone_after:?} after the SIGSTOP) when \
             {new_id} took it ({new_after:?})"
        );

        // Woken: the old process rejoins as a follower, and never holds the VIP again.
        cluster.wait_until(WAIT, &format!("{old_id} serving as a follower"), || {
            cluster.try_status(old).is_some_and(|status| !status.leader && !status.stopping)
        })?;
        let status = cluster.status(old)?;
        ensure!(status.pid == old_pid, "{old_id} restarted after the SIGCONT: {status:?}");
        thread::sleep(Duration::from_secs(2));
        ensure!(cluster.vip_holders()? == [new], "after the wake-up the VIP holders are {:?}", cluster.vip_holders()?);
        let back =
            cluster.holder_sampler().samples_since(continued_at).into_iter().find(|sample| sample.seen.contains(&old));
        ensure!(back.is_none(), "the woken {old_id} held the VIP again: {back:?}");
        ensure!(cluster.status(new)?.leader, "{new_id} holds the VIP but does not lead");
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}
