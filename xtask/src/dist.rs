//! `cargo xtask dist`: the release tarball `target/dist/zbs-taskd-<version>-<arch>.tar.gz`, laid
//! out as the files land on a host (`usr/bin/`, `etc/zbs/`, `lib/systemd/system/`, man page and
//! completions under `usr/share/`), with a `SHA256SUMS` inside and a `.sha256` beside it.
//!
//! The tarball holds one top dir, `zbs-taskd-<version>-<arch>/`; its `SHA256SUMS` lists every
//! other file relative to that dir, so `sha256sum -c SHA256SUMS` checks an unpacked copy.
//! The man page and the shell completions are generated from the daemon's clap definition
//! (`taskd::config::CommandLine`) and the client's (`taskd::cli::Cli`), so they cannot drift
//! from the flags.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, CommandFactory};
use sha2::{Digest, Sha256};

/// The checksum file's name, inside the tarball's top dir.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// Where each shipped file goes, relative to the root it is installed into.
pub const UNIT_PATH: &str = "lib/systemd/system/zbs-taskd.service";
pub const CONFIG_PATH: &str = "etc/zbs/taskd.toml";
/// The tuned profile (an example configuration: 50 ms silent-cut detection, realtime probes).
pub const TUNED_PROFILE_PATH: &str = "usr/share/zbs-taskd/profiles/tuned.toml";
/// The unit drop-in the tuned profile needs (realtime priority allowed up to 10).
pub const TUNED_DROP_IN_PATH: &str = "usr/share/zbs-taskd/profiles/zbs-taskd.service.d/tuned.conf";
pub const SYSUSERS_PATH: &str = "usr/lib/sysusers.d/zbs-taskd.conf";
/// The Prometheus alert rules and the Grafana dashboard (see the README's "Monitoring").
pub const RULES_PATH: &str = "usr/share/zbs-taskd/monitoring/zbs-taskd.rules.yml";
pub const DASHBOARD_PATH: &str = "usr/share/zbs-taskd/monitoring/zbs-taskd-dashboard.json";

#[derive(Args)]
pub struct DistArgs {
    /// Package the release binaries already in target/release instead of building them first.
    #[arg(long)]
    pub no_build: bool,
}

/// One file of the tarball: its path relative to the install root, its bytes and its mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl PayloadFile {
    fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> PayloadFile {
        PayloadFile { path: path.into(), contents: contents.into(), mode }
    }
}

/// What `cargo metadata` says about the workspace and the `taskd` package.
pub struct Workspace {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub version: String,
    /// The `taskd` package's binaries (`zbs-taskd`, and `zbs-task` once it exists).
    pub binaries: Vec<String>,
}

impl Workspace {
    /// Asks `cargo metadata` (no dependencies resolved).
    pub fn load() -> Result<Workspace> {
        let output = Command::new(cargo())
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .context("run cargo metadata")?;
        ensure!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parse cargo metadata's output")?;
        let text = |value: &serde_json::Value, what: &str| -> Result<String> {
            value.as_str().map(str::to_string).with_context(|| format!("cargo metadata has no {what}"))
        };
        let packages = metadata["packages"].as_array().context("cargo metadata lists no packages")?;
        let taskd =
            packages.iter().find(|package| package["name"] == "taskd").context("the workspace has no taskd package")?;
        let binaries = taskd["targets"]
            .as_array()
            .context("taskd has no targets")?
            .iter()
            .filter(|target| target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin")))
            .map(|target| text(&target["name"], "bin target name"))
            .collect::<Result<Vec<_>>>()?;
        ensure!(!binaries.is_empty(), "the taskd package has no binaries");
        Ok(Workspace {
            root: PathBuf::from(text(&metadata["workspace_root"], "workspace_root")?),
            target_dir: PathBuf::from(text(&metadata["target_directory"], "target_directory")?),
            version: text(&taskd["version"], "taskd version")?,
            binaries,
        })
    }

    /// `zbs-taskd-<version>-<arch>`: the tarball's stem and its top dir.
    pub fn dist_name(&self) -> String {
        format!("zbs-taskd-{}-{}", self.version, std::env::consts::ARCH)
    }
}

pub fn run(args: DistArgs) -> Result<()> {
    let tarball = build(!args.no_build)?;
    println!("{}", tarball.display());
    Ok(())
}

/// Builds the release binaries (unless `build` is false), writes the tarball and its `.sha256`,
/// and returns the tarball's path.
pub fn build(build: bool) -> Result<PathBuf> {
    let workspace = Workspace::load()?;
    if build {
        eprintln!("dist: cargo build --release --package taskd --bins");
        let status = Command::new(cargo())
            .args(["build", "--release", "--package", "taskd", "--bins"])
            .current_dir(&workspace.root)
            .status()
            .context("run cargo build --release")?;
        ensure!(status.success(), "cargo build --release of taskd failed ({status})");
    }
    let binaries: Vec<(String, PathBuf)> =
        workspace.binaries.iter().map(|name| (name.clone(), workspace.target_dir.join("release").join(name))).collect();
    for (name, path) in &binaries {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        ensure!(
            !has_debug_routes(&bytes),
            "{name} was built with the tests' debug-hooks feature (it has /debug/ routes): not shipping it"
        );
    }
    let files = payload(&binaries, &workspace.root.join("packaging"))?;
    let out_dir = workspace.target_dir.join("dist");
    let tarball = write_tarball(&workspace.dist_name(), &files, &out_dir)?;
    for file in &files {
        eprintln!("dist: {:04o} {:>9} {}", file.mode, file.contents.len(), file.path);
    }
    eprintln!("dist: wrote {} and {}", tarball.display(), sha256_path(&tarball).display());
    Ok(tarball)
}

/// Whether a binary carries the test-only debug routes (taskd's `debug-hooks` feature).
pub fn has_debug_routes(binary: &[u8]) -> bool {
    const MARKER: &[u8] = b"/debug/v1/";
    binary.windows(MARKER.len()).any(|window| window == MARKER)
}

/// Every file the tarball ships, in install-root layout.
pub fn payload(binaries: &[(String, PathBuf)], packaging_dir: &Path) -> Result<Vec<PayloadFile>> {
    let mut files = Vec::new();
    for (name, path) in binaries {
        let contents = fs::read(path).with_context(|| format!("read the binary {}", path.display()))?;
        files.push(PayloadFile::new(format!("usr/bin/{name}"), contents, 0o755));
        match cli_definition(name) {
            Some(command) => files.extend(cli_docs(name, command)?),
            None => eprintln!("dist: {name} has no clap definition known to xtask; no man page or completions for it"),
        }
    }
    let packaged = |name: &str| -> Result<Vec<u8>> {
        let path = packaging_dir.join(name);
        fs::read(&path).with_context(|| format!("read {}", path.display()))
    };
    files.push(PayloadFile::new(UNIT_PATH, packaged("zbs-taskd.service")?, 0o644));
    files.push(PayloadFile::new(CONFIG_PATH, packaged("taskd.toml")?, 0o644));
    files.push(PayloadFile::new(SYSUSERS_PATH, packaged("zbs-taskd.sysusers")?, 0o644));
    files.push(PayloadFile::new(RULES_PATH, packaged("monitoring/zbs-taskd.rules.yml")?, 0o644));
    files.push(PayloadFile::new(DASHBOARD_PATH, packaged("monitoring/zbs-taskd-dashboard.json")?, 0o644));
    // The tuned profile and its unit drop-in, as examples an operator copies into place.
    files.push(PayloadFile::new(TUNED_PROFILE_PATH, packaged("profiles/tuned.toml")?, 0o644));
    files.push(PayloadFile::new(TUNED_DROP_IN_PATH, packaged("profiles/zbs-taskd.service.d/tuned.conf")?, 0o644));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The clap definition of a shipped binary, when xtask knows it.
fn cli_definition(binary: &str) -> Option<clap::Command> {
    match binary {
        "zbs-taskd" => Some(taskd::config::CommandLine::command()),
        "zbs-task" => Some(taskd::cli::Cli::command()),
        _ => None,
    }
}

/// The man pages (section 1: the binary's, and one per subcommand, `zbs-task-task-show.1`, as
/// the top page's SUBCOMMANDS section names them) and bash, zsh and fish completions of one
/// binary.
fn cli_docs(name: &str, command: clap::Command) -> Result<Vec<PayloadFile>> {
    let mut files = Vec::new();
    let mut man_command = command.clone().disable_help_subcommand(true);
    man_command.build();
    add_man_pages(&man_command, &mut files).with_context(|| format!("render the man pages of {name}"))?;
    use clap_complete::Shell;
    for (shell, path) in [
        (Shell::Bash, format!("usr/share/bash-completion/completions/{name}")),
        (Shell::Zsh, format!("usr/share/zsh/vendor-completions/_{name}")),
        (Shell::Fish, format!("usr/share/fish/vendor_completions.d/{name}.fish")),
    ] {
        let mut script = Vec::new();
        let mut command = command.clone();
        clap_complete::generate(shell, &mut command, name, &mut script);
        files.push(PayloadFile::new(path, script, 0o644));
    }
    Ok(files)
}

/// Renders the man page of `command` and of each of its visible subcommands, recursively (what
/// `clap_mangen::generate_to` writes, in memory). `command` must be built, so that subcommands
/// carry their display names (`zbs-task-task`).
fn add_man_pages(command: &clap::Command, files: &mut Vec<PayloadFile>) -> Result<()> {
    for subcommand in command.get_subcommands().filter(|subcommand| !subcommand.is_hide_set()) {
        add_man_pages(subcommand, files)?;
    }
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render(&mut page).with_context(|| format!("render {}", man.get_filename()))?;
    files.push(PayloadFile::new(format!("usr/share/man/man1/{}", man.get_filename()), page, 0o644));
    Ok(())
}

/// `sha256sum`'s format: `<hex>  <path>` per line, sorted by path.
pub fn checksums(files: &[PayloadFile]) -> String {
    let mut sorted: Vec<&PayloadFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut text = String::new();
    for file in sorted {
        let _ = writeln!(text, "{}  {}", sha256_hex(&file.contents), file.path);
    }
    text
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// `<tarball>.sha256`.
pub fn sha256_path(tarball: &Path) -> PathBuf {
    let mut name = tarball.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Writes `<out_dir>/<name>.tar.gz` (top dir `<name>/`, the files plus `SHA256SUMS`) and
/// `<name>.tar.gz.sha256`, each through a temp file renamed into place.
pub fn write_tarball(name: &str, files: &[PayloadFile], out_dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mtime =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|epoch| epoch.parse::<u64>().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0)
        });
    let sums = PayloadFile::new(CHECKSUMS, checksums(files), 0o644);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut builder = tar::Builder::new(&mut encoder);
        let mut dirs: Vec<String> = vec![String::new()];
        for file in files.iter().chain([&sums]) {
            ensure!(is_safe_relative(&file.path), "refusing to package the path {:?}", file.path);
            // Every parent dir gets its own entry, so that `tar x` makes them with sane modes.
            let mut parent = String::new();
            for component in file.path.split('/').take(file.path.split('/').count() - 1) {
                parent = if parent.is_empty() { component.to_string() } else { format!("{parent}/{component}") };
                if !dirs.contains(&parent) {
                    dirs.push(parent.clone());
                    append(&mut builder, &format!("{name}/{parent}/"), tar::EntryType::Directory, 0o755, mtime, &[])?;
                }
            }
            append(
                &mut builder,
                &format!("{name}/{}", file.path),
                tar::EntryType::Regular,
                file.mode,
                mtime,
                &file.contents,
            )?;
        }
        builder.finish().context("finish the tar stream")?;
    }
    let compressed = encoder.finish().context("finish the gzip stream")?;
    let tarball = out_dir.join(format!("{name}.tar.gz"));
    write_atomically(&tarball, &compressed)?;
    let file_name = tarball.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    write_atomically(&sha256_path(&tarball), format!("{}  {file_name}\n", sha256_hex(&compressed)).as_bytes())?;
    Ok(tarball)
}

fn append<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    contents: &[u8],
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(contents.len() as u64);
    builder.append_data(&mut header, path, contents).with_context(|| format!("add {path} to the tarball"))
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let temp = path.with_extension("partial");
    fs::write(&temp, contents).with_context(|| format!("write {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("rename {} to {}", temp.display(), path.display()))
}

/// A relative path of normal components only: no `..`, no leading `/`, nothing empty.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|component| !component.is_empty() && component != "." && component != "..")
}

/// Reads a tarball `write_tarball` wrote and checks it: one top dir, every file listed in its
/// `SHA256SUMS` with the right digest and nothing listed missing. Returns the files without
/// `SHA256SUMS`, sorted by path.
pub fn read_tarball(tarball: &Path) -> Result<Vec<PayloadFile>> {
    let file = fs::File::open(tarball).with_context(|| format!("open {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut top: Option<String> = None;
    let mut files = Vec::new();
    let mut sums = None;
    for entry in archive.entries().context("read the tarball")? {
        let mut entry = entry.context("read a tarball entry")?;
        let path = entry.path().context("read an entry's path")?.to_string_lossy().into_owned();
        let (entry_top, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
        match &top {
            None => top = Some(entry_top.to_string()),
            Some(top) if top != entry_top => bail!("{}: more than one top dir ({top}, {entry_top})", tarball.display()),
            Some(_) => {}
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            other => bail!("{}: {path} is a {other:?}, not a plain file", tarball.display()),
        }
        ensure!(is_safe_relative(rest), "{}: unsafe path {path:?}", tarball.display());
        let mode = entry.header().mode().context("read an entry's mode")?;
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).with_context(|| format!("read {path} from the tarball"))?;
        if rest == CHECKSUMS {
            sums = Some(String::from_utf8(contents).context("SHA256SUMS is not text")?);
        } else {
            files.push(PayloadFile::new(rest, contents, mode & 0o7777));
        }
    }
    let sums = sums.with_context(|| format!("{} has no {CHECKSUMS}", tarball.display()))?;
    verify_checksums(&sums, &files).with_context(|| format!("verify {}", tarball.display()))?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Every file is listed once with its digest, and every listed file exists.
pub fn verify_checksums(sums: &str, files: &[PayloadFile]) -> Result<()> {
    let mut listed = Vec::new();
    for line in sums.lines().filter(|line| !line.trim().is_empty()) {
        let (digest, path) = line.split_once("  ").with_context(|| format!("bad {CHECKSUMS} line {line:?}"))?;
        let file = files
            .iter()
            .find(|file| file.path == path)
            .with_context(|| format!("{CHECKSUMS} lists {path}, which is missing"))?;
        ensure!(sha256_hex(&file.contents) == digest, "{path}: checksum mismatch");
        listed.push(path);
    }
    for file in files {
        ensure!(listed.contains(&file.path.as_str()), "{} is not in {CHECKSUMS}", file.path);
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

#[cfg(test)]
mod tests;
