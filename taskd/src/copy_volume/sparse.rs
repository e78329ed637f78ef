//! Finding the data in a sparse volume: the blocks of an extent that hold data according to
//! `lseek(SEEK_DATA/SEEK_HOLE)`, and the all-zero test for blocks that were read. Files on a
//! file system without hole support, and block devices (whose `lseek` refuses `SEEK_DATA`),
//! report everything as data; the zero test then keeps the destination sparse.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::io::AsRawFd;

/// One block to copy: `offset..offset + len` of the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub offset: u64,
    pub len: u64,
}

/// The blocks of `extent` (offsets in the volume) that may hold data, in order. Blocks sit on
/// a grid of `block_size` from offset 0, and the last one is cut at `extent.end`.
pub fn data_blocks(file: &File, extent: Range<u64>, block_size: u64) -> io::Result<Vec<Block>> {
    let mut blocks: Vec<Block> = Vec::new();
    for range in data_ranges(file, extent.clone())? {
        let first = range.start / block_size;
        let last = (range.end - 1) / block_size;
        for index in first..=last {
            let offset = index * block_size;
            // Ranges are sorted, so a block shared by two ranges is always the last one pushed.
            if blocks.last().is_some_and(|block| block.offset == offset) {
                continue;
            }
            let end = (offset + block_size).min(extent.end);
            blocks.push(Block { offset, len: end - offset });
        }
    }
    Ok(blocks)
}

/// The data ranges inside `extent`, clipped to it, in order; all of it when the file cannot
/// say where its holes are.
fn data_ranges(file: &File, extent: Range<u64>) -> io::Result<Vec<Range<u64>>> {
    let mut ranges = Vec::new();
    let mut position = extent.start;
    while position < extent.end {
        let data = match seek(file, position, libc::SEEK_DATA) {
            Ok(data) => data,
            // No data at or after `position`: the rest of the file is a hole.
            Err(error) if error.raw_os_error() == Some(libc::ENXIO) => break,
            // SEEK_DATA not supported here (block devices, some file systems): all data.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                ranges.push(position..extent.end);
                break;
            }
            Err(error) => return Err(error),
        };
        if data >= extent.end {
            break;
        }
        let hole = match seek(file, data, libc::SEEK_HOLE) {
            Ok(hole) => hole,
            // The file shrank under us: treat the rest as data; the read will say what is there.
            Err(error) if error.raw_os_error() == Some(libc::ENXIO) => extent.end,
            Err(error) => return Err(error),
        };
        let end = hole.min(extent.end);
        if end <= data {
            // A file system that answers nonsense must not make us loop forever.
            ranges.push(data..extent.end);
            break;
        }
        ranges.push(data..end);
        position = end;
    }
    Ok(ranges)
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a descriptor we own; it only moves the file offset, which no positional
    // read or write of the copy uses.
    let result = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result as u64)
    }
}

/// The granularity of zero detection: a file system page, so that the destination can keep a
/// hole wherever the source has a page of zeros.
pub const ZERO_PAGE: usize = 4096;

/// The runs of `buffer` (as index ranges, in order) made of pages that are not all zeros;
/// an all-zero buffer has none. Only these need writing to a destination that reads as zeros.
pub fn nonzero_runs(buffer: &[u8]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (index, page) in buffer.chunks(ZERO_PAGE).enumerate() {
        if is_all_zero(page) {
            continue;
        }
        let start = index * ZERO_PAGE;
        let end = start + page.len();
        match runs.last_mut() {
            Some(run) if run.end == start => run.end = end,
            _ => runs.push(start..end),
        }
    }
    runs
}

/// True when every byte of `page` is zero. The fold has no early exit, so the compiler
/// vectorises it; callers pass a page at a time.
fn is_all_zero(page: &[u8]) -> bool {
    page.iter().fold(0u8, |acc, &byte| acc | byte) == 0
}
