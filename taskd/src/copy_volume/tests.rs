//! Tests of the CopyVolume engine on real sparse files in temp dirs (1 MiB extents, 64 KiB
//! blocks): equal content with holes kept, progress once per extent, resume, cancel,
//! interrupt, pause and runtime windows, caught panics, the path rules, and the confinement of
//! the opens (symlinks swapped in after the check, FIFOs, hard links, device nodes, the walk
//! that stands in for `openat2`).

use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Timelike;
use tempfile::TempDir;

use super::*;

const MIB: u64 = 1 << 20;
const EXTENT: u64 = MIB;
const BLOCK: u64 = 64 << 10;

/// A temp dir with an allowed root `root/` and a directory outside it, `outside/`.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("copy-volume-").tempdir().expect("create a temp dir");
        fs::create_dir(dir.path().join("root")).expect("create root");
        fs::create_dir(dir.path().join("outside")).expect("create outside");
        Sandbox { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn roots(&self) -> AllowedRoots {
        AllowedRoots::new([self.root()]).expect("a valid root")
    }

    fn paths(&self, source: &str, destination: &str) -> CopyPaths {
        self.roots().check(&self.root().join(source), &self.root().join(destination)).expect("paths inside the root")
    }
}

/// Writes a sparse file of `len` bytes with seeded random data at each `(offset, len)` region.
fn sparse_file(path: &Path, len: u64, regions: &[(u64, u64)], seed: u64) {
    let file = File::create(path).expect("create the source");
    file.set_len(len).expect("set the source length");
    let mut rng = fastrand::Rng::with_seed(seed);
    for &(offset, region_len) in regions {
        let mut data = vec![0u8; region_len as usize];
        rng.fill(&mut data);
        file.write_all_at(&data, offset).expect("write a data region");
    }
    file.sync_all().expect("sync the source");
}

/// Random regions of 1..=200 KiB at random offsets (not block aligned).
fn random_regions(len: u64, count: usize, seed: u64) -> Vec<(u64, u64)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let region_len = rng.u64(1..=200 << 10);
            (rng.u64(0..len - region_len), region_len)
        })
        .collect()
}

fn spec(paths: CopyPaths, io_depth: u32) -> CopySpec {
    CopySpec { paths, io_depth, start_extent: 0, extent_size: EXTENT, block_size: BLOCK, max_bytes_per_s: None }
}

/// The data ranges of a file as `SEEK_DATA`/`SEEK_HOLE` report them.
fn data_map(path: &Path) -> Vec<(u64, u64)> {
    let file = File::open(path).expect("open for the data map");
    let len = file.metadata().expect("metadata").len();
    sparse::data_blocks(&file, 0..len, 4096).expect("data blocks").into_iter().fold(
        Vec::new(),
        |mut ranges: Vec<(u64, u64)>, block| {
            match ranges.last_mut() {
                Some(last) if last.1 == block.offset => last.1 = block.offset + block.len,
                _ => ranges.push((block.offset, block.offset + block.len)),
            }
            ranges
        },
    )
}

fn allocated_bytes(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").blocks() * 512
}

fn assert_same_content(source: &Path, destination: &Path) {
    let source_bytes = fs::read(source).expect("read the source");
    let destination_bytes = fs::read(destination).expect("read the destination");
    assert_eq!(source_bytes.len(), destination_bytes.len(), "lengths differ");
    assert!(source_bytes == destination_bytes, "contents differ");
}

/// Runs a copy and collects every progress report.
fn run_copy(spec: &CopySpec, control: &CopyControl) -> (CopyOutcome, Vec<Progress>) {
    let mut reports = Vec::new();
    let outcome = copy_volume(spec, control, |progress| reports.push(*progress));
    (outcome, reports)
}

/// A window that does not contain the local time now (it opens two hours from now).
fn closed_window() -> RuntimeWindow {
    let hour = chrono::Local::now().hour();
    RuntimeWindow::new((hour + 2) % 24, 0, (hour + 3) % 24, 0).expect("valid")
}

#[test]
fn a_sparse_file_copies_with_equal_content_and_stays_sparse() {
    let sandbox = Sandbox::new();
    let len = 8 * MIB + 12_345;
    let regions = random_regions(len, 24, 1);
    sparse_file(&sandbox.root().join("src"), len, &regions, 2);
    let control = CopyControl::new();
    let (outcome, reports) = run_copy(&spec(sandbox.paths("src", "dst"), 4), &control);
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    assert_same_content(&sandbox.root().join("src"), &sandbox.root().join("dst"));
    // Zero pages are never written, so the destination holds data only where the source does.
    let source_map = data_map(&sandbox.root().join("src"));
    let destination_map = data_map(&sandbox.root().join("dst"));
    for &(start, end) in &destination_map {
        assert!(
            source_map.iter().any(|&(source_start, source_end)| source_start <= start && end <= source_end),
            "destination data {start}..{end} is a hole in the source {source_map:?}"
        );
    }
    let source_allocated = allocated_bytes(&sandbox.root().join("src"));
    let destination_allocated = allocated_bytes(&sandbox.root().join("dst"));
    assert!(
        destination_allocated <= source_allocated,
        "destination allocates {destination_allocated} bytes, source {source_allocated}"
    );
    let data: u64 = data_map(&sandbox.root().join("src")).iter().map(|(start, end)| end - start).sum();
    let stats = control.stats();
    assert!(stats.bytes_read < data + regions.len() as u64 * 2 * BLOCK, "holes were read: {stats:?}");
    assert!(stats.bytes_written <= data, "zeros were written: {stats:?}");
    assert_eq!(reports.len(), 9);
}

#[test]
fn holes_and_zero_blocks_become_holes_in_the_destination() {
    let sandbox = Sandbox::new();
    let source = sandbox.root().join("src");
    let len = 6 * MIB;
    // Block-aligned data, so the destination's data map must equal these regions exactly.
    let regions = [(0, BLOCK), (MIB + 3 * BLOCK, 2 * BLOCK), (4 * MIB, MIB), (6 * MIB - BLOCK, BLOCK)];
    sparse_file(&source, len, &regions, 3);
    // Extent 2 is allocated but all zeros: it must not be written.
    let zeros = File::options().write(true).open(&source).expect("open the source");
    zeros.write_all_at(&vec![0u8; MIB as usize], 2 * MIB).expect("write zeros");
    zeros.sync_all().expect("sync");
    assert!(data_map(&source).contains(&(2 * MIB, 3 * MIB)), "the zeros are allocated: {:?}", data_map(&source));

    let control = CopyControl::new();
    let (outcome, reports) = run_copy(&spec(sandbox.paths("src", "dst"), 2), &control);
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    let destination = sandbox.root().join("dst");
    assert_same_content(&source, &destination);
    let expected: Vec<(u64, u64)> =
        vec![(0, BLOCK), (MIB + 3 * BLOCK, MIB + 5 * BLOCK), (4 * MIB, 5 * MIB), (6 * MIB - BLOCK, 6 * MIB)];
    assert_eq!(data_map(&destination), expected);
    assert_eq!(control.stats().bytes_written, MIB + 4 * BLOCK);
    // Progress arrives once per extent, holes included, in order.
    let extents: Vec<u64> = reports.iter().map(|report| report.cur_extent).collect();
    assert_eq!(extents, [1, 2, 3, 4, 5, 6]);
    let last = reports.last().expect("a report");
    assert_eq!((last.n_extents, last.bytes_done, last.bytes_total), (6, len, len));
}

#[test]
fn only_pages_with_data_are_written() {
    let mut block = vec![0u8; 16 * 4096];
    assert!(sparse::nonzero_runs(&block).is_empty());
    block[5] = 1;
    block[2 * 4096] = 1;
    block[3 * 4096 + 4095] = 1;
    block[15 * 4096 + 7] = 1;
    assert_eq!(sparse::nonzero_runs(&block), [0..4096, 2 * 4096..4 * 4096, 15 * 4096..16 * 4096]);
    assert_eq!(sparse::nonzero_runs(&block[..100]), vec![Range { start: 0, end: 100 }]);
}

#[test]
fn a_fresh_copy_replaces_an_existing_larger_destination() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 3 * MIB, &[(MIB, 100_000)], 4);
    sparse_file(&sandbox.root().join("dst"), 5 * MIB, &[(0, 5 * MIB)], 5);
    let (outcome, _) = run_copy(&spec(sandbox.paths("src", "dst"), 3), &CopyControl::new());
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    assert_same_content(&sandbox.root().join("src"), &sandbox.root().join("dst"));
}

#[test]
fn an_empty_source_completes_without_progress() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 0, &[], 6);
    let (outcome, reports) = run_copy(&spec(sandbox.paths("src", "dst"), 1), &CopyControl::new());
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    assert!(reports.is_empty());
    assert_eq!(fs::metadata(sandbox.root().join("dst")).expect("metadata").len(), 0);
}

#[test]
fn resuming_at_extent_k_copies_only_extents_from_k_on() {
    let sandbox = Sandbox::new();
    let len = 8 * MIB;
    sparse_file(&sandbox.root().join("src"), len, &[(0, len)], 7);
    let control = CopyControl::new();
    let mut resumed = spec(sandbox.paths("src", "dst"), 4);
    resumed.start_extent = 5;
    let (outcome, reports) = run_copy(&resumed, &control);
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    assert_eq!(control.stats().bytes_read, 3 * MIB);
    assert_eq!(reports.iter().map(|report| report.cur_extent).collect::<Vec<_>>(), [6, 7, 8]);
    let source_bytes = fs::read(sandbox.root().join("src")).expect("read");
    let destination_bytes = fs::read(sandbox.root().join("dst")).expect("read");
    assert_eq!(destination_bytes.len() as u64, len);
    assert!(destination_bytes[..5 * MIB as usize].iter().all(|&byte| byte == 0), "extents before k were written");
    assert!(destination_bytes[5 * MIB as usize..] == source_bytes[5 * MIB as usize..]);
}

#[test]
fn an_interrupted_copy_resumes_where_it_stopped() {
    let sandbox = Sandbox::new();
    let len = 8 * MIB;
    sparse_file(&sandbox.root().join("src"), len, &random_regions(len, 40, 8), 9);
    let paths = sandbox.paths("src", "dst");
    let first = CopyControl::new();
    let interrupter = first.clone();
    let outcome = copy_volume(&spec(paths.clone(), 4), &first, |progress| {
        if progress.cur_extent == 3 {
            interrupter.interrupt();
        }
    });
    assert!(matches!(outcome, CopyOutcome::Interrupted { at_extent: 3 }), "{outcome:?}");

    let second = CopyControl::new();
    let mut resumed = spec(paths, 4);
    resumed.start_extent = 3;
    let (outcome, _) = run_copy(&resumed, &second);
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    assert_same_content(&sandbox.root().join("src"), &sandbox.root().join("dst"));
    let total_read = first.stats().bytes_read + second.stats().bytes_read;
    let data: u64 = data_map(&sandbox.root().join("src")).iter().map(|(start, end)| end - start).sum();
    assert!(total_read <= data + 80 * BLOCK, "the resumed copy re-read finished extents: {total_read} of {data}");
}

#[test]
fn cancel_stops_within_one_block_per_coroutine() {
    let sandbox = Sandbox::new();
    let len = 8 * MIB;
    sparse_file(&sandbox.root().join("src"), len, &[(0, len)], 10);
    let io_depth = 4;
    let mut one_extent = spec(sandbox.paths("src", "dst"), io_depth);
    one_extent.extent_size = len;
    let control = CopyControl::new();
    let blocks_at_cancel = Arc::new(AtomicU64::new(0));
    let seen = blocks_at_cancel.clone();
    control.set_block_hook(move |control, blocks_read| {
        if blocks_read == 10 {
            control.cancel();
            seen.store(blocks_read, Ordering::SeqCst);
        }
    });
    let (outcome, reports) = run_copy(&one_extent, &control);
    assert!(matches!(outcome, CopyOutcome::Cancelled), "{outcome:?}");
    assert!(reports.is_empty(), "a cancelled extent was reported: {reports:?}");
    let blocks_read = control.stats().bytes_read / BLOCK;
    assert_eq!(blocks_at_cancel.load(Ordering::SeqCst), 10);
    assert!(blocks_read <= 10 + u64::from(io_depth), "{blocks_read} blocks read after a cancel at 10");
}

#[test]
fn interrupt_mid_extent_resumes_at_that_extent() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 4 * MIB, &[(0, 4 * MIB)], 11);
    let control = CopyControl::new();
    // 16 blocks per extent: block 20 is in extent 1.
    control.set_block_hook(|control, blocks_read| {
        if blocks_read == 20 {
            control.interrupt();
        }
    });
    let (outcome, reports) = run_copy(&spec(sandbox.paths("src", "dst"), 3), &control);
    assert!(matches!(outcome, CopyOutcome::Interrupted { at_extent: 1 }), "{outcome:?}");
    assert_eq!(reports.len(), 1);
    assert!(control.stats().bytes_read <= (20 + 3) * BLOCK);
}

#[test]
fn pause_waits_for_the_extent_boundary() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 4 * MIB, &[(0, 4 * MIB)], 12);
    let control = CopyControl::new();
    control.set_block_hook(|control, blocks_read| {
        if blocks_read == 3 {
            control.pause();
        }
    });
    let (outcome, reports) = run_copy(&spec(sandbox.paths("src", "dst"), 4), &control);
    assert!(matches!(outcome, CopyOutcome::Paused { at_extent: 1 }), "{outcome:?}");
    assert_eq!(reports.len(), 1);
    assert_eq!(control.stats().bytes_read, MIB, "the paused extent was not finished, or the next one started");
}

#[test]
fn a_closed_runtime_window_pauses_at_the_next_extent() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 4 * MIB, &[(0, 4 * MIB)], 13);
    let paths = sandbox.paths("src", "dst");

    // The window closes (set_runtime) while extent 0 is copied.
    let control = CopyControl::with_runtime_window(Some(RuntimeWindow::new(0, 0, 0, 0).expect("all day")));
    let setter = control.clone();
    let outcome = copy_volume(&spec(paths.clone(), 2), &control, |_| setter.set_runtime_window(Some(closed_window())));
    assert!(matches!(outcome, CopyOutcome::Paused { at_extent: 1 }), "{outcome:?}");
    assert_eq!(control.stats().bytes_read, MIB);

    // Outside the window from the start: nothing is read.
    let control = CopyControl::with_runtime_window(Some(closed_window()));
    let mut resumed = spec(paths, 2);
    resumed.start_extent = 1;
    let (outcome, reports) = run_copy(&resumed, &control);
    assert!(matches!(outcome, CopyOutcome::Paused { at_extent: 1 }), "{outcome:?}");
    assert!(reports.is_empty());
    assert_eq!(control.stats().bytes_read, 0);
}

#[test]
fn a_panicking_progress_callback_fails_only_the_copy() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 3 * MIB, &[(0, 3 * MIB)], 14);
    let outcome = copy_volume(&spec(sandbox.paths("src", "dst"), 2), &CopyControl::new(), |progress| {
        if progress.cur_extent == 2 {
            panic!("the ZooKeeper write exploded");
        }
    });
    match outcome {
        CopyOutcome::Failed(CopyError::Panicked(message)) => assert!(message.contains("exploded"), "{message}"),
        other => panic!("expected a caught panic, got {other:?}"),
    }
}

#[test]
fn a_panic_in_a_block_coroutine_fails_only_the_copy() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 2 * MIB, &[(0, 2 * MIB)], 15);
    let control = CopyControl::new();
    control.set_block_hook(|_, blocks_read| assert_ne!(blocks_read, 5, "block five is cursed"));
    let (outcome, _) = run_copy(&spec(sandbox.paths("src", "dst"), 4), &control);
    match outcome {
        CopyOutcome::Failed(CopyError::Panicked(message)) => assert!(message.contains("cursed"), "{message}"),
        other => panic!("expected a caught panic, got {other:?}"),
    }
}

#[test]
fn a_copy_runs_from_a_coroutine_of_another_context() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 2 * MIB, &random_regions(2 * MIB, 5, 16), 17);
    let copy_spec = spec(sandbox.paths("src", "dst"), 4);
    let runner = runtime::ThreadContext::new("test-runner").expect("start a context");
    let finished: runtime::SyncPoint<(bool, usize)> = runtime::SyncPoint::new();
    let report = finished.clone();
    runner
        .sched(move || {
            let mut n_reports = 0;
            let outcome = copy_volume(&copy_spec, &CopyControl::new(), |_| n_reports += 1);
            report.done_with((matches!(outcome, CopyOutcome::Completed), n_reports));
        })
        .expect("schedule the copy");
    assert!(finished.wait_timeout(std::time::Duration::from_secs(60)), "the copy did not finish");
    assert_eq!(finished.take(), Some((true, 2)));
    assert_same_content(&sandbox.root().join("src"), &sandbox.root().join("dst"));
}

#[test]
fn a_task_s_arguments_become_a_checked_spec() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), MIB, &[(0, MIB)], 22);
    let args = crate::task::CopyVolumeArgs {
        source: sandbox.root().join("src"),
        destination: sandbox.root().join("dst"),
        io_depth: 7,
    };
    let settings = CopySettings { extent_size: 4 * MIB, block_size: 128 << 10, max_bytes_per_s: Some(MIB) };
    // A fresh copy takes the runner's settings.
    let spec = CopySpec::for_task(&args, &sandbox.roots(), &Progress::default(), &settings).expect("accepted");
    assert_eq!((spec.io_depth, spec.start_extent), (7, 0));
    assert_eq!((spec.extent_size, spec.block_size, spec.max_bytes_per_s), (4 * MIB, 128 << 10, Some(MIB)));
    // A resumed one keeps the extent it was started with; the block is made to divide it.
    let started = Progress { cur_extent: 3, extent_size: 192 << 10, ..Progress::default() };
    let spec = CopySpec::for_task(&args, &sandbox.roots(), &started, &settings).expect("accepted");
    assert_eq!((spec.start_extent, spec.extent_size, spec.block_size), (3, 192 << 10, 64 << 10));
    // A record from before the extent size was kept used 256 MiB.
    let old = Progress { cur_extent: 3, ..Progress::default() };
    let spec = CopySpec::for_task(&args, &sandbox.roots(), &old, &settings).expect("accepted");
    assert_eq!((spec.extent_size, spec.block_size), (256 << 20, 128 << 10));
    let escaping = crate::task::CopyVolumeArgs { destination: sandbox.outside().join("dst"), ..args };
    let refused = CopySpec::for_task(&escaping, &sandbox.roots(), &Progress::default(), &settings);
    assert!(matches!(refused, Err(PathError::OutsideRoots { .. })));
}

#[test]
fn a_rate_limit_paces_the_copy_and_a_cancel_still_stops_it_at_once() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 2 * MIB, &[(0, 2 * MIB)], 23);
    let paced = CopySpec { max_bytes_per_s: Some(4 * MIB), ..spec(sandbox.paths("src", "dst"), 4) };
    let started = std::time::Instant::now();
    let (outcome, _) = run_copy(&paced, &CopyControl::new());
    assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
    // 2 MiB at 4 MiB/s: the last block may start after 2 MiB - one block of reservations.
    let least = std::time::Duration::from_secs_f64((2 * MIB - BLOCK) as f64 / (4 * MIB) as f64);
    assert!(started.elapsed() >= least, "a 4 MiB/s copy of 2 MiB took only {:?}", started.elapsed());
    assert_eq!(fs::read(sandbox.root().join("src")).ok(), fs::read(sandbox.root().join("dst")).ok());

    let slow = CopySpec { max_bytes_per_s: Some(64 << 10), ..spec(sandbox.paths("src", "dst2"), 4) };
    let control = CopyControl::new();
    let canceller = control.clone();
    let cancel_at = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        canceller.cancel();
        std::time::Instant::now()
    });
    let (outcome, _) = run_copy(&slow, &control);
    let cancelled_at = cancel_at.join().expect("the cancelling thread");
    assert!(matches!(outcome, CopyOutcome::Cancelled), "{outcome:?}");
    assert!(cancelled_at.elapsed() < std::time::Duration::from_secs(2), "a paced copy ignored the cancel");
}

#[test]
fn invalid_specs_fail_before_any_io() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), MIB, &[(0, MIB)], 18);
    let paths = sandbox.paths("src", "dst");
    let bad = [
        CopySpec { io_depth: 0, ..spec(paths.clone(), 1) },
        CopySpec { io_depth: MAX_IO_DEPTH + 1, ..spec(paths.clone(), 1) },
        CopySpec { block_size: 1000, ..spec(paths.clone(), 1) },
        CopySpec { extent_size: BLOCK + 4096, ..spec(paths.clone(), 1) },
    ];
    for bad_spec in &bad {
        let (outcome, _) = run_copy(bad_spec, &CopyControl::new());
        assert!(matches!(outcome, CopyOutcome::Failed(CopyError::InvalidSpec(_))), "{outcome:?}");
    }
    assert!(!sandbox.root().join("dst").exists(), "an invalid copy touched the destination");
    let (outcome, _) = run_copy(&CopySpec { start_extent: 2, ..spec(paths, 1) }, &CopyControl::new());
    assert!(matches!(outcome, CopyOutcome::Failed(CopyError::InvalidSpec(_))), "{outcome:?}");
}

mod paths_rules {
    //! The path rules: everything outside the roots is refused before any IO.

    use std::os::unix::fs::symlink;

    use super::*;

    fn check(sandbox: &Sandbox, source: &Path, destination: &Path) -> Result<CopyPaths, PathError> {
        sandbox.roots().check(source, destination)
    }

    fn setup() -> Sandbox {
        let sandbox = Sandbox::new();
        sparse_file(&sandbox.root().join("src"), MIB, &[(0, 4096)], 19);
        sparse_file(&sandbox.outside().join("secret"), MIB, &[(0, 4096)], 20);
        sandbox
    }

    #[test]
    fn paths_inside_the_root_are_kept_as_requested() {
        let sandbox = setup();
        fs::create_dir(sandbox.root().join("sub")).expect("mkdir");
        let paths = check(&sandbox, &sandbox.root().join("./src"), &sandbox.root().join("sub/dst")).expect("accepted");
        assert_eq!(paths.source(), sandbox.root().join("./src"));
        assert_eq!(paths.destination(), sandbox.root().join("sub/dst"));
        // The root as configured and as canonical both hold it.
        let canonical = fs::canonicalize(sandbox.root()).expect("canonical root");
        check(&sandbox, &canonical.join("src"), &canonical.join("sub/dst")).expect("accepted by the canonical name");
    }

    #[test]
    fn a_source_or_destination_outside_the_roots_is_refused() {
        let sandbox = setup();
        let source_outside = check(&sandbox, &sandbox.outside().join("secret"), &sandbox.root().join("dst"));
        assert!(matches!(source_outside, Err(PathError::OutsideRoots { role: "source", .. })), "{source_outside:?}");
        let destination_outside = check(&sandbox, &sandbox.root().join("src"), &sandbox.outside().join("dst"));
        assert!(matches!(destination_outside, Err(PathError::OutsideRoots { role: "destination", .. })));
        // A sibling whose name starts like the root is not inside it.
        fs::create_dir(sandbox.dir.path().join("root2")).expect("mkdir");
        let sibling = check(&sandbox, &sandbox.root().join("src"), &sandbox.dir.path().join("root2/dst"));
        assert!(matches!(sibling, Err(PathError::OutsideRoots { .. })), "{sibling:?}");
        assert!(!sandbox.outside().join("dst").exists());
    }

    #[test]
    fn dot_dot_is_refused_even_when_it_stays_inside() {
        let sandbox = setup();
        fs::create_dir(sandbox.root().join("sub")).expect("mkdir");
        for (source, destination) in [
            (sandbox.root().join("sub/../src"), sandbox.root().join("dst")),
            (sandbox.root().join("src"), sandbox.root().join("../outside/dst")),
            (sandbox.root().join("../outside/secret"), sandbox.root().join("dst")),
        ] {
            let result = check(&sandbox, &source, &destination);
            assert!(matches!(result, Err(PathError::ParentComponent { .. })), "{source:?} {destination:?}: {result:?}");
        }
    }

    #[test]
    fn every_symlink_is_refused_even_one_that_stays_inside() {
        let sandbox = setup();
        symlink(sandbox.outside().join("secret"), sandbox.root().join("link-to-secret")).expect("symlink");
        symlink(sandbox.outside().join("victim"), sandbox.root().join("link-to-victim")).expect("symlink");
        sparse_file(&sandbox.outside().join("victim"), 4096, &[(0, 4096)], 21);
        symlink(sandbox.outside(), sandbox.root().join("link-to-outside")).expect("symlink");
        let source_link = check(&sandbox, &sandbox.root().join("link-to-secret"), &sandbox.root().join("dst"));
        assert!(matches!(source_link, Err(PathError::Symlink { role: "source", .. })), "{source_link:?}");
        let destination_link = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("link-to-victim"));
        assert!(
            matches!(destination_link, Err(PathError::Symlink { role: "destination", .. })),
            "{destination_link:?}"
        );
        let directory_link = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("link-to-outside/new"));
        assert!(matches!(directory_link, Err(PathError::Symlink { role: "destination", .. })), "{directory_link:?}");
        // A dangling symlink as destination would create a file wherever it points.
        symlink(sandbox.outside().join("not-yet"), sandbox.root().join("dangling")).expect("symlink");
        let dangling = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("dangling"));
        assert!(dangling.is_err(), "{dangling:?}");
        assert!(!sandbox.outside().join("not-yet").exists());
        // Even a symlink that stays inside the root: it could be repointed after any check.
        symlink(sandbox.root().join("src"), sandbox.root().join("link-to-src")).expect("symlink");
        let inside = check(&sandbox, &sandbox.root().join("link-to-src"), &sandbox.root().join("dst"));
        assert!(matches!(inside, Err(PathError::Symlink { role: "source", .. })), "{inside:?}");
    }

    #[test]
    fn the_same_file_is_refused_also_through_links() {
        let sandbox = setup();
        let same = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("src"));
        assert!(matches!(same, Err(PathError::SameFile { .. })), "{same:?}");
        fs::hard_link(sandbox.root().join("src"), sandbox.root().join("hard")).expect("hard link");
        let hard = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("hard"));
        assert!(matches!(hard, Err(PathError::HardLinked { role: "source", links: 2, .. })), "{hard:?}");
        let with_links = AllowedRoots::with_rules([sandbox.root()], Vec::<PathBuf>::new(), true).expect("roots");
        let hard = with_links.check(&sandbox.root().join("src"), &sandbox.root().join("hard"));
        assert!(matches!(hard, Err(PathError::SameFile { .. })), "{hard:?}");
    }

    #[test]
    fn missing_relative_and_odd_paths_are_refused() {
        let sandbox = setup();
        let missing = check(&sandbox, &sandbox.root().join("nope"), &sandbox.root().join("dst"));
        assert!(matches!(missing, Err(PathError::SourceMissing { .. })), "{missing:?}");
        let relative = check(&sandbox, Path::new("root/src"), &sandbox.root().join("dst"));
        assert!(matches!(relative, Err(PathError::NotAbsolute { role: "source", .. })), "{relative:?}");
        let no_parent = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("no/such/dir/dst"));
        assert!(matches!(no_parent, Err(PathError::DestinationParentMissing { .. })), "{no_parent:?}");
        let directory = check(&sandbox, &sandbox.root(), &sandbox.root().join("dst"));
        assert!(matches!(directory, Err(PathError::NotAVolume { role: "source", .. })), "{directory:?}");
        fs::create_dir(sandbox.root().join("a-dir")).expect("mkdir");
        let onto_directory = check(&sandbox, &sandbox.root().join("src"), &sandbox.root().join("a-dir"));
        assert!(matches!(onto_directory, Err(PathError::NotAVolume { role: "destination", .. })), "{onto_directory:?}");
        let root_itself = check(&sandbox, &sandbox.root().join("src"), &sandbox.root());
        assert!(root_itself.is_err(), "{root_itself:?}");
        let none = AllowedRoots::new(Vec::<PathBuf>::new())
            .expect("empty is allowed")
            .check(&sandbox.root().join("src"), &sandbox.root().join("dst"));
        assert!(matches!(none, Err(PathError::NoAllowedRoots)), "{none:?}");
        assert!(matches!(AllowedRoots::new([sandbox.root().join("src")]), Err(PathError::RootNotDirectory(_))));
        assert!(matches!(AllowedRoots::new([sandbox.root().join("nope")]), Err(PathError::BadRoot { .. })));
        assert!(!sandbox.root().join("dst").exists(), "a refused check created the destination");
    }
}

mod block_devices {
    //! Copies to and from loop devices, when this process may create them (root with
    //! `losetup`); elsewhere these tests say so on stderr and check nothing.

    use std::process::Command;

    use super::*;

    /// A loop device over a file, detached on drop.
    struct LoopDevice {
        path: PathBuf,
    }

    impl LoopDevice {
        fn attach(backing: &Path) -> Option<LoopDevice> {
            let output = Command::new("losetup").args(["--find", "--show"]).arg(backing).output().ok()?;
            if !output.status.success() {
                eprintln!("skipped: losetup failed: {}", String::from_utf8_lossy(&output.stderr).trim());
                return None;
            }
            let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            Some(LoopDevice { path })
        }
    }

    impl Drop for LoopDevice {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
        }
    }

    /// The sandbox's root with the loop device listed in `allowed_devices`.
    fn list_device(sandbox: &Sandbox, device: &LoopDevice) -> AllowedRoots {
        AllowedRoots::with_rules([sandbox.root()], [&device.path], false).expect("roots")
    }

    #[test]
    fn a_block_device_destination_gets_every_block_zeros_included() {
        let sandbox = Sandbox::new();
        let len = 3 * MIB;
        sparse_file(&sandbox.root().join("src"), len, &random_regions(len, 6, 23), 24);
        // The device starts full of other data, which the copy's zeros must overwrite.
        sparse_file(&sandbox.outside().join("backing"), 4 * MIB, &[(0, 4 * MIB)], 25);
        let Some(device) = LoopDevice::attach(&sandbox.outside().join("backing")) else { return };
        let roots = list_device(&sandbox, &device);
        let unlisted = sandbox.roots().check(&sandbox.root().join("src"), &device.path);
        assert!(matches!(unlisted, Err(PathError::OutsideRoots { .. })), "{unlisted:?}");
        let paths = roots.check(&sandbox.root().join("src"), &device.path).expect("accepted");
        let control = CopyControl::new();
        let (outcome, reports) = run_copy(&spec(paths, 4), &control);
        assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
        assert_eq!(reports.len(), 3);
        assert_eq!(control.stats().bytes_written, len);
        let source_bytes = fs::read(sandbox.root().join("src")).expect("read the source");
        let mut device_bytes = vec![0u8; len as usize];
        File::open(&device.path)
            .expect("open the device")
            .read_exact_at(&mut device_bytes, 0)
            .expect("read the device");
        assert!(source_bytes == device_bytes, "the device differs from the source");
    }

    #[test]
    fn a_block_device_source_copies_into_a_sparse_file() {
        let sandbox = Sandbox::new();
        sparse_file(&sandbox.outside().join("backing"), 4 * MIB, &[(MIB, 100_000), (3 * MIB, 5000)], 26);
        let Some(device) = LoopDevice::attach(&sandbox.outside().join("backing")) else { return };
        let roots = list_device(&sandbox, &device);
        let paths = roots.check(&device.path, &sandbox.root().join("dst")).expect("accepted");
        let (outcome, _) = run_copy(&spec(paths, 2), &CopyControl::new());
        assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
        assert_same_content(&sandbox.outside().join("backing"), &sandbox.root().join("dst"));
        assert!(allocated_bytes(&sandbox.root().join("dst")) <= 200 << 10, "zeros of the device were written");
    }
}

mod confinement {
    //! The opens themselves, after a check passed: what is swapped in between is refused by the
    //! descriptor-based open, with both resolvers (`openat2` and the walk that stands in for it).

    use std::ffi::{CString, OsStr};
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    use rustix::fs::{Mode, OFlags};

    use super::paths::{open_beneath, open_by_walk, Resolver};
    use super::*;

    const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

    fn roots(sandbox: &Sandbox, resolver: Resolver) -> AllowedRoots {
        sandbox.roots().force_resolver(resolver)
    }

    fn mkfifo(path: &Path) {
        let name = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `name` is a valid NUL-terminated path for the call's duration.
        let status = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
        assert_eq!(status, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
    }

    /// Opens the checked pair as the engine does, failing the test on success.
    fn open_refused(paths: &CopyPaths) -> PathError {
        match paths.open() {
            Ok(pair) => panic!("opened {pair:?} for {paths:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_check_is_refused_at_open() {
        for resolver in RESOLVERS {
            let sandbox = Sandbox::new();
            fs::create_dir(sandbox.root().join("sub")).expect("mkdir");
            sparse_file(&sandbox.root().join("sub/src"), 8192, &[(0, 8192)], 30);
            sparse_file(&sandbox.outside().join("src"), 8192, &[(0, 8192)], 31);
            let roots = roots(&sandbox, resolver);
            let paths =
                roots.check(&sandbox.root().join("sub/src"), &sandbox.root().join("sub/dst")).expect("accepted");
            // The middle component becomes a symlink out of the root.
            fs::rename(sandbox.root().join("sub"), sandbox.root().join("real")).expect("rename");
            symlink(sandbox.outside(), sandbox.root().join("sub")).expect("symlink");
            let error = open_refused(&paths);
            assert!(matches!(error, PathError::Symlink { role: "source", .. }), "{resolver:?}: {error}");
            let (outcome, _) = run_copy(&spec(paths, 1), &CopyControl::new());
            assert!(
                matches!(outcome, CopyOutcome::Failed(CopyError::Path(PathError::Symlink { .. }))),
                "{resolver:?}: {outcome:?}"
            );
            assert!(!sandbox.outside().join("dst").exists(), "{resolver:?}: a file was created outside the root");
        }
    }

    #[test]
    fn a_last_component_swapped_for_a_symlink_is_refused_at_open() {
        for resolver in RESOLVERS {
            let sandbox = Sandbox::new();
            sparse_file(&sandbox.root().join("src"), 8192, &[(0, 8192)], 32);
            sparse_file(&sandbox.root().join("dst"), 8192, &[(0, 8192)], 33);
            sparse_file(&sandbox.outside().join("victim"), 8192, &[(0, 8192)], 34);
            let victim_before = fs::read(sandbox.outside().join("victim")).expect("read");
            let roots = roots(&sandbox, resolver);
            let paths = roots.check(&sandbox.root().join("src"), &sandbox.root().join("dst")).expect("accepted");
            fs::remove_file(sandbox.root().join("dst")).expect("remove");
            symlink(sandbox.outside().join("victim"), sandbox.root().join("dst")).expect("symlink");
            let error = open_refused(&paths);
            assert!(matches!(error, PathError::Symlink { role: "destination", .. }), "{resolver:?}: {error}");
            // A dangling one is refused too, and creates nothing where it points.
            fs::remove_file(sandbox.root().join("dst")).expect("remove");
            symlink(sandbox.outside().join("new"), sandbox.root().join("dst")).expect("symlink");
            let error = open_refused(&paths);
            assert!(matches!(error, PathError::Symlink { role: "destination", .. }), "{resolver:?}: {error}");
            assert!(!sandbox.outside().join("new").exists());
            // The source's last component too.
            fs::rename(sandbox.root().join("src"), sandbox.root().join("src-real")).expect("rename");
            symlink(sandbox.outside().join("victim"), sandbox.root().join("src")).expect("symlink");
            let error = open_refused(&paths);
            assert!(matches!(error, PathError::Symlink { role: "source", .. }), "{resolver:?}: {error}");
            assert_eq!(fs::read(sandbox.outside().join("victim")).expect("read"), victim_before);
        }
    }

    #[test]
    fn dot_dot_never_reaches_an_open() {
        let sandbox = Sandbox::new();
        sparse_file(&sandbox.outside().join("secret"), 4096, &[(0, 4096)], 35);
        let root = File::open(sandbox.root()).expect("open the root");
        for resolver in RESOLVERS {
            let escaped =
                open_beneath(root.as_fd(), Path::new("../outside/secret"), OFlags::RDONLY, Mode::empty(), resolver);
            assert_eq!(
                escaped.map(|_| ()).map_err(|error| error.raw_os_error()),
                Err(Some(libc::EXDEV)),
                "{resolver:?}"
            );
        }
        let refused = sandbox.roots().check(&sandbox.root().join("../outside/secret"), &sandbox.root().join("dst"));
        assert!(matches!(refused, Err(PathError::ParentComponent { .. })), "{refused:?}");
    }

    #[test]
    fn a_fifo_source_or_destination_fails_at_once() {
        for resolver in RESOLVERS {
            let sandbox = Sandbox::new();
            sparse_file(&sandbox.root().join("src"), 8192, &[(0, 8192)], 36);
            mkfifo(&sandbox.root().join("fifo"));
            let roots = roots(&sandbox, resolver);
            let source_fifo = roots.check(&sandbox.root().join("fifo"), &sandbox.root().join("dst"));
            assert!(
                matches!(source_fifo, Err(PathError::NotAVolume { role: "source", kind: "FIFO", .. })),
                "{source_fifo:?}"
            );
            let destination_fifo = roots.check(&sandbox.root().join("src"), &sandbox.root().join("fifo"));
            assert!(
                matches!(destination_fifo, Err(PathError::NotAVolume { role: "destination", .. })),
                "{destination_fifo:?}"
            );

            // Swapped in after the check: the copy fails, it does not block in open.
            sparse_file(&sandbox.root().join("a"), 8192, &[(0, 8192)], 37);
            let paths = roots.check(&sandbox.root().join("a"), &sandbox.root().join("b")).expect("accepted");
            for swapped in ["a", "b"] {
                let _ = fs::remove_file(sandbox.root().join(swapped));
                mkfifo(&sandbox.root().join(swapped));
                let started = Instant::now();
                let (outcome, _) = run_copy(&spec(paths.clone(), 1), &CopyControl::new());
                assert!(
                    matches!(outcome, CopyOutcome::Failed(CopyError::Path(PathError::NotAVolume { .. }))),
                    "{resolver:?} {swapped}: {outcome:?}"
                );
                assert!(started.elapsed() < Duration::from_secs(5), "{swapped}: took {:?}", started.elapsed());
                fs::remove_file(sandbox.root().join(swapped)).expect("remove the fifo");
                if swapped == "a" {
                    sparse_file(&sandbox.root().join("a"), 8192, &[(0, 8192)], 37);
                }
            }
        }
    }

    #[test]
    fn hard_links_are_refused_unless_allowed() {
        let sandbox = Sandbox::new();
        sparse_file(&sandbox.root().join("src"), 8192, &[(0, 8192)], 38);
        sparse_file(&sandbox.outside().join("victim"), 8192, &[(0, 8192)], 39);
        sparse_file(&sandbox.outside().join("secret"), 8192, &[(0, 8192)], 40);
        fs::hard_link(sandbox.outside().join("victim"), sandbox.root().join("dst")).expect("hard link");
        fs::hard_link(sandbox.outside().join("secret"), sandbox.root().join("linked-src")).expect("hard link");
        let refused = sandbox.roots().check(&sandbox.root().join("src"), &sandbox.root().join("dst"));
        assert!(matches!(refused, Err(PathError::HardLinked { role: "destination", links: 2, .. })), "{refused:?}");
        let refused = sandbox.roots().check(&sandbox.root().join("linked-src"), &sandbox.root().join("new"));
        assert!(matches!(refused, Err(PathError::HardLinked { role: "source", .. })), "{refused:?}");

        // A link made after the check is refused by the open.
        let paths =
            sandbox.roots().check(&sandbox.root().join("src"), &sandbox.root().join("later")).expect("accepted");
        fs::hard_link(sandbox.outside().join("victim"), sandbox.root().join("later")).expect("hard link");
        let (outcome, _) = run_copy(&spec(paths, 1), &CopyControl::new());
        assert!(
            matches!(outcome, CopyOutcome::Failed(CopyError::Path(PathError::HardLinked { role: "destination", .. }))),
            "{outcome:?}"
        );
        let victim = fs::read(sandbox.outside().join("victim")).expect("read");
        assert_ne!(victim, fs::read(sandbox.root().join("src")).expect("read"), "the outside file was overwritten");

        // Allowed: the copy goes through the link.
        let allowing = AllowedRoots::with_rules([sandbox.root()], Vec::<PathBuf>::new(), true).expect("roots");
        let paths = allowing.check(&sandbox.root().join("src"), &sandbox.root().join("dst")).expect("accepted");
        let (outcome, _) = run_copy(&spec(paths, 1), &CopyControl::new());
        assert!(matches!(outcome, CopyOutcome::Completed), "{outcome:?}");
        assert_same_content(&sandbox.root().join("src"), &sandbox.outside().join("victim"));
    }

    #[test]
    fn device_nodes_are_refused_unless_listed() {
        let sandbox = Sandbox::new();
        sparse_file(&sandbox.root().join("src"), 8192, &[(0, 8192)], 41);
        // Not under a root and not listed.
        let null = sandbox.roots().check(Path::new("/dev/null"), &sandbox.root().join("dst"));
        assert!(matches!(null, Err(PathError::OutsideRoots { role: "source", .. })), "{null:?}");
        // Listed, but a character device is no volume.
        let listing_null = AllowedRoots::with_rules([sandbox.root()], ["/dev/null"], false).expect("roots");
        let null = listing_null.check(Path::new("/dev/null"), &sandbox.root().join("dst"));
        assert!(matches!(null, Err(PathError::NotAVolume { kind: "character device", .. })), "{null:?}");
        let null = listing_null.check(&sandbox.root().join("src"), Path::new("/dev/null"));
        assert!(matches!(null, Err(PathError::NotAVolume { role: "destination", .. })), "{null:?}");
        // A listed path through a symlink is refused (/dev/stdin is one, into /proc).
        let listing_link = AllowedRoots::with_rules([sandbox.root()], ["/dev/stdin"], false).expect("roots");
        let link = listing_link.check(Path::new("/dev/stdin"), &sandbox.root().join("dst"));
        assert!(matches!(link, Err(PathError::Symlink { .. })), "{link:?}");
        assert!(AllowedRoots::with_rules([sandbox.root()], ["dev/sda"], false).is_err());

        // A block node made in a root (loop0's numbers) names a disk: refused unless listed.
        let node = sandbox.root().join("disk");
        let name = CString::new(node.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: `name` is a valid NUL-terminated path for the call's duration.
        let made = unsafe { libc::mknod(name.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(7, 0)) };
        if made != 0 {
            eprintln!("skipped the block node: mknod: {}", std::io::Error::last_os_error());
            return;
        }
        let unlisted = sandbox.roots().check(&node, &sandbox.root().join("dst"));
        assert!(matches!(unlisted, Err(PathError::DeviceNotListed { role: "source", .. })), "{unlisted:?}");
        let unlisted = sandbox.roots().check(&sandbox.root().join("src"), &node);
        assert!(matches!(unlisted, Err(PathError::DeviceNotListed { role: "destination", .. })), "{unlisted:?}");
        let listing = AllowedRoots::with_rules([sandbox.root()], [&node], false).expect("roots");
        listing.check(&node, &sandbox.root().join("dst")).expect("a listed node inside a root passes the check");
    }

    #[test]
    fn the_walk_refuses_symlinks_at_every_component() {
        let sandbox = Sandbox::new();
        fs::create_dir_all(sandbox.root().join("a/b")).expect("mkdir");
        sparse_file(&sandbox.root().join("a/b/file"), 4096, &[(0, 4096)], 42);
        symlink(sandbox.root().join("a"), sandbox.root().join("link-a")).expect("symlink");
        symlink(sandbox.root().join("a/b/file"), sandbox.root().join("a/b/link-file")).expect("symlink");
        let root = File::open(sandbox.root()).expect("open the root");
        let walk = |names: &[&str], flags: OFlags| {
            let names: Vec<&OsStr> = names.iter().map(OsStr::new).collect();
            open_by_walk(root.as_fd(), &names, flags, Mode::empty()).map_err(|error| error.raw_os_error())
        };
        let opened = walk(&["a", "b", "file"], OFlags::RDONLY).expect("a plain path opens");
        assert_eq!(File::from(opened).metadata().expect("metadata").len(), 4096);
        assert_eq!(walk(&["link-a", "b", "file"], OFlags::RDONLY).map(|_| ()), Err(Some(libc::ELOOP)));
        assert_eq!(walk(&["a", "b", "link-file"], OFlags::RDONLY).map(|_| ()), Err(Some(libc::ELOOP)));
        // `O_PATH | O_NOFOLLOW` would open the symlink itself: the walk refuses it after.
        assert_eq!(walk(&["a", "b", "link-file"], OFlags::PATH).map(|_| ()), Err(Some(libc::ELOOP)));
        assert_eq!(walk(&["a", "missing", "file"], OFlags::RDONLY).map(|_| ()), Err(Some(libc::ENOENT)));
        // Creation never goes through a symlink either.
        let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        assert_eq!(walk(&["link-a", "new"], create).map(|_| ()), Err(Some(libc::ELOOP)));
        assert!(!sandbox.root().join("a/new").exists());
        walk(&["a", "new"], create).expect("created beneath a real directory");
        // The empty path is the directory itself.
        let itself =
            open_beneath(root.as_fd(), Path::new(""), OFlags::PATH, Mode::empty(), Resolver::Walk).expect("open");
        assert!(rustix::fs::fstat(&itself).expect("fstat").st_ino == fs::metadata(sandbox.root()).expect("stat").ino());
    }

    #[test]
    fn both_resolvers_copy_and_create_the_same() {
        for resolver in RESOLVERS {
            let sandbox = Sandbox::new();
            fs::create_dir(sandbox.root().join("sub")).expect("mkdir");
            sparse_file(&sandbox.root().join("sub/src"), 3 * MIB, &random_regions(3 * MIB, 5, 43), 44);
            let roots = roots(&sandbox, resolver);
            // A fresh destination is created; an existing one is opened and overwritten.
            for _ in 0..2 {
                let paths = roots.check(&sandbox.root().join("sub/src"), &sandbox.root().join("sub/dst")).expect("ok");
                let (outcome, _) = run_copy(&spec(paths, 2), &CopyControl::new());
                assert!(matches!(outcome, CopyOutcome::Completed), "{resolver:?}: {outcome:?}");
                assert_same_content(&sandbox.root().join("sub/src"), &sandbox.root().join("sub/dst"));
            }
            // A destination directory that vanished after the check.
            let paths = roots.check(&sandbox.root().join("sub/src"), &sandbox.root().join("gone/dst"));
            assert!(matches!(paths, Err(PathError::DestinationParentMissing { .. })), "{paths:?}");
        }
    }
}

#[test]
fn a_refused_write_permit_stops_every_write_at_once() {
    let sandbox = Sandbox::new();
    let len = 4 * MIB;
    sparse_file(&sandbox.root().join("src"), len, &[(0, len)], 40);
    let mut one_extent = spec(sandbox.paths("src", "dst"), 4);
    one_extent.extent_size = len;
    let control = CopyControl::new();
    let lease_holds = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let permit = lease_holds.clone();
    control.set_write_permit(move || permit.load(Ordering::SeqCst));
    let written_at_lapse = Arc::new(AtomicU64::new(u64::MAX));
    let (lapse, seen) = (lease_holds.clone(), written_at_lapse.clone());
    // The lease lapses after block 10 is read, before it is written.
    control.set_block_hook(move |control, blocks_read| {
        if blocks_read == 10 {
            lapse.store(false, Ordering::SeqCst);
            seen.store(control.stats().bytes_written, Ordering::SeqCst);
        }
    });
    let (outcome, reports) = run_copy(&one_extent, &control);
    assert!(matches!(outcome, CopyOutcome::Interrupted { at_extent: 0 }), "{outcome:?}");
    assert!(reports.is_empty(), "an extent with refused writes was reported: {reports:?}");
    assert!(control.is_permit_refused());
    assert_eq!(
        control.stats().bytes_written,
        written_at_lapse.load(Ordering::SeqCst),
        "a block was written after the lease lapsed"
    );
    // The permit is final for the run, even if the lease comes back.
    lease_holds.store(true, Ordering::SeqCst);
    assert!(!control.may_write());
}

#[test]
fn a_copy_without_a_write_permit_leaves_its_destination_alone() {
    let sandbox = Sandbox::new();
    sparse_file(&sandbox.root().join("src"), 2 * MIB, &[(0, 2 * MIB)], 41);
    fs::write(sandbox.root().join("dst"), b"someone else's data").expect("write the destination");
    let control = CopyControl::new();
    control.set_write_permit(|| false);
    let (outcome, _) = run_copy(&spec(sandbox.paths("src", "dst"), 2), &control);
    assert!(matches!(outcome, CopyOutcome::Interrupted { at_extent: 0 }), "{outcome:?}");
    assert_eq!(fs::read(sandbox.root().join("dst")).expect("read the destination"), b"someone else's data");
    assert_eq!(control.stats().bytes_read, 0);
}

/// A copy's error says whether a retry may pass: what the roots refuse, a missing source and a
/// destination too small fail the same way every time (permanent); an IO error or this
/// runner's unusable roots may not recur (transient).
#[test]
fn copy_errors_are_classified_permanent_or_transient() {
    let sandbox = Sandbox::new();
    let roots = sandbox.roots();
    let refused = |source: PathBuf, destination: PathBuf| {
        roots.check(&source, &destination).map(|_| ()).expect_err("refused").class()
    };
    let missing = refused(sandbox.root().join("nothing-here"), sandbox.root().join("copy"));
    assert_eq!(missing, FailureClass::Permanent, "a missing source");
    fs::write(sandbox.outside().join("src"), b"x").expect("write");
    let outside = refused(sandbox.outside().join("src"), sandbox.root().join("copy"));
    assert_eq!(outside, FailureClass::Permanent, "a source outside the roots");
    let no_parent = refused(sandbox.outside().join("src"), sandbox.root().join("no-dir/copy"));
    assert_eq!(no_parent, FailureClass::Permanent);

    let too_small = CopyError::DestinationTooSmall { path: sandbox.root().join("copy"), len: 1, needed: 2 };
    assert_eq!(too_small.class(), FailureClass::Permanent);
    assert_eq!(CopyError::InvalidSpec("io_depth".to_string()).class(), FailureClass::Permanent);
    let io = |errno| CopyError::Io { operation: "read", offset: 0, source: io::Error::from_raw_os_error(errno) };
    assert_eq!(io(libc::EIO).class(), FailureClass::Transient, "EIO may pass on a retry");
    assert_eq!(io(libc::ENOSPC).class(), FailureClass::Transient, "space may come free");
    assert_eq!(io(libc::EACCES).class(), FailureClass::Permanent, "permission denied");
    assert_eq!(CopyError::ContextStopped.class(), FailureClass::Transient);
    let bad_root = PathError::BadRoot { path: sandbox.root(), source: io::Error::from_raw_os_error(libc::EIO) };
    assert_eq!(CopyError::Path(bad_root).class(), FailureClass::Transient, "this runner's roots, not the task");
}
