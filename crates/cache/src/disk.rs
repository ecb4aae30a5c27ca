//! The disk tier's files. One object is one file, `objects/ab/<id>`, written under `tmp/` and
//! renamed into place only once complete: a process killed mid-write leaves no torn object
//! under an object's name, only a temporary file in its own `tmp/<pid>/`, removed at the next
//! start (a process taking over the listeners shares the directory with the one it replaces,
//! so only the directories of processes no longer running are removed). Layout:
//!
//! `magic (8) | body length (u64 LE) | body | record | record length (u32 LE) | CRC-32 of the
//! record (u32 LE) | end magic (8)`
//!
//! The record (key, zone, URL, host, path, tags, purge generation and the engine's serialized
//! header) is at the end so that a revalidated header replaces it in place (truncate, append);
//! a replacement cut short fails the length or checksum test and the object is dropped, never
//! served. Every file is hostile input when read back: lengths are checked against the file's
//! size before anything is allocated.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pingora::cache::eviction::simple_lru;
use pingora::cache::key::{CompactCacheKey, HashBinary};

const MAGIC: &[u8; 8] = b"PRPTOBJ1";
const END: &[u8; 8] = b"PRPTEND1";
/// Bytes before the body.
pub const HEAD: u64 = 16;
/// Bytes after the record.
const TAIL: u64 = 16;
/// The disk tier holds at most one object per this many bytes of its size: each object it
/// holds costs about a kilobyte of memory in the index, so a tier of small objects must not
/// grow the index without end (10 GiB: 327,680 objects, about 330 MB of index).
const BYTES_PER_OBJECT: u64 = 32 * 1024;
/// The index memory an object is taken to cost by that bound.
const INDEX_BYTES_PER_OBJECT: u64 = 1024;

/// What an object whose file is `file_len` bytes and whose names take `names` bytes of index
/// costs against the tier's bound: its blocks, or, for an object with long names (a long URL,
/// many tags), [`BYTES_PER_OBJECT`] of the tier per kilobyte of index, whichever is more. The
/// index of objects kept only on disk so stays within about a 32nd of the tier's size,
/// whatever URLs visitors ask for.
pub fn bound_weight(file_len: u64, names: usize) -> u64 {
    let names = u64::try_from(names).unwrap_or(u64::MAX);
    disk_weight(file_len).max(names.saturating_mul(BYTES_PER_OBJECT / INDEX_BYTES_PER_OBJECT))
}

fn max_objects(capacity: u64) -> usize {
    usize::try_from(capacity / BYTES_PER_OBJECT)
        .unwrap_or(usize::MAX)
        .max(1024)
}

/// A record larger than this is not one we wrote.
const MAX_RECORD: usize = 1 << 20;
/// Disk space is spent in blocks: an object costs at least one.
const BLOCK: u64 = 4096;

/// What a file says about the object it holds (everything but the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The engine's id of the object (its file name).
    pub id: String,
    pub key: CompactCacheKey,
    pub zone: String,
    pub url: String,
    pub host: String,
    pub path: String,
    pub tags: Vec<String>,
    /// The zone's purge generation when stored.
    pub generation: u64,
    /// The engine's serialized response header.
    pub meta: (Vec<u8>, Vec<u8>),
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.meta.0.len() + self.meta.1.len());
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        field(self.id.as_bytes());
        field(&self.key.primary);
        field(self.key.variance.as_deref().map_or(&[][..], |v| &v[..]));
        field(self.key.user_tag.as_bytes());
        field(self.zone.as_bytes());
        field(self.url.as_bytes());
        field(self.host.as_bytes());
        field(self.path.as_bytes());
        field(&self.generation.to_le_bytes());
        field(&self.meta.0);
        field(&self.meta.1);
        field(&(self.tags.len() as u32).to_le_bytes());
        for tag in &self.tags {
            field(tag.as_bytes());
        }
        out
    }

    /// A record's fields in order (id, primary hash, variance hash, user tag, zone, URL, host,
    /// path, generation, the two header parts, tag count, tags); `None` unless well formed.
    fn fields(bytes: &[u8]) -> Option<Vec<&[u8]>> {
        let mut rest = bytes;
        let mut fields = Vec::with_capacity(16);
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let (value, tail) = tail.split_at_checked(u32::from_le_bytes(*len) as usize)?;
            fields.push(value);
            rest = tail;
        }
        let count = u32::from_le_bytes(fields.get(11)?.get(..4)?.try_into().ok()?) as usize;
        let id = std::str::from_utf8(fields[0]).ok()?;
        (rest.is_empty() && fields.len() == 12 + count && is_object_id(id)).then_some(fields)
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let fields = Self::fields(bytes)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let id = text(fields[0])?;
        let primary: HashBinary = fields[1].try_into().ok()?;
        let variance = match fields[2] {
            [] => None,
            v => Some(Box::new(HashBinary::try_from(v).ok()?)),
        };
        let user_tag = text(fields[3])?.into_boxed_str();
        let zone = text(fields[4])?;
        let url = text(fields[5])?;
        let host = text(fields[6])?;
        let path = text(fields[7])?;
        let generation = u64::from_le_bytes(fields[8].try_into().ok()?);
        let meta = (fields[9].to_vec(), fields[10].to_vec());
        let tags = fields[12..]
            .iter()
            .map(|t| text(t))
            .collect::<Option<_>>()?;
        Some(Self {
            id,
            key: CompactCacheKey {
                primary,
                variance,
                user_tag,
            },
            zone,
            url,
            host,
            path,
            tags,
            generation,
            meta,
        })
    }

    /// The record and what follows it in a file.
    fn tail(&self) -> Vec<u8> {
        let mut out = self.encode();
        let len = out.len() as u32;
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(END);
        out
    }
}

/// Ids are the engine's hex hashes; anything else never names a file.
pub fn is_object_id(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Whether a failure to read an object file says the file is damaged (or not ours, or gone),
/// rather than that the process is short of something for a while (descriptors, memory) or the
/// disk failed: only then is the file removed.
pub fn gone_or_damaged(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::NotFound
    )
}

/// Checks the framing of an object file of `len` bytes from its first and last 16 bytes:
/// `(body length, record length, record checksum)`.
fn framing(head: &[u8], tail: &[u8], len: u64) -> io::Result<(u64, usize, u32)> {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let (magic, body_len) = head.split_at(8);
    let body_len = u64::from_le_bytes(body_len.try_into().map_err(|_| invalid("head"))?);
    let (record_len, crc) = (word(&tail[0..4]) as usize, word(&tail[4..8]));
    if magic != MAGIC || &tail[8..] != END {
        return Err(invalid("not an object file"));
    }
    if record_len > MAX_RECORD
        || HEAD
            .checked_add(body_len)
            .and_then(|n| n.checked_add(record_len as u64 + TAIL))
            != Some(len)
    {
        return Err(invalid("lengths do not add up to the file's size"));
    }
    Ok((body_len, record_len, crc))
}

fn checked_record(bytes: &[u8], crc: u32) -> io::Result<Record> {
    if crc32fast::hash(bytes) != crc {
        return Err(invalid("record checksum mismatch"));
    }
    Record::decode(bytes).ok_or_else(|| invalid("malformed record"))
}

/// Checks an object file's framing and reads its record: `(body length, record)`.
pub fn read_record(file: &File) -> io::Result<(u64, Record)> {
    let len = file.metadata()?.len();
    if len < HEAD + TAIL {
        return Err(invalid("shorter than an object's framing"));
    }
    let mut head = [0; HEAD as usize];
    file.read_exact_at(&mut head, 0)?;
    let mut tail = [0; TAIL as usize];
    file.read_exact_at(&mut tail, len - TAIL)?;
    let (body_len, record_len, crc) = framing(&head, &tail, len)?;
    let mut record = vec![0; record_len];
    file.read_exact_at(&mut record, HEAD + body_len)?;
    Ok((body_len, checked_record(&record, crc)?))
}

/// A whole object file in memory, its framing and record checksum checked.
pub struct Whole {
    bytes: Bytes,
    body_end: usize,
}

impl Whole {
    pub fn body(&self) -> Bytes {
        self.bytes.slice(HEAD as usize..self.body_end)
    }

    /// The object's id and the engine's serialized header, read in place.
    pub fn id_and_meta(&self) -> Option<(&str, &[u8], &[u8])> {
        let record = &self.bytes[self.body_end..self.bytes.len() - TAIL as usize];
        let fields = Record::fields(record)?;
        Some((std::str::from_utf8(fields[0]).ok()?, fields[9], fields[10]))
    }
}

/// Reads a whole object file expected to be `len` bytes, in one positional read (the file may
/// be shared by concurrent hits), and checks it.
pub fn read_whole(file: &File, len: u64) -> io::Result<Whole> {
    let len = usize::try_from(len).map_err(|_| invalid("too large to read whole"))?;
    if len < (HEAD + TAIL) as usize {
        return Err(invalid("shorter than an object's framing"));
    }
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    let (body_len, record_len, crc) = framing(
        &buf[..HEAD as usize],
        &buf[len - TAIL as usize..],
        len as u64,
    )?;
    let body_end = HEAD as usize + body_len as usize;
    if crc32fast::hash(&buf[body_end..body_end + record_len]) != crc {
        return Err(invalid("record checksum mismatch"));
    }
    Ok(Whole {
        bytes: Bytes::from(buf),
        body_end,
    })
}

/// Replaces the record of the object file at `path` (whose body is `body_len` bytes); the
/// file's new length.
pub fn rewrite_record(
    path: &Path,
    body_len: u64,
    record: &Record,
    stored: FileId,
) -> io::Result<FileId> {
    let file = OpenOptions::new().write(true).open(path)?;
    if FileId::of(&file.metadata()?) != stored {
        // Another process sharing the directory (during an upgrade) stored the object since.
        return Err(invalid("the file holds another storing of the object"));
    }
    let tail = record.tail();
    file.set_len(HEAD + body_len)?;
    file.write_all_at(&tail, HEAD + body_len)?;
    Ok(FileId::of(&file.metadata()?))
}

/// What an object of `file_len` bytes costs on disk.
pub fn disk_weight(file_len: u64) -> u64 {
    file_len.div_ceil(BLOCK).max(1) * BLOCK
}

/// An object file being written under `tmp/`, removed unless finished and renamed. Its bytes
/// are counted against the room the tier keeps for files being written.
pub struct Writer {
    file: File,
    path: PathBuf,
    body_len: u64,
    kept: bool,
    room: Arc<WriteRoom>,
    /// Bytes of the room this file holds.
    held: u64,
}

/// The part of the disk tier kept for files being written (the LRU bounds the rest), so that
/// objects streaming in, however many at once, never take the tier past its size.
struct WriteRoom {
    size: u64,
    used: AtomicU64,
}

impl WriteRoom {
    /// Takes `n` bytes of the room; an error, taking nothing, when it has not that much left.
    fn take(&self, n: u64) -> io::Result<()> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= self.size)
            })
            .map(|_| ())
            .map_err(|_| {
                io::Error::other("the disk cache's room for objects being written is taken")
            })
    }
}

impl Writer {
    fn create(path: PathBuf, room: Arc<WriteRoom>) -> io::Result<Self> {
        let head = (MAGIC.len() + 8) as u64;
        room.take(head)?;
        // From here the file gives its room back when dropped, created or not.
        let mut writer = Self {
            file: OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .inspect_err(|_| {
                    room.used.fetch_sub(head, Ordering::Relaxed);
                })?,
            path,
            body_len: 0,
            kept: false,
            room,
            held: head,
        };
        writer.file.write_all(MAGIC)?;
        writer.file.write_all(&0u64.to_le_bytes())?;
        Ok(writer)
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let n = data.len() as u64;
        self.room.take(n)?;
        self.held += n;
        self.file.write_all(data)?;
        self.body_len += n;
        Ok(())
    }

    /// Completes the file; returns it for the rename into place, and its size.
    pub fn finish(mut self, record: &Record) -> io::Result<Finished> {
        self.file.write_all(&record.tail())?;
        self.file.write_all_at(&self.body_len.to_le_bytes(), 8)?;
        let file = FileId::of(&self.file.metadata()?);
        self.kept = true;
        Ok(Finished {
            path: self.path.clone(),
            body_len: self.body_len,
            file,
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
        // A finished file is counted by the LRU once placed.
        self.room.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// A complete object file under `tmp/`, not yet in place.
pub struct Finished {
    pub path: PathBuf,
    pub body_len: u64,
    pub file: FileId,
}

/// What tells an object file from another later put under its name: its inode number (which
/// the file system may give again once the file is deleted), the time it was last written, and
/// its length. A process sharing the directory during an upgrade may rename its own file over
/// the name; a file opened by name is the object's only if it still matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    ino: u64,
    modified_ns: i128,
    len: u64,
}

impl FileId {
    pub fn of(metadata: &fs::Metadata) -> Self {
        Self {
            ino: metadata.ino(),
            modified_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            len: metadata.len(),
        }
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether `other` is the same file (maybe written since): the same inode. Only for a file
    /// known to exist still, whose number cannot have been given again.
    pub fn same_file(&self, other: &Self) -> bool {
        self.ino == other.ino
    }
}

/// An object file found by [`DiskTier::scan`].
pub struct Scanned {
    pub body_len: u64,
    pub file: FileId,
}

/// The disk tier: a directory of object files and the LRU that bounds their total size.
pub struct DiskTier {
    dir: PathBuf,
    /// On a file system whose files are memory (tmpfs).
    in_memory: bool,
    /// This process's temporary files.
    tmp: PathBuf,
    pub capacity: u64,
    /// Largest object kept (larger responses pass through uncached): at most an eighth of the
    /// tier, so that one object never empties it.
    pub max_object: u64,
    pub lru: simple_lru::Manager,
    next_tmp: AtomicU64,
    writing: Arc<WriteRoom>,
}

impl DiskTier {
    /// Opens (creating) the tier in `dir`: leftovers of writes cut short are removed. Of its
    /// `capacity`, an eighth (and a block) is kept for files being written and the rest bounds
    /// the objects in place (their LRU).
    pub fn open(dir: &Path, capacity: u64, max_object: u64) -> io::Result<Self> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(dir.join("tmp"))?;
        for entry in fs::read_dir(dir.join("tmp"))?.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok());
            let running = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !running || pid == Some(std::process::id()) {
                let path = entry.path();
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            }
        }
        let tmp = dir.join("tmp").join(std::process::id().to_string());
        builder.create(&tmp)?;
        for fan in 0..=255u8 {
            builder.create(dir.join("objects").join(format!("{fan:02x}")))?;
        }
        // tmpfs and ramfs hold their files in memory and cannot say whether a read would wait.
        const IN_MEMORY: [u64; 2] = [0x0102_1994, 0x8584_58f6];
        // Room for the largest object with its file's head.
        let room = capacity / 8 + BLOCK;
        let kind = rustix::fs::statfs(dir).map(|s| s.f_type as u64);
        Ok(Self {
            dir: dir.to_owned(),
            in_memory: kind.is_ok_and(|k| IN_MEMORY.contains(&k)),
            tmp,
            capacity,
            max_object: max_object.min(capacity / 8),
            lru: simple_lru::Manager::new_with_watermark(
                usize::try_from(capacity.saturating_sub(room)).unwrap_or(usize::MAX),
                Some(max_objects(capacity)),
            ),
            next_tmp: AtomicU64::new(0),
            writing: Arc::new(WriteRoom {
                size: room,
                used: AtomicU64::new(0),
            }),
        })
    }

    /// Where the object `id` lives (`id` is checked by `is_object_id`).
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.dir.join("objects").join(&id[..2]).join(id)
    }

    /// Starts a new object file.
    pub fn writer(&self) -> io::Result<Writer> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        Writer::create(self.tmp.join(n.to_string()), Arc::clone(&self.writing))
    }

    fn generations_path(&self) -> PathBuf {
        self.dir.join("generations")
    }

    fn pending_purges_path(&self) -> PathBuf {
        self.dir.join("pending-purges")
    }

    /// Keeps `text` (the purges made while the tier is indexed) on disk until indexing ends:
    /// a restart before then applies them as it indexes, and purged objects stay purged.
    pub fn save_pending_purges(&self, text: &str) -> io::Result<()> {
        let tmp = self.tmp.join("pending-purges");
        fs::write(&tmp, text)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.pending_purges_path())
    }

    /// The purges a previous process kept while it indexed the tier and could not finish
    /// (empty: none).
    pub fn pending_purges(&self) -> String {
        fs::read_to_string(self.pending_purges_path()).unwrap_or_default()
    }

    /// Indexing ended: the purges made meanwhile are all applied.
    pub fn clear_pending_purges(&self) {
        let _ = fs::remove_file(self.pending_purges_path());
    }

    /// The zones' purge generations as last saved (a missing or damaged file: none).
    pub fn load_generations(&self) -> HashMap<String, u64> {
        let text = fs::read_to_string(self.generations_path()).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (zone, generation) = line.split_once(' ')?;
                Some((zone.to_owned(), generation.parse().ok()?))
            })
            .collect()
    }

    /// Saves the zones' purge generations (whole, renamed into place).
    pub fn save_generations<'a>(
        &self,
        generations: impl Iterator<Item = (&'a str, u64)>,
    ) -> io::Result<()> {
        let text: String = generations.map(|(z, g)| format!("{z} {g}\n")).collect();
        let tmp = self.tmp.join("generations");
        fs::write(&tmp, text)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, self.generations_path())
    }

    /// Whether the `len` bytes of `file` (`id`) from `offset` are in the page cache, so that
    /// sending them does not wait for the disk: their first, middle and last bytes can be read
    /// without waiting (a likelihood only: the kernel reclaims page by page, but a file sent
    /// whole is used whole). A file found there is not probed again for a while on this thread
    /// (sending it keeps its pages among the most recently used); one found missing is asked
    /// to be read back in the background for the next hits, and not probed again for a while
    /// either. A file system that cannot tell (`RWF_NOWAIT` unsupported) is taken not to
    /// have them, unless its files are memory.
    pub fn in_page_cache(&self, file: &File, id: FileId, offset: u64, len: u64) -> bool {
        use rustix::io::{ReadWriteFlags, preadv2};
        use std::time::{Duration, Instant};
        /// How long a probe's finding holds.
        const PROBED_FOR: Duration = Duration::from_millis(100);
        /// Files remembered at most, per thread.
        const REMEMBERED: usize = 1024;
        thread_local! {
            static PROBED: std::cell::RefCell<HashMap<FileId, (Instant, bool)>> =
                std::cell::RefCell::new(HashMap::new());
        }
        let Some(last) = len.checked_sub(1) else {
            return true;
        };
        if self.in_memory {
            return true;
        }
        let now = Instant::now();
        let lately = PROBED.with_borrow(|probed| {
            probed
                .get(&id)
                .filter(|(at, _)| now.duration_since(*at) < PROBED_FOR)
                .map(|&(_, cached)| cached)
        });
        if let Some(cached) = lately {
            return cached;
        }
        let mut byte = [0u8; 1];
        let cached = [offset, offset + last / 2, offset + last]
            .into_iter()
            .all(|at| {
                let mut bufs = [io::IoSliceMut::new(&mut byte)];
                matches!(preadv2(file, &mut bufs, at, ReadWriteFlags::NOWAIT), Ok(1))
            });
        PROBED.with_borrow_mut(|probed| {
            if probed.len() >= REMEMBERED {
                probed.clear();
            }
            probed.insert(id, (now, cached));
        });
        if !cached {
            let advice = rustix::fs::Advice::WillNeed;
            let _ = rustix::fs::fadvise(file, offset, std::num::NonZeroU64::new(len), advice);
        }
        cached
    }

    /// Calls `visit(record, what the file is)` for every valid object file; invalid ones
    /// (damaged, foreign, misnamed) are removed.
    pub fn scan(&self, mut visit: impl FnMut(Record, Scanned)) {
        for fan in 0..=255u8 {
            let dir = self.dir.join("objects").join(format!("{fan:02x}"));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let checked = File::open(&path).and_then(|file| {
                    let metadata = file.metadata()?;
                    let (body_len, record) = read_record(&file)?;
                    let named = entry.file_name().to_str() == Some(record.id.as_str());
                    if !named || !record.id.starts_with(&format!("{fan:02x}")) {
                        return Err(invalid("file name is not the object's id"));
                    }
                    let scanned = Scanned {
                        body_len,
                        file: FileId::of(&metadata),
                    };
                    Ok((record, scanned))
                });
                match checked {
                    Ok((record, scanned)) => visit(record, scanned),
                    Err(e) if gone_or_damaged(&e) => {
                        tracing::warn!(path = %path.display(), error = %e, "removing a damaged cache file");
                        let _ = fs::remove_file(&path);
                    }
                    // A passing shortage (descriptors, memory) or an error of the disk: the
                    // file is left for the next start.
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read a cache file; left as it is");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.to_owned(),
            key: CompactCacheKey {
                primary: [7; 16],
                variance: Some(Box::new([9; 16])),
                user_tag: "zone".into(),
            },
            zone: "zone".into(),
            url: "zone\nhttp://a.example:80/x.png".into(),
            host: "a.example".into(),
            path: "/x.png".into(),
            tags: vec!["t1".into(), "t2".into()],
            generation: 3,
            meta: (b"internal".to_vec(), b"header".to_vec()),
        }
    }

    fn write(tier: &DiskTier, id: &str, body: &[u8]) -> PathBuf {
        let mut w = tier.writer().unwrap();
        w.write(body).unwrap();
        let done = w.finish(&record(id)).unwrap();
        let path = tier.object_path(id);
        fs::rename(&done.path, &path).unwrap();
        path
    }

    #[test]
    fn files_being_written_share_an_eighth_of_the_tier_and_give_it_back() {
        use pingora::cache::CacheEntryKey;
        use pingora::cache::eviction::EvictionManager as _;
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 8 << 20, 1 << 20).unwrap();
        let (mut a, mut b) = (tier.writer().unwrap(), tier.writer().unwrap());
        a.write(&vec![1; 600 << 10]).unwrap();
        // The room is 1 MiB and a block: the second file cannot take another 600 KiB, and
        // loses nothing.
        assert!(b.write(&vec![2; 600 << 10]).is_err());
        b.write(&vec![2; 100 << 10]).unwrap();
        // A file dropped unfinished gives its room back; so does a finished one.
        drop(a);
        b.write(&vec![2; 600 << 10]).unwrap();
        let done = b.finish(&record("ab14")).unwrap();
        assert_eq!(done.body_len, 700 << 10);
        let mut c = tier.writer().unwrap();
        c.write(&vec![3; 1000 << 10]).unwrap();
        // The LRU bounds the rest: 7 MiB (less a block) of objects in place.
        assert_eq!(tier.lru.total_size(), 0);
        let weight = |n: u64| usize::try_from(n).unwrap();
        let key = |i: u8| {
            CacheEntryKey::key_only(CompactCacheKey {
                primary: [i; 16],
                variance: None,
                user_tag: "z".into(),
            })
        };
        let now = std::time::SystemTime::now();
        assert!(
            tier.lru
                .admit(key(1), weight((7 << 20) - BLOCK), now)
                .is_empty()
        );
        assert_eq!(
            tier.lru.admit(key(2), 1, now).len(),
            1,
            "over the bound: evicts"
        );
    }

    #[test]
    fn objects_read_back_with_their_record_and_damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        let path = write(&tier, "ab12", b"hello body");
        let (len, back) = read_record(&File::open(&path).unwrap()).unwrap();
        assert_eq!((len, back), (10, record("ab12")));

        // A new header replaces the record in place.
        let mut newer = record("ab12");
        newer.meta.1 = b"a longer revalidated header".to_vec();
        // Not in another file than the one stored (one renamed over its name since).
        // (A file of the same length, renamed over the name: its inode number may be reused.)
        let stored = FileId::of(&fs::metadata(&path).unwrap());
        let other = write(&tier, "ab13", b"hello body");
        fs::rename(&other, &path).unwrap();
        assert!(rewrite_record(&path, 10, &newer, stored).is_err());
        assert_eq!(
            read_record(&File::open(&path).unwrap()).unwrap().1,
            record("ab13")
        );
        let path = write(&tier, "ab12", b"hello body");
        let stored = FileId::of(&fs::metadata(&path).unwrap());
        let len = rewrite_record(&path, 10, &newer, stored).unwrap().len();
        assert_eq!(read_record(&File::open(&path).unwrap()).unwrap().1, newer);
        let whole = read_whole(&File::open(&path).unwrap(), len).unwrap();
        assert_eq!(&whole.body()[..], b"hello body");
        assert_eq!(
            whole.id_and_meta(),
            Some((
                "ab12",
                &b"internal"[..],
                &b"a longer revalidated header"[..]
            ))
        );
        assert!(read_whole(&File::open(&path).unwrap(), len - 1).is_err());
        assert!(read_whole(&File::open(&path).unwrap(), len + 1).is_err());

        // Every truncation and every flipped byte of the framing or record is caught.
        let bytes = fs::read(&path).unwrap();
        for cut in 0..bytes.len() {
            fs::write(&path, &bytes[..cut]).unwrap();
            assert!(
                read_record(&File::open(&path).unwrap()).is_err(),
                "cut at {cut}"
            );
        }
        for i in (0..HEAD as usize).chain(HEAD as usize + 10..bytes.len()) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x40;
            fs::write(&path, &flipped).unwrap();
            assert!(
                read_record(&File::open(&path).unwrap()).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn a_restart_drops_unfinished_writes_and_misnamed_or_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        write(&tier, "ab12", b"kept");
        let mut unfinished = tier.writer().unwrap();
        unfinished.write(b"half").unwrap();
        std::mem::forget(unfinished);
        let misnamed = tier.object_path("ab34");
        fs::copy(tier.object_path("ab12"), &misnamed).unwrap();
        let garbage = tier.object_path("cd00");
        fs::write(&garbage, b"not an object at all, but long enough").unwrap();

        let tier = DiskTier::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        let own = dir.path().join("tmp").join(std::process::id().to_string());
        assert_eq!(fs::read_dir(own).unwrap().count(), 0);
        let mut seen = Vec::new();
        tier.scan(|record, scanned| seen.push((record.id, scanned.body_len)));
        assert_eq!(seen, [("ab12".to_owned(), 4)]);
        assert!(!misnamed.exists() && !garbage.exists());
    }

    #[test]
    fn only_damaged_or_vanished_files_are_taken_for_bad() {
        for (error, bad) in [
            (io::Error::from(io::ErrorKind::InvalidData), true),
            (io::Error::from(io::ErrorKind::UnexpectedEof), true),
            (io::Error::from(io::ErrorKind::NotFound), true),
            // EMFILE, ENFILE, ENOMEM, EIO: the file may be sound.
            (io::Error::from_raw_os_error(24), false),
            (io::Error::from_raw_os_error(23), false),
            (io::Error::from_raw_os_error(12), false),
            (io::Error::from_raw_os_error(5), false),
        ] {
            assert_eq!(gone_or_damaged(&error), bad, "{error}");
        }
    }

    #[test]
    fn generations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        tier.save_generations([("z1", 2), ("z2", 5)].into_iter())
            .unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        assert_eq!(
            tier.load_generations(),
            HashMap::from([("z1".to_owned(), 2), ("z2".to_owned(), 5)])
        );
    }
}
