//! The commands the failover benchmark runs besides its own binaries, and their installation:
//! as root, what is missing is installed with apt-get (keepalived; `ping`, which keepalived's
//! check script runs; `stress-ng`, the quiet watch's load).

/// The commands needed, and the Debian packages that have them.
const TOOLS: [(&str, &str); 3] = [("keepalived", "keepalived"), ("ping", "iputils-ping"), ("stress-ng", "stress-ng")];

/// True when `command` is an executable file on `PATH` or in the sbin dirs (root's tools).
pub fn have_command(command: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(std::path::PathBuf::from))
        .any(|dir| dir.join(command).is_file())
}

/// Installs (as root, with apt-get) the missing tools; returns the packages still missing
/// afterwards (empty when everything is there).
pub fn ensure_tools() -> Vec<&'static str> {
    let missing = || -> Vec<&'static str> {
        TOOLS.iter().filter(|(command, _)| !have_command(command)).map(|(_, package)| *package).collect()
    };
    let wanted = missing();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if wanted.is_empty() || unsafe { libc::geteuid() } != 0 || !have_command("apt-get") {
        return wanted;
    }
    eprintln!("failover bench: installing {} (apt-get)", wanted.join(" "));
    let install = |packages: &[&str]| {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install(&wanted) {
        // A fresh machine's package lists may be missing or stale.
        let _ = std::process::Command::new("apt-get").args(["update", "-q"]).status();
        install(&wanted);
    }
    missing()
}
