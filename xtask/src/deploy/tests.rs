//! Unit tests of deploy: the layout it produces in a temp root, the kept configuration, the
//! dry run that writes nothing, and the refusal of the host's own root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn sample_files() -> Vec<PayloadFile> {
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("packaging");
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = dir.path().join("zbs-taskd");
    fs::write(&binary, b"stand-in binary").expect("write the stand-in binary");
    let files = dist::payload(&[("zbs-taskd".to_string(), binary)], &packaging).expect("build the payload");
    // Through a real tarball, as `cargo xtask deploy` does.
    let tarball = dist::write_tarball("zbs-taskd-0.0.0-test", &files, dir.path()).expect("write the tarball");
    dist::read_tarball(&tarball).expect("read the tarball")
}

fn list_tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, found);
            } else if let Ok(relative) = path.strip_prefix(root) {
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut found = Vec::new();
    walk(root, root, &mut found);
    found.sort();
    found
}

#[test]
fn deploy_into_a_temp_root_produces_the_layout() {
    let files = sample_files();
    let root = tempfile::tempdir().expect("temp root");
    let root_path = check_root(root.path(), false).expect("a temp dir is an acceptable root");
    let actions = plan(&files, &root_path);
    apply(&files, &actions).expect("deploy");
    let installed = list_tree(&root_path);
    let expected: Vec<String> = files.iter().map(|file| file.path.clone()).collect();
    assert_eq!(installed, expected, "no temp file or extra file may be left");
    for must in [
        "usr/bin/zbs-taskd",
        "etc/zbs/taskd.toml",
        "lib/systemd/system/zbs-taskd.service",
        "usr/share/man/man1/zbs-taskd.1",
    ] {
        assert!(installed.iter().any(|path| path == must), "{must} is missing: {installed:?}");
    }
    for file in &files {
        let target = root_path.join(&file.path);
        assert_eq!(fs::read(&target).expect("read an installed file"), file.contents, "{}", file.path);
        let mode = fs::metadata(&target).expect("stat an installed file").permissions().mode() & 0o7777;
        assert_eq!(mode, file.mode, "{}", file.path);
    }
}

#[test]
fn an_existing_configuration_is_kept_and_the_rest_replaced() {
    let files = sample_files();
    let root = tempfile::tempdir().expect("temp root");
    let config = root.path().join("etc/zbs/taskd.toml");
    let binary = root.path().join("usr/bin/zbs-taskd");
    fs::create_dir_all(config.parent().expect("parent")).expect("create etc/zbs");
    fs::create_dir_all(binary.parent().expect("parent")).expect("create usr/bin");
    fs::write(&config, "node_id = \"operator-set\"\n").expect("write the operator's config");
    fs::write(&binary, "old binary").expect("write an old binary");

    let actions = plan(&files, root.path());
    assert!(
        actions.contains(&Action::Keep { source: "etc/zbs/taskd.toml".to_string(), target: config.clone() }),
        "{actions:?}"
    );
    apply(&files, &actions).expect("deploy");
    assert_eq!(fs::read_to_string(&config).expect("read the config"), "node_id = \"operator-set\"\n");
    assert_eq!(fs::read(&binary).expect("read the binary"), b"stand-in binary");

    let mut report_text = Vec::new();
    report(&actions, false, &mut report_text).expect("report");
    let report_text = String::from_utf8_lossy(&report_text);
    assert!(report_text.contains(&format!("keep {} (exists", config.display())), "{report_text}");
}

#[test]
fn dry_run_lists_everything_and_writes_nothing() {
    let files = sample_files();
    let parent = tempfile::tempdir().expect("temp dir");
    let root = parent.path().join("root");
    let root = check_root(&root, false).expect("a root that does not exist yet is acceptable");
    let actions = plan(&files, &root);
    let mut listed = Vec::new();
    report(&actions, true, &mut listed).expect("report");
    let listed = String::from_utf8_lossy(&listed);
    assert_eq!(listed.lines().count(), files.len(), "{listed}");
    assert!(listed.lines().all(|line| line.starts_with("would install ")), "{listed}");
    assert!(listed.contains(&format!("-> {}/usr/bin/zbs-taskd (0755)", root.display())), "{listed}");
    assert!(!root.exists(), "a dry run created the root");
    assert!(fs::read_dir(parent.path()).expect("list the parent").next().is_none(), "a dry run wrote something");
}

#[test]
fn the_hosts_root_needs_yes() {
    for spelling in ["/", "/tmp/..", "//", "/usr/../."] {
        let error = check_root(Path::new(spelling), false).expect_err("`/` without --yes is refused");
        assert!(error.to_string().contains("refusing to deploy"), "{spelling}: {error}");
        assert_eq!(check_root(Path::new(spelling), true).expect("`/` with --yes is accepted"), Path::new("/"));
    }
    assert!(check_root(Path::new(""), true).is_err(), "an empty root is refused");
}

#[test]
fn deploy_writes_a_private_token_once_and_keeps_it() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc/zbs")).expect("mkdir");
    let mut out = Vec::new();
    ensure_token(root.path(), &mut out).expect("token");
    let path = root.path().join(TOKEN_PATH);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the token is never readable by others");
    let first = taskd::access::ApiTokens::read(&path).expect("the daemon accepts it");
    ensure_token(root.path(), &mut out).expect("again");
    assert_eq!(taskd::access::ApiTokens::read(&path).expect("read").sent(), first.sent(), "a deploy never replaces it");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains("copy this file to every node"), "{text}");
    assert!(text.contains("(exists)"), "{text}");
}
