//! The shipped `packaging/` files checked against the daemon they ship: the default
//! configuration parses and documents the real defaults and every flag, the systemd unit's
//! limits match the daemon's, and `systemd-analyze verify` accepts the unit (when installed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use taskd::config::{CommandLine, Config, DEFAULT_CONFIG_PATH, EXIT_CONFIG};

/// The Debian package that provides `systemd-analyze`; CI installs it so the verify test runs.
const SYSTEMD_ANALYZE_PACKAGE: &str = "systemd";

fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("packaging")
}

fn read_packaging(name: &str) -> String {
    let path = packaging_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// A fixed node id on the command line, so that the host name plays no part in a comparison.
fn command_line() -> CommandLine {
    CommandLine { node_id: Some("packaging-test".to_string()), ..CommandLine::default() }
}

/// A `#key = value` line is a documented default; `# ...` (with a space) is prose.
fn default_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('#')?;
    let key = rest.split_once(" = ")?.0;
    (!key.is_empty() && key.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_')).then_some(rest)
}

/// The file with every documented default uncommented.
fn uncommented(text: &str) -> String {
    text.lines().map(|line| default_line(line).unwrap_or(line)).collect::<Vec<_>>().join("\n")
}

/// Where the shipped configuration keeps the API token, and where `cargo xtask deploy` writes it.
const SHIPPED_TOKEN_FILE: &str = "/etc/zbs/taskd.token";

#[test]
fn default_config_is_valid_as_shipped() {
    let text = read_packaging("taskd.toml");
    let mut config = Config::from_toml_without_secrets(&text, &command_line())
        .expect("packaging/taskd.toml is a valid configuration");
    // The one key the shipped file sets: the API token, which `cargo xtask deploy` writes.
    assert_eq!(config.api.token_file.take(), Some(std::path::PathBuf::from(SHIPPED_TOKEN_FILE)));
    assert_eq!(config, Config::from_toml("", &command_line()).expect("the empty configuration is valid"));
}

#[test]
fn default_config_documents_the_real_defaults() {
    let text = uncommented(&read_packaging("taskd.toml"));
    let mut documented = Config::from_toml_without_secrets(&text, &command_line())
        .unwrap_or_else(|error| panic!("packaging/taskd.toml with its defaults uncommented: {error}\n{text}"));
    documented.api.token_file = None;
    let defaults = Config::from_toml("", &command_line()).expect("the empty configuration is valid");
    assert_eq!(
        documented, defaults,
        "a value shown as the default in packaging/taskd.toml is not the daemon's default"
    );
}

/// The commented-out `[vip]` example, uncommented, is a valid VIP whose other values are the
/// defaults.
#[test]
fn default_config_vip_example_is_valid_and_shows_the_defaults() {
    let text = read_packaging("taskd.toml");
    let start = text.find("\n# [vip]\n").expect("packaging/taskd.toml shows a commented-out [vip] section");
    let example: String = text[start..]
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest == "[vip]" || default_line(&format!("#{rest}")).is_some() => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let documented = Config::from_toml(&example, &command_line())
        .unwrap_or_else(|error| panic!("the [vip] example: {error}\n{example}"));
    let vip = documented.vip.clone().expect("the example turns the VIP on");
    let minimal = format!("[vip]\naddress = {:?}\ninterface = {:?}\n", vip.address, vip.interface);
    let defaults = Config::from_toml(&minimal, &command_line()).expect("a minimal [vip] section is valid");
    assert_eq!(documented.vip, defaults.vip, "a value shown in the [vip] example is not the default");
}

/// Every flag of the daemon (one per key) names a key the file documents, so a new key cannot
/// be added without its line in the shipped configuration.
#[test]
fn default_config_documents_every_flag() {
    let text = read_packaging("taskd.toml");
    let mut section = String::new();
    let mut documented = Vec::new();
    for line in text.lines() {
        // A section header, or an optional section's commented-out header (`# [vip]`).
        let header = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = header.strip_prefix('[').and_then(|header| header.strip_suffix(']')) {
            if !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_' || byte == b'.') {
                section = name.to_string();
                continue;
            }
        }
        // Documented defaults (`#key = value`), keys without a default (`# key = example`) and
        // keys the shipped file sets (`key = value`).
        let rest = line.strip_prefix("# ").or_else(|| line.strip_prefix('#')).unwrap_or(line);
        let Some((key, _)) = rest.split_once(" = ") else { continue };
        if key.is_empty() || !key.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_') {
            continue;
        }
        let path = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
        documented.push(path.replace('.', "_").trim_start_matches("exit_limit_").to_string());
    }
    let command = CommandLine::command();
    let missing: Vec<String> = command
        .get_arguments()
        .map(|argument| argument.get_id().to_string())
        .filter(|id| !matches!(id.as_str(), "config" | "help" | "version"))
        // `--health-file` sets `health.file.path`.
        .filter(|id| !documented.contains(id) && !documented.contains(&format!("{id}_path")))
        .collect();
    assert!(
        missing.is_empty(),
        "flags whose key packaging/taskd.toml does not document: {missing:?} (documented: {documented:?})"
    );
}

/// `Key=Value` lines of the unit, by key (a key given twice keeps its last value).
fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// `30s`, `10`, `1min` as systemd reads them (only the units the unit file uses).
fn systemd_duration(value: &str) -> Duration {
    let digits_end = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let number: u64 = value[..digits_end].parse().unwrap_or_else(|_| panic!("{value:?} is not a duration"));
    match &value[digits_end..] {
        "" | "s" | "sec" => Duration::from_secs(number),
        "ms" => Duration::from_millis(number),
        "min" => Duration::from_secs(60 * number),
        unit => panic!("unexpected duration unit {unit:?} in {value:?}"),
    }
}

#[test]
fn unit_matches_the_daemon_defaults() {
    let settings = unit_settings(&read_packaging("zbs-taskd.service"));
    let get = |key: &str| settings.get(key).unwrap_or_else(|| panic!("the unit sets no {key}=")).as_str();
    let defaults = Config::from_toml("", &command_line()).expect("the empty configuration is valid");

    assert_eq!(get("Type"), "notify");
    assert_eq!(get("NotifyAccess"), "main");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("KillMode"), "mixed");
    assert_eq!(get("ExecStart"), format!("/usr/bin/zbs-taskd --config {DEFAULT_CONFIG_PATH}"));
    assert_eq!(
        get("StartLimitBurst").parse::<u32>().ok(),
        Some(defaults.start_limit_burst),
        "StartLimitBurst vs start_limit_burst"
    );
    assert_eq!(
        systemd_duration(get("StartLimitIntervalSec")),
        defaults.start_limit_interval,
        "StartLimitIntervalSec vs start_limit_interval_sec"
    );
    let stop_timeout = systemd_duration(get("TimeoutStopSec"));
    assert!(
        stop_timeout >= defaults.drain_deadline + defaults.session_timeout,
        "TimeoutStopSec {stop_timeout:?} leaves no room for the drain deadline {:?} and closing the session",
        defaults.drain_deadline
    );
    assert_eq!(get("KillSignal"), "SIGTERM", "the daemon's orderly stop starts on SIGTERM");
    // Both API ports full of connections must leave descriptors for ZooKeeper, copies and netlink.
    let nofile: usize = get("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    assert!(
        nofile >= 2 * defaults.api.max_connections + 1024,
        "LimitNOFILE={nofile} leaves no room above two ports of {} connections",
        defaults.api.max_connections
    );
    // A crash loop must be able to reach the start limit (else StartLimitBurst means nothing and
    // the daemon's exit counter guards a limit systemd never applies), without spinning.
    let restart_delay = systemd_duration(get("RestartSec"));
    assert!(restart_delay >= Duration::from_millis(100), "RestartSec {restart_delay:?} restarts in a busy loop");
    assert!(
        restart_delay * defaults.start_limit_burst < defaults.start_limit_interval,
        "RestartSec {restart_delay:?} × StartLimitBurst {} does not fit in StartLimitIntervalSec {:?}",
        defaults.start_limit_burst,
        defaults.start_limit_interval
    );
    // Hardening the daemon runs under (the notify test runs it unconfined; these are what it
    // must tolerate in production: no privilege gain, a read-only /usr, /boot and /etc).
    assert_eq!(get("NoNewPrivileges"), "yes");
    assert_eq!(get("ProtectSystem"), "strict");
    let watchdog = systemd_duration(get("WatchdogSec"));
    assert!(watchdog >= Duration::from_secs(2), "WatchdogSec {watchdog:?} is too tight for a busy machine");
    assert!(
        get("RestartPreventExitStatus").split_whitespace().any(|code| code == EXIT_CONFIG.to_string()),
        "a configuration error (exit {EXIT_CONFIG}) must not be restarted"
    );
    assert!(!settings.contains_key("LimitCORE"), "a crash must leave its core, not be hidden");
    for capability in ["CAP_NET_ADMIN", "CAP_NET_RAW"] {
        for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
            assert!(get(key).split_whitespace().any(|word| word == capability), "{key}= lacks {capability}");
        }
    }
    let writable: Vec<&str> = get("ReadWritePaths").split_whitespace().collect();
    assert!(
        writable.contains(&defaults.state_dir.to_string_lossy().as_ref()),
        "the state dir is not writable: {writable:?}"
    );
    let health_dir = defaults.health.file.path.parent().expect("the health file has a dir");
    assert!(
        writable.contains(&health_dir.to_string_lossy().as_ref()),
        "the health file's dir is not writable: {writable:?}"
    );
    assert_eq!(Path::new("/var/lib").join(get("StateDirectory")), defaults.state_dir);
    assert_eq!(Path::new("/run").join(get("RuntimeDirectory")), health_dir);
}

/// `systemd-analyze verify` on the unit, with `ExecStart=` pointed at an executable that exists
/// here (verify checks that the binary is executable) and the man page check off (the page is
/// installed by `cargo xtask deploy`, not on this machine). Any complaint fails the test.
#[test]
fn systemd_analyze_verifies_the_unit() {
    let Some(analyze) = find_in_path("systemd-analyze") else {
        eprintln!(
            "SKIPPED systemd_analyze_verifies_the_unit: systemd-analyze is not installed (Debian package `{SYSTEMD_ANALYZE_PACKAGE}`)"
        );
        return;
    };
    let executable = std::env::current_exe().expect("find the test executable");
    let unit = read_packaging("zbs-taskd.service");
    assert!(unit.contains("ExecStart=/usr/bin/zbs-taskd "), "the unit's ExecStart changed; update this test");
    let unit = unit.replace("ExecStart=/usr/bin/zbs-taskd ", &format!("ExecStart={} ", executable.display()));
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("zbs-taskd.service");
    std::fs::write(&path, unit).expect("write the unit copy");
    let output =
        Command::new(&analyze).args(["verify", "--man=no"]).arg(&path).output().expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "systemd-analyze verify failed ({}):\n{stdout}{stderr}", output.status);
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify complained:\n{stdout}{stderr}"
    );
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// The tuned profile (`packaging/profiles/tuned.toml`, README's *Tuned profile*): valid as shipped
/// (so the timer rule and the fence hold with its numbers), a silent data cut detected within
/// 50 ms (interval × fall), a rise longer than the fall, the whole-outage guard on, and the probe
/// threads at a realtime priority the unit's drop-in allows.
#[test]
fn tuned_profile_is_valid_detects_a_silent_cut_within_50_ms_and_its_unit_allows_its_priority() {
    let text = read_packaging("profiles/tuned.toml");
    let config = Config::from_toml_without_secrets(&text, &command_line())
        .unwrap_or_else(|error| panic!("packaging/profiles/tuned.toml is not a valid configuration: {error}"));
    let health = &config.health;
    assert_eq!(health.source, vip::health::SourceKind::Probe);
    let budget = health.probe.interval() * health.fall;
    assert!(budget <= Duration::from_millis(50), "silent-cut detection budget {budget:?} over 50 ms");
    assert!(health.probe.timeout() < health.probe.interval());
    assert!(health.rise > health.fall, "rise {} is no hysteresis over fall {}", health.rise, health.fall);
    assert!(config.step_down_requires_healthy_peer, "the tuned profile keeps the whole-outage guard");
    assert!(health.realtime_priority > 0, "the tuned profile runs its probes at realtime priority");
    // With a VIP too (the commented example uncommented), the fence's rule still holds.
    let with_vip = text.replace("# [vip]\n# address", "[vip]\naddress").replace("# interface", "interface");
    Config::from_toml_without_secrets(&with_vip, &command_line())
        .unwrap_or_else(|error| panic!("the tuned profile with its [vip] example: {error}"));

    let drop_in = unit_settings(&read_packaging("profiles/zbs-taskd.service.d/tuned.conf"));
    assert_eq!(drop_in.get("RestrictRealtime").map(String::as_str), Some("no"), "the drop-in lifts RestrictRealtime");
    let limit: u8 =
        drop_in.get("LimitRTPRIO").and_then(|limit| limit.parse().ok()).expect("the drop-in sets LimitRTPRIO");
    assert!(
        health.realtime_priority <= limit,
        "realtime_priority {} above the drop-in's LimitRTPRIO={limit}: the kernel would refuse it",
        health.realtime_priority
    );
    let base = unit_settings(&read_packaging("zbs-taskd.service"));
    assert_eq!(
        base.get("RestrictRealtime").map(String::as_str),
        Some("yes"),
        "the default unit stays without realtime"
    );
}
