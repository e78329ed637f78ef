//! Tests of configuration loading: defaults, file values, flags over the file, and errors that
//! name the key.

use super::*;
use crate::dispatcher::placement::RetryPolicy;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, &CommandLine::default())
}

fn error_text(result: Result<Config, ConfigError>) -> String {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let config = parse("").expect("defaults are valid");
    assert_eq!(config.session_timeout, Duration::from_millis(6_000));
    assert_eq!(config.dispatcher_port, 10_600);
    assert_eq!(config.runner_port, 10_601);
    assert_eq!(config.zookeeper_hosts, "127.0.0.1:2181");
    assert_eq!(config.on_network_failure, NetworkFailureAction::Stay);
    assert!(config.step_down_requires_healthy_peer);
    assert_eq!(config.start_limit_burst, 5);
    assert_eq!(config.start_limit_interval, Duration::from_secs(10));
    assert_eq!(config.log.format, LogFormat::Glog);
    assert!(!config.node_id.is_empty());
}

#[test]
fn file_values_are_read_and_flags_win() {
    let text = r#"
        node_id = "node-1"
        zookeeper_hosts = "10.0.0.1:2181,10.0.0.2:2181/zbs"
        session_timeout_ms = 4000
        data_address = "192.168.10.1"
        on_network_failure = "exit"
        [exit_limit]
        start_limit_burst = 3
        [log]
        format = "json"
        level = "info,quorum=debug"
    "#;
    let config = parse(text).expect("valid file");
    assert_eq!(config.node_id, "node-1");
    assert_eq!(config.session_timeout, Duration::from_millis(4_000));
    assert_eq!(config.data_address, IpAddr::from([192, 168, 10, 1]));
    assert_eq!(config.on_network_failure, NetworkFailureAction::Exit);
    assert_eq!(config.start_limit_burst, 3);
    assert_eq!(config.log.format, LogFormat::Json);

    let flags = CommandLine::try_parse_from(["zbs-taskd", "--node-id", "node-9", "--session-timeout-ms", "2000"])
        .expect("flags parse");
    let config = Config::from_toml(text, &flags).expect("valid");
    assert_eq!(config.node_id, "node-9");
    assert_eq!(config.session_timeout, Duration::from_millis(2_000));
    assert_eq!(config.start_limit_burst, 3, "keys without a flag keep the file's value");
}

#[test]
fn errors_name_the_key() {
    for (text, key) in [
        ("session_timeout_ms = 10", "session_timeout_ms"),
        ("node_id = \"has space\"", "node_id"),
        ("zookeeper_hosts = \"nohostport\"", "zookeeper_hosts"),
        ("zookeeper_hosts = \"h:0\"", "zookeeper_hosts"),
        ("zookeeper_hosts = \"h:2181/\"", "zookeeper_hosts"),
        ("runner_port = 10600", "runner_port"),
        ("state_dir = \"relative/dir\"", "state_dir"),
        ("drain_deadline_ms = 0", "drain_deadline_ms"),
        ("[exit_limit]\nstart_limit_burst = 0", "start_limit_burst"),
        ("[log]\nlevel = \"info,=[\"", "log.level"),
    ] {
        let message = error_text(parse(text));
        assert!(message.contains(key), "{text:?} gave {message:?}, which does not name {key}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_with_the_key_named() {
    let message = error_text(parse("sesion_timeout_ms = 6000"));
    assert!(message.contains("sesion_timeout_ms"), "{message}");
    let message = error_text(parse("dispatcher_port = \"ten\""));
    assert!(message.contains("dispatcher_port"), "{message}");
    let message = error_text(parse("data_address = \"300.1.1.1\""));
    assert!(message.contains("data_address"), "{message}");
    let message = error_text(parse("on_network_failure = \"explode\""));
    assert!(message.contains("on_network_failure"), "{message}");
    let message = error_text(parse("this is not toml"));
    assert!(message.contains("<inline>"), "{message}");
}

#[test]
fn an_explicit_missing_file_is_an_error() {
    let flags = CommandLine::try_parse_from(["zbs-taskd", "--config", "/nonexistent/taskd.toml"]).expect("flags");
    let message = match Config::load(&flags) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains("/nonexistent/taskd.toml"), "{message}");
}

#[test]
fn the_health_section_is_read_and_its_flags_win() {
    let text = "[health]\nsource = \"file\"\nfall = 2\n[health.file]\npath = \"/tmp/h\"\n";
    let config = parse(text).expect("valid");
    assert_eq!(config.health.source, SourceKind::File);
    assert_eq!(config.health.fall, 2);
    let flags =
        CommandLine::try_parse_from(["zbs-taskd", "--health-rise", "7", "--health-file", "/tmp/other"]).expect("flags");
    let config = Config::from_toml(text, &flags).expect("valid");
    assert_eq!(config.health.rise, 7);
    assert_eq!(config.health.file.path, PathBuf::from("/tmp/other"));
    let message = error_text(parse("[health]\nfall = 0"));
    assert!(message.contains("health.fall"), "{message}");
    let message = error_text(parse("[health.probe]\nprot = 1"));
    assert!(message.contains("prot"), "{message}");
}

#[test]
fn the_vip_is_optional_and_validated() {
    assert_eq!(parse("").expect("valid").vip, None);
    let config = parse("[vip]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n").expect("valid");
    let vip = config.vip.expect("a vip");
    assert_eq!(vip.address, "10.0.0.100/24");
    assert_eq!(vip.interface, "eth0");
    let flags = CommandLine::try_parse_from(["zbs-taskd", "--vip-address", "10.1.0.9/16", "--vip-interface", "eth1"])
        .expect("flags");
    let vip = Config::from_toml("", &flags).expect("valid").vip.expect("a vip from the flags");
    assert_eq!((vip.address.as_str(), vip.interface.as_str()), ("10.1.0.9/16", "eth1"));
    let flags = CommandLine::try_parse_from(["zbs-taskd", "--vip-address", "10.1.0.9/16"]).expect("flags");
    let message = error_text(Config::from_toml("", &flags));
    assert!(message.contains("vip.interface"), "{message}");
    let message = error_text(parse("[vip]\naddress = \"10.0.0.300/24\"\ninterface = \"eth0\"\n"));
    assert!(message.contains("vip.address"), "{message}");
}

#[test]
fn the_tasks_table_has_defaults_file_values_flags_and_named_errors() {
    let defaults = parse("").expect("valid").tasks;
    assert_eq!(defaults, TasksConfig::default());
    assert_eq!(defaults.max_attempts, 3);
    assert_eq!(defaults.retention, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(defaults.claim_grace, Duration::from_secs(10));
    assert_eq!((defaults.copy_extent_bytes, defaults.copy_block_bytes), (256 << 20, 256 << 10));
    assert_eq!(defaults.copy_max_bytes_per_s, None);

    let text = "[tasks]\nmax_attempts = 5\nretention_sec = 3600\nclaim_grace_ms = 2000\ncopy_extent_mib = 4\n\
                copy_block_kib = 64\ncopy_max_mib_per_s = 8\n";
    let tasks = parse(text).expect("valid").tasks;
    assert_eq!(tasks.max_attempts, 5);
    assert_eq!(tasks.retention, Duration::from_secs(3600));
    assert_eq!(tasks.claim_grace, Duration::from_millis(2000));
    assert_eq!((tasks.copy_extent_bytes, tasks.copy_block_bytes), (4 << 20, 64 << 10));
    assert_eq!(tasks.copy_max_bytes_per_s, Some(8 << 20));
    // The inline form works too (one line, as test fixtures write it).
    let inline = parse("tasks = { copy_extent_mib = 1, copy_block_kib = 128 }").expect("valid").tasks;
    assert_eq!((inline.copy_extent_bytes, inline.copy_block_bytes), (1 << 20, 128 << 10));

    let flags = CommandLine::try_parse_from(["zbs-taskd", "--tasks-max-attempts", "1", "--tasks-copy-extent-mib", "1"])
        .expect("flags");
    let tasks = Config::from_toml(text, &flags).expect("valid").tasks;
    assert_eq!((tasks.max_attempts, tasks.copy_extent_bytes), (1, 1 << 20));
    assert_eq!(tasks.claim_grace, Duration::from_millis(2000), "keys without a flag keep the file's value");

    for (text, key) in [
        ("[tasks]\nmax_attempts = 0", "tasks.max_attempts"),
        ("[tasks]\nretention_sec = 5", "tasks.retention_sec"),
        ("[tasks]\nclaim_grace_ms = 10", "tasks.claim_grace_ms"),
        ("[tasks]\ncopy_extent_mib = 0", "tasks.copy_extent_mib"),
        ("[tasks]\ncopy_block_kib = 6", "tasks.copy_block_kib"),
        ("[tasks]\ncopy_extent_mib = 1\ncopy_block_kib = 2048", "tasks.copy_block_kib"),
        ("[tasks]\ncopy_block_kib = 100", "tasks.copy_block_kib"),
        ("[tasks]\ncopy_max_mib_per_s = 99999999", "tasks.copy_max_mib_per_s"),
        ("[tasks]\nmax_atempts = 3", "max_atempts"),
        // The timer rule: F + one block's write at most half the session timeout.
        ("session_timeout_ms = 6000\n[tasks]\nlease_ms = 2990", "tasks.lease_ms"),
        ("[tasks]\nlease_ms = 100", "tasks.lease_ms"),
        ("session_timeout_ms = 1000\n[tasks]\ncopy_extent_mib = 64\ncopy_block_kib = 65536", "tasks.copy_block_kib"),
    ] {
        let message = error_text(parse(text));
        assert!(message.contains(key), "{text:?} gave {message:?}, which does not name {key}");
    }
}

#[test]
fn the_api_table_reads_its_token_file_and_names_bad_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", "ab".repeat(32))).expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let text =
        format!("[api]\ntoken_file = {:?}\nprotect_reads = true\nmax_connections = 100\n", token.display().to_string());
    let config = Config::from_toml(&text, &CommandLine::default()).expect("valid");
    assert_eq!(config.api.sent_token().as_deref(), Some("ab".repeat(32).as_str()));
    assert!(config.api.protect_reads);
    assert_eq!(config.api.max_connections, 100);
    let without = Config::from_toml_without_secrets(&text, &CommandLine::default()).expect("valid");
    assert_eq!(without.api.tokens, None, "a client that needs only addresses never reads the token");

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let key_of = |text: &str| match Config::from_toml(text, &CommandLine::default()) {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected an invalid key for {text}, got {other:?}"),
    };
    let (key, message) = key_of(&text);
    assert_eq!(key, "api.token_file");
    assert!(message.contains("readable or writable by others"), "{message}");
    assert_eq!(key_of("[api]\ntoken_file = \"relative/token\"").0, "api.token_file");
    assert_eq!(key_of("[api]\ntoken_file = \"/nonexistent/zbs-token\"").0, "api.token_file");
    assert_eq!(key_of("[api]\nmax_connections = 2").0, "api.max_connections");
    assert_eq!(key_of("[api]\nmax_connections_per_client = 2000").0, "api.max_connections_per_client");
    assert_eq!(key_of("[api]\nheader_timeout_ms = 5").0, "api.header_timeout_ms");
}

#[test]
fn a_wildcard_management_address_is_refused() {
    for text in ["management_address = \"0.0.0.0\"", "management_address = \"::\""] {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "management_address"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn the_runner_lease_is_a_third_of_the_session_timeout_or_the_configured_one() {
    let derived = parse("session_timeout_ms = 6000").expect("valid");
    assert_eq!(derived.runner_lease(), Duration::from_secs(2));
    let configured = parse("session_timeout_ms = 6000\n[tasks]\nlease_ms = 1500").expect("valid");
    assert_eq!(configured.runner_lease(), Duration::from_millis(1500));
    let flag = CommandLine::try_parse_from(["zbs-taskd", "--tasks-lease-ms", "900"]).expect("flags");
    let from_flag = Config::from_toml_without_secrets("session_timeout_ms = 6000", &flag).expect("valid");
    assert_eq!(from_flag.runner_lease(), Duration::from_millis(900));
}

/// The retry back-off: 10 s doubling to 5 min by default, each key from the file or its flag,
/// and a bad value refused at load with its key named.
#[test]
fn the_retry_back_off_has_defaults_file_values_flags_and_named_errors() {
    let defaults = parse("").expect("valid").tasks.retry;
    assert_eq!(defaults, RetryPolicy { base: Duration::from_secs(10), factor: 2, cap: Duration::from_secs(300) });
    let text = "[tasks]\nretry_base_ms = 500\nretry_factor = 3\nretry_max_ms = 4000\n";
    let retry = parse(text).expect("valid").tasks.retry;
    assert_eq!(retry, RetryPolicy { base: Duration::from_millis(500), factor: 3, cap: Duration::from_millis(4000) });
    let flags = CommandLine::try_parse_from(["zbs-taskd", "--tasks-retry-base-ms", "1000"]).expect("flags");
    let retry = Config::from_toml(text, &flags).expect("valid").tasks.retry;
    assert_eq!((retry.base, retry.factor), (Duration::from_millis(1000), 3), "the flag wins, the file keeps the rest");
    for (text, key) in [
        ("[tasks]\nretry_base_ms = 0", "tasks.retry_base_ms"),
        ("[tasks]\nretry_base_ms = 99999999999", "tasks.retry_base_ms"),
        ("[tasks]\nretry_factor = 0", "tasks.retry_factor"),
        ("[tasks]\nretry_factor = 11", "tasks.retry_factor"),
        ("[tasks]\nretry_base_ms = 5000\nretry_max_ms = 4000", "tasks.retry_max_ms"),
        ("[tasks]\nretry_max_ms = 86400001", "tasks.retry_max_ms"),
        ("[tasks]\nretry_factor = -1", "retry_factor"),
    ] {
        let message = error_text(parse(text));
        assert!(message.contains(key), "{text:?} gave {message:?}, which does not name {key}");
    }
}

#[test]
fn a_vip_needs_a_session_timeout_long_enough_for_its_fence() {
    let vip = "[vip]\naddress = \"10.0.0.100/24\"\ninterface = \"eth0\"\n";
    parse(&format!("session_timeout_ms = 4000\n{vip}")).expect("the netns tests' session fits the fence");
    parse("session_timeout_ms = 2000").expect("without a VIP there is no fence to fit");
    let message = error_text(parse(&format!("session_timeout_ms = 3000\n{vip}")));
    assert!(message.contains("session_timeout_ms") && message.contains("fence"), "{message}");
    parse(&format!("session_timeout_ms = 3000\n{vip}sync_interval_ms = 500\n")).expect("a shorter renewal fits");
    let message = error_text(parse(&format!("session_timeout_ms = 4000\n{vip}sync_interval_ms = 2000\n")));
    assert!(message.contains("vip.sync_interval_ms"), "{message}");
}

#[test]
fn early_takeover_is_off_by_default_and_checked_against_the_session_timeout() {
    assert_eq!(parse("").expect("valid").early_takeover, Duration::ZERO, "off by default");
    let on = parse("session_timeout_ms = 4000\nearly_takeover_ms = 500").expect("valid");
    assert_eq!(on.early_takeover, Duration::from_millis(500));
    assert!(parse("session_timeout_ms = 4000\nearly_takeover_ms = 2000").is_ok(), "half the session timeout");
    for text in [
        "session_timeout_ms = 4000\nearly_takeover_ms = 2001",
        "early_takeover_ms = 199",
        "early_takeover_ms = 500\n[health]\nsource = \"file\"",
    ] {
        let message = error_text(parse(text));
        assert!(message.contains("early_takeover_ms"), "{text:?} gave {message:?}");
    }
    let flags = CommandLine::try_parse_from(["zbs-taskd", "--early-takeover-ms", "800"]).expect("flags parse");
    assert_eq!(Config::from_toml("", &flags).expect("valid").early_takeover, Duration::from_millis(800));
}
