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
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every pack.
const MAGIC: &[u8; 16] = b"deepcat-pack\0\0\0\x02";
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
        std::fs::create_dir_all(&self.dir)?;
        let path = self.pack_path(folder, pre);
        let mut tmp = tempfile::Builder::new()
            .prefix(".deepcat-pack-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        write_pack(tmp.as_file_mut(), folder, pre, files)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        self.prune();
        Ok(())
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

/// Layout: `MAGIC`, key length and key, features, index length, index, CRC-32 of everything
/// before it, then the rows. Index entries: path length and path, size, modification time,
/// kind (0: a row, with its offset and CRC-32; 1: skipped, with the reason).
fn write_pack(
    file: &mut File,
    folder: &Path,
    pre: &Preprocess,
    files: &[(&Path, Fingerprint, Outcome<'_>)],
) -> std::io::Result<()> {
    let mut head = MAGIC.to_vec();
    put_bytes(&mut head, &key_bytes(folder, pre));
    head.extend_from_slice(&(pre.features() as u64).to_le_bytes());
    let mut index = Vec::new();
    let mut offset = 0u64;
    for (path, print, outcome) in files {
        put_bytes(&mut index, &path_bytes(path));
        index.extend_from_slice(&print.len.to_le_bytes());
        index.extend_from_slice(&print.modified_ns.to_le_bytes());
        index.extend_from_slice(&print.changed_ns.to_le_bytes());
        match outcome {
            Ok(row) => {
                index.push(0);
                index.extend_from_slice(&offset.to_le_bytes());
                index.extend_from_slice(&crc32fast::hash(row).to_le_bytes());
                offset += row.len() as u64;
            }
            Err(reason) => {
                index.push(1);
                put_bytes(&mut index, reason.as_bytes());
            }
        }
    }
    head.extend_from_slice(&(index.len() as u64).to_le_bytes());
    head.extend_from_slice(&index);
    let crc = crc32fast::hash(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    let rows_start = head.len() as u64;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&head)?;
    for (_, _, outcome) in files {
        if let Ok(row) = outcome {
            out.write_all(row)?;
        }
    }
    out.flush()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    debug_assert_eq!(file.metadata()?.len(), rows_start + offset);
    // The rows' offsets are relative to the end of the header; nothing else to fix up.
    Ok(())
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
    let mut reader = std::io::BufReader::new(&file);
    let mut head = Vec::new();
    let mut take = |n: u64, head: &mut Vec<u8>| -> Result<(), String> {
        if n > file_len.saturating_sub(head.len() as u64) {
            return Err("truncated".into());
        }
        let start = head.len();
        head.resize(start + n as usize, 0);
        reader
            .read_exact(&mut head[start..])
            .map_err(|_| "truncated".to_string())
    };
    take(MAGIC.len() as u64 + 8, &mut head)?;
    if &head[..MAGIC.len()] != MAGIC {
        return Err("not a pack of this version of deepcat's cache".into());
    }
    let key_len = u64_at(&head, MAGIC.len());
    take(key_len + 16, &mut head)?;
    let key = head[MAGIC.len() + 8..MAGIC.len() + 8 + key_len as usize].to_vec();
    let after_key = MAGIC.len() + 8 + key_len as usize;
    let features = u64_at(&head, after_key);
    let index_len = u64_at(&head, after_key + 8);
    if index_len > MAX_INDEX {
        return Err("index too large".into());
    }
    take(index_len + 4, &mut head)?;
    let crc_at = head.len() - 4;
    let crc = u32::from_le_bytes(head[crc_at..].try_into().map_err(|_| "truncated")?);
    if crc32fast::hash(&head[..crc_at]) != crc {
        return Err("index checksum does not match".into());
    }
    if let Some((folder, pre)) = expect
        && (key != key_bytes(folder, pre) || features != pre.features() as u64)
    {
        return Err("made for another folder, preprocessing or deepcat version".into());
    }
    let rows_start = head.len() as u64;
    let features = usize::try_from(features).map_err(|_| "bad feature count")?;
    let index = &head[after_key + 16..crc_at];
    let entries = parse_index(index, rows_start, features, file_len).ok_or("bad index")?;
    drop(reader);
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
    file_len: u64,
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
                // A row past the end of the file: a truncated pack.
                if offset.checked_add(features as u64)? > file_len {
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
fn read_at(file: &File, offset: u64, row: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(row, offset)
}

/// Elsewhere there is no positioned read that threads can share: every lookup misses and
/// images are decoded (correct, only slower).
#[cfg(not(unix))]
fn read_at(_file: &File, _offset: u64, _row: &mut [u8]) -> std::io::Result<()> {
    Err(std::io::Error::other("positioned reads need a Unix system"))
}
