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
