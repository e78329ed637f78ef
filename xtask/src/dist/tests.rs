//! Unit tests of the dist tarball: its layout, its checksums, and that a damaged one is refused.

use std::path::{Path, PathBuf};

use super::*;

fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("packaging")
}

/// A payload around a small stand-in for the daemon's binary (no release build in a unit test).
fn sample_payload(dir: &Path) -> Vec<PayloadFile> {
    let binary = dir.join("zbs-taskd");
    std::fs::write(&binary, b"\x7fELF stand-in for zbs-taskd").expect("write the stand-in binary");
    payload(&[("zbs-taskd".to_string(), binary)], &packaging_dir()).expect("build the payload")
}

#[test]
fn payload_has_the_install_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = sample_payload(dir.path());
    let paths: Vec<&str> = files.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "etc/zbs/taskd.toml",
            "lib/systemd/system/zbs-taskd.service",
            "usr/bin/zbs-taskd",
            "usr/lib/sysusers.d/zbs-taskd.conf",
            "usr/share/bash-completion/completions/zbs-taskd",
            "usr/share/fish/vendor_completions.d/zbs-taskd.fish",
            "usr/share/man/man1/zbs-taskd.1",
            "usr/share/zbs-taskd/monitoring/zbs-taskd-dashboard.json",
            "usr/share/zbs-taskd/monitoring/zbs-taskd.rules.yml",
            "usr/share/zbs-taskd/profiles/tuned.toml",
            "usr/share/zbs-taskd/profiles/zbs-taskd.service.d/tuned.conf",
            "usr/share/zsh/vendor-completions/_zbs-taskd",
        ]
    );
    let mode = |path: &str| files.iter().find(|file| file.path == path).map(|file| file.mode);
    assert_eq!(mode("usr/bin/zbs-taskd"), Some(0o755));
    assert_eq!(mode("etc/zbs/taskd.toml"), Some(0o644));
}

#[test]
fn man_page_and_completions_come_from_the_daemon_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = sample_payload(dir.path());
    let text = |path: &str| {
        String::from_utf8_lossy(&files.iter().find(|file| file.path == path).expect("the file is shipped").contents)
            .into_owned()
    };
    let man = text("usr/share/man/man1/zbs-taskd.1");
    assert!(man.contains(".TH zbs-taskd"), "not a man page:\n{man}");
    assert!(man.contains("session\\-timeout\\-ms"), "the man page lacks --session-timeout-ms:\n{man}");
    assert!(text("usr/share/bash-completion/completions/zbs-taskd").contains("--drain-deadline-ms"));
    assert!(text("usr/share/zsh/vendor-completions/_zbs-taskd").contains("#compdef zbs-taskd"));
    assert!(text("usr/share/fish/vendor_completions.d/zbs-taskd.fish").contains("health-file-on-missing"));
}

#[test]
fn tarball_round_trips_and_its_checksums_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = sample_payload(dir.path());
    let out = dir.path().join("dist");
    let tarball = write_tarball("zbs-taskd-9.9.9-test", &files, &out).expect("write the tarball");
    assert_eq!(tarball, out.join("zbs-taskd-9.9.9-test.tar.gz"));
    assert_eq!(read_tarball(&tarball).expect("read it back"), files);

    let sidecar = std::fs::read_to_string(sha256_path(&tarball)).expect("read the .sha256");
    let compressed = std::fs::read(&tarball).expect("read the tarball");
    assert_eq!(sidecar, format!("{}  zbs-taskd-9.9.9-test.tar.gz\n", sha256_hex(&compressed)));
    assert!(!out.join("zbs-taskd-9.9.9-test.tar.partial").exists(), "a temp file was left behind");
}

/// `tar x` plus `sha256sum -c`, the way a packager checks the tarball, when both are installed.
#[test]
fn unpacked_tarball_passes_sha256sum_check() {
    let have = |tool: &str| {
        std::process::Command::new(tool).arg("--version").output().is_ok_and(|output| output.status.success())
    };
    if !have("tar") || !have("sha256sum") {
        eprintln!("SKIPPED unpacked_tarball_passes_sha256sum_check: tar or sha256sum (coreutils) is missing");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let files = sample_payload(dir.path());
    let tarball = write_tarball("zbs-taskd-9.9.9-test", &files, &dir.path().join("dist")).expect("write the tarball");
    let unpack = dir.path().join("unpack");
    std::fs::create_dir(&unpack).expect("create the unpack dir");
    let status =
        std::process::Command::new("tar").arg("xzf").arg(&tarball).current_dir(&unpack).status().expect("run tar");
    assert!(status.success(), "tar xzf failed");
    let output = std::process::Command::new("sha256sum")
        .args(["--check", "--strict", CHECKSUMS])
        .current_dir(unpack.join("zbs-taskd-9.9.9-test"))
        .output()
        .expect("run sha256sum");
    assert!(
        output.status.success(),
        "sha256sum -c failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata =
        std::fs::metadata(unpack.join("zbs-taskd-9.9.9-test/usr/bin/zbs-taskd")).expect("the binary was unpacked");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(metadata.permissions().mode() & 0o777, 0o755);
}

#[test]
fn checksums_catch_a_changed_a_missing_and_an_unlisted_file() {
    let files =
        vec![PayloadFile::new("usr/bin/a", b"one".to_vec(), 0o755), PayloadFile::new("etc/b", b"two".to_vec(), 0o644)];
    let sums = checksums(&files);
    verify_checksums(&sums, &files).expect("the sums of the same files verify");

    let mut changed = files.clone();
    changed[0].contents = b"ONE".to_vec();
    let error = verify_checksums(&sums, &changed).expect_err("a changed file is caught");
    assert!(error.to_string().contains("usr/bin/a: checksum mismatch"), "{error}");

    let error = verify_checksums(&sums, &files[..1]).expect_err("a missing file is caught");
    assert!(error.to_string().contains("etc/b, which is missing"), "{error}");

    let mut extra = files.clone();
    extra.push(PayloadFile::new("usr/bin/c", b"three".to_vec(), 0o755));
    let error = verify_checksums(&sums, &extra).expect_err("an unlisted file is caught");
    assert!(error.to_string().contains("usr/bin/c is not in SHA256SUMS"), "{error}");
}

#[test]
fn unsafe_paths_are_refused() {
    for path in ["", "/etc/passwd", "../x", "usr/../../x", "usr//bin", "./x"] {
        assert!(!is_safe_relative(path), "{path:?} passed");
    }
    assert!(is_safe_relative("usr/bin/zbs-taskd"));
    let error = write_tarball(
        "t",
        &[PayloadFile::new("../evil", b"x".to_vec(), 0o644)],
        &tempfile::tempdir().expect("temp dir").path().join("d"),
    )
    .expect_err("an unsafe path is not packaged");
    assert!(error.to_string().contains("refusing to package"), "{error}");
}

#[test]
fn the_client_gets_its_man_page_and_completions_from_its_clap_definition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = dir.path().join("zbs-task");
    std::fs::write(&binary, b"\x7fELF stand-in for zbs-task").expect("write the stand-in binary");
    let files = payload(&[("zbs-task".to_string(), binary)], &packaging_dir()).expect("build the payload");
    let text = |path: &str| {
        String::from_utf8_lossy(&files.iter().find(|file| file.path == path).expect("the file is shipped").contents)
            .into_owned()
    };
    let man = text("usr/share/man/man1/zbs-task.1");
    assert!(man.contains(".TH zbs-task"), "not a man page:\n{man}");
    assert!(man.contains("Client of the zbs Task Center"), "the man page lacks the about line:\n{man}");
    // Every page the top page's SUBCOMMANDS section names is shipped, down to the leaves.
    for page in
        ["zbs-task-task", "zbs-task-runner", "zbs-task-cluster", "zbs-task-task-copy_volume", "zbs-task-runner-drain"]
    {
        let man = text(&format!("usr/share/man/man1/{page}.1"));
        assert!(man.contains(&format!(".TH {page} 1")), "not the page of {page}:\n{man}");
    }
    assert!(!files.iter().any(|file| file.path.contains("help")), "a page for the help subcommand is shipped");
    let bash = text("usr/share/bash-completion/completions/zbs-task");
    assert!(bash.contains("copy_volume") && bash.contains("set_runtime"), "bash completion lacks subcommands");
    assert!(text("usr/share/zsh/vendor-completions/_zbs-task").contains("#compdef zbs-task"));
    assert!(text("usr/share/fish/vendor_completions.d/zbs-task.fish").contains("undrain"));
}

/// The marker `dist` looks for is in the debug routes' paths, and only there: a rename of the
/// routes cannot make the check pass by accident.
#[test]
fn the_debug_route_marker_finds_the_debug_routes() {
    let routes = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../taskd/src/task_server/routes.rs"))
        .expect("read taskd's task_server/routes.rs");
    let debug_paths: Vec<&str> =
        routes.lines().filter(|line| line.contains("config.route(") && line.contains("\"/debug/")).collect();
    assert!(!debug_paths.is_empty(), "the debug routes moved: update has_debug_routes");
    assert!(debug_paths.iter().all(|line| has_debug_routes(line.as_bytes())), "{debug_paths:?}");
    assert!(!has_debug_routes(b"/api/v2/task_center/copy_volume/create /healthz /debug"));
}
