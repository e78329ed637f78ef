//! Where `zbs-task` sends its requests when `--server` is not given.

use std::io::Write;

use clap::Parser;

use super::*;
use crate::config::{CommandLine, Config};

fn config(text: &str) -> Config {
    Config::from_toml(text, &CommandLine::default()).expect("a valid config")
}

#[test]
fn the_vip_is_the_server_when_one_is_configured() {
    let with_vip = config(
        "management_address = \"10.0.0.11\"\ndispatcher_port = 10700\n[vip]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n",
    );
    assert_eq!(server_of(&with_vip), "10.0.0.100:10700");
    let without_vip = config("management_address = \"10.0.0.11\"\n");
    assert_eq!(server_of(&without_vip), "10.0.0.11:10600");
    let ipv6 = config("management_address = \"fd00::11\"\n[vip]\naddress = \"fd00::100/64\"\ninterface = \"eth0\"\n");
    assert_eq!(server_of(&ipv6), "[fd00::100]:10600");
}

#[test]
fn the_server_flag_wins_and_a_missing_file_means_this_host() {
    let cli = Cli::parse_from(["zbs-task", "--server", "10.1.1.1:1", "--config", "/nonexistent", "cluster", "show"]);
    assert_eq!(cli.server_address().expect("given"), "10.1.1.1:1");
    let cli = Cli::parse_from(["zbs-task", "--config", "/nonexistent/taskd.toml", "cluster", "show"]);
    assert_eq!(cli.server_address().expect("default"), "127.0.0.1:10600");
}

#[test]
fn the_config_file_names_the_server_and_a_bad_one_is_an_error() {
    let mut good = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(good, "[vip]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"").expect("write");
    let path = good.path().to_str().expect("utf-8 path").to_string();
    let cli = Cli::parse_from(["zbs-task", "--config", &path, "cluster", "show"]);
    assert_eq!(cli.server_address().expect("from the file"), "10.0.0.100:10600");

    let mut bad = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(bad, "dispatcher_port = \"not a port\"").expect("write");
    let path = bad.path().to_str().expect("utf-8 path").to_string();
    let cli = Cli::parse_from(["zbs-task", "--config", &path, "cluster", "show"]);
    let error = cli.server_address().expect_err("an invalid file");
    assert!(error.contains("give --server"), "{error}");
}

#[test]
fn vip_verbs_take_a_service_and_default_to_the_default_one() {
    let command = |args: &[&str]| match Cli::try_parse_from([&["zbs-task", "vip"], args].concat()) {
        Ok(cli) => match cli.command {
            Command::Vip(command) => Ok(command),
            _ => panic!("not a vip command"),
        },
        Err(error) => Err(error.to_string()),
    };
    match command(&["set", "--service", "iscsi", "10.0.1.100/24", "eth1"]) {
        Ok(VipCommand::Set { service, address, interface, clear: false }) => {
            assert_eq!(
                (service.as_str(), address.as_deref(), interface.as_deref()),
                ("iscsi", Some("10.0.1.100/24"), Some("eth1"))
            );
        }
        _ => panic!("vip set --service did not parse"),
    }
    match command(&["set", "10.0.0.100/24", "eth0"]) {
        Ok(VipCommand::Set { service, .. }) => assert_eq!(service, "default"),
        _ => panic!("vip set did not parse"),
    }
    match command(&["clean", "--service", "iscsi"]) {
        Ok(VipCommand::Clean { service }) => assert_eq!(service, "iscsi"),
        _ => panic!("vip clean did not parse"),
    }
    match command(&["set", "--clear", "--service", "iscsi"]) {
        Ok(VipCommand::Set { service, clear: true, address: None, .. }) => assert_eq!(service, "iscsi"),
        _ => panic!("vip set --clear did not parse"),
    }
    match command(&["show"]) {
        Ok(VipCommand::Show { service: None }) => {}
        _ => panic!("vip show did not parse"),
    }
    assert!(command(&["set", "--clear", "10.0.0.100/24", "eth0"]).is_err());
}
