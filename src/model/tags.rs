//! Tags: names a call gives the entries it reads or writes (`TAG tenant:42 plan`), so that
//! `PGCACHE.INVALIDATE TAG` can drop them together, whatever their keys. Pure: what a tag
//! may be, and the name of the set holding a tag's entries.
//!
//! A tag's entries in one place are the members of one Redis set: `<prefix>~tag:<tag>` on a
//! server outside a cluster, `<prefix>~tag:{<slot tag>}:<tag>` on a cluster node, where the
//! slot tag hashes to the entries' slot. The set lives beside its entries (in their DB,
//! their slot, under their source's prefix), so it is saved, replicated, resharded and
//! flushed with them.

use crate::error::Error;
use std::sync::Arc;

/// Tags a call may give: each is a set membership per entry, so a tagged entry costs a
/// bounded amount of memory.
pub const MAX_TAGS: usize = 16;
/// The longest tag (bytes).
pub const MAX_TAG_BYTES: usize = 200;

/// What marks a tag set among a source's keys.
pub const SET_MARK: &str = "~tag:";

/// The commands' option words: none is a tag (each ends a `TAG` list; given to INVALIDATE
/// TAG, `SOURCE` would silently be taken for a tag).
pub const OPTION_WORDS: [&str; 7] = [
    "AFTER", "MAXSTALE", "WITHAGE", "SOURCE", "TTL", "WITHKEY", "TAG",
];

/// A call's tags (None: untagged, the usual case, which costs nothing).
pub type Tags = Option<Arc<[String]>>;

/// The tags after `TAG`, checked: at least one, at most `MAX_TAGS`, each non-empty text of
/// at most `MAX_TAG_BYTES`; repeats are given once.
pub fn parse(args: &[&[u8]]) -> Result<Arc<[String]>, Error> {
    if args.is_empty() {
        return Err(Error::invalid(
            "TAG needs at least one tag, such as TAG tenant:42",
        ));
    }
    let mut tags: Vec<String> = Vec::with_capacity(args.len());
    for arg in args {
        let tag =
            std::str::from_utf8(arg).map_err(|_| Error::invalid("a tag must be UTF-8 text"))?;
        if OPTION_WORDS.iter().any(|w| w.eq_ignore_ascii_case(tag)) {
            return Err(Error::invalid(format!(
                "{tag:?} is an option word, not a tag (INVALIDATE TAG covers every source: \
                 it takes no SOURCE)"
            )));
        }
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(Error::invalid(format!(
                "a tag is 1 to {MAX_TAG_BYTES} bytes, got {}",
                tag.len()
            )));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!(
            "a call takes at most {MAX_TAGS} tags, got {}",
            tags.len()
        )));
    }
    Ok(tags.into())
}

/// The set holding `tag`'s entries under `prefix` (a source's key prefix); on a cluster,
/// those of the slot `slot_tag` hashes to.
pub fn set_name(prefix: &str, slot_tag: Option<&str>, tag: &str) -> String {
    match slot_tag {
        Some(slot) => format!("{prefix}{SET_MARK}{{{slot}}}:{tag}"),
        None => format!("{prefix}{SET_MARK}{tag}"),
    }
}

/// Whether `key` is a tag set under `prefix` (a source's key prefix).
pub fn is_set(prefix: &[u8], key: &[u8]) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with(SET_MARK.as_bytes()))
}

/// The tag whose set `key` is, under `prefix` (a source's key prefix); `clustered`: named
/// as on a cluster node (`~tag:{<slot tag>}:<tag>`). None: no tag set.
pub fn tag_of_set<'a>(prefix: &[u8], key: &'a [u8], clustered: bool) -> Option<&'a [u8]> {
    let rest = key
        .strip_prefix(prefix)?
        .strip_prefix(SET_MARK.as_bytes())?;
    if !clustered {
        return Some(rest);
    }
    let close = rest.iter().position(|&b| b == b'}')?;
    rest.strip_prefix(b"{")?.get(close..)?.strip_prefix(b":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked_and_given_once() {
        let tags = parse(&[b"tenant:42", b"plan", b"tenant:42"]).unwrap();
        assert_eq!(&*tags, ["tenant:42".to_string(), "plan".to_string()]);
        assert!(parse(&[]).unwrap_err().message().contains("at least one"));
        assert!(parse(&[b""]).unwrap_err().message().contains("1 to"));
        let long = vec![b'x'; MAX_TAG_BYTES + 1];
        assert!(parse(&[&long]).is_err());
        assert!(parse(&[b"\xff"]).unwrap_err().message().contains("UTF-8"));
        let source = parse(&[b"t", b"SOURCE", b"b"]).unwrap_err();
        assert!(
            source.message().contains("option word"),
            "{}",
            source.message()
        );
        let many: Vec<Vec<u8>> = (0..=MAX_TAGS)
            .map(|i| format!("t{i}").into_bytes())
            .collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        assert!(parse(&many).unwrap_err().message().contains("at most"));
    }

    #[test]
    fn a_tag_set_is_named_under_its_source_and_slot() {
        assert_eq!(set_name("pg_cache:", None, "t{1}"), "pg_cache:~tag:t{1}");
        assert_eq!(
            set_name("pg_cache:@b:", Some("123"), "plan"),
            "pg_cache:@b:~tag:{123}:plan"
        );
        assert!(is_set(b"pg_cache:", b"pg_cache:~tag:x"));
        assert!(!is_set(b"pg_cache:", b"pg_cache:users:{\"id\":1}"));
    }

    #[test]
    fn a_set_s_name_gives_its_tag_back() {
        for (slot, clustered) in [(None, false), (Some("1a"), true)] {
            for tag in ["plan", "t{1}", "{x}:y", "a:b:c"] {
                let name = set_name("pg_cache:@b:", slot, tag);
                let back = tag_of_set(b"pg_cache:@b:", name.as_bytes(), clustered);
                assert_eq!(back, Some(tag.as_bytes()), "{name}");
            }
        }
        assert_eq!(tag_of_set(b"pg_cache:", b"pg_cache:users:{}", false), None);
        assert_eq!(tag_of_set(b"pg_cache:", b"other:~tag:x", false), None);
        assert_eq!(tag_of_set(b"pg_cache:", b"pg_cache:~tag:x", true), None);
    }

    proptest::proptest! {
        /// Any tag `parse` admits comes back from its set's name, on a cluster or not.
        #[test]
        fn every_tag_comes_back_from_its_set_s_name(
            tag in "\\PC{1,40}",
            slot in "[0-9a-z]{1,4}",
            clustered: bool,
        ) {
            proptest::prop_assume!(parse(&[tag.as_bytes()]).is_ok());
            let slot = clustered.then_some(slot.as_str());
            let name = set_name("pg_cache:", slot, &tag);
            let back = tag_of_set(b"pg_cache:", name.as_bytes(), clustered);
            proptest::prop_assert_eq!(back, Some(tag.as_bytes()));
        }
    }
}
