//! The spill log: where a guarded sink's records wait while their target is down, until the agent has replayed them.
//!
//! A directory of append-only segments (`<first seq, 20 digits>.spill`, records as [`super::segment`] writes them)
//! and a replay cursor (`replayed`: the first sequence number not yet delivered, with a CRC, replaced atomically).
//! The rules (docs/spill.md):
//!
//! - [`SpillLog::append`] returns the records' sequence numbers only once they are written and, with
//!   [`Fsync::Always`] (the default), on disk: that return is the acknowledgement. A batch is one write and one
//!   fsync (group commit).
//! - A full log ([`SpillConfig::max_bytes`]) or a full disk refuses the whole batch ([`Error::Full`],
//!   [`Error::DiskFull`]) and writes nothing of it: the caller falls back to back-pressure. Nothing is dropped.
//! - [`SpillLog::commit`] records that everything below a sequence number was delivered. Only after that cursor is
//!   durable are the segments it covers deleted, so a crash between delivering and committing delivers again (a
//!   duplicate, never a loss).
//! - [`SpillLog::open`] recovers after any crash: a torn tail of the last segment is truncated, corrupt bytes are
//!   skipped and counted, segments wholly below the cursor (an interrupted clean-up) are deleted. A record that fails
//!   its CRC is never returned.
//! - One process at a time: the directory is locked (`lock`, an advisory lock the kernel drops when the process dies).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::segment::{self, MAX_PAYLOAD};

/// Defaults, here only.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
const CURSOR: &str = "replayed";
const LOCK: &str = "lock";
const SUFFIX: &str = ".spill";

/// When appended records are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before every acknowledgement (one fdatasync per batch): an acknowledged record survives a power loss.
    Always,
    /// Never by the log: an acknowledged record survives the process's crash (the kernel has it), not the host's.
    Never,
}

impl Fsync {
    pub fn parse(s: &str) -> Option<Fsync> {
        match s {
            "always" => Some(Fsync::Always),
            "never" => Some(Fsync::Never),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Never => "never",
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Fsync, String> {
        Fsync::parse(s).ok_or_else(|| format!("expected always or never, got {s:?}"))
    }
}

#[derive(Debug, Clone)]
pub struct SpillConfig {
    /// The most bytes the log's segments may take.
    pub max_bytes: u64,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    pub fsync: Fsync,
}

impl Default for SpillConfig {
    fn default() -> Self {
        SpillConfig {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: Fsync::Always,
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("spill log {dir}: {what}: {source}")]
    Io {
        dir: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("spill log {dir} is in use by another process (its lock is held); each agent needs its own spill directory")]
    Locked { dir: PathBuf },
    #[error("spill log {dir} is full: {used} of spill.max-bytes {max} bytes used, the batch needs {need}; back-pressure until the replay frees space, or raise spill.max-bytes")]
    Full {
        dir: PathBuf,
        used: u64,
        max: u64,
        need: u64,
    },
    #[error("spill log {dir}: the disk is full (the batch was not written); back-pressure until the replay frees space, or give the spill directory more room")]
    DiskFull { dir: PathBuf },
    #[error("a record of {len} bytes is larger than the spill log's limit of {MAX_PAYLOAD}")]
    TooLarge { len: usize },
    #[error("spill log {dir}: its cursor file is corrupt ({problem}); it was not changed: move it away to replay everything still in the log again")]
    BadCursor { dir: PathBuf, problem: String },
    #[error("spill log {dir}: cannot commit {to}: the log holds records up to {next} only")]
    CommitBeyond { dir: PathBuf, to: u64, next: u64 },
}

/// What [`SpillLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recovery {
    pub segments: usize,
    /// Records waiting for the replay.
    pub pending: u64,
    /// Bytes of a torn tail truncated from the last segment.
    pub torn_bytes: u64,
    /// Corrupt bytes skipped (and their runs): records lost to the disk, never delivered.
    pub corrupt_bytes: u64,
    pub corrupt_runs: u64,
    /// Segments deleted because the cursor already covered them (a clean-up a crash interrupted).
    pub deleted_segments: usize,
}

#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    /// The last record's sequence number; None while empty.
    last_seq: Option<u64>,
    bytes: u64,
}

/// One record read back for the replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

pub struct SpillLog {
    dir: PathBuf,
    cfg: SpillConfig,
    segments: VecDeque<Segment>,
    /// The active (last) segment, open for appending.
    active: File,
    next_seq: u64,
    /// The first sequence number not yet delivered (durable in `replayed`).
    cursor: u64,
    bytes: u64,
    /// Where the last read stopped, so that the next one from there does not read the segment from its start.
    read_hint: Option<ReadHint>,
    _lock: File,
}

/// Where the last read stopped: the records from `seq` on start at `offset` of the segment `path` (or in a later
/// segment); `floor` is the highest sequence number before that offset.
#[derive(Debug, Clone)]
struct ReadHint {
    path: PathBuf,
    offset: u64,
    seq: u64,
    floor: Option<u64>,
}

/// The bytes a read takes from a segment at a time (doubled for a record larger than that).
const READ_CHUNK: u64 = 1 << 20;

fn io(dir: &Path, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error + '_ {
    let what = what.into();
    move |source| Error::Io {
        dir: dir.to_path_buf(),
        what,
        source,
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync the directory"))
}

impl SpillLog {
    /// Opens (creating) the log in `dir` and recovers it.
    pub fn open(dir: &Path, cfg: SpillConfig) -> Result<(SpillLog, Recovery), Error> {
        std::fs::create_dir_all(dir).map_err(io(dir, "create the directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(io(dir, "open its lock file"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(dir, "lock it")(e)),
        }
        let cursor = read_cursor(dir)?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir, "list it"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let first = name.strip_suffix(SUFFIX)?.parse::<u64>().ok()?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();
        let mut rec = Recovery::default();
        let mut segments = VecDeque::new();
        let mut last_seq: Option<u64> = None;
        let count = names.len();
        for (i, (_, path)) in names.into_iter().enumerate() {
            let data = std::fs::read(&path).map_err(io(dir, format!("read {}", path.display())))?;
            let s = segment::scan(&data);
            rec.corrupt_bytes += s.corrupt_bytes;
            rec.corrupt_runs += s.corrupt_runs;
            let torn = s.torn_bytes(data.len());
            let mut bytes = data.len() as u64;
            if torn > 0 {
                if i + 1 == count {
                    // The write the process did not finish: cut it off so that appends continue after whole records.
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io(dir, format!("open {}", path.display())))?;
                    f.set_len(s.valid_end as u64)
                        .and_then(|_| f.sync_all())
                        .map_err(io(dir, format!("truncate {}", path.display())))?;
                    rec.torn_bytes += torn;
                    bytes = s.valid_end as u64;
                } else {
                    // A closed segment does not grow again: its tail is as corrupt as a run in the middle.
                    rec.corrupt_bytes += torn;
                    rec.corrupt_runs += 1;
                }
            }
            // Records must go on from the previous segment's: anything at or below it is not a record of this log.
            let seqs: Vec<u64> = s
                .records
                .iter()
                .map(|f| f.seq)
                .filter(|&q| last_seq.is_none_or(|l| q > l))
                .collect();
            let seg_last = seqs.last().copied();
            rec.pending += seqs.iter().filter(|&&q| q >= cursor).count() as u64;
            if let Some(l) = seqs.last() {
                last_seq = Some(*l);
            }
            segments.push_back(Segment {
                path,
                last_seq: seg_last,
                bytes,
            });
        }
        // Segments the cursor covers wholly were delivered: finish the clean-up a crash interrupted.
        rec.deleted_segments = drop_delivered(dir, &mut segments, cursor)?.0;
        let next_seq = last_seq.map_or(cursor, |l| (l + 1).max(cursor));
        if segments.is_empty() {
            let path = dir.join(segment_name(next_seq));
            File::create(&path).map_err(io(dir, "create a segment"))?;
            sync_dir(dir)?;
            segments.push_back(Segment {
                path,
                last_seq: None,
                bytes: 0,
            });
        }
        rec.segments = segments.len();
        let active_path = &segments.back().expect("one at least").path;
        let active = OpenOptions::new()
            .append(true)
            .open(active_path)
            .map_err(io(dir, format!("open {}", active_path.display())))?;
        let bytes = segments.iter().map(|s| s.bytes).sum();
        Ok((
            SpillLog {
                dir: dir.to_path_buf(),
                cfg,
                segments,
                active,
                next_seq,
                cursor,
                bytes,
                read_hint: None,
                _lock: lock,
            },
            rec,
        ))
    }

    /// Appends `payloads` as one batch and returns their sequence numbers (empty for an empty batch): the
    /// acknowledgement. All or nothing.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<Range<u64>, Error> {
        if let Some(p) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD) {
            return Err(Error::TooLarge { len: p.len() });
        }
        let need: u64 = payloads.iter().map(|p| segment::encoded_len(p.len())).sum();
        if self.bytes + need > self.cfg.max_bytes {
            return Err(Error::Full {
                dir: self.dir.clone(),
                used: self.bytes,
                max: self.cfg.max_bytes,
                need,
            });
        }
        if payloads.is_empty() {
            return Ok(self.next_seq..self.next_seq);
        }
        let mut buf = Vec::with_capacity(need as usize);
        let first = self.next_seq;
        for (i, p) in payloads.iter().enumerate() {
            segment::encode(first + i as u64, p, &mut buf);
        }
        let before = self.segments.back().expect("an active segment").bytes;
        let written = self
            .active
            .write_all(&buf)
            .and_then(|_| match self.cfg.fsync {
                Fsync::Always => self.active.sync_data(),
                Fsync::Never => Ok(()),
            });
        if let Err(e) = written {
            // Take back whatever part of the batch reached the file, so that it is not half there.
            let _ = self.active.set_len(before);
            return Err(if e.kind() == ErrorKind::StorageFull {
                Error::DiskFull {
                    dir: self.dir.clone(),
                }
            } else {
                io(&self.dir, "append")(e)
            });
        }
        let last = first + payloads.len() as u64 - 1;
        let seg = self.segments.back_mut().expect("an active segment");
        seg.bytes += need;
        seg.last_seq = Some(last);
        self.bytes += need;
        self.next_seq = last + 1;
        if seg.bytes >= self.cfg.segment_bytes {
            self.roll()?;
        }
        Ok(first..last + 1)
    }

    /// Closes the active segment and starts the next one.
    fn roll(&mut self) -> Result<(), Error> {
        let path = self.dir.join(segment_name(self.next_seq));
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io(&self.dir, format!("create {}", path.display())))?;
        sync_dir(&self.dir)?;
        self.active = f;
        self.segments.push_back(Segment {
            path,
            last_seq: None,
            bytes: 0,
        });
        Ok(())
    }

    /// Up to `max` records from sequence number `from` on (those still in the log), in order. A segment is read in
    /// chunks, from where the previous read stopped when this one goes on from there (a replay reads each byte once).
    pub fn read(&mut self, from: u64, max: usize) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        // As open() counts them: a record at or below one of an earlier segment is not a record of this log.
        let mut floor: Option<u64> = None;
        let hint = self.read_hint.take();
        for s in &self.segments {
            if out.len() >= max {
                break;
            }
            if s.last_seq.is_none_or(|l| l < from) {
                floor = floor.max(s.last_seq);
                continue;
            }
            let what = || format!("read {}", s.path.display());
            let file = File::open(&s.path).map_err(io(&self.dir, what()))?;
            let mut pos = match &hint {
                Some(h) if h.path == s.path && h.seq == from && h.offset <= s.bytes => {
                    floor = floor.max(h.floor);
                    h.offset
                }
                _ => 0,
            };
            let mut chunk = READ_CHUNK;
            // Only the bytes this log wrote or recovered: an append in flight elsewhere is not read half.
            while pos < s.bytes && out.len() < max {
                let len = chunk.min(s.bytes - pos);
                let mut data = vec![0u8; len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, pos)
                    .map_err(io(&self.dir, what()))?;
                let found = segment::scan(&data);
                if found.records.is_empty() {
                    if pos + len >= s.bytes {
                        break; // the rest of the segment holds no whole record
                    }
                    chunk *= 2; // a record larger than the chunk
                    continue;
                }
                let mut next = pos + found.valid_end as u64;
                for f in found.records {
                    if out.len() >= max {
                        next = pos + f.at as u64;
                        break;
                    }
                    if floor.is_some_and(|l| f.seq <= l) {
                        continue;
                    }
                    floor = Some(f.seq);
                    if f.seq >= from {
                        out.push(Record {
                            seq: f.seq,
                            payload: data[f.payload.clone()].to_vec(),
                        });
                        self.read_hint = Some(ReadHint {
                            path: s.path.clone(),
                            offset: pos + f.payload.end as u64,
                            seq: f.seq + 1,
                            floor,
                        });
                    }
                }
                pos = next;
            }
        }
        Ok(out)
    }

    /// Records that everything below `to` was delivered; durable before it returns. Then deletes the segments it
    /// covers wholly.
    pub fn commit(&mut self, to: u64) -> Result<(), Error> {
        if to > self.next_seq {
            return Err(Error::CommitBeyond {
                dir: self.dir.clone(),
                to,
                next: self.next_seq,
            });
        }
        if to <= self.cursor {
            return Ok(());
        }
        write_cursor(&self.dir, to)?;
        self.cursor = to;
        // The active segment too, once wholly delivered: a new one takes its place.
        if self
            .segments
            .back()
            .is_some_and(|s| s.last_seq.is_some_and(|l| l < to))
        {
            self.roll()?;
        }
        self.bytes -= drop_delivered(&self.dir, &mut self.segments, to)?.1;
        Ok(())
    }

    /// The first sequence number not yet delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records waiting for the replay.
    pub fn pending(&self) -> u64 {
        self.next_seq - self.cursor
    }

    /// Bytes the segments take.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The configured limit of [`SpillLog::bytes`].
    pub fn max_bytes(&self) -> u64 {
        self.cfg.max_bytes
    }

    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

/// Deletes the segments wholly below `cursor` (delivered), never the last one (the active segment). Returns how
/// many and their bytes.
fn drop_delivered(
    dir: &Path,
    segments: &mut VecDeque<Segment>,
    cursor: u64,
) -> Result<(usize, u64), Error> {
    let (mut n, mut bytes) = (0, 0);
    while segments.len() > 1 && segments[0].last_seq.is_none_or(|l| l < cursor) {
        let s = segments.pop_front().expect("checked");
        std::fs::remove_file(&s.path).map_err(io(dir, format!("delete {}", s.path.display())))?;
        n += 1;
        bytes += s.bytes;
    }
    Ok((n, bytes))
}

fn read_cursor(dir: &Path) -> Result<u64, Error> {
    let path = dir.join(CURSOR);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(dir, "read its cursor")(e)),
    };
    let bad = |problem: &str| Error::BadCursor {
        dir: dir.to_path_buf(),
        problem: problem.into(),
    };
    if data.len() != 12 {
        return Err(bad(&format!("{} bytes, not 12", data.len())));
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if crc32c::crc32c(&data[0..8]) != crc {
        return Err(bad("its CRC does not match"));
    }
    Ok(seq)
}

/// Replaces the cursor atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_cursor(dir: &Path, seq: u64) -> Result<(), Error> {
    let mut data = seq.to_le_bytes().to_vec();
    data.extend_from_slice(&crc32c::crc32c(&data).to_le_bytes());
    let tmp = dir.join(".replayed.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(CURSOR))
    };
    write().map_err(|e| {
        if e.kind() == ErrorKind::StorageFull {
            Error::DiskFull {
                dir: dir.to_path_buf(),
            }
        } else {
            io(dir, "write its cursor")(e)
        }
    })?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests;
