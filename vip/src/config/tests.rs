//! Tests of the `[vip]` section: defaults, unknown keys, and each invalid value named by its key.

use super::{VipAddress, VipConfig};
use crate::VipError;

fn config() -> VipConfig {
    VipConfig::new("10.0.0.100/24", "eth0")
}

/// The message of a `BadRequest`; fails the test on anything else.
fn bad_request(result: Result<(), VipError>) -> String {
    match result {
        Err(VipError::BadRequest(message)) => message,
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

#[test]
fn defaults_from_json_match_keepalived_and_kube_vip() {
    let parsed: VipConfig =
        serde_json::from_str(r#"{"address": "10.0.0.100/24", "interface": "eth0"}"#).expect("parse");
    assert_eq!(parsed, config());
    assert_eq!(parsed.garp_burst, 5);
    assert_eq!(parsed.garp_second_burst_after_ms, 5000);
    assert_eq!(parsed.garp_refresh_ms, 3000);
    assert_eq!(parsed.sync_interval_ms, 1000);
    assert_eq!(parsed.transient_failure_limit, 5);
    assert_eq!(parsed.retry_backoff_ms, 100);
    parsed.validate().expect("the defaults are valid");
    assert_eq!(parsed.effective_label().expect("label"), "eth0:vip");
    assert_eq!(parsed.vip().expect("vip"), VipAddress { ip: "10.0.0.100".parse().expect("ip"), prefix_len: 24 });
}

#[test]
fn unknown_and_missing_keys_are_refused() {
    let unknown =
        serde_json::from_str::<VipConfig>(r#"{"address": "10.0.0.100/24", "interface": "eth0", "garp_brust": 3}"#);
    assert!(unknown.expect_err("unknown key").to_string().contains("garp_brust"));
    let missing = serde_json::from_str::<VipConfig>(r#"{"address": "10.0.0.100/24"}"#);
    assert!(missing.expect_err("missing key").to_string().contains("interface"));
}

#[test]
fn bad_addresses_name_vip_address() {
    let cases = [
        ("not-an-address/24", "is not an IPv4 or IPv6 address"),
        ("10.0.0.100/33", "from 1 to 32"),
        ("10.0.0.100/0", "from 1 to 32"),
        ("10.0.0.100/x", "from 1 to 32"),
        ("10.0.0.100", "needs a prefix length"),
        ("fd00::100/129", "from 1 to 128"),
        ("fe80::100/64", "link-local"),
        ("ff02::1/64", "cannot be a VIP"),
        ("::1/128", "cannot be a VIP"),
        ("127.0.0.5/8", "cannot be a VIP"),
        ("224.0.0.1/24", "cannot be a VIP"),
        ("0.0.0.0/24", "cannot be a VIP"),
        ("10.0.0.0/24", "network or broadcast"),
        ("10.0.0.255/24", "network or broadcast"),
    ];
    for (address, expected) in cases {
        let mut config = config();
        config.address = address.to_string();
        let message = bad_request(config.validate());
        assert!(message.starts_with("vip.address: "), "{address}: {message}");
        assert!(message.contains(expected), "{address}: {message}");
    }
    for good in ["10.0.0.1/31", "10.0.0.7/32", "192.168.1.254/24", "fd00::100/64", "2001:db8::1/128"] {
        let mut config = config();
        config.address = good.to_string();
        config.validate().unwrap_or_else(|error| panic!("{good}: {error}"));
    }
}

#[test]
fn labels_must_be_prefixed_by_the_interface_and_fit_the_kernel() {
    let cases = [
        (Some("eth1:vip"), "eth0", "vip.label: "),
        (Some("eth0"), "eth0", "vip.label: "),
        (Some("eth0:"), "eth0", "vip.label: "),
        (Some("eth0vip"), "eth0", "vip.label: "),
        (Some("eth0:a-long-label"), "eth0", "vip.label: "),
        (Some("eth0:v ip"), "eth0", "vip.label: "),
        // The default label of a long interface name does not fit: the key still names it.
        (None, "enp0s31f6abcde", "vip.label (default"),
    ];
    for (label, interface, expected) in cases {
        let mut config = config();
        config.label = label.map(str::to_string);
        config.interface = interface.to_string();
        let message = bad_request(config.validate());
        assert!(message.starts_with(expected), "{label:?}: {message}");
    }
    let mut config = config();
    config.label = Some("eth0:cluster".into());
    config.validate().expect("valid label");
    assert_eq!(config.effective_label().expect("label"), "eth0:cluster");
}

#[test]
fn other_keys_are_named() {
    type Change = fn(&mut VipConfig);
    let cases: [(&str, Change); 8] = [
        ("vip.interface", |c| c.interface = String::new()),
        ("vip.interface", |c| c.interface = "eth0:1".into()),
        ("vip.garp_burst", |c| c.garp_burst = 0),
        ("vip.garp_second_burst_after_ms", |c| c.garp_second_burst_after_ms = 10_000_000),
        ("vip.garp_refresh_ms", |c| c.garp_refresh_ms = 5),
        ("vip.sync_interval_ms", |c| c.sync_interval_ms = 0),
        ("vip.transient_failure_limit", |c| c.transient_failure_limit = 0),
        ("vip.retry_backoff_ms", |c| c.retry_backoff_ms = 5000),
    ];
    for (key, change) in cases {
        let mut config = config();
        change(&mut config);
        let message = bad_request(config.validate());
        assert!(message.starts_with(&format!("{key}: ")), "{key}: {message}");
    }
    // Zero switches the second burst and the refresh off.
    let mut config = config();
    config.garp_second_burst_after_ms = 0;
    config.garp_refresh_ms = 0;
    config.validate().expect("valid");
    assert_eq!(config.second_burst_after(), None);
    assert_eq!(config.refresh_interval(), None);
}

#[test]
fn subnets_and_broadcast() {
    let vip: VipAddress = "10.0.0.100/24".parse().expect("vip");
    assert_eq!(vip.to_string(), "10.0.0.100/24");
    assert_eq!(vip.broadcast(), Some("10.0.0.255".parse().expect("ip")));
    assert_eq!("10.0.0.100/32".parse::<VipAddress>().expect("vip").broadcast(), None);
    let ip = |text: &str| text.parse().expect("ip");
    assert!(VipAddress::same_subnet(ip("10.0.0.5"), 24, ip("10.0.0.100")));
    assert!(!VipAddress::same_subnet(ip("10.0.1.5"), 24, ip("10.0.0.100")));
    assert!(VipAddress::same_subnet(ip("10.0.1.5"), 16, ip("10.0.0.100")));
    assert!(!VipAddress::same_subnet(ip("10.0.0.5"), 32, ip("10.0.0.100")));
    assert!(VipAddress::same_subnet(ip("fd00::1"), 64, ip("fd00::100")));
    assert!(!VipAddress::same_subnet(ip("fd00:0:0:1::1"), 64, ip("fd00::100")));
    assert!(!VipAddress::same_subnet(ip("10.0.0.5"), 24, ip("fd00::100")), "never across families");
    assert_eq!("fd00::100/64".parse::<VipAddress>().expect("vip").broadcast(), None);
}
