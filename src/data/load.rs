//! Decoding many files in parallel into the rows of datasets, through the decoded cache when
//! there is one.

use super::cache::{Cache, Fingerprint, Outcome, Pack};
use super::{Dataset, LabelledFile, Preprocess, SkippedFile, load_into};
use fast_image_resize::Resizer;
use ndarray::{Array2, Axis, s};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

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
    let mut report = CacheReport::default();
    // The folder's canonical path names its pack, whatever the working directory.
    let (spot, pack) = match cache.map(|c| (c, std::fs::canonicalize(c.root))) {
        Some((c, Ok(folder))) => {
            let pack = c.cache.open(&folder, pre);
            (Some((c, folder)), pack)
        }
        Some((c, Err(e))) => {
            report.warning = Some(format!("cannot cache {}: {e}", c.root.display()));
            (None, Pack::empty(pre.features()))
        }
        None => (None, Pack::empty(pre.features())),
    };
    // Each file's path below the folder: its name in the pack.
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            spot.as_ref()
                .and_then(|(c, _)| f.path.strip_prefix(c.root).ok())
                .unwrap_or(&f.path)
                .to_path_buf()
        })
        .collect();
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
            report.warning = Some(format!(
                "cannot write the image cache in {} ({e}); going on without it",
                c.cache.dir().display()
            ));
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
