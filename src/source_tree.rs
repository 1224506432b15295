//! The crate's own source files, for the unit tests that read the code itself (grep gates:
//! every layer with per-source parts is installed; the cache prefix only where meant).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`.
pub fn rust_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    found
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}
