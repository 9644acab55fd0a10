//! The parts of a job that several processes (`mpirun`) do together: checking that they were
//! given the same job, and scoring a set with each process predicting its share of it.

use super::Job;
use crate::data::{Examples, SplitFiles};
use crate::model::{Model, Predictions};
use crate::parallel::{Group, fingerprint};
use crate::{Error, Result};

/// Refuses a job whose flags or data differ between the processes: each hashes its
/// configuration and its file list (names, classes and sizes), and every process compares
/// with every other's.
///
/// # Errors
/// [`Error::Config`] naming the processes that differ from process 0, and in what.
pub(super) fn check_same_job(group: &Group, job: &Job, files: &SplitFiles) -> Result<()> {
    if group.is_solo() {
        return Ok(());
    }
    let config = format!(
        "{}\n{}\n{:?}\n{} {} {}\n{:?}",
        serde_json::to_string(&job.config).unwrap_or_default(),
        job.recipe,
        job.split.preprocess,
        job.split.test_split,
        job.split.val_split,
        job.split.seed,
        job.positive,
    );
    let mine = [
        fingerprint(config.as_bytes()),
        fingerprint(files.listing().as_bytes()),
    ];
    let bytes: Vec<u8> = mine.iter().flat_map(|h| h.to_le_bytes()).collect();
    let all = group.gather(&bytes);
    let differ = |what: usize| -> Vec<String> {
        (1..all.len())
            .filter(|&r| all[r].get(what * 8..what * 8 + 8) != all[0].get(what * 8..what * 8 + 8))
            .map(|r| r.to_string())
            .collect()
    };
    let (flags, data) = (differ(0), differ(1));
    if flags.is_empty() && data.is_empty() {
        return Ok(());
    }
    let mut why = Vec::new();
    if !flags.is_empty() {
        why.push(format!("the flags of process(es) {}", flags.join(", ")));
    }
    if !data.is_empty() {
        why.push(format!(
            "the data (file names, classes or sizes) that process(es) {} found",
            data.join(", ")
        ));
    }
    Err(Error::Config(format!(
        "the {} processes were not given the same job: {} differ from process 0's; every \
         process must run the same command on the same data",
        group.size(),
        why.join(", and ")
    )))
}

/// Refuses to train when the processes decoded different sets: a file one of them could not
/// read (on its own disk) would give it other batches than the rest.
///
/// # Errors
/// [`Error::Data`] naming the processes whose sets differ from process 0's.
pub(super) fn check_same_sets(
    group: &Group,
    sizes: super::Sizes,
    skipped: &[crate::data::SkippedFile],
) -> Result<()> {
    if group.is_solo() {
        return Ok(());
    }
    let mut text = format!("{} {} {}", sizes.train, sizes.val, sizes.test);
    for s in skipped {
        text.push_str(&format!("\n{}", s.path.display()));
    }
    let all = group.gather(&fingerprint(text.as_bytes()).to_le_bytes());
    let differ: Vec<String> = (1..all.len())
        .filter(|&r| all[r] != all[0])
        .map(|r| r.to_string())
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(Error::Data(format!(
        "process(es) {} could not read the same images as process 0 (this one skipped {} \
         file(s){}); every process must be able to read every file",
        differ.join(", "),
        skipped.len(),
        skipped
            .first()
            .map(|s| format!(", e.g. {}: {}", s.path.display(), s.reason))
            .unwrap_or_default()
    )))
}

/// Predictions for every example of `data`, each process predicting its share of the rows:
/// the same, on every process, as one process predicting them all (each row's prediction is
/// its own).
///
/// # Errors
/// When streamed images cannot be read.
pub(crate) fn predict_all(
    group: &Group,
    model: &Model,
    data: &dyn Examples,
) -> Result<Predictions> {
    if group.is_solo() {
        return model.predict_all(data);
    }
    let mut mine = Predictions::empty(model.classes.len());
    data.images()
        .for_each_block_in(group.share(data.count()), |_, rows| {
            if rows.nrows() > 0 {
                mine.append(model.predict(rows));
            }
            Ok::<(), std::io::Error>(())
        })
        .map_err(|e| Error::io("cannot read images from the decoded cache", e))?;
    Ok(mine.gather(group))
}
