//! `cargo xtask chaos`: a Jepsen-style run. Three daemons and a three-server ZooKeeper ensemble on
//! loopback (or the netns cluster with its VIP), a seeded nemesis injecting faults while a
//! workload submits, cancels, pauses and resumes tasks, then a settle, then the checker over the
//! whole history and what the system recorded. Writes `target/bench/chaos.json`; a run with a
//! violation prints its seed, keeps every log and exits non-zero.
//!
//! The script: `init_cluster` → `init_sources` → workload clients (threads) + nemesis (this
//! thread: restarted processes die with the thread that started them) → heal → stop clients →
//! `settle` → `gather` → `checker::check` → `report`.

mod checker;
mod gather;
mod nemesis;
mod report;
mod target;
mod workload;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tests::cluster::Cluster;
use tests::netns::NetnsCluster;
use tests::prelude::*;

use target::Target;

#[derive(Args)]
pub struct ChaosArgs {
    /// How long the nemesis injects faults.
    #[arg(long, default_value_t = 3.0)]
    pub minutes: f64,
    /// The nemesis's and the workload's seed (printed; a random one when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run the network-namespace cluster with its VIP (root); Sleep tasks only, no ZooKeeper faults.
    #[arg(long)]
    pub netns: bool,
    /// Send a `request_id` with every submit without asking the daemon whether it takes one.
    #[arg(long)]
    pub request_ids: bool,
    /// How long every task has to end once the faults stopped.
    #[arg(long, default_value_t = 120)]
    pub settle_secs: u64,
}

/// The daemons' ZooKeeper session timeout: a pause of 1.5× expires it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// The sparse sources of the copies: `N_SOURCES` files of `SOURCE_BYTES`, `N_REGIONS` regions
/// of random data each (the rest holes), copied at 8 MiB/s so that a copy spans faults.
const N_SOURCES: usize = 4;
const SOURCE_BYTES: u64 = 48 << 20;
const N_REGIONS: u64 = 6;
const REGION_BYTES: u64 = 2 << 20;

/// Clients submitting at once.
const N_CLIENTS: usize = 3;

pub fn run(args: ChaosArgs) -> Result<()> {
    let seed = args.seed.unwrap_or_else(|| ChaCha8Rng::from_entropy().next_u64() >> 16);
    println!("chaos: seed {seed} ({} minutes{})", args.minutes, if args.netns { ", netns" } else { "" });
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("zbs-chaos-").tempdir().context("create the run's dir")?;
    let work_dir = fs::canonicalize(work.path()).context("resolve the run's dir")?;
    let volumes = work_dir.join("volumes");
    fs::create_dir_all(volumes.join("copies")).context("create the volumes dir")?;
    let target = init_cluster(&args, &volumes)?;
    println!("chaos: cluster up in {:.1} s ({})", started.elapsed().as_secs_f64(), target.dir().display());
    let outcome = run_on(&args, seed, &target, &volumes, &work_dir);
    let keep = !matches!(outcome, Ok(true));
    if keep {
        target.keep_dir_on_drop();
        let kept = work.keep();
        println!(
            "chaos: FAILED with seed {seed}; kept the cluster's dir {} and the run's dir {}",
            target.dir().display(),
            kept.display()
        );
    }
    drop(target);
    println!("chaos: {:.1} s end to end", started.elapsed().as_secs_f64());
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => bail!(
            "the checker found violations (seed {seed}); rerun with `cargo xtask chaos --minutes {} --seed {seed}{}`",
            args.minutes,
            if args.netns { " --netns" } else { "" }
        ),
        Err(error) => Err(error.context(format!("chaos run with seed {seed}"))),
    }
}

fn init_cluster(args: &ChaosArgs, volumes: &Path) -> Result<Target> {
    if args.netns {
        if let Some(reason) = tests::netns::skip_reason() {
            bail!("--netns cannot run here: {reason}");
        }
        let cluster = NetnsCluster::builder()
            .session_timeout(SESSION_TIMEOUT)
            .holder_sample_interval(Duration::from_millis(50))
            .start()
            .context("start the netns cluster")?;
        return Ok(Target::Netns { cluster });
    }
    let cluster = Cluster::builder()
        .zookeeper_servers(3)
        .session_timeout(SESSION_TIMEOUT)
        .sample_interval(Duration::from_millis(20))
        .configure(|config| {
            config.allowed_roots = Some(vec![volumes.to_path_buf()]);
            config.runner_slots = Some(4);
            config.tasks.copy_extent_mib = Some(1);
            config.tasks.copy_block_kib = Some(64);
            config.tasks.copy_max_mib_per_s = Some(8);
        })
        .start()
        .context("start the loopback cluster with a 3-server ensemble")?;
    Ok(Target::loopback(cluster))
}

/// The run after start-up: Ok(true) when the checker found nothing.
fn run_on(args: &ChaosArgs, seed: u64, target: &Target, volumes: &Path, work_dir: &Path) -> Result<bool> {
    let (sources, destinations) = if target.is_netns() {
        (Vec::new(), None)
    } else {
        (init_sources(volumes, seed)?, Some(volumes.join("copies")))
    };
    let workload = workload::Workload::new(target, false, sources.clone(), destinations.clone());
    let request_ids = args.request_ids || workload::server_takes_request_ids(&workload);
    println!(
        "chaos: {}",
        if request_ids { "submits carry a request_id" } else { "the daemon refuses request_id: submits carry none" }
    );
    let workload = workload::Workload::new(target, request_ids, sources, destinations);
    let mut nemesis = nemesis::Nemesis::new(target, ChaCha8Rng::seed_from_u64(seed));
    let netns_samples = std::sync::Mutex::new(Vec::new());
    let sampling = AtomicBool::new(target.is_netns());
    let faults_from = Instant::now();
    let faults_until = faults_from + Duration::from_secs_f64(args.minutes * 60.0);
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..N_CLIENTS)
            .map(|client| {
                let workload = &workload;
                scope.spawn(move || workload.client(client, seed))
            })
            .collect();
        if target.is_netns() {
            let (sampling, netns_samples) = (&sampling, &netns_samples);
            scope.spawn(move || {
                while sampling.load(Ordering::Acquire) {
                    for node in 0..target.n_nodes() {
                        let sample = target.leader_sample(node);
                        netns_samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(sample);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        nemesis.run_until(faults_until);
        println!(
            "chaos: faults stopped after {:.1} s; {} injected",
            faults_from.elapsed().as_secs_f64(),
            nemesis.records.len()
        );
        workload.stop();
        for client in clients {
            let _ = client.join();
        }
        let settle_started = Instant::now();
        let settled = gather::settle(target, Duration::from_secs(args.settle_secs));
        println!(
            "chaos: settle took {:.1} s ({})",
            settle_started.elapsed().as_secs_f64(),
            if settled { "every task ended" } else { "some tasks did not end" }
        );
        sampling.store(false, Ordering::Release);
    });
    let netns_samples = netns_samples.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    let history = workload.history.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    let gathered = gather::gather(target, &history, &nemesis, netns_samples)?;
    let findings = checker::check(&gathered.facts);
    report::write(work_dir, args, seed, target, &history, &nemesis, &gathered, &findings)?;
    Ok(findings.violations() == 0 && gathered.clean())
}

/// Writes the copies' sparse sources: random data regions (seeded) between holes.
fn init_sources(volumes: &Path, seed: u64) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::FileExt;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut buffer = vec![0u8; REGION_BYTES as usize];
    (0..N_SOURCES)
        .map(|index| {
            let path = volumes.join(format!("source-{index}.img"));
            let file = fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
            file.set_len(SOURCE_BYTES).context("size a source")?;
            let stride = SOURCE_BYTES / N_REGIONS;
            for region in 0..N_REGIONS {
                rng.fill_bytes(&mut buffer);
                file.write_all_at(&buffer, region * stride + (index as u64 % 3) * (256 << 10))
                    .context("write a source's data")?;
            }
            file.sync_all().context("sync a source")?;
            Ok(path)
        })
        .collect()
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}
