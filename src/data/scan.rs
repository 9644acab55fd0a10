//! Finding the images: one folder per class, class index = position in sorted folder names.

use super::{LabelledFile, SkippedFile};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The classes found under a data folder and every file inside them.
#[derive(Debug, Clone)]
pub struct ClassFolders {
    /// Class names: the folder names, sorted. A label is an index into this list.
    pub classes: Vec<String>,
    /// Every regular file under the class folders (searched recursively), sorted by path
    /// within each class. Whether a file is an image is decided when it is decoded.
    pub files: Vec<LabelledFile>,
    /// Entries found that cannot be images (links to folders, special files), with reasons.
    pub skipped: Vec<SkippedFile>,
}

impl ClassFolders {
    /// How many files each class has.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for f in &self.files {
            counts[f.label] += 1;
        }
        counts
    }
}

/// Hidden names (`.DS_Store`, `._IMG_0001.jpg` from macOS copies, `.thumbnails/`) are
/// ignored everywhere, silently: they are never the user's photos.
fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// The sorted, non-hidden sub-folders of `root` (links to folders count), with their names.
///
/// # Errors
/// [`Error::Data`] if `root` is missing or not a folder, or a class folder's name is not
/// valid UTF-8 (class names are stored in model files as text).
fn class_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Data(format!(
                "data folder {} does not exist (it should hold one folder of images per class)",
                root.display()
            )));
        }
        Err(e) => {
            return Err(Error::io(
                format!("cannot read data folder {}", root.display()),
                e,
            ));
        }
        Ok(m) if !m.is_dir() => {
            return Err(Error::Data(format!(
                "{} is not a folder (give a folder holding one folder of images per class)",
                root.display()
            )));
        }
        Ok(_) => {}
    }
    let entries = std::fs::read_dir(root)
        .map_err(|e| Error::io(format!("cannot list data folder {}", root.display()), e))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Error::io(format!("cannot list data folder {}", root.display()), e))?;
        let name = entry.file_name();
        if is_hidden(&name) || !entry.path().is_dir() {
            continue;
        }
        let Some(name) = name.to_str() else {
            return Err(Error::Data(format!(
                "class folder {} has a name that is not valid UTF-8; rename it (class names are \
                 stored in the model as text)",
                entry.path().display()
            )));
        };
        dirs.push((name.to_string(), entry.path()));
    }
    dirs.sort();
    Ok(dirs)
}

/// Every regular file below `dir`, sorted by path: the candidates for images. Sub-folders are
/// searched too. Hidden names are ignored. Entries that can never be images are returned as
/// skipped, with the reason: links to folders (not followed, so a link loop cannot trap the
/// search), broken or looping links, and special files (a named pipe would block a read
/// forever).
///
/// # Errors
/// [`Error::Io`] if a folder cannot be listed.
pub fn files_below(dir: &Path) -> Result<(Vec<PathBuf>, Vec<SkippedFile>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    walk(dir, &mut files, &mut skipped)?;
    Ok((files, skipped))
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<SkippedFile>) -> Result<()> {
    let list_error = |e| Error::io(format!("cannot list folder {}", dir.display()), e);
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        if !is_hidden(&entry.file_name()) {
            // The entry's own type (not following links), from the directory listing itself
            // where the file system records it: no system call per file.
            entries.push((entry.path(), entry.file_type()));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, own) in entries {
        let skip = |reason: String| SkippedFile {
            path: path.clone(),
            reason,
        };
        let own = match own {
            Ok(t) => t,
            Err(e) => {
                skipped.push(skip(format!("cannot read: {e}")));
                continue;
            }
        };
        if own.is_dir() {
            walk(&path, files, skipped)?;
        } else if own.is_file() {
            files.push(path);
        } else if own.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(target) if target.is_file() => files.push(path),
                Ok(target) if target.is_dir() => {
                    skipped.push(skip("link to a folder (not followed)".into()))
                }
                Ok(_) => skipped.push(skip("link to a special file, not an image".into())),
                Err(e) => skipped.push(skip(format!("broken or looping link: {e}"))),
            }
        } else {
            skipped.push(skip(
                "not a regular file (a pipe, socket or device), not an image".into(),
            ));
        }
    }
    Ok(())
}

/// Scans `root` for class folders: the classes are its sub-folders, sorted by name. Images
/// in nested sub-folders of a class folder belong to that class.
///
/// # Errors
/// [`Error::Data`] if `root` is missing or not a folder, holds fewer than two class folders,
/// or a class folder holds no files.
pub fn scan_classes(root: &Path) -> Result<ClassFolders> {
    let dirs = class_dirs(root)?;
    if dirs.len() < 2 {
        let found = if dirs.is_empty() {
            "no class folders".to_string()
        } else {
            format!("only one class folder ({})", dirs[0].0)
        };
        return Err(Error::Data(format!(
            "{} has {found}; a classifier needs at least two, one folder of images per class \
             (e.g. {}/cats and {}/random_images)",
            root.display(),
            root.display(),
            root.display()
        )));
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    let mut classes = Vec::new();
    for (label, (name, dir)) in dirs.into_iter().enumerate() {
        let (paths, odd) = files_below(&dir)?;
        if paths.is_empty() {
            return Err(Error::Data(format!(
                "class folder {} is empty (hidden files do not count); put its images there or \
                 remove the folder",
                dir.display()
            )));
        }
        files.extend(paths.into_iter().map(|path| LabelledFile { path, label }));
        skipped.extend(odd);
        classes.push(name);
    }
    Ok(ClassFolders {
        classes,
        files,
        skipped,
    })
}

/// Scans `root` for folders named after known `classes` (data to evaluate a model on). Not
/// every class needs a folder.
///
/// # Errors
/// [`Error::Data`] if `root` is missing, a folder is not one of `classes`, or there are no files.
pub fn scan_known_classes(root: &Path, classes: &[String]) -> Result<ClassFolders> {
    let dirs = class_dirs(root)?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for (name, dir) in dirs {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(Error::Data(format!(
                "folder {} is not one of the classes ({}); each folder's name must be a class name",
                dir.display(),
                classes.join(", ")
            )));
        };
        let (paths, odd) = files_below(&dir)?;
        files.extend(paths.into_iter().map(|path| LabelledFile { path, label }));
        skipped.extend(odd);
    }
    if files.is_empty() {
        return Err(Error::Data(format!(
            "{} holds no files in class folders (expected folders named {})",
            root.display(),
            classes.join(", ")
        )));
    }
    Ok(ClassFolders {
        classes: classes.to_vec(),
        files,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn links_pipes_and_hidden_files_are_never_followed_or_read() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let cats = dir.path().join("cats");
        std::fs::create_dir_all(cats.join("nested")).unwrap();
        std::fs::write(cats.join("a.jpg"), b"x").unwrap();
        std::fs::write(cats.join("nested/b.jpg"), b"x").unwrap();
        std::fs::write(cats.join(".DS_Store"), b"x").unwrap();
        std::fs::write(cats.join("._a.jpg"), b"x").unwrap();
        symlink(&cats, cats.join("loop")).unwrap();
        symlink(cats.join("self"), cats.join("self")).unwrap();
        symlink(cats.join("a.jpg"), cats.join("c.jpg")).unwrap();
        let fifo = cats.join("pipe.jpg");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let (files, skipped) = files_below(&cats).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.strip_prefix(&cats).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            [
                Path::new("a.jpg"),
                Path::new("c.jpg"),
                Path::new("nested/b.jpg")
            ]
        );
        let reasons: Vec<(String, String)> = skipped
            .iter()
            .map(|s| {
                let name = s.path.file_name().unwrap().to_string_lossy().into_owned();
                (name, s.reason.clone())
            })
            .collect();
        assert!(
            reasons
                .iter()
                .any(|(n, r)| n == "loop" && r.contains("link to a folder"))
        );
        assert!(
            reasons
                .iter()
                .any(|(n, r)| n == "self" && r.contains("looping link"))
        );
        if made.is_ok_and(|s| s.success()) {
            assert!(
                reasons
                    .iter()
                    .any(|(n, r)| n == "pipe.jpg" && r.contains("not a regular file"))
            );
        }
    }
}
