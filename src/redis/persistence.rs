//! What this server keeps of its writes, and where: its AOF and how often it is synced, its
//! RDB snapshots, and how far its replicas have acknowledged the replication stream. Read
//! from INFO and CONFIG on the main thread.

use redis_module::{Context, RedisValue, raw};
use std::ffi::{CStr, CString};
use std::time::Duration;

/// How this server persists its writes, and how far its replicas have them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    pub disk: Disk,
    /// The replication stream's offset now (`master_repl_offset`): every write made before
    /// this call is at or before it.
    pub stream_offset: i64,
    /// The lowest offset an online replica has acknowledged; None without online replicas.
    pub replicas_acked: Option<i64>,
}

/// What a restart of this server would load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// The AOF (`appendonly yes`), which holds a write once it is synced: within
    /// `sync_delay` of it (`appendfsync` always: at once; everysec: up to 2 s; no: when the
    /// kernel writes it back, up to about 30 s).
    Aof { sync_delay: Duration },
    /// RDB snapshots only (`save` points set): the last one that succeeded.
    Rdb {
        /// A snapshot is being written (a forked child runs).
        saving: bool,
        /// When the last successful save ended (`rdb_last_save_time`, seconds).
        last_save: i64,
        /// Whether the last save succeeded.
        last_ok: bool,
    },
    /// Neither: a restart starts empty.
    Nothing,
}

/// Reads it. Main thread.
pub fn read(ctx: &Context) -> Persistence {
    let field = info_section(ctx, "persistence");
    let disk = if field("aof_enabled") == "1" {
        Disk::Aof {
            sync_delay: sync_delay(&config(ctx, "appendfsync")),
        }
    } else if !config(ctx, "save").trim().is_empty() {
        Disk::Rdb {
            saving: field("rdb_bgsave_in_progress") == "1",
            last_save: field("rdb_last_save_time").parse().unwrap_or(0),
            last_ok: field("rdb_last_bgsave_status") == "ok",
        }
    } else {
        Disk::Nothing
    };
    drop(field);
    let field = info_section(ctx, "replication");
    let replicas: usize = field("connected_slaves").parse().unwrap_or(0);
    let replicas_acked = (0..replicas)
        .filter_map(|i| online_offset(&field(&format!("slave{i}"))))
        .min();
    Persistence {
        disk,
        stream_offset: field("master_repl_offset").parse().unwrap_or(0),
        replicas_acked,
    }
}

/// The fields of one INFO section, read by name ("" for a field it does not have).
///
/// Read through the raw API, not the crate's `ServerInfo::field`: that one retains the string
/// `RedisModule_ServerInfoGetField` returns (already the caller's) and frees it once, so every
/// field read leaked a string (some 30 bytes on the allocator Redis counts). The replication
/// source reads these fields every `durability::OBSERVE_EVERY` while it streams: about 1 KB a
/// second, kept after MODULE UNLOAD. `ServerInfoGetFieldC` lends the text held by the section
/// itself, which `FreeServerInfo` frees.
fn info_section(ctx: &Context, section: &str) -> impl Fn(&str) -> String {
    struct Section(
        *mut raw::RedisModuleCtx,
        *mut raw::RedisModuleServerInfoData,
    );
    impl Drop for Section {
        fn drop(&mut self) {
            // SAFETY: made by `GetServerInfo` below in this context, freed only here.
            unsafe { raw::RedisModule_FreeServerInfo.unwrap()(self.0, self.1) };
        }
    }
    let section = CString::new(section).expect("section names have no NUL");
    // SAFETY: main thread, in the caller's live context; freed by `Section`.
    let info = Section(ctx.ctx, unsafe {
        raw::RedisModule_GetServerInfo.unwrap()(ctx.ctx, section.as_ptr())
    });
    move |name| {
        // The whole section, not only its pointer (a copy), is the closure's: it is freed
        // when the closure is dropped.
        let info = &info;
        let Ok(name) = CString::new(name) else {
            return String::new();
        };
        // SAFETY: `info` lives as long as the closure; the text lives as long as `info`.
        let value = unsafe { raw::RedisModule_ServerInfoGetFieldC.unwrap()(info.1, name.as_ptr()) };
        if value.is_null() {
            return String::new();
        }
        // SAFETY: a NUL-terminated string owned by `info`, copied here.
        unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A configuration value (`CONFIG GET`), "" when the server has none by that name.
fn config(ctx: &Context, name: &str) -> String {
    match ctx.call("CONFIG", &["GET", name]) {
        Ok(RedisValue::Array(pair)) => match pair.get(1) {
            Some(RedisValue::SimpleString(s)) | Some(RedisValue::BulkString(s)) => s.clone(),
            Some(RedisValue::StringBuffer(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// How long after a write the AOF holds it on disk, for an `appendfsync` value.
pub fn sync_delay(appendfsync: &str) -> Duration {
    match appendfsync {
        "always" => Duration::ZERO,
        // Redis syncs every second, and postpones a sync up to 2 s while one is slow.
        "everysec" => Duration::from_secs(2),
        // The kernel's writeback: dirty pages older than 30 s are written.
        _ => Duration::from_secs(35),
    }
}

/// The acknowledged offset of a replica described as `ip=...,port=...,state=online,offset=N,...`
/// (INFO replication's `slaveN`), if it is online.
pub fn online_offset(replica: &str) -> Option<i64> {
    let mut online = false;
    let mut offset = None;
    for part in replica.split(',') {
        match part.split_once('=') {
            Some(("state", state)) => online = state == "online",
            Some(("offset", n)) => offset = n.parse().ok(),
            _ => {}
        }
    }
    offset.filter(|_| online)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_online_replica_has_its_acknowledged_offset() {
        let replica = "ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0";
        assert_eq!(online_offset(replica), Some(1234));
        let syncing = "ip=127.0.0.1,port=6380,state=wait_bgsave,offset=0,lag=0";
        assert_eq!(online_offset(syncing), None);
        assert_eq!(online_offset(""), None);
    }

    #[test]
    fn the_aof_holds_a_write_after_its_sync_policys_delay() {
        assert_eq!(sync_delay("always"), Duration::ZERO);
        assert_eq!(sync_delay("everysec"), Duration::from_secs(2));
        assert!(sync_delay("no") >= Duration::from_secs(30));
    }
}
