//! Training curves as PNG and SVG (being written).

use crate::Result;
use crate::train::History;
use std::path::{Path, PathBuf};

/// Writes the cost and accuracy curves of `history` next to `path` as `<stem>.png` and
/// `<stem>.svg`, returning the two paths.
///
/// # Errors
/// [`crate::Error::Plot`] or [`crate::Error::Io`] if a file cannot be drawn or written.
pub fn write_curves(history: &History, path: &Path) -> Result<Vec<PathBuf>> {
    let _ = (history, path);
    Ok(Vec::new())
}
