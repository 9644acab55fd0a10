//! Folders: missing, empty, one class, a class emptied by skipping, nested sub-folders, a test
//! folder whose classes differ from training. Exit code 1: the command line was fine, the data
//! is not.

use super::{deepcat, fails_with, solid_ish, succeeds, synthetic};
use serde_json::Value;
use std::path::Path;

fn train(root: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = deepcat();
    cmd.arg("train")
        .arg(root)
        .args(["--size", "8", "--layers", "4", "--iterations", "5"])
        .args(["--quiet", "--json", "--model"])
        .arg(root.with_extension("safetensors"))
        .args(extra);
    cmd
}

#[test]
fn a_missing_folder_or_a_file_instead_of_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    fails_with(
        &mut train(&missing, &[]),
        1,
        &["no-such-folder", "does not exist"],
    );
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(&mut train(&file, &[]), 1, &["is not a folder"]);
}

#[test]
fn an_empty_folder_or_a_single_class_is_not_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join(".hidden-class")).unwrap();
    fails_with(&mut train(&root, &[]), 1, &["no class folders"]);
    std::fs::create_dir_all(root.join("cats")).unwrap();
    solid_ish(&root.join("cats/a.png"), [1, 2, 3], 0);
    fails_with(&mut train(&root, &[]), 1, &["only one class folder (cats)"]);
    std::fs::create_dir_all(root.join("dogs")).unwrap();
    std::fs::write(root.join("dogs/.DS_Store"), b"x").unwrap();
    fails_with(&mut train(&root, &[]), 1, &["dogs is empty"]);
}

#[test]
fn a_class_whose_every_file_is_skipped_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 20);
    std::fs::create_dir_all(root.join("birds")).unwrap();
    std::fs::write(root.join("birds/one.jpg"), b"not a jpeg").unwrap();
    fails_with(
        &mut train(&root, &[]),
        1,
        &["\"birds\" has no usable training images", "one.jpg"],
    );
}

#[test]
fn images_in_nested_sub_folders_belong_to_their_class() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 10);
    for (i, sub) in ["2019", "2019/summer", "2020"].iter().enumerate() {
        let folder = root.join("cats").join(sub);
        std::fs::create_dir_all(&folder).unwrap();
        solid_ish(&folder.join("more.png"), [200, 60, 40], 50 + i as u32);
    }
    let out = succeeds(&mut train(&root, &[]));
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let used = json["train_size"].as_u64().unwrap() + json["test_size"].as_u64().unwrap();
    assert_eq!(used, 23);
    assert_eq!(json["classes"], serde_json::json!(["cats", "dogs"]));
}

#[test]
fn a_test_folder_must_have_exactly_the_training_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("train");
    synthetic(&root, 8);
    let extra = dir.path().join("test-extra");
    synthetic(&extra, 2);
    std::fs::create_dir_all(extra.join("birds")).unwrap();
    solid_ish(&extra.join("birds/b.png"), [0, 200, 0], 1);
    let test_dir = |d: &Path| ["--test-dir".to_string(), d.display().to_string()];
    fails_with(
        train(&root, &[]).args(test_dir(&extra)),
        1,
        &["birds is not one of the classes (cats, dogs)"],
    );
    let fewer = dir.path().join("test-fewer");
    std::fs::create_dir_all(fewer.join("cats")).unwrap();
    solid_ish(&fewer.join("cats/c.png"), [200, 60, 40], 1);
    fails_with(
        train(&root, &[]).args(test_dir(&fewer)),
        1,
        &["no images for class(es) dogs"],
    );
    // With --test-dir, --test-split is meaningless: saying both is a usage error.
    fails_with(
        train(&root, &["--test-split", "0.3"]).args(test_dir(&fewer)),
        2,
        &["--test-split"],
    );
}

#[cfg(unix)]
#[test]
fn a_class_folder_name_that_is_not_utf8_is_refused_with_advice() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 4);
    let odd = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir_all(&odd).unwrap();
    solid_ish(&odd.join("a.png"), [1, 2, 3], 0);
    fails_with(&mut train(&root, &[]), 1, &["not valid UTF-8", "rename it"]);
}
