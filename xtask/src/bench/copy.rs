//! The CopyVolume benchmark: the engine copying a 2 GiB sparse file with random data regions,
//! next to `cp --sparse=always` on the same file in the same run; both destinations synced,
//! both checked equal to the source. Runs alone as `cargo xtask bench copy`; the Task Center
//! benchmark can reuse its `copy_mib_per_s` and `cp_mib_per_s`.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use taskd::copy_volume::{copy_volume, AllowedRoots, CopyControl, CopyOutcome, CopySpec};

use super::report::{bench_dir, percentile, Report};

const MIB: u64 = 1 << 20;
pub(super) const VOLUME_BYTES: u64 = 2048 * MIB;
/// Data regions of `REGION_BYTES` each, spread over the volume: 256 MiB of data in all.
const N_REGIONS: u64 = 32;
const REGION_BYTES: u64 = 8 * MIB;
/// The bytes of data in the sparse source.
pub(super) const DATA_BYTES: u64 = N_REGIONS * REGION_BYTES;
const ROUNDS: usize = 5;
const IO_DEPTH: u32 = 4;

pub fn run() -> Result<()> {
    let work = bench_dir().join("copy-work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("remove the old {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    // The copy refuses paths with `..`, which `bench_dir` has.
    let work = fs::canonicalize(&work).with_context(|| format!("resolve {}", work.display()))?;
    let result = measure(&work);
    let cleanup = fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()));
    let report = result?;
    cleanup?;
    report.write()?;
    Ok(())
}

fn measure(work: &Path) -> Result<Report> {
    let source = work.join("source");
    make_sparse_source(&source).context("write the sparse source")?;
    let roots = AllowedRoots::new([work]).context("allow the work directory")?;
    let ours = work.join("copy-volume");
    let theirs = work.join("cp");

    let mut copy_rates = Vec::new();
    let mut cp_rates = Vec::new();
    for _ in 0..ROUNDS {
        remove_if_present(&ours)?;
        let paths = roots.check(&source, &ours).context("check the copy's paths")?;
        let spec = CopySpec::new(paths, IO_DEPTH);
        let started = Instant::now();
        let mut n_extents = 0;
        match copy_volume(&spec, &CopyControl::new(), |_| n_extents += 1) {
            CopyOutcome::Completed => {}
            other => bail!("the copy ended {other:?}"),
        }
        copy_rates.push(mib_per_s(started));

        remove_if_present(&theirs)?;
        let started = Instant::now();
        let status = Command::new("cp").arg("--sparse=always").arg(&source).arg(&theirs).status().context("run cp")?;
        if !status.success() {
            bail!("cp --sparse=always failed ({status})");
        }
        // The engine syncs every extent it wrote; sync cp's copy too, so both are durable.
        File::open(&theirs).and_then(|file| file.sync_all()).context("sync cp's copy")?;
        cp_rates.push(mib_per_s(started));
    }
    for copy in [&ours, &theirs] {
        let equal = Command::new("cmp").arg("-s").arg(&source).arg(copy).status().context("run cmp")?;
        if !equal.success() {
            bail!("{} differs from the source", copy.display());
        }
    }

    let mut report = Report::new("copy");
    let copy_mib_per_s = percentile(&mut copy_rates, 0.5);
    let cp_mib_per_s = percentile(&mut cp_rates, 0.5);
    report.set("copy_mib_per_s", copy_mib_per_s);
    report.set("cp_mib_per_s", cp_mib_per_s);
    report.set("copy_ratio", copy_mib_per_s / cp_mib_per_s);
    report.set("copy_mib_per_s_best", percentile(&mut copy_rates, 1.0));
    report.set("cp_mib_per_s_best", percentile(&mut cp_rates, 1.0));
    report.set("volume_mib", (VOLUME_BYTES / MIB) as f64);
    report.set("data_mib", (N_REGIONS * REGION_BYTES / MIB) as f64);
    report.set("source_allocated_mib", allocated_mib(&source)?);
    report.set("copy_allocated_mib", allocated_mib(&ours)?);
    report.set("cp_allocated_mib", allocated_mib(&theirs)?);
    report.set("rounds", ROUNDS as f64);
    report.set("io_depth", f64::from(IO_DEPTH));
    report.note("MiB/s of the volume's length (2 GiB) per second, median of the rounds; source in the page cache");
    report.note(
        "copy: 256 MiB extents, 256 KiB blocks, data synced after each extent; cp: cp --sparse=always then fsync",
    );
    report.note("both copies are compared with the source (cmp) after the last round");
    Ok(report)
}

/// A 2 GiB file with `N_REGIONS` random regions, one near the start of each 64 MiB slice,
/// at offsets that are not block aligned.
pub(super) fn make_sparse_source(path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(VOLUME_BYTES).context("set the source length")?;
    let slice = VOLUME_BYTES / N_REGIONS;
    let mut data = vec![0u8; REGION_BYTES as usize];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for region in 0..N_REGIONS {
        for word in data.chunks_exact_mut(8) {
            // xorshift64: cheap incompressible bytes; the benchmark needs no better randomness.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let offset = region * slice + (region * 12_345) % (slice - REGION_BYTES);
        file.write_all_at(&data, offset).context("write a data region")?;
    }
    file.sync_all().context("sync the source")?;
    Ok(())
}

pub(super) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("remove {}", path.display())),
    }
}

fn mib_per_s(started: Instant) -> f64 {
    (VOLUME_BYTES / MIB) as f64 / started.elapsed().as_secs_f64()
}

fn allocated_mib(path: &Path) -> Result<f64> {
    let metadata = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((metadata.blocks() * 512) as f64 / MIB as f64)
}
