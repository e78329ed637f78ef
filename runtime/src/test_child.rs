//! Test support: re-running one test of this binary as a child process, for scenarios that
//! change the whole process (signal handlers) or need several processes (the exit counter).
//! The child is the same test, told by an environment variable which role it plays.

use std::process::{Command, Output, Stdio};

/// The child-process scenarios of one test module: which environment variable names the test
/// that is to act as the child, and the module the tests live in.
pub(crate) struct ChildTests {
    role_env: &'static str,
    module_path: &'static str,
}

impl ChildTests {
    /// `module_path` is the caller's `module_path!()`.
    pub(crate) const fn new(role_env: &'static str, module_path: &'static str) -> ChildTests {
        ChildTests { role_env, module_path }
    }

    /// Whether this process is the child copy of the test `test_name`.
    pub(crate) fn is_child(&self, test_name: &str) -> bool {
        std::env::var(self.role_env).is_ok_and(|role| role == test_name)
    }

    /// A command that runs only the test `test_name` in a fresh copy of this test binary, as
    /// the child, with its output piped; add environment and spawn or run it.
    pub(crate) fn command(&self, test_name: &str) -> Command {
        let module = self.module_path.split_once("::").map_or(self.module_path, |(_crate, rest)| rest);
        let test_binary = std::env::current_exe().expect("locate the test binary");
        let mut command = Command::new(test_binary);
        command
            .args(["--exact", &format!("{module}::{test_name}"), "--nocapture", "--test-threads=1"])
            .env(self.role_env, test_name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs the child copy of `test_name` to its end.
    pub(crate) fn run(&self, test_name: &str) -> Output {
        self.command(test_name).output().expect("run the test binary as a child")
    }
}

/// A child's exit status and output, for assertion messages.
pub(crate) fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The child exited with success and printed `marker`, the sign it ran its part.
pub(crate) fn assert_succeeded_with(output: &Output, marker: &str) {
    assert!(output.status.success(), "child failed: {}", describe(output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(marker),
        "child did not run its part: {}",
        describe(output)
    );
}
