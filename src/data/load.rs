//! Decoding many files in parallel into the rows of datasets, through the decoded cache when
//! there is one.

use super::cache::{Cache, Fingerprint, Outcome, Pack, PackWriter};
use super::stream::{PackedRows, Streamed};
use super::{Dataset, LabelledFile, Preprocess, SkippedFile, load_into};
use fast_image_resize::Resizer;
use ndarray::{Array2, Axis, s};
use rayon::prelude::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A cache and the folder the files being loaded are under.
#[derive(Debug, Clone, Copy)]
pub struct CacheSpot<'a> {
    /// The cache.
    pub cache: &'a Cache,
    /// The folder as the files' paths start (as the user gave it).
    pub root: &'a Path,
}

/// What the cache did during a load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheReport {
    /// Files whose outcome came from the cache.
    pub hits: usize,
    /// Files decoded (not in the cache, changed, or failing their check).
    pub decoded: usize,
    /// Why the cache could not be used or written, if it could not.
    pub warning: Option<String>,
}

impl CacheReport {
    /// Adds another load's counts (keeping the first warning).
    pub fn add(&mut self, other: CacheReport) {
        self.hits += other.hits;
        self.decoded += other.decoded;
        if self.warning.is_none() {
            self.warning = other.warning;
        }
    }
}

/// How one file was loaded.
struct Loaded {
    outcome: Result<(), String>,
    print: Option<Fingerprint>,
    hit: bool,
}

/// Decodes the files of every part into one dataset per part, in parallel, taking rows from
/// `cache` where it has them and writing its pack again when anything was decoded. Files that
/// cannot be used are left out and returned as [`SkippedFile`]s, in input order.
///
/// Rows are written in place into preallocated matrices, so memory peaks at the matrices
/// themselves plus one image per thread.
pub fn load_parts(
    parts: &[&[LabelledFile]],
    pre: &Preprocess,
    cache: Option<CacheSpot<'_>>,
) -> (Vec<Dataset>, Vec<SkippedFile>, CacheReport) {
    let mut arrays: Vec<Array2<u8>> = parts
        .iter()
        .map(|p| Array2::zeros((p.len(), pre.features())))
        .collect();
    let files: Vec<&LabelledFile> = parts.iter().flat_map(|p| p.iter()).collect();
    let (mut report, spot, pack) = open_pack(cache, pre);
    let relative = names_in_pack(&files, spot.as_ref());
    let loaded: Vec<Loaded> = rows_mut(&mut arrays)
        .into_par_iter()
        .zip(files.par_iter().zip(relative.par_iter()))
        .map_init(Resizer::new, |resizer, (row, (file, below))| {
            let pack = spot.is_some().then_some(&pack);
            load_file(file, below, pre, pack, resizer, row)
        })
        .collect();
    report.hits = loaded.iter().filter(|l| l.hit).count();
    report.decoded = loaded.len() - report.hits;
    if let Some((c, folder)) = &spot {
        let unchanged =
            report.decoded == 0 && pack.holds_exactly(relative.iter().map(PathBuf::as_path));
        if !unchanged && let Err(e) = write_pack(c.cache, folder, pre, &arrays, &relative, &loaded)
        {
            report.warning = Some(unwritable(c.cache, &e));
        }
    }
    let mut outcomes = loaded.into_iter().map(|l| l.outcome);
    let mut skipped = Vec::new();
    let datasets = parts
        .iter()
        .zip(arrays)
        .map(|(files, x)| {
            let outcomes: Vec<Result<(), String>> = outcomes.by_ref().take(files.len()).collect();
            compact(x, files, outcomes, &mut skipped)
        })
        .collect();
    (datasets, skipped, report)
}

/// The pack of the folder the files are under (empty when there is none or no cache), and
/// the cache with the folder's canonical path (which names its pack, whatever the working
/// directory).
fn open_pack<'c>(
    cache: Option<CacheSpot<'c>>,
    pre: &Preprocess,
) -> (CacheReport, Option<(CacheSpot<'c>, PathBuf)>, Pack) {
    let mut report = CacheReport::default();
    match cache.map(|c| (c, std::fs::canonicalize(c.root))) {
        Some((c, Ok(folder))) => {
            let pack = c.cache.open(&folder, pre);
            (report, Some((c, folder)), pack)
        }
        Some((c, Err(e))) => {
            report.warning = Some(format!("cannot cache {}: {e}", c.root.display()));
            (report, None, Pack::empty(pre.features()))
        }
        None => (report, None, Pack::empty(pre.features())),
    }
}

/// Each file's path below the folder: its name in the pack.
fn names_in_pack(files: &[&LabelledFile], spot: Option<&(CacheSpot<'_>, PathBuf)>) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| {
            spot.and_then(|(c, _)| f.path.strip_prefix(c.root).ok())
                .unwrap_or(&f.path)
                .to_path_buf()
        })
        .collect()
}

/// The warning for a cache that cannot be written.
fn unwritable(cache: &Cache, e: &std::io::Error) -> String {
    format!(
        "cannot write the image cache in {} ({e}); going on without it",
        cache.dir().display()
    )
}

/// Like [`load_parts`], but the images stay on disk: every part becomes a [`Streamed`] set
/// whose rows are read from a pack when needed. When the cache's pack already holds every
/// file unchanged, its rows are used where they are (nothing is read now); otherwise the
/// files are loaded `chunk` at a time (from the old pack, or decoded) and written to a new
/// pack, one image after another, so memory holds one chunk. Without a usable cache, the pack
/// is an unnamed temporary file, gone when the run ends.
///
/// # Errors
/// When no pack can be written at all (not even a temporary one).
pub fn stream_parts(
    parts: &[&[LabelledFile]],
    pre: &Preprocess,
    cache: Option<CacheSpot<'_>>,
    chunk: usize,
) -> std::io::Result<(Vec<Streamed>, Vec<SkippedFile>, CacheReport)> {
    let files: Vec<&LabelledFile> = parts.iter().flat_map(|p| p.iter()).collect();
    let (mut report, spot, pack) = open_pack(cache, pre);
    let relative = names_in_pack(&files, spot.as_ref());
    let prints: Vec<Option<Fingerprint>> = files
        .par_iter()
        .map(|f| spot.as_ref().and_then(|_| Fingerprint::of(&f.path)))
        .collect();
    let kept: Option<Vec<Result<(u64, u32), String>>> = pack
        .holds_exactly(relative.iter().map(PathBuf::as_path))
        .then(|| {
            relative
                .iter()
                .zip(&prints)
                .map(|(name, print)| pack.lookup(name, (*print)?))
                .collect()
        })
        .flatten();
    let (file, rows) = match (kept, pack.file()) {
        (Some(rows), Some(file)) if rows_check_out(&file, &rows, pre.features(), chunk) => {
            report.hits = files.len();
            (file, rows)
        }
        _ => {
            let mut writer = match spot.as_ref().map(|(c, folder)| c.cache.writer(folder, pre)) {
                Some(Ok(w)) => w,
                Some(Err(e)) => {
                    report.warning = spot.as_ref().map(|(c, _)| unwritable(c.cache, &e));
                    PackWriter::anonymous(pre)?
                }
                None => PackWriter::anonymous(pre)?,
            };
            let rows = fill_pack(
                &mut writer,
                &files,
                &relative,
                pre,
                &pack,
                spot.is_some(),
                chunk,
            )?;
            report.hits = rows.iter().filter(|(_, hit)| *hit).count();
            report.decoded = files.len() - report.hits;
            let rows = rows.into_iter().map(|(r, _)| r).collect();
            let file = match writer.persist() {
                Ok(file) => file,
                // The named pack could not be put in place: start again without the cache.
                Err(e) => {
                    let cache = spot.map(|(c, _)| c.cache);
                    let (sets, skipped, mut again) = stream_parts(parts, pre, None, chunk)?;
                    again.warning = cache.map(|c| unwritable(c, &e));
                    return Ok((sets, skipped, again));
                }
            };
            (file, rows)
        }
    };
    let (sets, skipped) = streamed_sets(parts, Arc::new(file), rows, pre, chunk);
    Ok((sets, skipped, report))
}

/// The parts as [`Streamed`] sets over the pack `file`, given each file's row in it (in the
/// parts' order) or why it could not be used.
fn streamed_sets(
    parts: &[&[LabelledFile]],
    file: Arc<File>,
    rows: Vec<Result<(u64, u32), String>>,
    pre: &Preprocess,
    chunk: usize,
) -> (Vec<Streamed>, Vec<SkippedFile>) {
    let mut outcomes = rows.into_iter();
    let mut skipped = Vec::new();
    let sets = parts
        .iter()
        .map(|part| {
            let mut set = Streamed {
                rows: PackedRows::new(file.clone(), Vec::new(), pre.features(), chunk),
                labels: Vec::new(),
                paths: Vec::new(),
            };
            let mut at = Vec::new();
            for (f, outcome) in part.iter().zip(outcomes.by_ref()) {
                match outcome {
                    Ok(row) => {
                        at.push(row);
                        set.labels.push(f.label);
                        set.paths.push(f.path.clone());
                    }
                    Err(reason) => skipped.push(SkippedFile {
                        path: f.path.clone(),
                        reason,
                    }),
                }
            }
            set.rows = PackedRows::new(file.clone(), at, pre.features(), chunk);
            set
        })
        .collect();
    (sets, skipped)
}

/// Whether every row of `rows` in `file` matches its CRC-32, read `chunk` rows at a time:
/// a pack is not trusted before training reads it.
fn rows_check_out(
    file: &std::fs::File,
    rows: &[Result<(u64, u32), String>],
    features: usize,
    chunk: usize,
) -> bool {
    let at: Vec<(u64, u32)> = rows.iter().filter_map(|r| r.clone().ok()).collect();
    let Ok(file) = file.try_clone() else {
        return false;
    };
    let packed = PackedRows::new(Arc::new(file), at, features, chunk);
    super::Images::Packed(&packed)
        .for_each_block(|_, _| Ok::<(), std::io::Error>(()))
        .is_ok()
}

/// Loads `files` `chunk` at a time (from `pack` where it has them unchanged, else decoded)
/// and adds each to `writer`: where each row went (or why the file was skipped), and whether
/// it came from the old pack.
#[allow(clippy::type_complexity)]
fn fill_pack(
    writer: &mut PackWriter,
    files: &[&LabelledFile],
    relative: &[PathBuf],
    pre: &Preprocess,
    pack: &Pack,
    cached: bool,
    chunk: usize,
) -> std::io::Result<Vec<(Result<(u64, u32), String>, bool)>> {
    let chunk = chunk.max(1);
    let mut block = Array2::<u8>::zeros((chunk.min(files.len()), pre.features()));
    let mut out = Vec::with_capacity(files.len());
    for (files, names) in files.chunks(chunk).zip(relative.chunks(chunk)) {
        let rows = block.axis_chunks_iter_mut(Axis(0), 1).into_par_iter();
        let loaded: Vec<Loaded> = rows
            .zip(files.par_iter().zip(names.par_iter()))
            .map_init(Resizer::new, |resizer, (mut row, (file, below))| {
                let row = row.as_slice_mut().unwrap_or_default();
                load_file(file, below, pre, cached.then_some(pack), resizer, row)
            })
            .collect();
        for ((l, name), row) in loaded.into_iter().zip(names).zip(block.rows()) {
            // A file without a fingerprint is written with one no file has: its row serves
            // this run, and the next one decodes it again.
            let print = l.print.unwrap_or(Fingerprint {
                len: u64::MAX,
                modified_ns: 0,
                changed_ns: 0,
            });
            let outcome: Outcome<'_> = match &l.outcome {
                Ok(()) => Ok(row.to_slice().unwrap_or_default()),
                Err(reason) => Err(reason.as_str()),
            };
            let at = writer.push(name, print, outcome)?;
            let result = match (at, l.outcome) {
                (Some(at), Ok(())) => Ok(at),
                (_, Err(reason)) => Err(reason),
                (None, Ok(())) => Err("not written to the pack".to_string()),
            };
            out.push((result, l.hit));
        }
    }
    Ok(out)
}

/// One file: from the pack when it has it unchanged, else decoded.
fn load_file(
    file: &LabelledFile,
    below: &Path,
    pre: &Preprocess,
    pack: Option<&Pack>,
    resizer: &mut Resizer,
    row: &mut [u8],
) -> Loaded {
    let print = pack.and_then(|_| Fingerprint::of(&file.path));
    if let (Some(pack), Some(print)) = (pack, print)
        && let Some(outcome) = pack.read(below, print, row)
    {
        return Loaded {
            outcome,
            print: Some(print),
            hit: true,
        };
    }
    let outcome = load_into(&file.path, pre, resizer, row);
    // A file that could not be read (no permission, an I/O error) says nothing about its
    // content, and `chmod` changes neither its size nor its modification time: without a
    // fingerprint it is left out of the pack, and tried again next time.
    let unreadable = matches!(&outcome, Err(why) if why.starts_with(UNREADABLE));
    Loaded {
        outcome,
        print: print.filter(|_| !unreadable),
        hit: false,
    }
}

/// How [`load_into`]'s reasons start when the file could not be read, as opposed to decoded.
const UNREADABLE: &str = "cannot read";

/// Every row of every array, in order, as mutable slices.
#[allow(
    clippy::expect_used,
    reason = "the rows of a matrix just made in standard layout are contiguous"
)]
fn rows_mut(arrays: &mut [Array2<u8>]) -> Vec<&mut [u8]> {
    arrays
        .iter_mut()
        .flat_map(|a| a.axis_iter_mut(Axis(0)))
        .map(|row| {
            row.into_slice()
                .expect("rows of a standard-layout matrix are contiguous")
        })
        .collect()
}

/// Writes the pack of `folder`: every file with a fingerprint, its row or why it was skipped.
fn write_pack(
    cache: &Cache,
    folder: &Path,
    pre: &Preprocess,
    arrays: &[Array2<u8>],
    relative: &[PathBuf],
    loaded: &[Loaded],
) -> std::io::Result<()> {
    let rows = arrays.iter().flat_map(|a| a.rows());
    let entries: Vec<(&Path, Fingerprint, Outcome<'_>)> = relative
        .iter()
        .zip(loaded)
        .zip(rows)
        .filter_map(|((path, l), row)| {
            let outcome = match &l.outcome {
                Ok(()) => Ok(row.to_slice()?),
                Err(reason) => Err(reason.as_str()),
            };
            Some((path.as_path(), l.print?, outcome))
        })
        .collect();
    cache.write(folder, pre, &entries)
}

/// The dataset of the usable rows of `x`: good rows moved up over skipped ones, in order; the
/// skipped files are added to `skipped`.
fn compact(
    mut x: Array2<u8>,
    files: &[LabelledFile],
    outcomes: Vec<Result<(), String>>,
    skipped: &mut Vec<SkippedFile>,
) -> Dataset {
    let mut kept = 0;
    let mut labels = Vec::with_capacity(files.len());
    let mut paths: Vec<PathBuf> = Vec::with_capacity(files.len());
    for (i, (file, outcome)) in files.iter().zip(outcomes).enumerate() {
        match outcome {
            Ok(()) => {
                if kept != i {
                    let (mut dst, src) = x.multi_slice_mut((s![kept, ..], s![i, ..]));
                    dst.assign(&src);
                }
                kept += 1;
                labels.push(file.label);
                paths.push(file.path.clone());
            }
            Err(reason) => skipped.push(SkippedFile {
                path: file.path.clone(),
                reason,
            }),
        }
    }
    if kept < files.len() {
        x = x.slice_move(s![..kept, ..]);
    }
    Dataset { x, labels, paths }
}
