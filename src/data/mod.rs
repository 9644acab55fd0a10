//! From folders of photos to data matrices: scan class folders, split, decode + resize.
//!
//! A [`Dataset`] holds `x (examples, features)`, one image per row as bytes, and a class index
//! per row. Files that are not usable images are skipped and reported
//! ([`SkippedFile`]); only a set-up that cannot work (no folder, one class, a class with no
//! images) is an error. Augmentation, applied to mini-batches during training, is in
//! [`augment`].

pub mod augment;
pub mod cache;
mod image;
mod load;
pub mod memory;
mod scan;
mod split;
pub mod stream;

pub use cache::Cache;
pub use image::{
    CHANNELS, MAX_PIXELS, Preprocess, ResizeFilter, decode_image_bytes, decode_photo, load_bytes,
    load_dataset, load_into, load_one,
};
pub use load::{CacheReport, CacheSpot, load_parts, stream_parts};
pub use scan::{ClassFolders, files_below, scan_classes, scan_known_classes};
pub use split::{held_out_count, split_off};
pub use stream::{Examples, Images, PackedRows, Streamed};

use crate::{Error, Result, Stream, rng_for};
use ndarray::Array2;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A file and the class (index) its folder names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledFile {
    /// Where the file is.
    pub path: PathBuf,
    /// Index into the class list.
    pub label: usize,
}

/// A file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedFile {
    /// Where the file is.
    pub path: PathBuf,
    /// Why it was skipped, e.g. "not an image (unrecognised content)".
    pub reason: String,
}

/// Decoded images and their labels.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// `(examples, features)`: one flattened RGB image per row (HWC order), as bytes; the
    /// network reads each as `v / 255`.
    pub x: Array2<u8>,
    /// Class index of each row.
    pub labels: Vec<usize>,
    /// Source file of each row.
    pub paths: Vec<PathBuf>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Examples per class, for `classes` classes.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// Where the data comes from and how it is split.
#[derive(Debug, Clone)]
pub struct SplitSpec {
    /// One folder per class.
    pub data_dir: PathBuf,
    /// A separate test folder with the same class folders; `None` to split `data_dir`.
    pub test_dir: Option<PathBuf>,
    /// Fraction of `data_dir` held out for testing when there is no `test_dir` (0.2).
    pub test_split: f64,
    /// Fraction of the training part held out for validation (0 for none).
    pub val_split: f64,
    /// How images become rows.
    pub preprocess: Preprocess,
    /// Seed of the shuffle.
    pub seed: u64,
    /// The largest fraction of files that may turn out unusable before loading fails rather
    /// than train on what is left ([`DEFAULT_MAX_SKIPPED`]).
    pub max_skipped: f64,
    /// The decoded cache to read and fill, if any.
    pub cache: Option<Cache>,
}

/// Default [`SplitSpec::max_skipped`]: more than one file in ten unusable means the folder is
/// not what the user thinks it is.
pub const DEFAULT_MAX_SKIPPED: f64 = 0.1;

/// The loaded splits: in memory ([`Dataset`]s, from [`load_splits`]) or streamed from disk
/// ([`Streamed`] sets, from [`SplitFiles::stream`]).
#[derive(Debug)]
pub struct Splits<S = Dataset> {
    /// Class names, sorted (label = index).
    pub classes: Vec<String>,
    /// The training examples.
    pub train: S,
    /// Validation examples (taken from the training part), if asked for.
    pub val: Option<S>,
    /// Test examples, unless there are none.
    pub test: Option<S>,
    /// Every file that could not be used.
    pub skipped: Vec<SkippedFile>,
    /// Wall-clock seconds spent scanning and decoding.
    pub load_seconds: f64,
    /// What the decoded cache did.
    pub cache: CacheReport,
}

/// The files of each split, before any is decoded: what [`plan_splits`] finds.
#[derive(Debug)]
pub struct SplitFiles {
    classes: Vec<String>,
    train: Vec<LabelledFile>,
    val: Vec<LabelledFile>,
    test: Vec<LabelledFile>,
    skipped: Vec<SkippedFile>,
    started: Instant,
}

/// Scans, splits and decodes: the document's data preparation, in memory.
///
/// # Errors
/// As [`plan_splits`] and [`SplitFiles::load`].
pub fn load_splits(spec: &SplitSpec) -> Result<Splits> {
    plan_splits(spec)?.load(spec)
}

/// Scans the folders and splits the files (as the document does, on file paths, before
/// decoding: a file that turns out not to be an image is then skipped from whichever part it
/// fell in).
///
/// # Errors
/// [`Error::Data`] for an unusable folder, a `test_dir` without every class, or no training
/// file left after holding out the test and validation parts.
pub fn plan_splits(spec: &SplitSpec) -> Result<SplitFiles> {
    let started = Instant::now();
    let folders = scan_classes(&spec.data_dir)?;
    let classes = folders.classes;
    let mut skipped = folders.skipped;
    let mut rng = rng_for(spec.seed, Stream::Split);
    let mut train = folders.files;
    let test = match &spec.test_dir {
        Some(dir) => {
            let test = scan_known_classes(dir, &classes)?;
            let missing: Vec<&str> = (0..classes.len())
                .filter(|&c| !test.files.iter().any(|f| f.label == c))
                .map(|c| classes[c].as_str())
                .collect();
            if !missing.is_empty() {
                return Err(Error::Data(format!(
                    "test folder {} has no images for class(es) {}; it needs the same class \
                     folders as {}",
                    dir.display(),
                    missing.join(", "),
                    spec.data_dir.display()
                )));
            }
            skipped.extend(test.skipped);
            test.files
        }
        None => split_off(&mut train, spec.test_split, &mut rng),
    };
    let val = if spec.val_split > 0.0 {
        split_off(&mut train, spec.val_split, &mut rng)
    } else {
        Vec::new()
    };
    if train.is_empty() {
        return Err(Error::Data(format!(
            "no training files are left in {} after holding out test and validation parts",
            spec.data_dir.display()
        )));
    }
    Ok(SplitFiles {
        classes,
        train,
        val,
        test,
        skipped,
        started,
    })
}

impl SplitFiles {
    /// The classes and every split's files with their sizes in bytes, as text: what the
    /// processes of a shared run compare, to refuse different data.
    pub fn listing(&self) -> String {
        let mut text = format!("{:?}\n", self.classes);
        for (name, part) in [
            ("train", &self.train),
            ("val", &self.val),
            ("test", &self.test),
        ] {
            text.push_str(name);
            for f in part {
                let size = std::fs::metadata(&f.path).map_or(0, |m| m.len());
                text.push_str(&format!("\n{} {} {size}", f.label, f.path.display()));
            }
            text.push('\n');
        }
        text
    }

    /// Files to decode, in all splits.
    pub fn files(&self) -> usize {
        self.train.len() + self.val.len() + self.test.len()
    }

    /// Decodes every split into memory.
    ///
    /// # Errors
    /// [`Error::Config`] if the images would not fit in the memory available (checked before
    /// anything is allocated); otherwise as [`SplitFiles::stream`].
    pub fn load(self, spec: &SplitSpec) -> Result<Splits> {
        check_memory(self.files(), &spec.preprocess)?;
        self.finish(spec, |parts, root, cache| {
            let spot = cache.map(|cache| CacheSpot { cache, root });
            Ok(load_parts(parts, &spec.preprocess, spot))
        })
    }

    /// Loads every split as [`Streamed`] sets: the images go to the cache's pack (or an
    /// unnamed temporary one), `chunk` at a time, and stay there.
    ///
    /// # Errors
    /// [`Error::Data`] as [`load_splits`], or [`Error::Io`] when no pack can be written.
    pub fn stream(self, spec: &SplitSpec, chunk: usize) -> Result<Splits<Streamed>> {
        self.check_disk(spec)?;
        self.finish(spec, |parts, root, cache| {
            let spot = cache.map(|cache| CacheSpot { cache, root });
            stream_parts(parts, &spec.preprocess, spot, chunk).map_err(|e| {
                Error::io(
                    "cannot write the decoded images to a pack to stream them from",
                    e,
                )
            })
        })
    }

    /// Refuses, before anything is decoded, images that do not fit the free space where their
    /// pack would be written (the cache folder, or the temporary folder without a cache).
    fn check_disk(&self, spec: &SplitSpec) -> Result<()> {
        let needed = self.files() as u128 * spec.preprocess.features() as u128;
        let dir = spec
            .cache
            .as_ref()
            .map_or_else(std::env::temp_dir, |c| c.dir().to_path_buf());
        match memory::free_disk_bytes(&dir) {
            Some(free) if needed > u128::from(free) => {
                let gib = |b: f64| b / f64::from(1u32 << 30);
                Err(Error::Config(format!(
                    "{} images at --size {} need {:.1} GiB: more than the memory budget, and \
                     more than the {:.1} GiB free in {} to stream them from; use a smaller \
                     --size, or free space (--cache DIR puts the cache elsewhere)",
                    self.files(),
                    spec.preprocess.size,
                    gib(needed as f64),
                    gib(free as f64),
                    dir.display()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Loads the splits with `load` (one load, and one pack, per folder: the test part shares
    /// the training folder's unless it has its own), then checks what came out.
    fn finish<S: Examples>(
        self,
        spec: &SplitSpec,
        mut load: impl FnMut(
            &[&[LabelledFile]],
            &Path,
            Option<&Cache>,
        ) -> Result<(Vec<S>, Vec<SkippedFile>, CacheReport)>,
    ) -> Result<Splits<S>> {
        let SplitFiles {
            classes,
            train: train_files,
            val: val_files,
            test: test_files,
            mut skipped,
            started,
        } = self;
        let candidates = train_files.len() + val_files.len() + test_files.len() + skipped.len();
        let mut report = CacheReport::default();
        // One set per part, always.
        let mut load = |parts: &[&[LabelledFile]], root: &Path| -> Result<Vec<S>> {
            let (sets, s, r) = load(parts, root, spec.cache.as_ref())?;
            skipped.extend(s);
            report.add(r);
            Ok(sets)
        };
        let sets = match &spec.test_dir {
            None => load(&[&train_files, &val_files, &test_files], &spec.data_dir)?,
            Some(test_dir) => {
                let mut sets = load(&[&train_files, &val_files], &spec.data_dir)?;
                sets.extend(load(&[&test_files], test_dir)?);
                sets
            }
        };
        let Ok::<[S; 3], _>([train, val, test]) = sets.try_into() else {
            return Err(Error::Data("a split went missing while loading".into()));
        };
        let counts = train.counts_per_class(classes.len());
        if let Some(empty) = counts.iter().position(|&c| c == 0) {
            let why = skipped
                .iter()
                .find(|s| {
                    train_files
                        .iter()
                        .any(|f| f.path == s.path && f.label == empty)
                })
                .map(|s| format!(" (e.g. {}: {})", s.path.display(), s.reason))
                .unwrap_or_default();
            return Err(Error::Data(format!(
                "class {:?} has no usable training images{why}; add images to {} or remove the folder",
                classes[empty],
                spec.data_dir.join(&classes[empty]).display()
            )));
        }
        check_skipped(&skipped, candidates, spec.max_skipped)?;
        let nonempty = |d: S| (d.count() > 0).then_some(d);
        Ok(Splits {
            classes,
            train,
            val: nonempty(val),
            test: nonempty(test),
            skipped,
            load_seconds: started.elapsed().as_secs_f64(),
            cache: report,
        })
    }
}

/// Fails when more than `max_skipped` of `candidates` files were unusable.
fn check_skipped(skipped: &[SkippedFile], candidates: usize, max_skipped: f64) -> Result<()> {
    let fraction = skipped.len() as f64 / candidates.max(1) as f64;
    if fraction <= max_skipped {
        return Ok(());
    }
    let example = skipped
        .first()
        .map(|s| format!(" (e.g. {}: {})", s.path.display(), s.reason))
        .unwrap_or_default();
    Err(Error::Data(format!(
        "{} of {candidates} files ({:.0}%) could not be used{example}, more than --max-skipped \
         {max_skipped} allows; fix or remove them, or raise --max-skipped to go on without them",
        skipped.len(),
        100.0 * fraction
    )))
}

/// Refuses, before anything is allocated, a data matrix larger than the memory available.
fn check_memory(images: usize, pre: &Preprocess) -> Result<()> {
    let needed = images as u128 * pre.features() as u128;
    match memory::available_memory_bytes() {
        Some(available) if needed > u128::from(available) => {
            let gib = |b: f64| b / f64::from(1u32 << 30);
            Err(Error::Config(format!(
                "{images} images at --size {} need {:.1} GiB, but only {:.1} GiB of \
                 memory is available; use a smaller --size",
                pre.size,
                gib(needed as f64),
                gib(available as f64)
            )))
        }
        _ => Ok(()),
    }
}

/// Every image under `root`'s class folders (named after `classes`), unsplit, handed to
/// `visit` in datasets of at most `chunk` images, in order: the data a saved model is
/// evaluated on, in bounded memory however large the folder. When one chunk holds them all,
/// this is [`load_labelled`] (and fills the cache); otherwise each chunk is decoded on its
/// own, without the cache (a pack is written whole, and the images do not fit at once).
///
/// # Errors
/// As [`load_labelled`] (but never for memory), and whatever `visit` returns.
pub fn visit_labelled(
    root: &Path,
    classes: &[String],
    pre: &Preprocess,
    max_skipped: f64,
    cache: Option<&Cache>,
    chunk: usize,
    mut visit: impl FnMut(Dataset) -> Result<()>,
) -> Result<(Vec<SkippedFile>, CacheReport)> {
    let found = scan_known_classes(root, classes)?;
    if found.files.len() <= chunk {
        let (data, skipped, report) = load_found(found, root, pre, max_skipped, cache)?;
        visit(data)?;
        return Ok((skipped, report));
    }
    let candidates = found.files.len() + found.skipped.len();
    let mut skipped = found.skipped;
    let usable = visit_chunks(&found.files, pre, chunk, &mut skipped, &mut visit)?;
    if usable == 0 {
        return Err(no_usable_image(found.files.len(), root));
    }
    check_skipped(&skipped, candidates, max_skipped)?;
    Ok((skipped, CacheReport::default()))
}

/// Decodes `files` `chunk` at a time, without the cache, handing each non-empty dataset to
/// `visit` and adding the files it could not use to `skipped`: how many images it visited.
fn visit_chunks(
    files: &[LabelledFile],
    pre: &Preprocess,
    chunk: usize,
    skipped: &mut Vec<SkippedFile>,
    visit: &mut impl FnMut(Dataset) -> Result<()>,
) -> Result<usize> {
    let mut usable = 0;
    for part in files.chunks(chunk.max(1)) {
        let (mut sets, s, _) = load_parts(&[part], pre, None);
        skipped.extend(s);
        let data = sets.pop().unwrap_or_default();
        usable += data.len();
        if !data.is_empty() {
            visit(data)?;
        }
    }
    Ok(usable)
}

/// [`visit_labelled`] for one of the processes that share the work (`mpirun`): it decodes
/// its contiguous share of the files (`chunk` at a time, without the cache, which holds whole
/// folders) and hands them to `visit`. Every process returns every process's skipped files,
/// in order, and fails alike when none of the files is usable or too many are not.
///
/// # Errors
/// As [`visit_labelled`].
pub fn visit_labelled_share(
    root: &Path,
    classes: &[String],
    pre: &Preprocess,
    max_skipped: f64,
    chunk: usize,
    group: &crate::parallel::Group,
    mut visit: impl FnMut(Dataset) -> Result<()>,
) -> Result<Vec<SkippedFile>> {
    let found = scan_known_classes(root, classes)?;
    let candidates = found.files.len() + found.skipped.len();
    let mine = &found.files[group.share(found.files.len())];
    let mut skipped = Vec::new();
    let usable = visit_chunks(mine, pre, chunk, &mut skipped, &mut visit)?;
    let text = serde_json::to_string(&skipped).unwrap_or_default();
    let mut all = found.skipped;
    for part in group.gather(text.as_bytes()) {
        let theirs: Vec<SkippedFile> = serde_json::from_slice(&part).unwrap_or_default();
        all.extend(theirs);
    }
    let mut total = [usable as f64];
    group.sum_f64(&mut total);
    if total[0] == 0.0 {
        return Err(no_usable_image(found.files.len(), root));
    }
    check_skipped(&all, candidates, max_skipped)?;
    Ok(all)
}

/// Loads every image under `root`'s class folders (named after `classes`), unsplit: the data a
/// saved model is evaluated on.
///
/// # Errors
/// [`Error::Data`] if the folder is unusable, no file in it is a usable image, or more than
/// `max_skipped` of its files are unusable; [`Error::Config`] if the images would not fit in
/// memory.
pub fn load_labelled(
    root: &Path,
    classes: &[String],
    pre: &Preprocess,
    max_skipped: f64,
    cache: Option<&Cache>,
) -> Result<(Dataset, Vec<SkippedFile>, CacheReport)> {
    let found = scan_known_classes(root, classes)?;
    load_found(found, root, pre, max_skipped, cache)
}

/// [`load_labelled`] for the class folders already scanned under `root`.
fn load_found(
    found: ClassFolders,
    root: &Path,
    pre: &Preprocess,
    max_skipped: f64,
    cache: Option<&Cache>,
) -> Result<(Dataset, Vec<SkippedFile>, CacheReport)> {
    check_memory(found.files.len(), pre)?;
    let candidates = found.files.len() + found.skipped.len();
    let spot = cache.map(|cache| CacheSpot { cache, root });
    let (mut sets, mut skipped, report) = load_parts(&[&found.files], pre, spot);
    let data = sets.pop().unwrap_or_default();
    skipped.splice(0..0, found.skipped);
    if data.is_empty() {
        return Err(no_usable_image(found.files.len(), root));
    }
    check_skipped(&skipped, candidates, max_skipped)?;
    Ok((data, skipped, report))
}

/// The error for a folder of `files` files none of which is a usable image.
fn no_usable_image(files: usize, root: &Path) -> Error {
    Error::Data(format!(
        "none of the {files} files under {} is a usable image",
        root.display()
    ))
}
