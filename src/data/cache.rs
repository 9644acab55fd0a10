//! The decoded cache: each folder's images, decoded and resized once, kept on disk as bytes.
//!
//! One *pack* file per folder of images and preprocessing holds every image of the last run
//! that loaded that folder: an index (each file's path below the folder, its [`Fingerprint`],
//! and where its bytes are, or why it was skipped) and the bytes themselves. A later run reads
//! an image's row straight from the pack when the file's fingerprint is unchanged, and decodes
//! it otherwise; a run that decoded anything, or no longer sees a file, writes the pack again.
//!
//! Nothing in a pack is trusted: the header names the format, deepcat's version, the folder
//! and the preprocessing, the index has a CRC-32 and every image its own, and a pack that does
//! not check out is ignored (and an image whose bytes do not is decoded again). A pack is
//! written to a temporary file beside it and renamed over it, so a reader never sees half a
//! pack, and two processes filling the same cache at once each leave a whole one. The bytes
//! from a pack are the bytes decoding gives, so the cache cannot change a result.

use super::Preprocess;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every pack.
const MAGIC: &[u8; 16] = b"deepcat-pack\0\0\0\x03";
/// Packs end in this; temporary ones in `.tmp`.
const EXTENSION: &str = "pack";
/// The largest index deepcat reads (a larger one is not a pack it wrote).
const MAX_INDEX: u64 = 1 << 32;

/// Where packs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// Size, modification time and (on Unix) status-change time of a file: when any changes, its
/// cached row is not used. The status-change time is what catches a file rewritten within
/// one tick of the modification clock with the same size, or given back its old modification
/// time, or whose permissions changed (as git's index does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// Status-change time (ctime), nanoseconds since the Unix epoch; 0 where there is none.
    pub changed_ns: u64,
}

impl Fingerprint {
    /// The fingerprint of `path` (following links, as decoding does), if it can be read.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta.modified().ok()?;
        let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(Fingerprint {
            len: meta.len(),
            modified_ns: u64::try_from(since.as_nanos()).ok()?,
            changed_ns: changed_ns(&meta),
        })
    }
}

#[cfg(unix)]
fn changed_ns(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (secs, nanos) = (meta.ctime(), meta.ctime_nsec());
    u64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|s| s.checked_add(u64::try_from(nanos).ok()?))
        .unwrap_or(0)
}

#[cfg(not(unix))]
fn changed_ns(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// What a pack remembers of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    /// Its row: where in the pack, and the CRC-32 of its bytes.
    Pixels { offset: u64, crc: u32 },
    /// Why it is not a usable image.
    Skipped(String),
}

/// One file's outcome for a new pack: its bytes, or why it was skipped.
pub type Outcome<'a> = Result<&'a [u8], &'a str>;

/// A pack opened for reading (or an empty one, when there is none that checks out).
#[derive(Debug)]
pub struct Pack {
    file: Option<File>,
    features: usize,
    entries: HashMap<Vec<u8>, (Fingerprint, Stored)>,
}

/// A pack's header and counts, for `deepcat cache info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// The pack file.
    pub path: PathBuf,
    /// The folder it caches, or why the pack is unusable.
    pub folder: Result<PathBuf, String>,
    /// The preprocessing it was made with, in words.
    pub preprocess: String,
    /// Images with rows in the pack.
    pub images: usize,
    /// Files remembered as not usable.
    pub skipped: usize,
    /// Size on disk.
    pub bytes: u64,
}

impl Cache {
    /// A cache in `dir` (created when first written).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The default folder: `$XDG_CACHE_HOME/deepcat`, else `~/.cache/deepcat`; `None` when
    /// neither variable is set.
    pub fn default_dir() -> Option<PathBuf> {
        let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        nonempty("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| nonempty("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|base| base.join("deepcat"))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pack file of `folder` (canonical) with `pre`.
    fn pack_path(&self, folder: &Path, pre: &Preprocess) -> PathBuf {
        let key = key_bytes(folder, pre);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&key);
        let a = hasher.finalize();
        let mut hasher = crc32fast::Hasher::new_with_initial(a ^ 0x5bd1_e995);
        hasher.update(&key);
        hasher.update(&key.len().to_le_bytes());
        let b = hasher.finalize();
        let name = folder
            .file_name()
            .map(|n| sanitise(&n.to_string_lossy()))
            .unwrap_or_default();
        self.dir
            .join(format!("{name}-{}px-{a:08x}{b:08x}.{EXTENSION}", pre.size))
    }

    /// The pack of `folder` with `pre`: empty when there is none, or it does not check out.
    pub fn open(&self, folder: &Path, pre: &Preprocess) -> Pack {
        let path = self.pack_path(folder, pre);
        read_pack(&path, Some((folder, pre))).unwrap_or_else(|_| Pack::empty(pre.features()))
    }

    /// Writes the pack of `folder` with `pre`: each `(path below folder, fingerprint, outcome)`.
    ///
    /// # Errors
    /// The I/O error (the folder cannot be made, the disk is full, it is read-only); the old
    /// pack, if any, is then left as it was.
    pub fn write(
        &self,
        folder: &Path,
        pre: &Preprocess,
        files: &[(&Path, Fingerprint, Outcome<'_>)],
    ) -> std::io::Result<()> {
        let mut writer = self.writer(folder, pre)?;
        for (path, print, outcome) in files {
            writer.push(path, *print, *outcome)?;
        }
        writer.persist().map(drop)
    }

    /// A pack of `folder` with `pre` to be written row by row ([`PackWriter`]): the way to
    /// fill the cache with more images than fit in memory.
    ///
    /// # Errors
    /// When the cache folder cannot be made or written.
    pub fn writer(&self, folder: &Path, pre: &Preprocess) -> std::io::Result<PackWriter> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".deepcat-pack-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        PackWriter::start(
            Target::Named {
                tmp,
                path: self.pack_path(folder, pre),
                cache: self.clone(),
            },
            folder,
            pre,
        )
    }

    /// Removes the packs of folders that no longer exist (temporary folders, say), so the
    /// cache does not grow with every folder ever loaded. Best effort: errors are ignored.
    fn prune(&self) {
        for path in self.packs().unwrap_or_default() {
            if let Ok((folder, _, _)) = read_header(&path)
                && !folder.exists()
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Every pack in the cache, with what it holds.
    ///
    /// # Errors
    /// When the folder exists but cannot be listed.
    pub fn info(&self) -> std::io::Result<Vec<PackInfo>> {
        let mut out = Vec::new();
        for path in self.packs()? {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let info = match read_header(&path) {
                Ok((folder, preprocess, pack)) => {
                    let skipped = pack
                        .entries
                        .values()
                        .filter(|(_, s)| matches!(s, Stored::Skipped(_)))
                        .count();
                    PackInfo {
                        path,
                        folder: Ok(folder),
                        preprocess,
                        images: pack.entries.len() - skipped,
                        skipped,
                        bytes,
                    }
                }
                Err(why) => PackInfo {
                    path,
                    folder: Err(why),
                    preprocess: String::new(),
                    images: 0,
                    skipped: 0,
                    bytes,
                },
            };
            out.push(info);
        }
        Ok(out)
    }

    /// Removes every pack (and any temporary file left by an interrupted write); returns how
    /// many files and bytes were removed. Nothing else in the folder is touched.
    ///
    /// # Errors
    /// When the folder cannot be listed or a pack cannot be removed.
    pub fn clear(&self) -> std::io::Result<(usize, u64)> {
        let (mut files, mut bytes) = (0, 0);
        let mut paths = self.packs()?;
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".deepcat-pack-") && name.ends_with(".tmp") {
                    paths.push(entry.path());
                }
            }
        }
        for path in paths {
            bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path)?;
            files += 1;
        }
        Ok((files, bytes))
    }

    /// The pack files in the folder, sorted; none when the folder does not exist.
    fn packs(&self) -> std::io::Result<Vec<PathBuf>> {
        let dir = match std::fs::read_dir(&self.dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut paths: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == EXTENSION) && p.is_file())
            .collect();
        paths.sort();
        Ok(paths)
    }
}

impl Pack {
    /// A pack that remembers nothing.
    pub fn empty(features: usize) -> Self {
        Pack {
            file: None,
            features,
            entries: HashMap::new(),
        }
    }

    /// Files the pack remembers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pack remembers no file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack remembers exactly these files (below its folder), and no others.
    pub fn holds_exactly<'p>(&self, files: impl ExactSizeIterator<Item = &'p Path>) -> bool {
        files.len() == self.entries.len()
            && files
                .into_iter()
                .all(|f| self.entries.contains_key(&path_bytes(f)))
    }

    /// What the pack remembers of `file` (its path below the folder) with fingerprint
    /// `print`: where its row lies and its CRC-32, or why it is not usable; `None` when the
    /// pack does not have it or the file changed. The bytes are not read here:
    /// [`PackedRows`](super::stream::PackedRows) checks them on every read.
    pub fn lookup(&self, file: &Path, print: Fingerprint) -> Option<Result<(u64, u32), String>> {
        match self.entries.get(&path_bytes(file))? {
            (stored, _) if *stored != print => None,
            (_, Stored::Pixels { offset, crc }) => Some(Ok((*offset, *crc))),
            (_, Stored::Skipped(reason)) => Some(Err(reason.clone())),
        }
    }

    /// Another handle on the pack's file, if it has one.
    pub fn file(&self) -> Option<File> {
        self.file.as_ref()?.try_clone().ok()
    }

    /// The cached outcome of `file` (its path below the folder) with fingerprint `print`: its
    /// bytes written into `row` (`Some(Ok)`), why it is not usable (`Some(Err)`), or `None`
    /// when the pack does not have it, the file changed, or the stored bytes fail their check.
    pub fn read(
        &self,
        file: &Path,
        print: Fingerprint,
        row: &mut [u8],
    ) -> Option<Result<(), String>> {
        let (stored_print, stored) = self.entries.get(&path_bytes(file))?;
        if *stored_print != print {
            return None;
        }
        match stored {
            Stored::Skipped(reason) => Some(Err(reason.clone())),
            Stored::Pixels { offset, crc } => {
                if row.len() != self.features {
                    return None;
                }
                read_at(self.file.as_ref()?, *offset, row).ok()?;
                (crc32fast::hash(row) == *crc).then_some(Ok(()))
            }
        }
    }
}

/// Replaces what is not a letter, digit, `-` or `_` (pack names are for people to recognise).
fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().into_owned().into_bytes()
    }
}

fn bytes_path(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

/// What names a pack: deepcat's version, the folder and the preprocessing.
fn key_bytes(folder: &Path, pre: &Preprocess) -> Vec<u8> {
    let mut key = Vec::new();
    put_bytes(&mut key, env!("CARGO_PKG_VERSION").as_bytes());
    put_bytes(&mut key, &path_bytes(folder));
    put_bytes(&mut key, describe(pre).as_bytes());
    key
}

/// The preprocessing in words, as a pack records it.
fn describe(pre: &Preprocess) -> String {
    format!(
        "{}px {} orientation:{}",
        pre.size,
        pre.filter.name(),
        if pre.exif_orientation {
            "exif"
        } else {
            "stored"
        }
    )
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Where a [`PackWriter`] writes: a temporary file renamed over the pack when done, or an
/// unnamed file that vanishes when closed (streaming without a usable cache).
enum Target {
    Named {
        tmp: tempfile::NamedTempFile,
        path: PathBuf,
        cache: Cache,
    },
    Anonymous,
}

/// A pack written one image at a time, so that memory holds only its index.
///
/// Layout: the head (`MAGIC`, key length and key, features), the rows, the index, the index's
/// length, and a CRC-32 of the head, the index and its length. Index entries: path length and
/// path, size, modification and status-change times, kind (0: a row, with its offset after
/// the head and its CRC-32; 1: skipped, with the reason). The index comes last because it is
/// only known when every image has been seen.
pub struct PackWriter {
    out: BufWriter<File>,
    target: Target,
    head: Vec<u8>,
    index: Vec<u8>,
    offset: u64,
    features: usize,
}

impl PackWriter {
    /// An unnamed pack in the system's temporary folder, removed when its file is closed.
    ///
    /// # Errors
    /// When no temporary file can be made.
    pub fn anonymous(pre: &Preprocess) -> std::io::Result<Self> {
        PackWriter::start(Target::Anonymous, Path::new(""), pre)
    }

    fn start(target: Target, folder: &Path, pre: &Preprocess) -> std::io::Result<Self> {
        let file = match &target {
            Target::Named { tmp, .. } => tmp.as_file().try_clone()?,
            Target::Anonymous => tempfile::tempfile()?,
        };
        let mut head = MAGIC.to_vec();
        put_bytes(&mut head, &key_bytes(folder, pre));
        head.extend_from_slice(&(pre.features() as u64).to_le_bytes());
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&head)?;
        Ok(PackWriter {
            out,
            target,
            head,
            index: Vec::new(),
            offset: 0,
            features: pre.features(),
        })
    }

    /// Adds one file (its path below the folder): its row, or why it was skipped. Returns
    /// where the row lies in the file and its CRC-32.
    ///
    /// # Errors
    /// The write error; a row of the wrong length is refused as invalid input.
    pub fn push(
        &mut self,
        path: &Path,
        print: Fingerprint,
        outcome: Outcome<'_>,
    ) -> std::io::Result<Option<(u64, u32)>> {
        let index = &mut self.index;
        put_bytes(index, &path_bytes(path));
        index.extend_from_slice(&print.len.to_le_bytes());
        index.extend_from_slice(&print.modified_ns.to_le_bytes());
        index.extend_from_slice(&print.changed_ns.to_le_bytes());
        match outcome {
            Ok(row) => {
                if row.len() != self.features {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a row of the wrong length for this pack",
                    ));
                }
                let crc = crc32fast::hash(row);
                index.push(0);
                index.extend_from_slice(&self.offset.to_le_bytes());
                index.extend_from_slice(&crc.to_le_bytes());
                self.out.write_all(row)?;
                let at = self.head.len() as u64 + self.offset;
                self.offset += row.len() as u64;
                Ok(Some((at, crc)))
            }
            Err(reason) => {
                index.push(1);
                put_bytes(index, reason.as_bytes());
                Ok(None)
            }
        }
    }

    /// Writes the index and puts the pack in place (renamed over the old one, for a named
    /// pack); returns the file, open for reading rows.
    ///
    /// # Errors
    /// The write or rename error; the old pack, if any, is then left as it was.
    pub fn persist(mut self) -> std::io::Result<File> {
        let len = (self.index.len() as u64).to_le_bytes();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.head);
        hasher.update(&self.index);
        hasher.update(&len);
        self.out.write_all(&self.index)?;
        self.out.write_all(&len)?;
        self.out.write_all(&hasher.finalize().to_le_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        match self.target {
            Target::Named { tmp, path, cache } => {
                drop(file);
                let file = tmp.persist(&path).map_err(|e| e.error)?;
                cache.prune();
                Ok(file)
            }
            Target::Anonymous => Ok(file),
        }
    }
}

/// Reads a pack's header and index (not its rows); with `expect`, only a pack of that folder
/// and preprocessing is accepted.
fn read_pack(path: &Path, expect: Option<(&Path, &Preprocess)>) -> Result<Pack, String> {
    read_pack_and_key(path, expect).map(|(pack, _)| pack)
}

/// [`read_pack`], and the key that names the pack.
fn read_pack_and_key(
    path: &Path,
    expect: Option<(&Path, &Preprocess)>,
) -> Result<(Pack, Vec<u8>), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    // Reads `n` bytes at `at`, within the file.
    let take = |at: u64, n: u64| -> Result<Vec<u8>, String> {
        if at.checked_add(n).is_none_or(|end| end > file_len) || n > MAX_INDEX {
            return Err("truncated".into());
        }
        let mut out = vec![0; n as usize];
        read_at(&file, at, &mut out).map_err(|_| "truncated".to_string())?;
        Ok(out)
    };
    let start = take(0, MAGIC.len() as u64 + 8)?;
    if &start[..MAGIC.len()] != MAGIC {
        return Err("not a pack of this version of deepcat's cache".into());
    }
    let key_len = u64_at(&start, MAGIC.len());
    let key = take(start.len() as u64, key_len)?;
    let head_len = start.len() as u64 + key_len + 8;
    let features = u64_at(&take(head_len - 8, 8)?, 0);
    let tail_at = file_len.checked_sub(12).ok_or("truncated")?;
    let tail = take(tail_at, 12)?;
    let index_len = u64_at(&tail, 0);
    let index_at = tail_at
        .checked_sub(index_len)
        .filter(|&at| at >= head_len)
        .ok_or("truncated")?;
    let index = take(index_at, index_len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&start);
    hasher.update(&key);
    hasher.update(&features.to_le_bytes());
    hasher.update(&index);
    hasher.update(&tail[..8]);
    if hasher.finalize().to_le_bytes() != tail[8..] {
        return Err("index checksum does not match".into());
    }
    if let Some((folder, pre)) = expect
        && (key != key_bytes(folder, pre) || features != pre.features() as u64)
    {
        return Err("made for another folder, preprocessing or deepcat version".into());
    }
    let features = usize::try_from(features).map_err(|_| "bad feature count")?;
    let entries = parse_index(&index, head_len, features, index_at).ok_or("bad index")?;
    let pack = Pack {
        file: Some(file),
        features,
        entries,
    };
    Ok((pack, key))
}

/// The folder and preprocessing a pack names, and its index.
fn read_header(path: &Path) -> Result<(PathBuf, String, Pack), String> {
    let (pack, key) = read_pack_and_key(path, None)?;
    // The key is (version, folder, preprocessing), each length-prefixed.
    let mut fields = Vec::new();
    let mut at = 0;
    while at + 8 <= key.len() {
        let n = u64_at(&key, at) as usize;
        let end = (at + 8)
            .checked_add(n)
            .filter(|&e| e <= key.len())
            .ok_or("bad key")?;
        fields.push(key[at + 8..end].to_vec());
        at = end;
    }
    match fields.as_slice() {
        [version, folder, pre] => {
            let version = String::from_utf8_lossy(version);
            let pre = String::from_utf8_lossy(pre);
            Ok((
                bytes_path(folder),
                format!("{pre}, deepcat {version}"),
                pack,
            ))
        }
        _ => Err("bad key".into()),
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        word.copy_from_slice(s);
    }
    u64::from_le_bytes(word)
}

/// The index's entries; `None` if it is malformed or points past the end of the file.
fn parse_index(
    mut b: &[u8],
    rows_start: u64,
    features: usize,
    rows_end: u64,
) -> Option<HashMap<Vec<u8>, (Fingerprint, Stored)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn word(b: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
    }
    let mut entries = HashMap::new();
    while !b.is_empty() {
        let n = usize::try_from(word(&mut b)?).ok()?;
        let path = take(&mut b, n)?.to_vec();
        let print = Fingerprint {
            len: word(&mut b)?,
            modified_ns: word(&mut b)?,
            changed_ns: word(&mut b)?,
        };
        let stored = match take(&mut b, 1)?[0] {
            0 => {
                let offset = rows_start.checked_add(word(&mut b)?)?;
                let crc = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?);
                // A row past the end of the rows: a damaged pack.
                if offset.checked_add(features as u64)? > rows_end {
                    return None;
                }
                Stored::Pixels { offset, crc }
            }
            1 => {
                let n = usize::try_from(word(&mut b)?).ok()?;
                Stored::Skipped(String::from_utf8_lossy(take(&mut b, n)?).into_owned())
            }
            _ => return None,
        };
        entries.insert(path, (print, stored));
    }
    Some(entries)
}

#[cfg(unix)]
pub(crate) fn read_at(file: &File, offset: u64, row: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(row, offset)
}

/// Elsewhere there is no positioned read that threads can share: every lookup misses and
/// images are decoded (correct, only slower).
#[cfg(not(unix))]
pub(crate) fn read_at(_file: &File, _offset: u64, _row: &mut [u8]) -> std::io::Result<()> {
    Err(std::io::Error::other("positioned reads need a Unix system"))
}
