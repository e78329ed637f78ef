//! Failover of the VIP in a real cluster of network namespaces (see `tests::netns`): three
//! `zbs-taskd` nodes with a management and a data link each, ZooKeeper and a client on the
//! management network. Links are cut the way networks fail (interface down, or silently at the
//! switch) and processes are signalled; the outcome is asserted on which namespace holds the VIP
//! (sampled every 50 ms), the client's requests to the VIP, the daemons' pids, logs and cores.
//!
//! Each test skips (printing why) when not root or when `ip` or ZooKeeper is missing.

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
mod bad_vip_config;
mod cluster_status;
mod early_takeover;
mod listening;
mod probe_peers;
mod two_vips;
mod vip_fence;
mod vip_ipv6;
mod vip_metrics;
mod vip_set;

use tests::netns::{
    health_invalid, ip, skip_reason, NetnsCluster, NetnsClusterBuilder, Signal, MANAGEMENT_INTERFACE, VIP, VIP_PREFIX,
};
use tests::prelude::*;

/// Generous bound for anything that should happen "soon" on a busy 2-core machine.
const WAIT: Duration = Duration::from_secs(20);

/// How long a state that must last (no preemption, the whole-outage guard) is watched.
const HOLD_WINDOW: Duration = Duration::from_secs(3);

/// One cluster at a time: each runs a JVM and three daemons in five namespaces.
fn serialize() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a cluster and runs `scenario` on it; a failure panics while the cluster exists, so that
/// its drop keeps the dir with the logs (and still deletes the namespaces).
fn with_cluster(name: &str, builder: NetnsClusterBuilder, scenario: impl FnOnce(&NetnsCluster) -> Result<()>) {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping {name}: {reason}");
        return;
    }
    let _serial = serialize();
    let started = Instant::now();
    let cluster = builder.start().expect("start the network-namespace cluster");
    eprintln!("{name}: cluster formed in {:.1} s", started.elapsed().as_secs_f64());
    if let Err(error) = scenario(&cluster) {
        panic!("{error:?}\n(cluster dir: {})", cluster.dir().display());
    }
    eprintln!("{name}: scenario done after {:.1} s", started.elapsed().as_secs_f64());
}

fn assert_no_crash(cluster: &NetnsCluster) -> Result<()> {
    let cores = cluster.core_files();
    ensure!(cores.is_empty(), "core files: {cores:?}");
    let crash_lines = cluster.crash_lines();
    ensure!(crash_lines.is_empty(), "crash or self-join lines in the logs:\n{}", crash_lines.join("\n"));
    Ok(())
}

fn assert_never_two_holders(cluster: &NetnsCluster) -> Result<()> {
    let sampler = cluster.holder_sampler();
    let errors = sampler.errors();
    ensure!(errors.is_empty(), "the VIP sampler failed: {errors:?}");
    // The check must not pass vacuously: let the sampler (still running) reach a few samples,
    // which on a loaded machine can take longer than a fast hand-over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sampler.samples().len() <= 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(sampler.samples().len() > 10, "the VIP sampler took only {} samples", sampler.samples().len());
    let doubles = sampler.two_holder_samples();
    ensure!(
        doubles.is_empty(),
        "the VIP was in two namespaces at once in {} samples, first: {:?}",
        doubles.len(),
        doubles.first()
    );
    Ok(())
}

/// Waits until the client has an answer from the node at the VIP since `since` (so its neighbour
/// table has the VIP).
fn wait_client_reaches(cluster: &NetnsCluster, node: usize, since: Instant) -> Result<Instant> {
    cluster.client().wait_answered_by(&cluster.node(node).node_id, since, WAIT)
}

/// Waits until the client's neighbour entry for the VIP is the node's MAC: the gratuitous ARP
/// reached it (the client's entry was the old holder's).
fn wait_client_neighbour_is(cluster: &NetnsCluster, node: usize) -> Result<()> {
    let mac = cluster.management_mac(node)?;
    let mut last = None;
    cluster
        .wait_until(WAIT, &format!("the client's neighbour entry for the VIP to be {mac}"), || {
            last = cluster.client_vip_neighbour().ok().flatten();
            last.as_deref() == Some(mac.as_str())
        })
        .with_context(|| format!("the client's neighbour entry is {last:?}"))?;
    Ok(())
}

/// The daemons' takeover burst (`vip.garp_burst`'s default).
const TAKEOVER_BURST: usize = 5;

/// Waits until the switch has seen the takeover burst of gratuitous ARPs for the VIP from the
/// node's MAC since `since`, and checks that the watcher read without error.
fn assert_announced(cluster: &NetnsCluster, node: usize, since: Instant) -> Result<usize> {
    let mut seen = 0;
    cluster
        .wait_until(WAIT, &format!("{TAKEOVER_BURST} gratuitous ARPs from {}", cluster.node(node).node_id), || {
            seen = cluster.vip_announcements_since(node, since).unwrap_or(0);
            seen >= TAKEOVER_BURST
        })
        .with_context(|| {
            format!(
                "the switch saw {seen} announcements of the VIP from {}; every ARP since: {:?}",
                cluster.node(node).node_id,
                cluster.arp_watcher().frames_since(since)
            )
        })?;
    let errors = cluster.arp_watcher().errors();
    ensure!(errors.is_empty(), "the ARP watcher failed: {errors:?}");
    Ok(seen)
}

/// The common outcome of a failover that keeps the old leader's process: another node holds the
/// VIP (and the client reaches it there), the old process lives on with its pid and released the
/// VIP, no core, no moment with two holders. Returns the new holder.
fn assert_failover_keeps_process(
    cluster: &NetnsCluster,
    old: usize,
    old_pid: u32,
    cut_at: Instant,
    what: &str,
) -> Result<usize> {
    let new = cluster.wait_for_vip_holder(Some(old), WAIT).with_context(|| format!("the VIP moving after {what}"))?;
    let moved_after = cut_at.elapsed();
    let new_status = cluster.status(new)?;
    ensure!(new_status.leader, "{} holds the VIP but is not leader: {new_status:?}", cluster.node(new).node_id);
    wait_client_reaches(cluster, new, cut_at)?;
    let announcements = assert_announced(cluster, new, cut_at)?;
    wait_client_neighbour_is(cluster, new)?;
    ensure!(
        cluster.pid(old) == Some(old_pid),
        "the old leader's process changed: pid {:?}, was {old_pid}",
        cluster.pid(old)
    );
    let holders = cluster.vip_holders()?;
    ensure!(holders == [new], "VIP holders {holders:?}, expected only {new}:\n{}", cluster.ip_addresses(old)?);
    let outage = cluster.client().longest_outage_since(cut_at);
    eprintln!(
        "{what}: VIP on {} {:.0} ms after the cut; client outage {:?} ms; {announcements} gratuitous ARPs seen",
        cluster.node(new).node_id,
        moved_after.as_secs_f64() * 1000.0,
        outage.map(|outage| outage.duration().as_millis())
    );
    let log = cluster.log(old);
    ensure!(log.contains("leader's data network failed"), "the old leader did not log its step-down:\n{log}");
    ensure!(log.contains("vip released"), "the old leader did not log the VIP's release:\n{log}");
    assert_no_crash(cluster)?;
    assert_never_two_holders(cluster)?;
    Ok(new)
}

/// The current leader, checked to hold the VIP and to report the pid the harness started.
fn leader_with_pid(cluster: &NetnsCluster) -> Result<(usize, u32)> {
    let leader = cluster.wait_for_vip_holder(None, WAIT)?;
    let status = cluster.status(leader)?;
    ensure!(status.leader, "{} holds the VIP but is not leader: {status:?}", cluster.node(leader).node_id);
    let pid = cluster.pid(leader).context("the leader's process is not running")?;
    ensure!(status.pid == pid, "the daemon reports pid {}, the harness started {pid}", status.pid);
    let long_ago = Instant::now().checked_sub(Duration::from_secs(60)).unwrap_or_else(Instant::now);
    wait_client_reaches(cluster, leader, long_ago)?;
    Ok((leader, pid))
}

/// (a) and (c): the leader's data interface goes down → another node takes the VIP, the old
/// process survives; the link comes back → the old node rejoins as a follower and the VIP stays.
#[test]
fn data_link_down_moves_the_vip_and_the_old_leader_rejoins_without_preempting() {
    with_cluster("data_link_down", NetnsCluster::builder(), |cluster| {
        let (old, old_pid) = leader_with_pid(cluster)?;
        let cut_at = Instant::now();
        cluster.cut_data_link(old)?;
        let new = assert_failover_keeps_process(cluster, old, old_pid, cut_at, "data link down")?;

        let restored_at = Instant::now();
        cluster.restore_data_link(old)?;
        let n_nodes = cluster.n_nodes();
        cluster.wait_until(WAIT, "the old leader serving again as a follower seeing every member", || {
            cluster
                .try_status(old)
                .is_some_and(|status| !status.stopping && !status.leader && status.members.len() == n_nodes)
        })?;
        thread::sleep(HOLD_WINDOW);
        let holders = cluster.vip_holders()?;
        ensure!(holders == [new], "the VIP moved after the restore: holders {holders:?}, expected [{new}]");
        ensure!(cluster.status(new)?.leader, "the new leader lost its leadership after the restore");
        ensure!(cluster.pid(old) == Some(old_pid), "the old leader's process changed after the restore");
        let since_restore = cluster.client().samples_since(restored_at);
        let answered_by_others: Vec<_> = since_restore
            .iter()
            .filter_map(|sample| sample.answered_by.clone())
            .filter(|id| *id != cluster.node(new).node_id)
            .collect();
        ensure!(answered_by_others.is_empty(), "after the restore the VIP answered from {answered_by_others:?}");
        let n_failed = since_restore.iter().filter(|sample| !sample.ok()).count();
        // A request can time out on a busy machine; a fail-back would fail many in a row.
        ensure!(
            n_failed <= 2,
            "{n_failed} of {} client requests failed after the restore (a second interruption)",
            since_restore.len()
        );
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}

/// (b): the leader's data link is detached from its bridge, its interface stays up: only the
/// probe can notice, and the outcome is the same as an interface down.
#[test]
fn silent_data_cut_moves_the_vip_and_keeps_the_old_process() {
    with_cluster("silent_data_cut", NetnsCluster::builder(), |cluster| {
        let (old, old_pid) = leader_with_pid(cluster)?;
        let cut_at = Instant::now();
        cluster.cut_data_link_silently(old)?;
        assert_failover_keeps_process(cluster, old, old_pid, cut_at, "silent data cut")?;
        let link = tests::netns::ip(&[
            "-n",
            &cluster.node(old).namespace,
            "-o",
            "link",
            "show",
            tests::netns::DATA_INTERFACE,
        ])?;
        ensure!(link.contains("state UP"), "the silent cut should leave the data interface up: {link}");
        Ok(())
    });
}

/// (d): SIGTERM to the leader → the VIP moves, it is gone from the old node, which exits 0.
#[test]
fn sigterm_moves_the_vip_and_removes_it_from_the_old_leader() {
    with_cluster("sigterm", NetnsCluster::builder(), |cluster| {
        let (old, _) = leader_with_pid(cluster)?;
        let signalled_at = Instant::now();
        cluster.signal(old, Signal::SIGTERM)?;
        let new = cluster.wait_for_vip_holder(Some(old), WAIT)?;
        let moved_after = signalled_at.elapsed();
        let status = cluster.wait_exit(old, WAIT)?;
        ensure!(status.success(), "the SIGTERM-ed leader exited with {status}");
        wait_client_reaches(cluster, new, signalled_at)?;
        let announcements = assert_announced(cluster, new, signalled_at)?;
        wait_client_neighbour_is(cluster, new)?;
        let holders = cluster.vip_holders()?;
        ensure!(holders == [new], "VIP holders {holders:?}, expected only {new}:\n{}", cluster.ip_addresses(old)?);
        eprintln!(
            "sigterm: VIP on {} {:.0} ms after the signal; client outage {:?} ms; {announcements} gratuitous ARPs seen",
            cluster.node(new).node_id,
            moved_after.as_secs_f64() * 1000.0,
            cluster.client().longest_outage_since(signalled_at).map(|outage| outage.duration().as_millis())
        );
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}

/// (e): every node's data link down → the leader keeps the VIP (the whole-outage guard), also
/// when the links come back.
#[test]
fn whole_data_network_outage_keeps_the_vip_on_the_leader() {
    with_cluster("whole_outage", NetnsCluster::builder(), |cluster| {
        let (leader, leader_pid) = leader_with_pid(cluster)?;
        let cut_at = Instant::now();
        // The followers first, then the leader once it sees them unhealthy: cut all at one
        // instant, the leader could learn of its own link before of theirs and hand over.
        cut_whole_data_network(cluster, leader)?;
        let watch_from = Instant::now();
        while watch_from.elapsed() < HOLD_WINDOW {
            let holders = cluster.vip_holders()?;
            ensure!(
                holders == [leader],
                "during the whole outage the VIP holders are {holders:?}, expected [{leader}]"
            );
            thread::sleep(Duration::from_millis(100));
        }
        let status = cluster.status(leader)?;
        ensure!(
            status.leader && status.pid == leader_pid && !status.stopping,
            "the leader gave way in a whole outage: {status:?}"
        );
        let log = cluster.log(leader);
        ensure!(log.contains("whole-outage guard"), "the leader did not log the whole-outage guard:\n{log}");
        ensure!(cluster.client().failures_since(cut_at) <= 2, "the client lost the VIP during the whole outage");
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}

/// Cuts every node's data link as `whole_data_network_outage_keeps_the_vip_on_the_leader` does.
fn cut_whole_data_network(cluster: &NetnsCluster, leader: usize) -> Result<()> {
    for node in (0..cluster.n_nodes()).filter(|&node| node != leader) {
        cluster.cut_data_link(node)?;
    }
    // Each follower publishes its health in ZooKeeper on the change; its own status says when.
    cluster.wait_until(WAIT, "every follower's health invalid", || {
        (0..cluster.n_nodes())
            .filter(|&node| node != leader)
            .all(|node| cluster.try_status(node).is_some_and(|status| health_invalid(&status)))
    })?;
    thread::sleep(Duration::from_millis(100));
    cluster.cut_data_link(leader)?;
    cluster.wait_until(WAIT, "the leader's own health invalid", || {
        cluster.try_status(leader).is_some_and(|status| health_invalid(&status))
    })?;
    Ok(())
}

/// The end of a whole outage: every link comes back at once, so the leader's network is as good
/// as its followers' and it should keep the VIP. It does not when a follower's health turns valid
/// a few milliseconds before the leader's: the leader's own turn to valid makes its loop poll,
/// the poll reads the dispatcher's published flag, still `false` until the dispatcher's next 1 s
/// tick, sees a healthy member and stops the service "for a failed data network" (see the
/// report of the netns work; `TaskServer::poll_health` in taskd/src/task_server.rs).
#[test]
fn whole_outage_recovery_keeps_the_vip_on_the_leader() {
    with_cluster("whole_outage_recovery", NetnsCluster::builder(), |cluster| {
        let (leader, leader_pid) = leader_with_pid(cluster)?;
        cut_whole_data_network(cluster, leader)?;
        thread::sleep(Duration::from_secs(1));
        let restored_at = Instant::now();
        cluster.restore_data_link(leader)?;
        for node in (0..cluster.n_nodes()).filter(|&node| node != leader) {
            cluster.restore_data_link(node)?;
        }
        thread::sleep(HOLD_WINDOW);
        let holders = cluster.vip_holders()?;
        ensure!(holders == [leader], "after the outage the VIP holders are {holders:?}, expected [{leader}]");
        let status = cluster.status(leader)?;
        ensure!(status.leader && status.pid == leader_pid, "the leader gave way after the outage: {status:?}");
        ensure!(cluster.client().failures_since(restored_at) <= 2, "the client lost the VIP after the outage");
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}

/// (f): SIGKILL of the leader: the member next in line sees the refusals of the dead process's
/// host, takes the election over at once and holds the VIP (`crash_watch`), without waiting for
/// the session. The killed process cannot release its VIP: its fence (a kernel address lifetime)
/// removes it within the session timeout, and meanwhile nobody answers behind it. A leftover VIP
/// without a lifetime (from a daemon of before the fence, or added by hand) goes when the daemon
/// starts again.
#[test]
fn sigkill_moves_the_vip_at_once_the_fence_removes_the_dead_leaders_and_a_restart_removes_a_leftover() {
    with_cluster("sigkill", NetnsCluster::builder(), |cluster| {
        let (old, _) = leader_with_pid(cluster)?;
        let killed_at = Instant::now();
        cluster.kill(old)?;
        let mut new = None;
        cluster.wait_until(cluster.session_timeout() + WAIT, "another node holding the VIP", || {
            new = cluster.vip_holders().ok().and_then(|holders| holders.into_iter().find(|&node| node != old));
            new.is_some()
        })?;
        let new = new.context("no new holder")?;
        let moved_after = killed_at.elapsed();
        // The fence's bound: the kernel deletes the killed leader's VIP within the session timeout
        // of its last contact (`vip::fence`), plus the sampler's period.
        cluster.wait_until(
            cluster.session_timeout() + Duration::from_secs(1),
            "the killed leader's VIP lapsing",
            || cluster.vip_holders().is_ok_and(|holders| holders == [new]),
        )?;
        let lapsed_after = killed_at.elapsed();
        ensure!(
            lapsed_after <= cluster.session_timeout() + Duration::from_secs(1),
            "the killed leader's VIP outlived its fence: gone {lapsed_after:?} after the kill"
        );
        let status = cluster.status(new)?;
        ensure!(status.leader, "{} holds the VIP but does not lead: {status:?}", cluster.node(new).node_id);
        eprintln!(
            "sigkill: VIP on {} {:.0} ms after the kill; the dead leader's gone after {:.0} ms",
            cluster.node(new).node_id,
            moved_after.as_secs_f64() * 1000.0,
            lapsed_after.as_secs_f64() * 1000.0
        );

        // A permanent leftover, as a daemon without the fence leaves it.
        let vip = format!("{VIP}/{VIP_PREFIX}");
        let label = format!("{MANAGEMENT_INTERFACE}:vip");
        let namespace = &cluster.node(old).namespace;
        ip(&["-n", namespace, "addr", "add", &vip, "dev", MANAGEMENT_INTERFACE, "label", &label])?;
        let restarted_at = Instant::now();
        cluster.restart(old)?;
        cluster.wait_until(WAIT, "the restarted node removing its leftover VIP", || {
            cluster.vip_holders().is_ok_and(|holders| holders == [new])
        })?;
        cluster.wait_serving(old, WAIT)?;
        let log = cluster.log(old);
        ensure!(
            log.contains("removed a leftover vip at start"),
            "the restarted node did not log the leftover's removal:\n{log}"
        );
        thread::sleep(Duration::from_secs(1));
        ensure!(cluster.vip_holders()? == [new], "the VIP holders changed after the restart");
        let doubles_after_restart: Vec<_> = cluster
            .holder_sampler()
            .samples_since(restarted_at + Duration::from_secs(2))
            .into_iter()
            .filter(|sample| sample.holders.len() > 1)
            .collect();
        ensure!(doubles_after_restart.is_empty(), "two holders after the restart: {doubles_after_restart:?}");
        assert_no_crash(cluster)
    });
}

/// (f): the leader's management link is cut (ZooKeeper unreachable, the interface stays up) → it
/// steps down and removes the VIP before another node takes it; back on the network, it rejoins
/// as a follower.
#[test]
fn management_cut_removes_the_vip_before_another_node_takes_it() {
    with_cluster("management_cut", NetnsCluster::builder(), |cluster| {
        let (old, old_pid) = leader_with_pid(cluster)?;
        let cut_at = Instant::now();
        cluster.cut_management_link(old)?;
        let new = cluster.wait_for_vip_holder(Some(old), cluster.session_timeout() + WAIT)?;
        eprintln!(
            "management cut: VIP on {} {:.0} ms after the cut",
            cluster.node(new).node_id,
            cut_at.elapsed().as_secs_f64() * 1000.0
        );
        // The sampler looks every 50 ms: wait until it has seen the new holder too.
        cluster.wait_until(WAIT, "the VIP sampler seeing the new holder", || {
            cluster.holder_sampler().samples_since(cut_at).iter().any(|sample| sample.seen.contains(&new))
        })?;
        let samples = cluster.holder_sampler().samples_since(cut_at);
        let last_old = samples.iter().rposition(|sample| sample.seen.contains(&old));
        let first_new = samples.iter().position(|sample| sample.seen.contains(&new));
        match (last_old, first_new) {
            (Some(last_old), Some(first_new)) => ensure!(
                last_old < first_new,
                "the new holder had the VIP (sample {first_new}) before the old one gave it up (sample {last_old})"
            ),
            (_, None) => bail!("the sampler never saw the new holder"),
            (None, Some(_)) => {}
        }
        ensure!(cluster.pid(old) == Some(old_pid), "the cut-off leader's process changed");
        assert_never_two_holders(cluster)?;

        cluster.restore_management_link(old)?;
        let n_nodes = cluster.n_nodes();
        cluster.wait_until(cluster.session_timeout() + WAIT, "the cut-off node rejoining as a follower", || {
            cluster
                .try_status(old)
                .is_some_and(|status| !status.stopping && !status.leader && status.members.len() == n_nodes)
        })?;
        ensure!(cluster.vip_holders()? == [new], "the VIP moved when the cut-off node came back");
        ensure!(cluster.pid(old) == Some(old_pid), "the cut-off leader's process changed after the restore");
        assert_no_crash(cluster)?;
        assert_never_two_holders(cluster)
    });
}
