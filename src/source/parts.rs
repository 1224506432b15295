//! Every layer's part of one named source, installed before its number is handed out and
//! dropped once nothing asks for it by number (design/53 §1.1). The settings' part comes
//! with the name (`config::current::add_named`); this lists the rest, one line a layer, and
//! a test fails when a layer's `Parts` static is missing here.

use crate::cache::{applied, bypass, freshness};
use crate::invalidation;
use crate::model::source::SourceId;
use crate::pg::{circuit, pool, schema, standby};
use crate::query::{generations, membership, statements, watched};
use crate::stats;

/// Installs named source `id`'s part of every layer.
pub fn add(id: SourceId) {
    stats::add_part(id);
    circuit::add_part(id);
    pool::add_part(id);
    schema::add_part(id);
    standby::add_part(id);
    applied::add_part(id);
    bypass::add_part(id);
    freshness::add_part(id);
    watched::add_part(id);
    membership::add_part(id);
    statements::add_part(id);
    generations::add_part(id);
    invalidation::add_part(id);
}

/// Drops named source `id`'s part of every layer, in reverse.
pub fn forget(id: SourceId) {
    invalidation::forget_part(id);
    generations::forget_part(id);
    statements::forget_part(id);
    membership::forget_part(id);
    watched::forget_part(id);
    freshness::forget_part(id);
    bypass::forget_part(id);
    applied::forget_part(id);
    standby::forget_part(id);
    schema::forget_part(id);
    pool::forget_part(id);
    circuit::forget_part(id);
    stats::forget_part(id);
}

#[cfg(test)]
mod tests {
    use crate::source_tree::rust_files;
    use std::path::Path;

    /// A layer that keeps a part per source but is not listed here would answer a named
    /// source's number with a panic (no part installed): every file holding a `Parts`
    /// static must be named by `add` and `forget`, or be the settings' (the registry's).
    #[test]
    fn every_layer_with_parts_is_installed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let this = std::fs::read_to_string(root.join("src/source/parts.rs")).unwrap();
        let mut missing = Vec::new();
        for file in rust_files() {
            let text = std::fs::read_to_string(&file).unwrap();
            let has_parts = text
                .lines()
                .any(|l| l.starts_with("static ") && l.contains(": Parts<"));
            let relative = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !has_parts || relative == "src/config/current.rs" {
                continue;
            }
            let module = file.file_stem().unwrap().to_string_lossy().into_owned();
            let module = if module == "mod" || module == "feed" {
                file.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            } else {
                module
            };
            for call in [
                format!("{module}::add_part(id)"),
                format!("{module}::forget_part(id)"),
            ] {
                if !this.contains(&call) {
                    missing.push(format!("{relative}: {call}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "not installed per source:\n{}",
            missing.join("\n")
        );
    }
}
