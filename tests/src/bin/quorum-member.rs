//! A quorum member as its own process, for the integration tests that kill, pause or expire one:
//! it joins, prints every event as a line `<unix µs> <member id> <event>` on stdout, and leaves
//! when it reads `stop` (or end of input) on stdin.
//!
//! Event lines: `role leader <seq>`, `role follower <seq>`, `members <n> <id,id,...>`,
//! `session-lost`, `stopped`. Logs go to stderr (`RUST_LOG` filters them).
//!
//! # Shutdown
//! `stop` on stdin (or EOF) → `QuorumServer::stop` (leave the quorum, close the session, unloop)
//! → the server thread is joined → the process exits 0.

use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use quorum::{Event, MemberInfo, QuorumConfig, QuorumServer, ZkConfig};

#[derive(Parser)]
struct Arguments {
    /// ZooKeeper connect string.
    #[arg(long)]
    zk: String,
    /// The service's election path.
    #[arg(long)]
    path: String,
    /// The member's id, printed on every line.
    #[arg(long)]
    id: String,
    /// The member's priority.
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Let a member with a higher priority take over.
    #[arg(long)]
    use_priority: bool,
    /// Session timeout asked of ZooKeeper, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    session_timeout_ms: u64,
}

fn unix_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros()).unwrap_or(0)
}

fn print_line(id: &str, text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout means the test has gone; nothing useful is left to do with the line.
    let _ = writeln!(stdout, "{} {id} {text}", unix_micros());
    let _ = stdout.flush();
}

fn describe(event: &Event) -> String {
    match event {
        Event::RoleChanged { leader: true, sequence } => format!("role leader {sequence}"),
        Event::RoleChanged { leader: false, sequence } => format!("role follower {sequence}"),
        Event::MembersChanged(members) => {
            let ids: Vec<&str> = members.iter().map(|member| member.info.id.as_str()).collect();
            format!("members {} {}", members.len(), ids.join(","))
        }
        Event::SessionLost => "session-lost".to_string(),
        Event::Stopped => "stopped".to_string(),
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let arguments = Arguments::parse();
    let zk = ZkConfig::new(arguments.zk.clone(), Duration::from_millis(arguments.session_timeout_ms));
    let mut member = MemberInfo::new(arguments.id.clone(), format!("127.0.0.1:{}", std::process::id()));
    member.priority = arguments.priority;
    let config = QuorumConfig::new(zk, arguments.path.clone(), member).with_priority(arguments.use_priority);
    let server = QuorumServer::new(config).context("build the quorum server")?;
    let id = arguments.id.clone();
    server
        .initialize(move |event: Event| print_line(&id, &describe(&event)))
        .context("initialize the quorum server")?;
    server.start().context("start the quorum server")?;
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(line) if line.trim() == "stop" => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    server.stop();
    server.join().map_err(|error| anyhow::anyhow!("join the quorum server: {error}"))?;
    Ok(())
}
