//! Redis Cluster / Valkey cluster: where the slot of a key pgcache derives is served.
//!
//! PGCACHE.GET and MGET name their keys, so the server routes them itself. READ, MULTIREAD,
//! WRITE and INVALIDATE derive their key from a table and a pk; on a cluster node they must
//! answer as Redis answers a key command: serve a key this node serves, redirect (`MOVED`,
//! or `ASK` while the slot migrates) one it does not, and never write a key into a slot it
//! does not serve. Redis is the authority: an RM_Call that touches a key is refused unless
//! this node serves it to this client (an ASKING client included); only when it is refused
//! is CLUSTER NODES read, to say where the key is.

use crate::error::Error;
use redis_module::{CallOptionsBuilder, CallReply, CallResult, Context, ContextFlags};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this server runs in cluster mode, read at load: `cluster-enabled` cannot change
/// while the server runs, and asking for the context's flags costs every miss ~130
/// instructions.
static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn init(ctx: &Context) {
    ENABLED.store(
        ctx.get_flags().contains(ContextFlags::CLUSTER),
        Ordering::Relaxed,
    );
}

#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether this node serves `key` to the calling client right now (always, outside cluster
/// mode).
pub fn serves(ctx: &Context, key: &str) -> bool {
    if !enabled() {
        return true;
    }
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let answer: CallResult = ctx.call_ext("EXISTS", &options, &[key]);
    answer.is_ok()
}

/// Ok when this node serves `key`; otherwise the redirection Redis would reply for it.
pub fn check(ctx: &Context, key: &str) -> Result<(), Error> {
    if serves(ctx, key) {
        return Ok(());
    }
    let slot = slot(key.as_bytes());
    let redirect = |line: String| Error::redis_reply(line);
    match locate(ctx, slot) {
        Some(Location::Elsewhere(addr)) => Err(redirect(format!("MOVED {slot} {addr}"))),
        Some(Location::Migrating(addr)) => Err(redirect(format!("ASK {slot} {addr}"))),
        None => Err(redirect(format!("CLUSTERDOWN Hash slot {slot} not served"))),
    }
}

/// The hash slot of a key, as CLUSTER KEYSLOT computes it: CRC16 of the part between the
/// first `{` and the next `}` when that is not empty, else of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) & 16383
}

/// CRC-16/XMODEM, Redis Cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where a slot this node does not serve to the client is.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// Another primary serves it (`ip:port`).
    Elsewhere(String),
    /// This node serves it but is moving it to `ip:port`, and the key is not here.
    Migrating(String),
}

fn locate(ctx: &Context, slot: u16) -> Option<Location> {
    locate_in(&cluster_nodes(ctx)?, slot)
}

/// How many slots this node serves as a primary; None outside cluster mode.
pub fn served_slots(ctx: &Context) -> Option<usize> {
    if !enabled() {
        return None;
    }
    Some(cluster_nodes(ctx).map_or(0, |text| served_in(&text)))
}

/// The lowest slot this node serves as a primary; None outside cluster mode or when it
/// serves none (a replica).
pub fn lowest_served_slot(ctx: &Context) -> Option<u16> {
    if !enabled() {
        return None;
    }
    lowest_in(&cluster_nodes(ctx)?)
}

/// This node's id (CLUSTER MYID); None outside cluster mode.
pub fn my_id(ctx: &Context) -> Option<String> {
    if !enabled() {
        return None;
    }
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let answer: CallResult = ctx.call_ext("CLUSTER", &options, &["MYID"]);
    match answer.ok()? {
        CallReply::String(s) => s.to_string(),
        CallReply::VerbatimString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A hash tag whose keys hash to `slot`: the smallest decimal number that does.
pub fn tag_for(slot: u16) -> String {
    slot_tag(slot).to_string()
}

/// `tag_for`, from a table of every slot's made once (a tagged entry's set is named by its
/// slot's tag on every write).
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); 16384];
        let mut left = tags.len();
        for n in 0u32.. {
            let tag = n.to_string();
            let at = usize::from(crc16(tag.as_bytes()) & 16383);
            if tags[at].is_empty() {
                tags[at] = tag;
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
        tags
    });
    &tags[usize::from(slot & 16383)]
}

/// CLUSTER NODES' text.
fn cluster_nodes(ctx: &Context) -> Option<String> {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let answer: CallResult = ctx.call_ext("CLUSTER", &options, &["NODES"]);
    match answer.ok()? {
        CallReply::String(s) => s.to_string(),
        CallReply::VerbatimString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The slots on the `myself` line of CLUSTER NODES' text.
fn served_in(nodes: &str) -> usize {
    nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 8 && f[2].split(',').any(|flag| flag == "myself"))
        .map_or(0, |f| {
            f[8..]
                .iter()
                .filter_map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?)
                })
                .sum()
        })
}

/// The slots that may hold this node's keys: those it serves, and those it is migrating
/// away or importing (`HeldSlots`); None outside cluster mode.
pub fn slots_with_keys(ctx: &Context) -> Option<HeldSlots> {
    if !enabled() {
        return None;
    }
    Some(cluster_nodes(ctx).map_or_else(HeldSlots::default, |text| slots_in(&text)))
}

/// The slots a node holds keys of, in order, each once; and of those, the ones moving
/// (migrating away, or importing): there a key may be on either node, and this node's
/// module calls are refused the keys it does not serve.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeldSlots {
    pub all: Vec<u16>,
    pub moving: Vec<u16>,
}

/// `slots_with_keys` over CLUSTER NODES' text: the `myself` line's ranges (`a-b`, `n`) and
/// migrations (`[n->-id]`, `[n-<-id]`).
fn slots_in(nodes: &str) -> HeldSlots {
    let mut held = HeldSlots::default();
    let Some(fields) = nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 8 && f[2].split(',').any(|flag| flag == "myself"))
    else {
        return held;
    };
    for range in fields.get(8..).unwrap_or_default() {
        let (first, last) = match range.strip_prefix('[') {
            // A migration: `[n->-id]` or `[n-<-id]`.
            Some(migration) => {
                let n = migration.split('-').next().unwrap_or_default();
                if let Ok(n) = n.parse::<u16>() {
                    held.moving.push(n);
                }
                (n, n)
            }
            None => range.split_once('-').unwrap_or((range, range)),
        };
        if let (Ok(first), Ok(last)) = (first.parse::<u16>(), last.parse::<u16>()) {
            held.all.extend(first..=last.min(16383));
        }
    }
    for slots in [&mut held.all, &mut held.moving] {
        slots.sort_unstable();
        slots.dedup();
    }
    held
}

/// The lowest slot on the `myself` line of CLUSTER NODES' text (migrations aside).
fn lowest_in(nodes: &str) -> Option<u16> {
    nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 8 && f[2].split(',').any(|flag| flag == "myself"))?[8..]
        .iter()
        .filter_map(|range| range.split('-').next()?.parse::<u16>().ok())
        .min()
}

/// `locate` over CLUSTER NODES' text: lines of `id ip:port@bus[,host] flags master ping pong
/// epoch link slot...`, slots as `n`, `a-b`, or `[n->-id]` on the node migrating slot n.
fn locate_in(nodes: &str, slot: u16) -> Option<Location> {
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8)
        .collect();
    let addr_of = |id: &str| {
        lines
            .iter()
            .find(|f| f[0] == id)
            .map(|f| f[1].split(['@', ',']).next().unwrap_or(f[1]).to_string())
    };
    let owner = lines.iter().find(|f| {
        f[8..].iter().any(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
        })
    })?;
    if !owner[2].split(',').any(|flag| flag == "myself") {
        return addr_of(owner[0]).map(Location::Elsewhere);
    }
    let migrating = format!("[{slot}->-");
    owner[8..]
        .iter()
        .find_map(|s| s.strip_prefix(&migrating)?.strip_suffix(']'))
        .and_then(addr_of)
        .map(Location::Migrating)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"foo{hash_tag}"), 2515);
        assert_eq!(slot(b"bar{hash_tag}"), 2515);
        assert_eq!(
            slot(b"{}foo"),
            slot(b"{}foo"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(br#"pg_cache:users:{"id":7}"#), slot(br#""id":7"#));
    }

    const NODES: &str = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460 [42->-b2]
b2 127.0.0.1:7002@17002,host-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master - 0 1 3 connected 10923-16383
";

    #[test]
    fn a_node_knows_its_lowest_slot_and_a_tag_for_any_slot() {
        assert_eq!(lowest_in(NODES), Some(0));
        let replica = "a1 127.0.0.1:7001@17001 myself,slave b2 0 0 1 connected\n";
        assert_eq!(lowest_in(replica), None);
        let later = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 9000 5461-8000\n";
        assert_eq!(lowest_in(later), Some(5461));
        for wanted in [0, 1, 5461, 16383] {
            let tag = tag_for(wanted);
            assert_eq!(slot(format!("pos:{{{tag}}}").as_bytes()), wanted);
        }
    }

    #[test]
    fn cluster_nodes_say_where_a_slot_is() {
        assert_eq!(
            locate_in(NODES, 6000),
            Some(Location::Elsewhere("127.0.0.1:7002".into()))
        );
        assert_eq!(
            locate_in(NODES, 16383),
            Some(Location::Elsewhere("127.0.0.1:7003".into()))
        );
        assert_eq!(
            locate_in(NODES, 42),
            Some(Location::Migrating("127.0.0.1:7002".into()))
        );
        assert_eq!(locate_in(NODES, 43), None, "ours, not migrating");
        assert_eq!(locate_in("", 1), None);
        assert_eq!(served_in(NODES), 5461);
        assert_eq!(served_in(""), 0);
    }

    #[test]
    fn a_node_s_keys_are_in_the_slots_it_serves_migrates_or_imports() {
        let held = slots_in(NODES);
        assert_eq!(held.all.len(), 5461, "42 is among 0-5460");
        assert_eq!((held.all[0], held.all[5460]), (0, 5460));
        assert_eq!(held.moving, vec![42]);
        let moving = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 3 7-8 [9->-b2] \
                      [20-<-c3]\n";
        assert_eq!(
            slots_in(moving),
            HeldSlots {
                all: vec![3, 7, 8, 9, 20],
                moving: vec![9, 20]
            }
        );
        let replica = "a1 127.0.0.1:7001@17001 myself,slave b2 0 0 1 connected\n";
        assert_eq!(slots_in(replica), HeldSlots::default());
        assert_eq!(slots_in(""), HeldSlots::default());
    }
}
