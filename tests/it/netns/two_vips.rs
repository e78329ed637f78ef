//! Two VIPs, one per service (`[[vip]]` for `default` on `mgmt0` and `iscsi` on `svc0`, the
//! fixture's `second_vip(true)`): the leader holds both; they move together on a data link down,
//! a silent data cut and SIGTERM (both announced on the switch by the new leader, both gone from
//! the old one, neither ever on two nodes); `vip set --service` of one leaves the other alone; and
//! a leader whose second VIP's interface vanishes keeps serving the first and reports the
//! second's error for its service.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use tests::netns::{
    ip, HolderSampler, NetnsCluster, NetnsClusterBuilder, Signal, MANAGEMENT_INTERFACE, SECOND_VIP, SECOND_VIP_SERVICE,
    SERVICE_INTERFACE, VIP,
};
use tests::prelude::*;

use super::{assert_announced, assert_never_two_holders, assert_no_crash, with_cluster, TAKEOVER_BURST, WAIT};

const VIPS_PATH: &str = "/api/v2/task_center/vips";
const SET_PATH: &str = "/api/v2/task_center/vip/set";

fn two_vips() -> NetnsClusterBuilder {
    NetnsCluster::builder().second_vip(true)
}

fn second_sampler(cluster: &NetnsCluster) -> Result<&HolderSampler> {
    cluster.second_holder_sampler().context("the cluster was built without the second VIP")
}

/// The node that holds both VIPs (and leads); an error if they are not on one node.
fn holder_of_both(cluster: &NetnsCluster, except: Option<usize>) -> Result<usize> {
    let mut holder = None;
    cluster
        .wait_until(WAIT, &format!("both VIPs on one node other than {except:?}"), || {
            let first = cluster.address_holders(VIP).unwrap_or_default();
            let second = cluster.address_holders(SECOND_VIP).unwrap_or_default();
            holder = match (&first[..], &second[..]) {
                ([a], [b]) if a == b && Some(*a) != except => Some(*a),
                _ => None,
            };
            holder.is_some()
        })
        .with_context(|| {
            format!(
                "VIP holders {:?}, second VIP holders {:?}",
                cluster.address_holders(VIP).ok(),
                cluster.address_holders(SECOND_VIP).ok()
            )
        })?;
    let holder = holder.context("no holder")?;
    ensure!(cluster.status(holder)?.leader, "{} holds both VIPs but is not leader", cluster.node(holder).node_id);
    Ok(holder)
}

/// Waits for the takeover burst of the second VIP from `node`'s `svc0` on the service bridge.
fn assert_second_announced(cluster: &NetnsCluster, node: usize, since: Instant) -> Result<usize> {
    let mut seen = 0;
    cluster
        .wait_until(WAIT, &format!("{TAKEOVER_BURST} announcements of {SECOND_VIP}"), || {
            seen = cluster.second_vip_announcements_since(node, since).unwrap_or(0);
            seen >= TAKEOVER_BURST
        })
        .with_context(|| format!("the service bridge saw {seen} announcements of {SECOND_VIP}"))?;
    let errors = cluster.second_arp_watcher().map(|watcher| watcher.errors()).unwrap_or_default();
    ensure!(errors.is_empty(), "the service bridge's ARP watcher failed: {errors:?}");
    Ok(seen)
}

/// Neither VIP was ever on two nodes at once (each sampler took enough samples).
fn assert_neither_on_two_nodes(cluster: &NetnsCluster) -> Result<()> {
    assert_never_two_holders(cluster)?;
    let sampler = second_sampler(cluster)?;
    ensure!(sampler.errors().is_empty(), "the second VIP's sampler failed: {:?}", sampler.errors());
    ensure!(sampler.samples().len() > 10, "the second VIP's sampler took only {} samples", sampler.samples().len());
    let doubles = sampler.two_holder_samples();
    ensure!(doubles.is_empty(), "the second VIP was on two nodes at once: {:?}", doubles.first());
    Ok(())
}

/// What every failover of the two VIPs ends with: both on one new node, announced there, gone
/// from the old leader, never on two nodes.
fn assert_both_moved(cluster: &NetnsCluster, old: usize, since: Instant, what: &str) -> Result<usize> {
    let new = holder_of_both(cluster, Some(old)).with_context(|| format!("both VIPs moving after {what}"))?;
    let moved_after = since.elapsed();
    let first = assert_announced(cluster, new, since)?;
    let second = assert_second_announced(cluster, new, since)?;
    ensure!(cluster.address_holders(VIP)? == [new], "VIP holders: {:?}", cluster.address_holders(VIP)?);
    ensure!(
        cluster.address_holders(SECOND_VIP)? == [new],
        "second VIP holders: {:?}",
        cluster.address_holders(SECOND_VIP)?
    );
    eprintln!(
        "{what}: both VIPs on {} {:.0} ms after; {first} and {second} announcements seen",
        cluster.node(new).node_id,
        moved_after.as_secs_f64() * 1000.0
    );
    assert_no_crash(cluster)?;
    assert_neither_on_two_nodes(cluster)?;
    Ok(new)
}

#[test]
fn two_vips_move_together_on_a_data_link_down() {
    with_cluster("two_vips_link_down", two_vips(), |cluster| {
        let old = holder_of_both(cluster, None)?;
        let cut_at = Instant::now();
        cluster.cut_data_link(old)?;
        assert_both_moved(cluster, old, cut_at, "data link down")?;
        let log = cluster.log(old);
        ensure!(log.contains("vip released"), "the old leader did not log releasing its VIPs:\n{log}");
        Ok(())
    });
}

#[test]
fn two_vips_move_together_on_a_silent_data_cut() {
    with_cluster("two_vips_silent_cut", two_vips(), |cluster| {
        let old = holder_of_both(cluster, None)?;
        let old_pid = cluster.pid(old).context("the leader runs")?;
        let cut_at = Instant::now();
        cluster.cut_data_link_silently(old)?;
        assert_both_moved(cluster, old, cut_at, "silent data cut")?;
        ensure!(cluster.pid(old) == Some(old_pid), "the old leader's process changed");
        Ok(())
    });
}

#[test]
fn two_vips_move_together_on_sigterm() {
    with_cluster("two_vips_sigterm", two_vips(), |cluster| {
        let old = holder_of_both(cluster, None)?;
        let signalled_at = Instant::now();
        cluster.signal(old, Signal::SIGTERM)?;
        assert_both_moved(cluster, old, signalled_at, "sigterm")?;
        let status = cluster.wait_exit(old, WAIT)?;
        ensure!(status.success(), "the SIGTERM-ed leader exited with {status}");
        let log = cluster.log(old);
        for service in ["default", SECOND_VIP_SERVICE] {
            ensure!(
                log.lines().any(|line| line.contains("vip released") && line.contains(service)),
                "the old leader did not log releasing the VIP of {service}:\n{log}"
            );
        }
        Ok(())
    });
}

/// One service's VIP set and cleaned at run time; the other service's VIP never leaves the
/// leader. Bad service names are refused.
#[test]
fn vip_set_of_one_service_leaves_the_other_untouched() {
    with_cluster("two_vips_set", two_vips(), |cluster| {
        let leader = holder_of_both(cluster, None)?;
        let moved = Ipv4Addr::new(10, 213, 3, 101);
        let set_at = Instant::now();
        let body =
            json!({ "service": SECOND_VIP_SERVICE, "address": format!("{moved}/24"), "interface": SERVICE_INTERFACE });
        let (status, answer) = cluster.http("POST", &cluster.api_url(leader, SET_PATH), Some(&body))?;
        ensure!(status == 200 && answer["service"] == SECOND_VIP_SERVICE, "set answered {status}: {answer}");
        cluster.wait_until(WAIT, "the iscsi VIP moved on the leader", || {
            cluster.address_holders(moved).ok().as_deref() == Some(&[leader][..])
                && cluster.address_holders(SECOND_VIP).ok().is_some_and(|holders| holders.is_empty())
        })?;
        let follower = (leader + 1) % cluster.n_nodes();
        let (status, shown) = cluster.http("GET", &cluster.api_url(follower, VIPS_PATH), None)?;
        ensure!(status == 200, "vips answered {status}: {shown}");
        let vips = shown["vips"].as_array().context("a list of VIPs")?;
        ensure!(vips.len() == 2, "two VIPs expected: {shown}");
        ensure!(vips[0]["service"] == "default" && vips[0]["address"] == format!("{VIP}/24"), "{shown}");
        ensure!(vips[1]["service"] == SECOND_VIP_SERVICE && vips[1]["address"] == format!("{moved}/24"), "{shown}");
        ensure!(vips[1]["source"] == "stored" && vips[0]["source"] == "config", "{shown}");

        // The service path form, and hostile or unknown names.
        let (status, one) = cluster.http(
            "GET",
            &cluster.api_url(leader, &format!("/api/v2/task_center/vip/{SECOND_VIP_SERVICE}")),
            None,
        )?;
        ensure!(status == 200 && one["address"] == format!("{moved}/24") && one["held"] == true, "{status}: {one}");
        for (path, body, expected) in [
            ("/api/v2/task_center/vip/ISCSI", None, 400),
            ("/api/v2/task_center/vip/nfs", None, 404),
            ("/api/v2/task_center/vip/set", Some(json!({ "service": "../quorum", "clear": true })), 400),
            ("/api/v2/task_center/vip/set", Some(json!({ "service": "nfs", "clear": true })), 404),
            ("/api/v2/task_center/vip/iscsi/set", Some(json!({ "service": "default", "clear": true })), 400),
        ] {
            let method = if body.is_some() { "POST" } else { "GET" };
            let (status, answer) = cluster.http(method, &cluster.api_url(leader, path), body.as_ref())?;
            ensure!(status == expected, "{method} {path} {body:?} answered {status}, not {expected}: {answer}");
            ensure!(answer["error"].as_str().is_some_and(|error| !error.is_empty()), "{path}: no error: {answer}");
        }

        // Clean (the path form): back to the file's address; the default VIP never moved.
        let (status, answer) = cluster.http(
            "POST",
            &cluster.api_url(leader, &format!("/api/v2/task_center/vip/{SECOND_VIP_SERVICE}/set")),
            Some(&json!({ "clear": true })),
        )?;
        ensure!(status == 200 && answer["source"] == "config", "clean answered {status}: {answer}");
        cluster.wait_until(WAIT, "the iscsi VIP back at the file's address", || {
            cluster.address_holders(SECOND_VIP).ok().as_deref() == Some(&[leader][..])
                && cluster.address_holders(moved).ok().is_some_and(|holders| holders.is_empty())
        })?;
        let default_gaps: Vec<_> = cluster
            .holder_sampler()
            .samples_since(set_at)
            .into_iter()
            .filter(|sample| sample.holders != [leader])
            .collect();
        ensure!(default_gaps.is_empty(), "the default VIP left the leader during the set: {:?}", default_gaps.first());
        assert_no_crash(cluster)?;
        assert_neither_on_two_nodes(cluster)
    });
}

/// The leader's `svc0` vanishes: it keeps leading and serving the default VIP, and reports the
/// iscsi VIP's error in `vip show`, the log and the error metric with the service label.
#[test]
fn a_leader_whose_second_interface_vanishes_keeps_the_first_vip_and_reports_the_second() {
    with_cluster("two_vips_interface_gone", two_vips(), |cluster| {
        let leader = holder_of_both(cluster, None)?;
        let deleted_at = Instant::now();
        cluster.delete_service_interface(leader)?;
        let mut shown = serde_json::Value::Null;
        cluster.wait_until(WAIT, "vip show reporting the iscsi VIP's error", || {
            shown = cluster
                .http("GET", &cluster.api_url(leader, VIPS_PATH), None)
                .map(|(_, body)| body)
                .unwrap_or_default();
            shown["vips"][1]["error"].as_str().is_some_and(|error| error.contains(SERVICE_INTERFACE))
        })?;
        ensure!(shown["vips"][0]["error"].is_null() && shown["vips"][0]["held"] == true, "the default VIP: {shown}");
        // Past the transient failure limit (5 at 1 s) and some: still the leader, still the VIP.
        std::thread::sleep(Duration::from_secs(8));
        let status = cluster.status(leader)?;
        ensure!(status.leader && !status.stopping, "the leader left over one VIP: {status:?}");
        let gaps: Vec<_> = cluster
            .holder_sampler()
            .samples_since(deleted_at)
            .into_iter()
            .filter(|sample| sample.holders != [leader])
            .collect();
        ensure!(gaps.is_empty(), "the default VIP left the leader: {:?}", gaps.first());
        let log = cluster.log(leader);
        ensure!(
            log.lines().any(|line| line.contains("cannot be held") && line.contains(SECOND_VIP_SERVICE)),
            "the leader did not log the iscsi VIP's failure:\n{log}"
        );
        let (status, text) = cluster.http_text(&cluster.api_url(leader, "/metrics"))?;
        ensure!(status == 200, "GET /metrics answered {status}: {text}");
        ensure!(
            text.lines().any(|line| line.starts_with("zbs_taskd_vip_errors_total")
                && line.contains(&format!("service=\"{SECOND_VIP_SERVICE}\""))
                && line.contains("kind=\"interface\"")
                && !line.ends_with(" 0")),
            "no interface error counted for the iscsi VIP:\n{text}"
        );
        assert_no_crash(cluster)
    });
}

/// A node that starts removes what a killed run left under every VIP's label (here addresses of
/// an earlier `vip set`, on both interfaces), and nothing else.
#[test]
fn a_starting_node_removes_the_leftovers_of_every_vip() {
    with_cluster("two_vips_leftovers", two_vips(), |cluster| {
        let leader = holder_of_both(cluster, None)?;
        let follower = (leader + 1) % cluster.n_nodes();
        cluster.signal(follower, Signal::SIGTERM)?;
        cluster.wait_exit(follower, WAIT)?;
        let namespace = cluster.node(follower).namespace.clone();
        let leftovers =
            [(Ipv4Addr::new(10, 213, 1, 77), MANAGEMENT_INTERFACE), (Ipv4Addr::new(10, 213, 3, 77), SERVICE_INTERFACE)];
        for (address, interface) in leftovers {
            let label = format!("{interface}:vip");
            ip(&["-n", &namespace, "addr", "add", &format!("{address}/24"), "dev", interface, "label", &label])?;
        }
        // An address under another label is not the daemon's: it stays.
        ip(&["-n", &namespace, "addr", "add", "10.213.3.78/24", "dev", SERVICE_INTERFACE, "label", "svc0:other"])?;
        cluster.restart(follower)?;
        cluster.wait_until(WAIT, "the restarted node removing both leftovers", || {
            leftovers
                .iter()
                .all(|(address, _)| cluster.address_holders(*address).is_ok_and(|holders| holders.is_empty()))
        })?;
        ensure!(
            cluster.address_holders(Ipv4Addr::new(10, 213, 3, 78))? == [follower],
            "an address under another label was removed"
        );
        let log = cluster.log(follower);
        for service in ["default", SECOND_VIP_SERVICE] {
            ensure!(
                log.lines().any(|line| line.contains("removed a leftover") && line.contains(service)),
                "the restarted node did not log removing the leftover of {service}:\n{log}"
            );
        }
        ensure!(holder_of_both(cluster, None)? == leader, "the VIPs moved while a follower restarted");
        assert_no_crash(cluster)
    });
}

/// A new leader whose second VIP's interface is missing at takeover keeps the first VIP, reports
/// the second's error, and takes the second as soon as the interface comes.
#[test]
fn a_second_vip_missing_at_takeover_is_taken_when_its_interface_comes() {
    with_cluster("two_vips_missing_at_takeover", two_vips(), |cluster| {
        let old = holder_of_both(cluster, None)?;
        for node in (0..cluster.n_nodes()).filter(|&node| node != old) {
            cluster.delete_service_interface(node)?;
        }
        cluster.signal(old, Signal::SIGTERM)?;
        let mut new = None;
        cluster.wait_until(WAIT, "another node holding the default VIP", || {
            new = match cluster.address_holders(VIP).ok().as_deref() {
                Some(&[node]) if node != old => Some(node),
                _ => None,
            };
            new.is_some()
        })?;
        let new = new.context("no new holder")?;
        let mut shown = serde_json::Value::Null;
        cluster.wait_until(WAIT, "the new leader reporting the iscsi VIP's error", || {
            shown =
                cluster.http("GET", &cluster.api_url(new, VIPS_PATH), None).map(|(_, body)| body).unwrap_or_default();
            shown["vips"][1]["error"].as_str().is_some_and(|error| error.contains(SERVICE_INTERFACE))
        })?;
        std::thread::sleep(Duration::from_secs(2));
        ensure!(cluster.status(new)?.leader, "the new leader left over its missing second interface");
        ensure!(cluster.address_holders(VIP)? == [new], "the default VIP moved: {:?}", cluster.address_holders(VIP)?);
        ensure!(cluster.address_holders(SECOND_VIP)?.is_empty(), "the second VIP is held somewhere");

        let restored_at = Instant::now();
        cluster.restore_service_interface(new)?;
        cluster.wait_until(WAIT, "the new leader taking the second VIP", || {
            cluster.address_holders(SECOND_VIP).ok().as_deref() == Some(&[new][..])
        })?;
        assert_second_announced(cluster, new, restored_at)?;
        cluster.wait_until(WAIT, "the iscsi VIP's error cleared", || {
            cluster
                .http("GET", &cluster.api_url(new, VIPS_PATH), None)
                .is_ok_and(|(_, body)| body["vips"][1]["error"].is_null() && body["vips"][1]["held"] == true)
        })?;
        ensure!(cluster.status(new)?.leader, "the new leader lost its leadership");
        assert_no_crash(cluster)?;
        assert_neither_on_two_nodes(cluster)
    });
}
