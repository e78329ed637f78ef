//! Unit tests of the local cluster's pieces that need no processes: the config it writes and the
//! check that keeps `down` from signalling a pid that is not ours.

use super::*;

#[test]
fn node_config_is_valid_for_the_daemon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = plan_node(dir.path(), 1).expect("plan node-2");
    assert_eq!(node.node_id, "node-2");
    assert_eq!(node.address, Ipv4Addr::new(127, 0, 0, 2));
    assert_ne!(node.dispatcher_port, node.runner_port);
    let volumes = volumes_dir(dir.path());
    let token = token_path(dir.path());
    taskd::access::create_token_file(&token, None).expect("token");
    let text = config_toml(&node, "127.0.0.1:2181", &volumes, &token).expect("write the config");
    let config = taskd::config::Config::from_toml(&text, &taskd::config::CommandLine::default())
        .unwrap_or_else(|error| panic!("the cluster's node config is invalid: {error}\n{text}"));
    assert_eq!(config.node_id, "node-2");
    assert_eq!(config.dispatcher_port, node.dispatcher_port);
    assert_eq!(format!("{:?}", config.health.source), "File");
    assert_eq!(config.health.file.path, node.health_path);
    assert_eq!(config.state_dir, node.state_dir);
    assert_eq!(config.log.file.as_deref(), Some(node.log_path.as_path()));
    assert_eq!(config.allowed_roots, vec![volumes], "CopyVolume may use the cluster's volumes directory");
    assert!(config.api.tokens.is_some(), "the local cluster runs with authentication on, as a deployed one does");
}

#[test]
fn only_a_zbs_taskd_with_our_config_counts_as_ours() {
    let config = Path::new("/nonexistent/taskd.toml");
    assert!(!is_our_daemon(0, config).expect("pid 0"), "pid 0 (never started) is not ours");
    // This test process is running, but it is not zbs-taskd.
    assert!(!is_our_daemon(std::process::id(), config).expect("own pid"), "the test process passed as a daemon");
    // A pid that does not exist (above the kernel's pid_max).
    assert!(!is_our_daemon(u32::MAX - 1, config).expect("no such pid"));
}

#[test]
fn state_round_trips_through_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = plan_node(dir.path(), 0).expect("plan node-1");
    let state = ClusterState {
        dir: dir.path().to_path_buf(),
        binary: PathBuf::from("/usr/bin/zbs-taskd"),
        zookeeper_dir: dir.path().join("zk"),
        zookeeper_hosts: "127.0.0.1:2181".to_string(),
        nodes: vec![NodeState { pid: 42, ..node }],
    };
    save_state(&state).expect("save");
    let loaded = load_state(dir.path()).expect("load").expect("the state exists");
    assert_eq!(loaded.nodes.len(), 1);
    assert_eq!(loaded.nodes[0].pid, 42);
    assert_eq!(loaded.nodes[0].status_url(), state.nodes[0].status_url());
    assert!(load_state(&dir.path().join("none")).expect("no state is not an error").is_none());
}
