//! Tests of the VIP tables: `[[vip]]`, the old `[vip]` as `default`, the flags, and duplicates.

use clap::Parser;

use crate::config::{CommandLine, Config, ConfigError};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, &CommandLine::default())
}

fn error_text(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("expected an error, got {:?}", config.vips),
        Err(error) => error.to_string(),
    }
}

const TWO: &str = "[[vip]]\nservice = \"default\"\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n\
                   [[vip]]\nservice = \"iscsi\"\naddress = \"10.0.1.100/24\"\ninterface = \"eth1\"\ngarp_burst = 3\n";

#[test]
fn several_vip_tables_give_one_vip_per_service_in_file_order() {
    let config = parse(TWO).expect("valid");
    let services: Vec<&str> = config.vips.iter().map(|vip| vip.service.as_str()).collect();
    assert_eq!(services, ["default", "iscsi"]);
    let iscsi = config.vip("iscsi").expect("iscsi");
    assert_eq!((iscsi.address.as_str(), iscsi.interface.as_str(), iscsi.garp_burst), ("10.0.1.100/24", "eth1", 3));
    assert_eq!(config.main_vip().map(|vip| vip.service.as_str()), Some("default"));
}

#[test]
fn a_vip_table_without_a_service_is_the_default_service() {
    let config = parse("[[vip]]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n").expect("valid");
    assert_eq!(config.vips.len(), 1);
    assert_eq!(config.vips[0].service, "default");
    let config =
        parse("[vip]\nservice = \"mgmt\"\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n").expect("valid");
    assert_eq!(config.vips[0].service, "mgmt");
}

#[test]
fn duplicate_services_and_addresses_are_refused_naming_both() {
    let text = "[[vip]]\nservice = \"iscsi\"\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n\
                [[vip]]\nservice = \"iscsi\"\naddress = \"10.0.1.100/24\"\ninterface = \"eth1\"\n";
    let message = error_text(parse(text));
    assert!(message.contains("vip.service") && message.contains("iscsi"), "{message}");
    let text = "[[vip]]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n\
                [[vip]]\nservice = \"iscsi\"\naddress = \"10.0.0.100/16\"\ninterface = \"eth1\"\n";
    let message = error_text(parse(text));
    assert!(message.contains("vip.address") && message.contains("iscsi") && message.contains("default"), "{message}");
}

#[test]
fn hostile_service_names_and_unknown_keys_are_refused() {
    for service in ["../etc", "a/b", "", "ISCSI", ".."] {
        let text = format!("[[vip]]\nservice = {service:?}\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n");
        let message = error_text(parse(&text));
        assert!(message.contains("vip.service"), "{service:?}: {message}");
    }
    let message = error_text(parse("[[vip]]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\nadress = 1\n"));
    assert!(message.contains("adress"), "{message}");
    let message = error_text(parse("vip = 3\n"));
    assert!(message.contains("vip"), "{message}");
}

#[test]
fn the_flags_set_the_default_service_and_leave_the_others() {
    let flags = CommandLine::try_parse_from(["zbs-taskd", "--vip-address", "10.0.0.99/24", "--vip-interface", "eth9"])
        .expect("flags");
    let config = Config::from_toml(TWO, &flags).expect("valid");
    let default = config.vip("default").expect("default");
    assert_eq!((default.address.as_str(), default.interface.as_str()), ("10.0.0.99/24", "eth9"));
    assert_eq!(config.vip("iscsi").map(|vip| vip.address.as_str()), Some("10.0.1.100/24"));
    let only_iscsi = "[[vip]]\nservice = \"iscsi\"\naddress = \"10.0.1.100/24\"\ninterface = \"eth1\"\n";
    let config = Config::from_toml(only_iscsi, &flags).expect("valid");
    let services: Vec<&str> = config.vips.iter().map(|vip| vip.service.as_str()).collect();
    assert_eq!(services, ["iscsi", "default"]);
}

#[test]
fn the_vip_tables_serialize_back_to_what_they_read() {
    let config = parse(TWO).expect("valid");
    let section = super::VipSection::Many(config.vips.clone());
    let text = toml::to_string(&std::collections::BTreeMap::from([("vip", section)])).expect("serialize");
    let again = parse(&text).expect("reparse");
    assert_eq!(again.vips, config.vips);
}
