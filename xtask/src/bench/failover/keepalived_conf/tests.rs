//! Tests of the keepalived config writer: what each profile contains, and that the weights
//! make a cut-off node the lowest.

use super::*;

fn addresses(check_script: &Path) -> NodeAddresses<'_> {
    NodeAddresses {
        index: 0,
        node_id: "node-1",
        data_address: Ipv4Addr::new(10, 213, 2, 1),
        peers: vec![(1, Ipv4Addr::new(10, 213, 2, 2)), (2, Ipv4Addr::new(10, 213, 2, 3))],
        check_script,
        management_interface: "mgmt0",
        data_interface: "data0",
        vip: "10.213.1.100/24",
    }
}

#[test]
fn defaults_have_no_bfd_and_advertise_every_second() {
    let text = config(Profile::Defaults, &addresses(Path::new("/x/check.sh"))).expect("config");
    assert!(!text.contains("bfd"), "{text}");
    assert!(text.contains("advert_int 1\n"), "{text}");
    assert!(text.contains("script \"/x/check.sh\""), "{text}");
    assert!(text.contains("10.213.1.100/24 dev mgmt0 label mgmt0:vip"), "{text}");
}

#[test]
fn tuned_forms_track_a_weighted_bfd_session_per_peer() {
    for (profile, multiplier) in [(Profile::Fastest, 5), (Profile::FastestStable, 10)] {
        let text = config(profile, &addresses(Path::new("/x/check.sh"))).expect("config");
        for line in [
            "vrrp_version 3",
            "advert_int 0.05",
            "vrrp_rt_priority 50",
            "bfd_rt_priority 50",
            "bfd_rlimit_rttime 1000000",
            "vrrp_no_swap",
            "bfd_no_swap",
            "neighbor_ip 10.213.2.2",
            "neighbor_ip 10.213.2.3",
            "source_ip 10.213.2.1",
            "peer_n2 weight -36",
            "peer_n3 weight -16",
        ] {
            assert!(text.contains(line), "{profile:?}: no {line:?} in\n{text}");
        }
        assert!(text.contains(&format!("multiplier {multiplier}\n")), "{text}");
        assert!(!text.contains("peer_n1"), "no session to itself:\n{text}");
        assert!(!text.contains("nopreempt"), "{text}");
    }
}

#[test]
fn a_fourth_node_is_refused_not_guessed() {
    let script = Path::new("/x/check.sh");
    let mut node = addresses(script);
    node.peers.push((3, Ipv4Addr::new(10, 213, 2, 4)));
    assert!(config(Profile::FastestStable, &node).is_err());
    assert!(config(Profile::Defaults, &node).is_ok());
}

#[test]
fn a_cut_off_node_falls_below_both_survivors() {
    for cut in 0..3 {
        let priorities = priorities_after_cut(3, &[cut]);
        for survivor in (0..3).filter(|&node| node != cut) {
            assert!(priorities[cut] < priorities[survivor], "cut {cut}: {priorities:?}");
        }
        let survivors: Vec<i32> = (0..3).filter(|&node| node != cut).map(|node| priorities[node]).collect();
        assert_ne!(survivors[0], survivors[1], "cut {cut}: the survivors tie: {priorities:?}");
    }
    assert_eq!(priorities_after_cut(3, &[]), vec![BASE_PRIORITY; 3]);
}
