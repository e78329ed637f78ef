//! CopyVolume's confinement to its allowed roots against a hostile file system, end to end: a
//! path component swapped between a directory and a symlink out of the roots while a thousand
//! copies run through it reads and writes nothing outside; a FIFO swapped in for a source or
//! destination fails its task within a second; a cancel ends a paced copy within a second; the
//! daemons then stop cleanly on SIGTERM.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use super::*;

const MIB: u64 = 1 << 20;

/// One failed run fails a task (a refused path is no transient error); small extents.
fn confined(config: &mut DaemonConfig) {
    config.tasks.copy_extent_mib = Some(1);
    config.tasks.copy_block_kib = Some(64);
    config.tasks.max_attempts = Some(1);
    config.runner_slots = Some(4);
}

/// As `confined`, each copy paced to 1 MiB/s: a 16 MiB copy runs for about 16 s.
fn confined_paced(config: &mut DaemonConfig) {
    confined(config);
    config.tasks.copy_max_mib_per_s = Some(1);
}

/// The bytes every outside "secret" source is made of; no destination may ever hold them.
const SECRET: &[u8; 16] = b"SECRET-OUTSIDE!!";

const N_COPIES: usize = 1000;
/// Threads submitting at once: the dispatcher pipelines their ZooKeeper creates.
const N_SUBMITTERS: usize = 8;

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("a path without NUL")
}

/// Exchanges two names atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (a, b) = (c_path(a), c_path(b));
    // SAFETY: both are valid NUL-terminated paths for the call's duration.
    let status =
        unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn mkfifo(path: &Path) -> Result<()> {
    let name = c_path(path);
    // SAFETY: `name` is a valid NUL-terminated path for the call's duration.
    let status = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    ensure!(status == 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
    Ok(())
}

/// A sparse file of `len` bytes with `data` at its start.
fn small_sparse(path: &Path, len: u64, data: &[u8]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(len)?;
    file.write_all_at(data, 0)?;
    Ok(())
}

/// Every file under `dir` with its contents and modification time.
fn snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, (Vec<u8>, SystemTime)>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = std::fs::symlink_metadata(entry.path())?;
        let contents = if meta.is_file() { std::fs::read(entry.path())? } else { Vec::new() };
        files.insert(entry.path(), (contents, meta.modified()?));
    }
    Ok(files)
}

fn contains_secret(bytes: &[u8]) -> bool {
    bytes.windows(SECRET.len()).any(|window| window == SECRET)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

fn state_of(record: &Value) -> &str {
    record["state"].as_str().unwrap_or_default()
}

/// Waits until the task is in a final state; returns its record.
fn wait_final(cluster: &Cluster, leader: usize, task_id: &str) -> Result<Value> {
    let mut record = Value::Null;
    poll_until(Duration::from_secs(90), &format!("task {task_id} ends"), || {
        record = show(cluster, leader, task_id).unwrap_or(Value::Null);
        matches!(state_of(&record), "succeeded" | "failed" | "cancelled")
    })?;
    Ok(record)
}

/// SIGTERMs every node and checks each exits with status 0.
fn stop_cleanly(cluster: &Cluster) -> Result<()> {
    for node in 0..cluster.n_nodes() {
        cluster.signal(node, Signal::SIGTERM)?;
    }
    for node in 0..cluster.n_nodes() {
        let status = cluster.wait_exit(node, WAIT)?;
        ensure!(status.success(), "node {node} stopped with {status}");
    }
    Ok(())
}

#[test]
fn a_component_swapped_for_a_symlink_during_a_thousand_copies_reads_and_writes_nothing_outside() {
    let outside = tempfile::Builder::new().prefix("zbs-outside-").tempdir().expect("create the outside dir");
    with_tuned_cluster(confined, "info", |cluster, roots| {
        let leader = leader(cluster)?;
        let outside = outside.path();
        // `swap` is either the real directory or a symlink to `outside`; `other` is the rest.
        let swap = roots.join("swap");
        let other = roots.join("other");
        std::fs::create_dir(&swap)?;
        std::os::unix::fs::symlink(outside, &other)?;
        let mut rng = 0x5eedu64;
        for index in 0..N_COPIES {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 4096 * (1 + (rng >> 33) % 16);
            small_sparse(&swap.join(format!("src-{index}")), len, format!("inside-{index}-").repeat(8).as_bytes())?;
            // What a copy that followed the symlink would read, and would overwrite.
            small_sparse(&outside.join(format!("src-{index}")), len, &SECRET.repeat(64))?;
            std::fs::write(outside.join(format!("dst-{index}")), format!("sentinel {index}"))?;
        }
        let outside_before = snapshot(outside)?;

        let swapping = Arc::new(AtomicBool::new(true));
        let n_swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (swapping, n_swaps, swap, other) = (swapping.clone(), n_swaps.clone(), swap.clone(), other.clone());
            std::thread::spawn(move || -> Result<()> {
                while swapping.load(Ordering::Acquire) {
                    exchange(&swap, &other).context("exchange the directory and the symlink")?;
                    n_swaps.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(())
            })
        };

        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let submitted: Vec<Result<(Vec<String>, usize)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..N_SUBMITTERS)
                .map(|_| {
                    let (next, swap) = (next.clone(), swap.clone());
                    scope.spawn(move || -> Result<(Vec<String>, usize)> {
                        let (mut task_ids, mut refused) = (Vec::new(), 0);
                        loop {
                            let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                            if index >= N_COPIES {
                                return Ok((task_ids, refused));
                            }
                            let body = json!({
                                "source": swap.join(format!("src-{index}")),
                                "destination": swap.join(format!("dst-{index}")),
                                "io_depth": 1,
                                // Under test is the confinement, not the data check at submit
                                // (which may see an outside sentinel through the swapped link).
                                "overwrite": true,
                            });
                            let path = format!("{PREFIX}/copy_volume/create");
                            let (status, answer) = request(cluster, leader, "POST", &path, Some(&body.to_string()))?;
                            match status {
                                201 => task_ids.push(answer["task_id"].as_str().context("no task_id")?.to_string()),
                                // The submit's best-effort check saw the symlink.
                                400 => refused += 1,
                                _ => bail!("submit {body}: {status} {answer}"),
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("panicked"))))
                .collect()
        });
        let mut task_ids = Vec::new();
        let mut refused_at_submit = 0;
        for result in submitted {
            let (ids, refused) = result?;
            task_ids.extend(ids);
            refused_at_submit += refused;
        }
        let mut states = BTreeMap::<String, usize>::new();
        for task_id in &task_ids {
            let record = wait_final(cluster, leader, task_id)?;
            *states.entry(state_of(&record).to_string()).or_default() += 1;
        }
        swapping.store(false, Ordering::Release);
        swapper.join().map_err(|_| anyhow::anyhow!("the swapper panicked"))??;
        eprintln!(
            "{} copies accepted, {refused_at_submit} refused at submit, ended {states:?}, {} swaps, in {:?}",
            task_ids.len(),
            n_swaps.load(Ordering::Relaxed),
            started.elapsed()
        );
        ensure!(!states.contains_key("cancelled"), "copies were cancelled: {states:?}");
        ensure!(states.get("succeeded").is_some_and(|&n| n > 0), "no copy succeeded: {states:?}");
        ensure!(states.get("failed").is_some_and(|&n| n > 0), "no copy met the symlink at its open: {states:?}");

        // Put the real directory back under `swap` (the symlink under `other`).
        if std::fs::symlink_metadata(&swap)?.file_type().is_symlink() {
            exchange(&swap, &other)?;
        }
        ensure!(snapshot(outside)? == outside_before, "a file outside the roots was created, changed or touched");
        for entry in walk(roots)? {
            let bytes = std::fs::read(&entry)?;
            ensure!(!contains_secret(&bytes), "{} holds the outside secret", entry.display());
        }
        // Every copy that succeeded holds its own source.
        for index in 0..N_COPIES {
            let destination = swap.join(format!("dst-{index}"));
            if destination.exists() {
                let expected = std::fs::read(swap.join(format!("src-{index}")))?;
                let copied = std::fs::read(&destination)?;
                ensure!(copied.is_empty() || copied == expected, "{} is not its source", destination.display());
            }
        }
        stop_cleanly(cluster)
    });
}

/// Every regular file under `dir`, not following symlinks.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files.extend(walk(&entry.path())?);
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    Ok(files)
}

#[test]
fn fifos_fail_their_copy_within_a_second_a_cancel_ends_a_paced_copy_within_a_second_and_the_daemons_stop() {
    with_tuned_cluster(confined_paced, "info", |cluster, roots| {
        let leader = leader(cluster)?;

        // Refused at submit: the dispatcher's check already sees the FIFO.
        mkfifo(&roots.join("fifo"))?;
        dense_file(&roots.join("plain"), MIB, 1)?;
        for (source, destination) in [("fifo", "out"), ("plain", "fifo")] {
            let body = json!({ "source": roots.join(source), "destination": roots.join(destination) });
            let (status, answer) =
                request(cluster, leader, "POST", &format!("{PREFIX}/copy_volume/create"), Some(&body.to_string()))?;
            ensure!(status == 400, "a FIFO {source} -> {destination} was accepted: {status} {answer}");
        }

        // Swapped in between the submit and the run: every runner is drained while the paths
        // change, so the copies start only after the FIFOs are in place.
        let node_ids: Vec<String> = (0..cluster.n_nodes()).map(|node| cluster.node(node).node_id.clone()).collect();
        for node_id in &node_ids {
            set_drained(cluster, leader, node_id, true)?;
        }
        let mut swapped = Vec::new();
        for (name, fifo_is_source) in [("fifo-source", true), ("fifo-destination", false)] {
            let (source, destination) = (roots.join(format!("{name}.src")), roots.join(format!("{name}.dst")));
            dense_file(&source, 16 * MIB, 2)?;
            dense_file(&destination, MIB, 3)?;
            let body = json!({ "source": source, "destination": destination, "overwrite": true });
            let task_id = submit(cluster, leader, "copy_volume/create", body)?;
            let fifo = if fifo_is_source { &source } else { &destination };
            std::fs::remove_file(fifo)?;
            mkfifo(fifo)?;
            swapped.push((name, task_id));
        }
        for node_id in &node_ids {
            set_drained(cluster, leader, node_id, false)?;
        }
        for (name, task_id) in &swapped {
            let record = wait_final(cluster, leader, task_id)?;
            ensure!(state_of(&record) == "failed", "{name}: {record}");
            let error = record["last_error"].as_str().unwrap_or_default();
            ensure!(error.contains("FIFO"), "{name} failed for another reason: {record}");
            // From its hand-over to the runner to its failure, as the record shows them.
            let scheduled = record["schedule_time_ms"].as_u64().context("no schedule_time_ms")?;
            let finished = record["finished_ms"].as_u64().context("no finished_ms")?;
            let took = finished.saturating_sub(scheduled);
            eprintln!("{name}: failed {took} ms after it was handed to its runner: {error}");
            ensure!(took < 1000, "{name} took {took} ms to fail: {record}");
        }

        // A cancel ends a running paced copy (16 MiB at 1 MiB/s) within a second.
        let (source, destination) = (roots.join("paced.src"), roots.join("paced.dst"));
        dense_file(&source, 16 * MIB, 4)?;
        let task_id =
            submit(cluster, leader, "copy_volume/create", json!({ "source": source, "destination": destination }))?;
        poll_until(WAIT, "the paced copy records an extent", || {
            show(cluster, leader, &task_id).is_ok_and(|record| record["progress"]["cur_extent"].as_u64() >= Some(1))
        })?;
        let cancel_sent_ms = now_ms();
        let (status, answer) =
            request(cluster, leader, "POST", &format!("{PREFIX}/tasks/{task_id}/cancel"), Some("{}"))?;
        ensure!(status < 300, "cancel: {status} {answer}");
        let record = wait_final(cluster, leader, &task_id)?;
        ensure!(state_of(&record) == "cancelled", "{record}");
        let took = record["finished_ms"].as_u64().context("no finished_ms")?.saturating_sub(cancel_sent_ms);
        eprintln!("the paced copy was cancelled {took} ms after the request was sent");
        ensure!(took < 1000, "the cancel took {took} ms: {record}");
        ensure!(record["progress"]["cur_extent"].as_u64() < Some(16), "the copy finished before the cancel: {record}");

        stop_cleanly(cluster)
    });
}
