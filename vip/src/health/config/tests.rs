//! Tests of the configuration: defaults, unknown keys, and validation errors naming the key.

use super::{HealthConfig, MissingFile, SourceKind};
use crate::health::HealthError;

/// The daemon reads TOML; the same serde derive is exercised here through JSON, which the
/// crate already depends on.
fn parse(json: &str) -> Result<HealthConfig, serde_json::Error> {
    serde_json::from_str(json)
}

fn invalid_key(config: &HealthConfig) -> String {
    match config.validate() {
        Err(HealthError::Config { key, .. }) => key,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn an_empty_section_gives_the_documented_defaults() {
    let config = parse("{}").expect("parse");
    assert_eq!(config, HealthConfig::default());
    assert_eq!(config.source, SourceKind::Probe);
    assert_eq!((config.fall, config.rise), (3, 5));
    assert_eq!(config.probe.port, 10602);
    assert_eq!((config.probe.interval_ms, config.probe.timeout_ms), (200, 100));
    assert!(config.probe.respond && config.probe.track_interface);
    assert_eq!(config.probe.interface, None);
    assert_eq!(config.file.interval_ms, 200);
    assert_eq!(config.file.on_missing, MissingFile::Fail);
    assert_eq!(config.chunk.url, None);
    assert_eq!((config.chunk.interval_ms, config.chunk.timeout_ms), (200, 150));
    config.validate().expect("the defaults are valid");
}

#[test]
fn per_source_settings_parse() {
    let config = parse(
        r#"{"source": "file", "fall": 2, "rise": 4,
            "file": {"path": "/tmp/h", "on_missing": "ok", "interval_ms": 50},
            "chunk": {"url": "http://127.0.0.1:1/health"}}"#,
    )
    .expect("parse");
    assert_eq!(config.source, SourceKind::File);
    assert_eq!(config.file.on_missing, MissingFile::Ok);
    assert_eq!(config.file.path.to_str(), Some("/tmp/h"));
    assert_eq!(config.probe.port, 10602, "untouched sections keep their defaults");
    config.validate().expect("valid");
}

#[test]
fn unknown_keys_and_sources_are_rejected() {
    for json in [
        r#"{"sorce": "probe"}"#,
        r#"{"probe": {"intervall_ms": 100}}"#,
        r#"{"file": {"pth": "/x"}}"#,
        r#"{"chunk": {"uri": "http://x"}}"#,
        r#"{"source": "ping"}"#,
        r#"{"file": {"on_missing": "maybe"}}"#,
    ] {
        let error = parse(json).expect_err(json);
        let message = error.to_string();
        assert!(message.contains("unknown"), "{json}: {message}");
    }
}

#[test]
fn validation_names_the_key() {
    let mut config = HealthConfig { fall: 0, ..HealthConfig::default() };
    assert_eq!(invalid_key(&config), "health.fall");
    config.fall = 3;
    config.rise = 100_000;
    assert_eq!(invalid_key(&config), "health.rise");
    config.rise = 5;

    config.probe.port = 0;
    assert_eq!(invalid_key(&config), "health.probe.port");
    config.probe.port = 10602;
    config.probe.timeout_ms = 200;
    assert_eq!(invalid_key(&config), "health.probe.timeout_ms");
    config.probe.timeout_ms = 100;
    config.probe.interval_ms = 0;
    assert_eq!(invalid_key(&config), "health.probe.interval_ms");
    config.probe.interval_ms = 200;
    config.probe.interface = Some("a-name-far-too-long".into());
    assert_eq!(invalid_key(&config), "health.probe.interface");
    config.probe.interface = Some("eth1".into());
    config.validate().expect("valid again");

    config.source = SourceKind::Chunk;
    assert_eq!(invalid_key(&config), "health.chunk.url");
    config.chunk.url = Some("ftp://x".into());
    assert_eq!(invalid_key(&config), "health.chunk.url");
    config.chunk.url = Some("http://127.0.0.1:10201/health".into());
    config.chunk.timeout_ms = 1000;
    assert_eq!(invalid_key(&config), "health.chunk.timeout_ms");
    config.chunk.timeout_ms = 150;
    config.validate().expect("valid chunk");

    config.source = SourceKind::File;
    config.file.path = "".into();
    assert_eq!(invalid_key(&config), "health.file.path");
    config.file.path = "/run/x".into();
    config.file.interval_ms = 3_600_000;
    assert_eq!(invalid_key(&config), "health.file.interval_ms");
}

#[test]
fn the_error_message_starts_with_the_key() {
    let config = HealthConfig { rise: 0, ..HealthConfig::default() };
    let message = config.validate().expect_err("invalid").to_string();
    assert!(message.contains("health.rise: must be from 1"), "{message}");
}
