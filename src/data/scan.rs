//! Finding the images: one folder per class, class index = position in sorted folder names.

use super::LabelledFile;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The classes found under a data folder and every file inside them.
#[derive(Debug, Clone)]
pub struct ClassFolders {
    /// Class names: the folder names, sorted. A label is an index into this list.
    pub classes: Vec<String>,
    /// Every file under the class folders (searched recursively), sorted by path within each
    /// class. Whether a file is an image is decided when it is decoded.
    pub files: Vec<LabelledFile>,
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

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The sorted, non-hidden sub-folders of `root`.
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
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name) {
            continue;
        }
        // Follows symbolic links to folders, so a class folder may be a link.
        if entry.path().is_dir() {
            dirs.push((name, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Every file below `dir`, sorted; sub-folders are searched too (not through links to folders,
/// which could loop).
fn files_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list class folder {}", dir.display()), e))?;
    let mut paths: Vec<(PathBuf, bool)> = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Error::io(format!("cannot list class folder {}", dir.display()), e))?;
        let is_real_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        paths.push((entry.path(), is_real_dir));
    }
    paths.sort();
    for (path, is_dir) in paths {
        if is_dir {
            files_below(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Scans `root` for class folders: the classes are its sub-folders, sorted by name.
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
    let mut classes = Vec::new();
    for (label, (name, dir)) in dirs.into_iter().enumerate() {
        let mut paths = Vec::new();
        files_below(&dir, &mut paths)?;
        if paths.is_empty() {
            return Err(Error::Data(format!(
                "class folder {} is empty; put its images there or remove the folder",
                dir.display()
            )));
        }
        files.extend(paths.into_iter().map(|path| LabelledFile { path, label }));
        classes.push(name);
    }
    Ok(ClassFolders { classes, files })
}

/// Scans `root` for folders named after known `classes` (a test folder, or data to evaluate a
/// model on). Not every class needs a folder.
///
/// # Errors
/// [`Error::Data`] if `root` is missing, a folder is not one of `classes`, or there are no files.
pub fn scan_known_classes(root: &Path, classes: &[String]) -> Result<Vec<LabelledFile>> {
    let dirs = class_dirs(root)?;
    let mut files = Vec::new();
    for (name, dir) in dirs {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(Error::Data(format!(
                "folder {} is not one of the classes ({}); each folder's name must be a class name",
                dir.display(),
                classes.join(", ")
            )));
        };
        let mut paths = Vec::new();
        files_below(&dir, &mut paths)?;
        files.extend(paths.into_iter().map(|path| LabelledFile { path, label }));
    }
    if files.is_empty() {
        return Err(Error::Data(format!(
            "{} holds no files in class folders (expected folders named {})",
            root.display(),
            classes.join(", ")
        )));
    }
    Ok(files)
}
