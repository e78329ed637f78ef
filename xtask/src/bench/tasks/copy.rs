//! CopyVolume through the daemon next to `cp --sparse=always`, on one 2 GiB sparse file with
//! 32 random 8 MiB data regions (256 MiB of data, 12.5 %), in alternating order each round.
//!
//! Before every copy the source's pages are dropped from the page cache
//! (`posix_fadvise(DONTNEED)` after a sync: only this file, not the machine's whole cache), so
//! both read from the disk ("cold-ish": the disk's own cache and the file's extent map may still
//! be warm). The daemon's copy is timed from just before the submit until a poll of the task
//! (every 5 ms) sees it `succeeded`: dispatch and the poll gap are inside, a few ms of seconds.
//! `cp`'s copy is fsynced, as the engine syncs every extent. Both copies are compared with the
//! source (`cmp`) after the last round.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::api::Api;

const MIB: u64 = 1 << 20;
use crate::bench::copy::{make_sparse_source, remove_if_present};
/// The same sparse source as the engine's copy benchmark.
pub(super) use crate::bench::copy::{DATA_BYTES, VOLUME_BYTES};
const POLL: Duration = Duration::from_millis(5);
const COPY_TIMEOUT: Duration = Duration::from_secs(120);

/// MiB/s of the volume's length, per round: (daemon's CopyVolume, cp).
pub struct CopyRates {
    pub copy: Vec<f64>,
    pub cp: Vec<f64>,
}

/// Runs `rounds` rounds in `work` (which must lie under the runners' allowed roots).
pub fn measure(api: &Api, work: &Path, rounds: usize) -> Result<CopyRates> {
    let source = work.join("source");
    make_sparse_source(&source).context("write the sparse source")?;
    let ours = work.join("copy-volume");
    let theirs = work.join("cp");
    let mut rates = CopyRates { copy: Vec::new(), cp: Vec::new() };
    for round in 0..rounds {
        if round % 2 == 0 {
            rates.copy.push(copy_through_daemon(api, &source, &ours)?);
            rates.cp.push(copy_with_cp(&source, &theirs)?);
        } else {
            rates.cp.push(copy_with_cp(&source, &theirs)?);
            rates.copy.push(copy_through_daemon(api, &source, &ours)?);
        }
    }
    for copy in [&ours, &theirs] {
        let equal = Command::new("cmp").arg("-s").arg(&source).arg(copy).status().context("run cmp")?;
        ensure!(equal.success(), "{} differs from the source", copy.display());
    }
    for path in [&source, &ours, &theirs] {
        fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(rates)
}

fn copy_through_daemon(api: &Api, source: &Path, destination: &Path) -> Result<f64> {
    remove_if_present(destination)?;
    drop_from_page_cache(source)?;
    let started = Instant::now();
    let task_id = api.submit_copy(source, destination)?;
    loop {
        let record = api.show(&task_id)?;
        match record["state"].as_str().unwrap_or_default() {
            "succeeded" => break,
            "failed" | "cancelled" => bail!("the copy task ended {}: {record}", record["state"]),
            _ if started.elapsed() > COPY_TIMEOUT => {
                bail!("the copy task is not done after {COPY_TIMEOUT:?}: {record}")
            }
            _ => std::thread::sleep(POLL),
        }
    }
    Ok(mib_per_s(started.elapsed()))
}

fn copy_with_cp(source: &Path, destination: &Path) -> Result<f64> {
    remove_if_present(destination)?;
    drop_from_page_cache(source)?;
    let started = Instant::now();
    let status = Command::new("cp").arg("--sparse=always").arg(source).arg(destination).status().context("run cp")?;
    ensure!(status.success(), "cp --sparse=always failed ({status})");
    File::open(destination).and_then(|file| file.sync_all()).context("sync cp's copy")?;
    Ok(mib_per_s(started.elapsed()))
}

/// Syncs `path` and asks the kernel to drop its cached pages.
fn drop_from_page_cache(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    file.sync_all().with_context(|| format!("sync {}", path.display()))?;
    // SAFETY: a valid open descriptor; the advice only affects the page cache.
    let error = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    ensure!(error == 0, "posix_fadvise(DONTNEED) on {}: error {error}", path.display());
    Ok(())
}

fn mib_per_s(elapsed: Duration) -> f64 {
    (VOLUME_BYTES / MIB) as f64 / elapsed.as_secs_f64()
}
