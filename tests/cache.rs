//! The decoded cache (issue 11): a hit, a miss, a touched file, a removed file, a truncated
//! pack, a flipped byte, a pack of another version, a cache that cannot be written, two
//! processes filling one cache at once; each loads exactly what decoding gives, says so where a
//! message is due, and trains the same model bytes as a run without a cache. `deepcat cache
//! info` and `deepcat cache clear` report what they see and do.
//!
//! Library tests compare every loaded matrix, label, path and skipped file with a load made
//! without a cache; command-line tests run the real binary, always with a cache folder (or
//! `XDG_CACHE_HOME`) inside a temporary folder, never the user's home.

use assert_cmd::Command;
use deepcat::data::{
    Cache, Dataset, Preprocess, ResizeFilter, SplitSpec, Splits, load_bytes, load_splits,
};
use image::{Rgb, RgbImage};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The side images are resized to in every test.
const SIZE: u32 = 8;
/// Images per class in the synthetic folder.
const PER_CLASS: usize = 8;
/// Files in the synthetic folder: the images and one note that is not an image.
const FILES: usize = 2 * PER_CLASS + 1;
/// The note, a file every load skips (and the cache remembers as skipped).
const NOTE: &str = "cats/notes.txt";

// ---------------------------------------------------------------------------------------------
// Images and folders
// ---------------------------------------------------------------------------------------------

/// A 16×16 noisy image of colour `base`; `seed` varies the noise (and so the PNG's size).
fn noisy(base: [u8; 3], seed: u32) -> RgbImage {
    RgbImage::from_fn(16, 16, |x, y| {
        let n = ((x * 31 + y * 17 + seed * 13 + x * y * seed) % 50) as u8;
        Rgb([
            base[0].saturating_add(n),
            base[1].saturating_add(n),
            base[2].saturating_add(n),
        ])
    })
}

/// Two class folders under `root` (`cats` reddish, `dogs` bluish) of `per_class` PNGs each,
/// plus [`NOTE`].
fn synthetic(root: &Path, per_class: usize) {
    for (class, base) in [("cats", [200u8, 60, 40]), ("dogs", [40u8, 60, 200])] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).expect("create a class folder");
        for i in 0..per_class {
            noisy(base, i as u32)
                .save(dir.join(format!("{class}_{i:03}.png")))
                .expect("write a test image");
        }
    }
    std::fs::write(root.join(NOTE), "not a photo\n").expect("write the note");
}

/// A temporary folder holding the synthetic `data` folder; returns it and the data path.
fn data_folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let root = dir.path().join("data");
    synthetic(&root, PER_CLASS);
    (dir, root)
}

/// Sets `path`'s modification time.
fn set_mtime(path: &Path, when: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(when))
        .unwrap_or_else(|e| panic!("set the modification time of {}: {e}", path.display()));
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------------

fn pre(size: u32) -> Preprocess {
    Preprocess {
        size,
        ..Preprocess::default()
    }
}

/// All three parts (train, validation, test), so every part goes through the cache.
fn spec_at(root: &Path, size: u32, cache: Option<&Path>) -> SplitSpec {
    SplitSpec {
        data_dir: root.to_path_buf(),
        test_dir: None,
        test_split: 0.2,
        val_split: 0.25,
        preprocess: pre(size),
        seed: 3,
        max_skipped: 0.5,
        cache: cache.map(Cache::at),
    }
}

fn load_with(spec: &SplitSpec) -> Splits {
    load_splits(spec).unwrap_or_else(|e| panic!("{} loads: {e}", spec.data_dir.display()))
}

fn load(root: &Path, cache: Option<&Path>) -> Splits {
    load_with(&spec_at(root, SIZE, cache))
}

fn assert_same_dataset(part: &str, a: &Dataset, b: &Dataset) {
    assert_eq!(a.paths, b.paths, "{part}: paths");
    assert_eq!(a.labels, b.labels, "{part}: labels");
    assert!(
        a.x == b.x,
        "{part}: the image bytes differ ({:?} vs {:?})",
        a.x.dim(),
        b.x.dim()
    );
}

/// Everything a load gives, but its timing and cache report, is equal.
fn assert_same(a: &Splits, b: &Splits) {
    assert_eq!(a.classes, b.classes, "classes");
    assert_same_dataset("train", &a.train, &b.train);
    for (part, x, y) in [("val", &a.val, &b.val), ("test", &a.test, &b.test)] {
        match (x, y) {
            (Some(x), Some(y)) => assert_same_dataset(part, x, y),
            (None, None) => {}
            _ => panic!("{part}: present in one load only"),
        }
    }
    assert_eq!(a.skipped, b.skipped, "skipped files");
}

/// A load through `cache` that must equal a load without one; returns it.
fn load_checked(root: &Path, cache: &Path) -> Splits {
    let cached = load(root, Some(cache));
    assert_same(&cached, &load(root, None));
    cached
}

fn assert_report(s: &Splits, hits: usize, decoded: usize) {
    assert_eq!(
        (s.cache.hits, s.cache.decoded),
        (hits, decoded),
        "(hits, decoded); the report: {:?}",
        s.cache
    );
    assert_eq!(s.cache.warning, None, "no warning is due");
}

/// The files in `dir` whose names end in `.ext`, sorted; none when `dir` does not exist.
fn files_ending(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The one pack in `cache`, with no temporary file left beside it.
fn only_pack(cache: &Path) -> PathBuf {
    let packs = files_ending(cache, "pack");
    assert_eq!(packs.len(), 1, "one pack in {}: {packs:?}", cache.display());
    let tmp = files_ending(cache, "tmp");
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    packs[0].clone()
}

/// Identifies one version of a file: a pack written again is a new file renamed over the old.
#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

/// Every file below `root`, relative to it (what a pack is keyed by).
fn relative_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for class in ["cats", "dogs"] {
        for e in std::fs::read_dir(root.join(class)).unwrap() {
            out.push(e.unwrap().path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

/// The row `path` was loaded into, in whichever part it fell.
fn row_of(s: &Splits, path: &Path) -> Vec<u8> {
    let parts = [Some(&s.train), s.val.as_ref(), s.test.as_ref()];
    for d in parts.into_iter().flatten() {
        if let Some(i) = d.paths.iter().position(|p| p == path) {
            return d.x.row(i).to_vec();
        }
    }
    panic!("{} was not loaded", path.display())
}

#[cfg(unix)]
#[test]
fn a_cold_cache_decodes_everything_and_a_warm_one_nothing() {
    let (dir, root) = data_folder();
    // The cache folder does not exist yet: the first write makes it.
    let cache = dir.path().join("not/yet/cache");

    let cold = load_checked(&root, &cache);
    assert_report(&cold, 0, FILES);
    assert_eq!(cold.skipped.len(), 1, "the note: {:?}", cold.skipped);
    assert!(cold.skipped[0].path.ends_with(NOTE), "{:?}", cold.skipped);
    let pack = only_pack(&cache);

    let info = Cache::at(&cache).info().unwrap();
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].path, pack);
    assert_eq!(
        info[0].folder.as_deref().ok(),
        Some(std::fs::canonicalize(&root).unwrap().as_path())
    );
    assert_eq!((info[0].images, info[0].skipped), (2 * PER_CLASS, 1));

    let (ino, modified) = (inode(&pack), mtime(&pack));
    for _ in 0..2 {
        let warm = load_checked(&root, &cache);
        assert_report(&warm, FILES, 0);
        // The note's reason comes from the pack, word for word.
        assert_same(&warm, &cold);
    }
    assert_eq!(
        (inode(&pack), mtime(&pack)),
        (ino, modified),
        "a load that decoded nothing wrote the pack again"
    );
}

#[test]
fn a_touched_file_alone_is_decoded_again_with_its_new_pixels() {
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    load_checked(&root, &cache);
    let file = root.join("cats/cats_003.png");
    let before = row_of(&load(&root, Some(&cache)), &file);

    // New pixels, and a modification time surely unlike the first one.
    noisy([10, 250, 10], 99).save(&file).unwrap();
    set_mtime(
        &file,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
    );
    let after = load_checked(&root, &cache);
    assert_report(&after, FILES - 1, 1);
    let row = row_of(&after, &file);
    assert_eq!(
        row,
        load_bytes(&file, &pre(SIZE)).unwrap(),
        "the new pixels"
    );
    assert_ne!(row, before, "the test changed the image");
    // The pack now remembers the new version.
    assert_report(&load_checked(&root, &cache), FILES, 0);

    // Only the modification time changes (`touch`): decoded again, the same bytes.
    let other = root.join("dogs/dogs_005.png");
    set_mtime(&other, mtime(&other) + Duration::from_secs(3));
    assert_report(&load_checked(&root, &cache), FILES - 1, 1);
    assert_report(&load_checked(&root, &cache), FILES, 0);

    // Only the size changes (the old modification time put back, as `cp -p` or an archive
    // would): decoded again too.
    let old_len = std::fs::metadata(&file).unwrap().len();
    let old_mtime = mtime(&file);
    RgbImage::from_pixel(16, 16, Rgb([1, 2, 3]))
        .save(&file)
        .unwrap();
    set_mtime(&file, old_mtime);
    assert_ne!(std::fs::metadata(&file).unwrap().len(), old_len, "set-up");
    let resized = load_checked(&root, &cache);
    assert_report(&resized, FILES - 1, 1);
    assert_eq!(row_of(&resized, &file), [1, 2, 3].repeat(64));
}

#[cfg(unix)]
#[test]
fn a_removed_file_is_dropped_from_the_pack() {
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    load_checked(&root, &cache);
    let pack = only_pack(&cache);
    let ino = inode(&pack);

    std::fs::remove_file(root.join("dogs/dogs_002.png")).unwrap();
    assert_report(&load_checked(&root, &cache), FILES - 1, 0);
    let pack = only_pack(&cache);
    assert_ne!(
        inode(&pack),
        ino,
        "the pack is written again without the file"
    );
    let canonical = std::fs::canonicalize(&root).unwrap();
    let remembered = Cache::at(&cache).open(&canonical, &pre(SIZE));
    let files = relative_files(&root);
    assert_eq!(files.len(), FILES - 1);
    assert!(
        remembered.holds_exactly(files.iter().map(PathBuf::as_path)),
        "the pack holds exactly the {} files left ({} remembered)",
        files.len(),
        remembered.len()
    );
    let info = Cache::at(&cache).info().unwrap();
    assert_eq!((info[0].images, info[0].skipped), (2 * PER_CLASS - 1, 1));

    // Nothing changed since: read, not written.
    let ino = inode(&pack);
    assert_report(&load_checked(&root, &cache), FILES - 1, 0);
    assert_eq!(inode(&only_pack(&cache)), ino, "written again for nothing");
}

#[test]
fn a_truncated_pack_is_decoded_around_and_rebuilt() {
    let features = pre(SIZE).features() as u64;
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    let images = 2 * PER_CLASS as u64;
    for cut in ["half", "a few bytes", "empty", "one byte short"] {
        load_checked(&root, &cache);
        let pack = only_pack(&cache);
        let len = std::fs::metadata(&pack).unwrap().len();
        let keep = match cut {
            "half" => len / 2,
            "a few bytes" => 10,
            "empty" => 0,
            _ => len - 1,
        };
        std::fs::File::options()
            .write(true)
            .open(&pack)
            .and_then(|f| f.set_len(keep))
            .unwrap();
        let s = load_checked(&root, &cache);
        // At least every row that lost a byte is decoded again.
        let damaged = (len - keep).div_ceil(features).min(images) as usize;
        assert!(
            s.cache.decoded >= damaged.max(1) && s.cache.hits + s.cache.decoded == FILES,
            "{cut}: {damaged} rows damaged, report {:?}",
            s.cache
        );
        assert_eq!(s.cache.warning, None, "{cut}");
        assert_eq!(
            std::fs::metadata(only_pack(&cache)).unwrap().len(),
            len,
            "{cut}: rebuilt whole"
        );
        assert_report(&load_checked(&root, &cache), FILES, 0);
    }
}

#[test]
fn a_flipped_byte_in_a_row_decodes_that_image_alone() {
    let features = pre(SIZE).features() as u64;
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    let clean = load_checked(&root, &cache);
    let pack = only_pack(&cache);
    let len = std::fs::metadata(&pack).unwrap().len();
    // The index comes after the rows, then its length and a CRC-32.
    let tail = std::fs::read(&pack).unwrap()[len as usize - 12..].to_vec();
    let index_len = u64::from_le_bytes(tail[..8].try_into().unwrap());
    let rows_end = len - 12 - index_len;
    // The middle of the last row, then of the first one.
    for at in [
        rows_end - 1 - features / 2,
        rows_end - 2 * PER_CLASS as u64 * features + 5,
    ] {
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[at as usize] ^= 0x5a;
        std::fs::write(&pack, &bytes).unwrap();
        let s = load_checked(&root, &cache);
        assert_report(&s, FILES - 1, 1);
        assert_same(&s, &clean);
        // Decoding repaired it.
        assert_report(&load_checked(&root, &cache), FILES, 0);
    }
    // A byte of the header, the index or its length: the pack is not trusted at all.
    for at in [17, 40, 100, rows_end as usize + 3, len as usize - 10] {
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[at] ^= 0x01;
        std::fs::write(&pack, &bytes).unwrap();
        assert_report(&load_checked(&root, &cache), 0, FILES);
        assert_report(&load_checked(&root, &cache), FILES, 0);
    }
}

#[test]
fn a_pack_of_another_version_is_ignored_and_rebuilt() {
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    load_checked(&root, &cache);
    let pack = only_pack(&cache);
    let mut bytes = std::fs::read(&pack).unwrap();
    // Another format version: the last byte of the magic differs.
    bytes[15] ^= 0x7f;
    std::fs::write(&pack, &bytes).unwrap();

    let info = Cache::at(&cache).info().unwrap();
    let why = info[0].folder.as_ref().expect_err("an unusable pack");
    assert!(why.contains("version"), "{why}");

    assert_report(&load_checked(&root, &cache), 0, FILES);
    assert_eq!(only_pack(&cache), pack, "rebuilt in its place");
    assert!(Cache::at(&cache).info().unwrap()[0].folder.is_ok());
    assert_report(&load_checked(&root, &cache), FILES, 0);
}

#[test]
fn a_cache_that_cannot_be_written_warns_and_loads_the_same() {
    let (dir, root) = data_folder();
    // A regular file where the folder should be: no one, not even root, can make it.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    for cache in [file.clone(), file.join("below")] {
        for _ in 0..2 {
            let s = load_checked(&root, &cache);
            assert_eq!((s.cache.hits, s.cache.decoded), (0, FILES));
            let warning = s.cache.warning.as_deref().unwrap_or("(none)");
            assert!(
                warning.contains("cannot write the image cache")
                    && warning.contains(&*cache.to_string_lossy()),
                "{warning}"
            );
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
}

#[cfg(unix)]
#[test]
fn a_folder_reached_another_way_shares_its_pack() {
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    load_checked(&root, &cache);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    for other in [link, root.join("cats/../")] {
        let s = load_checked(&other, &cache);
        assert_report(&s, FILES, 0);
        assert!(s.train.paths.iter().all(|p| p.starts_with(&other)));
    }
    only_pack(&cache);
}

#[test]
fn each_preprocessing_and_each_folder_has_its_own_pack() {
    let (dir, root) = data_folder();
    let test_root = dir.path().join("test");
    synthetic(&test_root, 3);
    let cache = dir.path().join("cache");
    let preprocessings = [
        pre(SIZE),
        pre(12),
        Preprocess {
            filter: ResizeFilter::Bilinear,
            ..pre(SIZE)
        },
        Preprocess {
            exif_orientation: false,
            ..pre(SIZE)
        },
    ];
    let spec = |p: &Preprocess, cache: Option<&Path>| SplitSpec {
        test_dir: Some(test_root.clone()),
        preprocess: *p,
        ..spec_at(&root, SIZE, cache)
    };
    let test_files = 2 * 3 + 1;
    for p in &preprocessings {
        let cold = load_with(&spec(p, Some(&cache)));
        assert_report(&cold, 0, FILES + test_files);
        assert_same(&cold, &load_with(&spec(p, None)));
    }
    assert_eq!(
        files_ending(&cache, "pack").len(),
        2 * preprocessings.len(),
        "one pack per folder and preprocessing"
    );
    for p in &preprocessings {
        let warm = load_with(&spec(p, Some(&cache)));
        assert_report(&warm, FILES + test_files, 0);
        assert_same(&warm, &load_with(&spec(p, None)));
    }
}

#[test]
fn packs_of_vanished_folders_are_pruned_on_the_next_write() {
    let (dir, root) = data_folder();
    let gone = dir.path().join("gone");
    synthetic(&gone, 2);
    let cache = dir.path().join("cache");
    load_checked(&root, &cache);
    load_checked(&gone, &cache);
    assert_eq!(files_ending(&cache, "pack").len(), 2);
    std::fs::remove_dir_all(&gone).unwrap();
    let file = root.join("cats/cats_000.png");
    set_mtime(&file, mtime(&file) + Duration::from_secs(5));
    assert_report(&load_checked(&root, &cache), FILES - 1, 1);
    let info = Cache::at(&cache).info().unwrap();
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        info[0].folder.as_deref().ok(),
        Some(std::fs::canonicalize(&root).unwrap().as_path())
    );
}

#[test]
fn threads_filling_one_cache_at_once_each_load_what_decoding_gives() {
    let (dir, root) = data_folder();
    let cache = dir.path().join("cache");
    let plain = load(&root, None);
    std::thread::scope(|s| {
        let loads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| load(&root, Some(&cache))))
            .collect();
        for l in loads {
            let got = l.join().expect("a load panicked");
            assert_eq!(got.cache.warning, None);
            assert_eq!(got.cache.hits + got.cache.decoded, FILES);
            assert_same(&got, &plain);
        }
    });
    only_pack(&cache);
    assert_report(&load_checked(&root, &cache), FILES, 0);
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// `deepcat`, with `XDG_CACHE_HOME` pointing into `home` so that a forgotten `--cache` still
/// writes nothing to the user's home.
fn deepcat(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("deepcat").expect("the deepcat binary is built");
    cmd.env("XDG_CACHE_HOME", home.join("xdg-cache"))
        .timeout(Duration::from_secs(120));
    cmd
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the command and asserts it succeeded without a panic; returns its output.
fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("the binary runs");
    let err = stderr_of(&out);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "a panic:\n{err}");
    out
}

/// `train ROOT` with a small, quick, seeded recipe, saving to `model`, then `cache` (e.g.
/// `["--cache", DIR]` or `["--no-cache"]`).
fn train_args(root: &Path, model: &Path, cache: &[&std::ffi::OsStr]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["train".into(), root.into()];
    for a in [
        "--size",
        "8",
        "--layers",
        "4",
        "--iterations",
        "30",
        "--seed",
        "5",
        "--quiet",
        "--json",
        "--model",
    ] {
        args.push(a.into());
    }
    args.push(model.into());
    args.extend(cache.iter().map(OsString::from));
    args
}

fn no_cache() -> Vec<&'static std::ffi::OsStr> {
    vec!["--no-cache".as_ref()]
}

fn with_cache(dir: &Path) -> Vec<&std::ffi::OsStr> {
    vec!["--cache".as_ref(), dir.as_os_str()]
}

/// Trains and returns the model's bytes and standard error.
fn train(home: &Path, root: &Path, name: &str, cache: &[&std::ffi::OsStr]) -> (Vec<u8>, String) {
    let model = home.join(name);
    let out = succeeds(deepcat(home).args(train_args(root, &model, cache)));
    (std::fs::read(&model).unwrap(), stderr_of(&out))
}

/// The JSON of `deepcat evaluate MODEL ROOT --json` with `cache`.
fn evaluate(home: &Path, model: &Path, root: &Path, cache: &[&std::ffi::OsStr]) -> Value {
    let out = succeeds(
        deepcat(home)
            .arg("evaluate")
            .arg(model)
            .arg(root)
            .arg("--json")
            .args(cache),
    );
    let text = stdout_of(&out);
    serde_json::from_str(text.lines().last().expect("some output")).expect("JSON")
}

/// Whether `a` and `b` are byte for byte the same model (without printing megabytes).
fn assert_same_model(a: &[u8], b: &[u8], what: &str) {
    assert!(a == b, "{what}: different model bytes");
}

#[test]
fn the_same_seed_trains_the_same_model_bytes_with_or_without_a_cache() {
    let (dir, root) = data_folder();
    let home = dir.path();
    let cache = home.join("cache");
    let (plain, _) = train(home, &root, "plain.safetensors", &no_cache());
    assert!(
        !home.join("xdg-cache").exists() && !cache.exists(),
        "--no-cache wrote a cache"
    );
    let (cold, err) = train(home, &root, "cold.safetensors", &with_cache(&cache));
    assert!(!err.contains("warning: cannot"), "{err}");
    let pack = only_pack(&cache);
    let (warm, err) = train(home, &root, "warm.safetensors", &with_cache(&cache));
    assert!(!err.contains("warning: cannot"), "{err}");
    assert_same_model(&plain, &cold, "--no-cache and a cold cache");
    assert_same_model(&plain, &warm, "--no-cache and a warm cache");
    assert_eq!(only_pack(&cache), pack);
    assert_report(&load(&root, Some(&cache)), FILES, 0);

    let model = home.join("plain.safetensors");
    let uncached = evaluate(home, &model, &root, &no_cache());
    assert_eq!(evaluate(home, &model, &root, &with_cache(&cache)), uncached);
    assert_eq!(evaluate(home, &model, &root, &with_cache(&cache)), uncached);
    assert!(!home.join("xdg-cache").exists(), "a cache outside --cache");
}

#[test]
fn without_cache_flags_the_cache_is_in_xdg_cache_home() {
    let (dir, root) = data_folder();
    let home = dir.path();
    let (plain, _) = train(home, &root, "plain.safetensors", &no_cache());
    let (cached, _) = train(home, &root, "cached.safetensors", &[]);
    assert_same_model(&plain, &cached, "--no-cache and the default cache");
    let default = home.join("xdg-cache/deepcat");
    only_pack(&default);
    let out = succeeds(deepcat(home).args(["cache", "info"]));
    let text = stdout_of(&out);
    assert!(
        text.contains(&format!("Cache: {}", default.display())) && text.contains("1 cached"),
        "{text}"
    );
}

#[test]
fn a_cache_path_that_is_a_file_warns_and_trains_the_same_model() {
    let (dir, root) = data_folder();
    let home = dir.path();
    let file = home.join("cache-is-a-file");
    std::fs::write(&file, b"mine").unwrap();
    let (plain, _) = train(home, &root, "plain.safetensors", &no_cache());
    let (cached, err) = train(home, &root, "cached.safetensors", &with_cache(&file));
    assert!(
        err.contains("warning: cannot write the image cache") && err.contains("going on"),
        "{err}"
    );
    assert_same_model(&plain, &cached, "--no-cache and an unwritable cache");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");

    let model = home.join("plain.safetensors");
    let out = succeeds(
        deepcat(home)
            .arg("evaluate")
            .arg(&model)
            .arg(&root)
            .arg("--json")
            .args(with_cache(&file)),
    );
    assert!(
        stderr_of(&out).contains("warning: cannot write the image cache"),
        "{}",
        stderr_of(&out)
    );
    let text = stdout_of(&out);
    let json: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(json, evaluate(home, &model, &root, &no_cache()));
}

/// Whether this process runs as root (then permissions need another user).
#[cfg(unix)]
fn is_root() -> bool {
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `deepcat ARGS` as a user that permissions apply to: this one, or `nobody` through
/// `setpriv` when the tests run as root; `None` (with a message) when that is not possible.
#[cfg(unix)]
fn deepcat_unprivileged(home: &Path, args: &[OsString]) -> Option<Command> {
    if !is_root() {
        let mut cmd = deepcat(home);
        cmd.args(args);
        return Some(cmd);
    }
    let have = std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("skipping: running as root and setpriv is missing, so permissions cannot bite");
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.env("XDG_CACHE_HOME", home.join("xdg-cache"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("deepcat"))
        .args(args)
        .timeout(Duration::from_secs(120));
    Some(cmd)
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Trains as the unprivileged user; the model's bytes and standard error.
#[cfg(unix)]
fn train_unprivileged(
    home: &Path,
    root: &Path,
    name: &str,
    cache: &[&std::ffi::OsStr],
) -> Option<(Vec<u8>, String)> {
    let model = home.join(name);
    let out = succeeds(&mut deepcat_unprivileged(
        home,
        &train_args(root, &model, cache),
    )?);
    Some((std::fs::read(&model).unwrap(), stderr_of(&out)))
}

#[cfg(unix)]
#[test]
fn a_read_only_cache_folder_warns_and_trains_the_same_model() {
    let (dir, root) = data_folder();
    let home = dir.path();
    // The unprivileged user writes models here and reads the images.
    chmod(home, 0o777);
    let cache = home.join("cache");
    std::fs::create_dir(&cache).unwrap();
    chmod(&cache, 0o555);
    let Some((plain, _)) = train_unprivileged(home, &root, "plain.safetensors", &no_cache()) else {
        return;
    };
    let (cold, err) =
        train_unprivileged(home, &root, "cold.safetensors", &with_cache(&cache)).unwrap();
    assert!(
        err.contains("warning: cannot write the image cache") && err.contains("going on"),
        "{err}"
    );
    assert_same_model(&plain, &cold, "--no-cache and a read-only cache");
    assert!(files_ending(&cache, "pack").is_empty());

    // Filled while writable, then read-only: read, with nothing to say.
    chmod(&cache, 0o777);
    train_unprivileged(home, &root, "fill.safetensors", &with_cache(&cache)).unwrap();
    only_pack(&cache);
    chmod(&cache, 0o555);
    let (warm, err) =
        train_unprivileged(home, &root, "warm.safetensors", &with_cache(&cache)).unwrap();
    assert!(!err.contains("warning: cannot"), "{err}");
    assert_same_model(&plain, &warm, "--no-cache and a read-only warm cache");
    chmod(&cache, 0o755);
}

#[cfg(unix)]
#[test]
fn a_file_unreadable_once_is_read_once_it_is_readable() {
    let (dir, root) = data_folder();
    let home = dir.path();
    chmod(home, 0o777);
    let cache = home.join("cache");
    let locked = root.join("cats/locked.png");
    noisy([90, 90, 90], 42).save(&locked).unwrap();
    chmod(&locked, 0o000);
    let skipped = |err: &str| err.contains("locked.png");
    // The note and the locked file are 2 of 18.
    fn lenient(mut flags: Vec<&std::ffi::OsStr>) -> Vec<&std::ffi::OsStr> {
        flags.extend([std::ffi::OsStr::new("--max-skipped"), "0.2".as_ref()]);
        flags
    }
    let cached_flags = || lenient(with_cache(&cache));
    let Some((_, err)) = train_unprivileged(home, &root, "a.safetensors", &cached_flags()) else {
        return;
    };
    assert!(skipped(&err), "skipped while unreadable:\n{err}");

    // `chmod` changes neither the size nor the modification time.
    chmod(&locked, 0o644);
    let (plain, err) =
        train_unprivileged(home, &root, "plain.safetensors", &lenient(no_cache())).unwrap();
    assert!(!skipped(&err), "{err}");
    let (cached, err) =
        train_unprivileged(home, &root, "cached.safetensors", &cached_flags()).unwrap();
    assert!(
        !skipped(&err),
        "the cache still skips a readable file:\n{err}"
    );
    assert_same_model(&plain, &cached, "--no-cache and the cache after a chmod");
}

#[test]
fn two_processes_filling_one_cache_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // Enough images that the two runs' loads overlap.
    let root = home.join("data");
    synthetic(&root, 60);
    let (plain, _) = train(home, &root, "plain.safetensors", &no_cache());
    let cache = home.join("cache");
    for round in 0..2 {
        let children: Vec<_> = ["a", "b"]
            .iter()
            .map(|name| {
                let model = home.join(format!("{name}{round}.safetensors"));
                let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("deepcat"))
                    .env("XDG_CACHE_HOME", home.join("xdg-cache"))
                    .args(train_args(&root, &model, &with_cache(&cache)))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start deepcat");
                (model, child)
            })
            .collect();
        for (model, child) in children {
            let out = child.wait_with_output().unwrap();
            let err = stderr_of(&out);
            assert!(out.status.success(), "round {round}: {err}");
            assert!(!err.contains("warning: cannot"), "round {round}: {err}");
            assert_same_model(&plain, &std::fs::read(&model).unwrap(), "a concurrent run");
        }
        only_pack(&cache);
        assert_report(&load(&root, Some(&cache)), 2 * 60 + 1, 0);
        std::fs::remove_dir_all(&cache).unwrap();
    }
}

#[test]
fn cache_info_lists_each_folder_and_cache_clear_empties_it() {
    let (dir, root) = data_folder();
    let home = dir.path();
    let cache = home.join("cache");
    let info = || {
        stdout_of(&succeeds(
            deepcat(home).args(["cache", "info", "--cache"]).arg(&cache),
        ))
    };
    let clear = || {
        stdout_of(&succeeds(
            deepcat(home)
                .args(["cache", "clear", "--cache"])
                .arg(&cache),
        ))
    };

    // Nothing there yet: both succeed.
    assert!(info().contains("0 cached folder(s)"), "{}", info());
    let text = clear();
    assert!(text.contains("Removed 0 file(s)"), "{text}");
    assert!(!cache.exists(), "clear made the folder");

    train(home, &root, "m.safetensors", &with_cache(&cache));
    let pack = only_pack(&cache);
    let text = info();
    let canonical = std::fs::canonicalize(&root).unwrap();
    assert!(
        text.contains(&format!("Cache: {}", cache.display()))
            && text.contains(&format!(
                "  {}: {} images, 1 unusable files",
                canonical.display(),
                2 * PER_CLASS
            ))
            && text.contains(&pack.display().to_string())
            && text.contains("8px nearest")
            && text.contains("1 cached folder(s)"),
        "{text}"
    );

    // A damaged pack is listed as unusable, not hidden.
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&pack, &bytes).unwrap();
    let text = info();
    assert!(
        text.contains("unusable") && text.contains("rebuilt") && text.contains("1 cached"),
        "{text}"
    );

    // Clear removes packs and leftover temporary files, and nothing else.
    std::fs::write(cache.join(".deepcat-pack-interrupted.tmp"), b"half").unwrap();
    std::fs::write(cache.join("keep.txt"), b"not ours").unwrap();
    let text = clear();
    assert!(
        text.contains("Removed 2 file(s)") && text.contains(&cache.display().to_string()),
        "{text}"
    );
    assert!(files_ending(&cache, "pack").is_empty() && files_ending(&cache, "tmp").is_empty());
    assert_eq!(std::fs::read(cache.join("keep.txt")).unwrap(), b"not ours");
    assert!(info().contains("0 cached folder(s)"), "{}", info());
    assert!(clear().contains("Removed 0 file(s)"));
}
