//! `cargo xtask test`: everything CI runs (`.ci/run` is only this command): installs what the
//! tests need (when run as root), checks formatting and lints (`cargo clippy -D warnings`; each
//! when the toolchain has it), runs every test of the workspace, then a 3-minute loopback chaos
//! run with a fixed seed.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the integration tests use: a real ZooKeeper server (which pulls in Java),
/// `ip` for the network-namespace tests, `ps`/`pgrep` (procps) and `systemd-analyze` for the
/// unit file.
const TEST_PACKAGES: &[&str] = &["zookeeper", "iproute2", "procps", "systemd"];

/// The CI chaos run's seed: fixed, so a red run names what to rerun. The faults it injects
/// depend on the seed; their timing against the daemons does not, so every run is a fresh
/// history checked by the same rules.
const CI_CHAOS_SEED: u64 = 1311;

/// The alert rules `promtool check rules` checks.
const ALERT_RULES: &str = "packaging/monitoring/zbs-taskd.rules.yml";

pub fn run() -> Result<()> {
    ensure_packages(TEST_PACKAGES)?;
    check_alert_rules()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let has_rustfmt =
        Command::new(&cargo).args(["fmt", "--version"]).output().is_ok_and(|output| output.status.success());
    if has_rustfmt {
        let status = Command::new(&cargo).args(["fmt", "--all", "--", "--check"]).status().context("run cargo fmt")?;
        if !status.success() {
            bail!("cargo fmt --all -- --check: the tree is not formatted as rustfmt.toml says ({status})");
        }
    } else {
        eprintln!("test: this toolchain has no rustfmt; formatting not checked");
    }
    let has_clippy =
        Command::new(&cargo).args(["clippy", "--version"]).output().is_ok_and(|output| output.status.success());
    if has_clippy {
        let status = Command::new(&cargo)
            .args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
            .status()
            .context("run cargo clippy")?;
        if !status.success() {
            bail!("cargo clippy --workspace --all-targets -- -D warnings found warnings ({status})");
        }
    } else {
        eprintln!("test: this toolchain has no clippy; lints not checked");
    }
    // Every target of every crate, the library crates' doc tests included (`runtime`'s examples
    // of ThreadContext, TimerHandle, SyncPoint and CoMutex run here, as in CI).
    let status =
        Command::new(&cargo).args(["test", "--workspace", "--no-fail-fast"]).status().context("run cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    crate::chaos::run(crate::chaos::ChaosArgs {
        minutes: 3.0,
        seed: Some(CI_CHAOS_SEED),
        netns: false,
        request_ids: true,
        settle_secs: 120,
    })
    .context("the CI chaos run")
}

/// `promtool check rules` on the shipped alert rules.
fn check_alert_rules() -> Result<()> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace dir")?;
    let promtool = promtool()?;
    let status = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(workspace.join(ALERT_RULES))
        .status()
        .with_context(|| format!("run {}", promtool.display()))?;
    if !status.success() {
        bail!("promtool check rules {ALERT_RULES} failed ({status})");
    }
    Ok(())
}

/// `promtool` from PATH, or from Debian's `prometheus` package unpacked under
/// `target/tools/prometheus` (`apt-get download` and `dpkg-deb -x`, as any user): installing the
/// package would also start a Prometheus server, which the tests do not want.
fn promtool() -> Result<std::path::PathBuf> {
    if let Ok(output) = Command::new("sh").args(["-c", "command -v promtool"]).output() {
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !path.is_empty() {
            return Ok(path.into());
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|root| root.join("target")).unwrap_or_default()
    });
    let tools = target_dir.join("tools").join("prometheus");
    let promtool = tools.join("usr/bin/promtool");
    if promtool.exists() {
        return Ok(promtool);
    }
    std::fs::create_dir_all(&tools).with_context(|| format!("create {}", tools.display()))?;
    let download = || Command::new("apt-get").args(["download", "prometheus"]).current_dir(&tools).status();
    let mut downloaded = download().context("run apt-get download prometheus")?;
    if !downloaded.success() && is_root() {
        // The package lists may be missing or stale on a fresh machine.
        Command::new("apt-get").arg("update").status().context("run apt-get update")?;
        downloaded = download().context("run apt-get download prometheus")?;
    }
    if !downloaded.success() {
        bail!("apt-get download prometheus failed ({downloaded}): install promtool (Debian's prometheus package)");
    }
    let package = std::fs::read_dir(&tools)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|extension| extension == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = Command::new("dpkg-deb").arg("-x").arg(&package).arg(&tools).status().context("run dpkg-deb")?;
    if !unpacked.success() || !promtool.exists() {
        bail!("dpkg-deb -x {} did not give {}", package.display(), promtool.display());
    }
    let _ = std::fs::remove_file(&package);
    Ok(promtool)
}

/// Installs the missing packages with apt-get when running as root; otherwise says which.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|package| !is_installed(package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages: run `sudo apt-get update && sudo apt-get install -y {}`", missing.join(" "));
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    let update = Command::new("apt-get").arg("update").status().context("run apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed ({update})");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("run apt-get install")?;
    if !install.success() {
        bail!("apt-get install -y {} failed ({install})", missing.join(" "));
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
