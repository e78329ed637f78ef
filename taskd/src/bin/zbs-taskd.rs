//! `zbs-taskd`, the Task Center daemon: parses its configuration (exit 78 on any error, naming
//! the key), sets up logging and the signal flag, and hands the main thread to the supervisor.

use clap::Parser;
use taskd::config::{CommandLine, Config, EXIT_CONFIG};
use taskd::supervisor::{Supervisor, EXIT_START_FAILURE};

fn main() {
    let command_line = match CommandLine::try_parse() {
        Ok(command_line) => command_line,
        Err(error)
            if matches!(error.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) =>
        {
            let _ = error.print();
            std::process::exit(0);
        }
        Err(error) => {
            let _ = error.print();
            std::process::exit(EXIT_CONFIG);
        }
    };
    let config = match Config::load(&command_line) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("zbs-taskd: {error}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    if let Err(error) = taskd::logging::init(&config.log) {
        eprintln!("zbs-taskd: {error}");
        std::process::exit(EXIT_CONFIG);
    }
    let stop_flag = match runtime::signals::install_stop_flag() {
        Ok(flag) => flag,
        Err(error) => {
            tracing::error!(%error, "cannot install the signal handlers");
            std::process::exit(EXIT_START_FAILURE);
        }
    };
    tracing::info!(node_id = %config.node_id, zookeeper = %config.zookeeper_hosts, "zbs-taskd starting");
    let code = Supervisor::new(config, stop_flag).run();
    tracing::info!(code, "zbs-taskd exiting");
    std::process::exit(code);
}
