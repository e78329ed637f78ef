//! The demo volume: a sparse file whose data regions (a quarter of it, pseudo-random bytes, so
//! that neither a hole check nor a zero check can skip them) lie between holes, like a thinly
//! provisioned volume; and the checks made on the copy: SHA-256 and allocated bytes.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// Each data region's length.
const REGION: u64 = 8 * MIB;

/// Where the data regions lie in a volume of `length` bytes: `(offset, length)`, a quarter of
/// the volume in `REGION`s spread evenly, the last one ending at the volume's end.
pub fn data_regions(length: u64) -> Vec<(u64, u64)> {
    let n_regions = (length / 4 / REGION).max(1);
    let stride = length / n_regions;
    (0..n_regions)
        .map(|index| {
            let offset = if index + 1 == n_regions { length - REGION.min(length) } else { index * stride };
            (offset, REGION.min(length))
        })
        .collect()
}

/// Writes the volume at `path` (replacing it), `mib` MiB long, and syncs it. Returns the bytes
/// of data written.
pub fn create(path: &Path, mib: u64) -> Result<u64> {
    ensure!(mib >= 64, "the demo volume needs at least 64 MiB, not {mib}");
    let length = mib * MIB;
    let _ = fs::remove_file(path);
    let mut file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(length).with_context(|| format!("size {} to {mib} MiB", path.display()))?;
    let mut written = 0;
    let mut buffer = vec![0u8; MIB as usize];
    for (index, (offset, region_length)) in data_regions(length).into_iter().enumerate() {
        file.seek(SeekFrom::Start(offset)).with_context(|| format!("seek in {}", path.display()))?;
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (index as u64 + 1);
        let mut left = region_length;
        while left > 0 {
            let chunk = left.min(MIB) as usize;
            fill_pseudo_random(&mut buffer[..chunk], &mut state);
            file.write_all(&buffer[..chunk]).with_context(|| format!("write {}", path.display()))?;
            left -= chunk as u64;
        }
        written += region_length;
    }
    file.sync_all().with_context(|| format!("sync {}", path.display()))?;
    Ok(written)
}

/// xorshift64: cheap bytes that do not compress and are not zero.
fn fill_pseudo_random(buffer: &mut [u8], state: &mut u64) {
    for chunk in buffer.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// The file's SHA-256 in hex.
pub fn sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; MIB as usize];
    loop {
        let n = file.read(&mut buffer).with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

/// `(length, allocated)` bytes of the file: what it holds and what it takes on disk.
pub fn sizes(path: &Path) -> Result<(u64, u64)> {
    let metadata = fs::metadata(path).with_context(|| format!("inspect {}", path.display()))?;
    Ok((metadata.len(), metadata.blocks() * 512))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_a_quarter_of_the_volume_and_inside_it() {
        for mib in [64, 100, 1000, 1024, 4096] {
            let length = mib * MIB;
            let regions = data_regions(length);
            let data: u64 = regions.iter().map(|(_, len)| len).sum();
            assert!(data * 4 <= length + REGION, "{mib} MiB: {data} bytes of data");
            assert!(regions.iter().all(|(offset, len)| offset + len <= length), "{mib} MiB: {regions:?}");
            assert!(regions.windows(2).all(|pair| pair[0].0 + pair[0].1 <= pair[1].0), "{mib} MiB: overlap");
            assert_eq!(regions.last().map(|(offset, len)| offset + len), Some(length), "{mib} MiB: tail is data");
        }
    }

    #[test]
    fn the_volume_is_sparse_and_holds_its_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("volume.img");
        let written = create(&path, 64).expect("create the volume");
        assert_eq!(written, 16 * MIB);
        let (length, allocated) = sizes(&path).expect("sizes");
        assert_eq!(length, 64 * MIB);
        assert!(allocated >= written && allocated < length, "allocated {allocated} of {length}");
        let first = create(&path, 64).and_then(|_| sha256(&path)).expect("hash");
        assert_eq!(sha256(&path).expect("hash again"), first, "the content is deterministic");
    }
}
