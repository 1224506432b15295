//! What COMMAND INFO and COMMAND DOCS say of each pgcache command: summary, since, arity,
//! arguments, key specs (so cluster clients route the commands that name keys and ACL key
//! patterns apply to them) and command tips. Built into Redis's structures with
//! `RedisModule_SetCommandInfo`, which copies what it is given.

use crate::error::Error;
use redis_module::{Context, raw};
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::raw::c_int;
use std::ptr;

/// The key arguments of a command: every one is a cache key it reads.
#[derive(Clone, Copy)]
pub enum Keys {
    None,
    /// Argument 1.
    One,
    /// Arguments 1 to the last.
    All,
}

#[derive(Clone, Copy)]
pub enum ArgKind {
    Text,
    Key,
    Integer,
}

#[derive(Clone, Copy)]
pub struct Arg {
    pub name: &'static str,
    pub kind: ArgKind,
    pub optional: bool,
    pub multiple: bool,
}

impl Arg {
    pub const fn text(name: &'static str) -> Arg {
        Arg {
            name,
            kind: ArgKind::Text,
            optional: false,
            multiple: false,
        }
    }
    pub const fn key(name: &'static str) -> Arg {
        Arg {
            kind: ArgKind::Key,
            ..Arg::text(name)
        }
    }
    pub const fn ttl() -> Arg {
        Arg {
            kind: ArgKind::Integer,
            optional: true,
            ..Arg::text("ttl")
        }
    }
    pub const fn optional(self) -> Arg {
        Arg {
            optional: true,
            ..self
        }
    }
    pub const fn multiple(self) -> Arg {
        Arg {
            multiple: true,
            ..self
        }
    }
}

pub struct Doc {
    pub summary: &'static str,
    pub since: &'static str,
    pub complexity: &'static str,
    /// Redis's arity: exact when positive, a minimum when negative, the name included.
    pub arity: i32,
    pub keys: Keys,
    /// Command tips (`request_policy:all_shards` ...), space separated; "" for none.
    pub tips: &'static str,
    pub args: &'static [Arg],
}

impl Doc {
    /// The (first, last, step) key positions CreateCommand takes.
    pub fn key_positions(&self) -> (c_int, c_int, c_int) {
        match self.keys {
            Keys::None => (0, 0, 0),
            Keys::One => (1, 1, 1),
            Keys::All => (1, -1, 1),
        }
    }
}

const VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

fn c(text: &str) -> CString {
    CString::new(text).expect("static text without NUL")
}

/// An all-zero key spec: the terminator of Redis's C array, and the start of each entry.
fn zeroed_key_spec() -> raw::RedisModuleCommandKeySpec {
    // SAFETY: a C struct of integers, unions of integers and pointers, all valid as zero.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// An all-zero command argument: the terminator of Redis's C array, and the start of each
/// entry.
fn zeroed_arg() -> raw::RedisModuleCommandArg {
    // SAFETY: a C struct of integers and nullable pointers, all valid as zero.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// A read-only key spec: keys from argument 1 to `last` (0: argument 1 only, -1: the last).
fn key_spec(last: c_int) -> raw::RedisModuleCommandKeySpec {
    let mut spec = zeroed_key_spec();
    spec.flags = u64::from(raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS);
    spec.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
    spec.bs.index.pos = 1;
    spec.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
    spec.fk.range.lastkey = last;
    spec.fk.range.keystep = 1;
    spec.fk.range.limit = 0;
    spec
}

/// Adds the `pgcache` ACL category (`+@pgcache`, `ACL CAT pgcache`) where the server lets
/// modules add categories (Redis 7.4+, Valkey 8+); true when every command may be put in it.
pub fn add_category(ctx: &Context) -> bool {
    // SAFETY: reading function pointers Redis filled in at load.
    let Some(add) = (unsafe { raw::RedisModule_AddACLCategory }) else {
        return false;
    };
    // SAFETY: OnLoad context. A reload finds the category already there, which is fine.
    unsafe { add(ctx.ctx, c"pgcache".as_ptr()) };
    true
}

/// Puts `name` in the `pgcache` ACL category.
pub fn set_category(ctx: &Context, name: &str) {
    // SAFETY: reading function pointers Redis filled in at load.
    let (Some(get_command), Some(set)) = (unsafe { raw::RedisModule_GetCommand }, unsafe {
        raw::RedisModule_SetCommandACLCategories
    }) else {
        return;
    };
    let c_name = c(name);
    // SAFETY: OnLoad context; the strings outlive the calls.
    unsafe {
        let command = get_command(ctx.ctx, c_name.as_ptr());
        if !command.is_null() {
            set(command, c"pgcache".as_ptr());
        }
    }
}

/// Sets `name`'s COMMAND INFO / DOCS. A server without the API (before Redis 7) is left as
/// it is: the key positions given to CreateCommand still route the commands.
pub fn set(ctx: &Context, name: &str, doc: &Doc) -> Result<(), Error> {
    let (Some(get_command), Some(set_info)) = (
        // SAFETY: reading function pointers Redis filled in at load.
        unsafe { raw::RedisModule_GetCommand },
        unsafe { raw::RedisModule_SetCommandInfo },
    ) else {
        return Ok(());
    };
    // Every string lives until SetCommandInfo has copied it.
    let texts: Vec<CString> = doc.args.iter().map(|a| c(a.name)).collect();
    let mut args: Vec<raw::RedisModuleCommandArg> = doc
        .args
        .iter()
        .zip(&texts)
        .map(|(arg, name)| {
            let mut raw_arg = zeroed_arg();
            raw_arg.name = name.as_ptr();
            raw_arg.key_spec_index = -1;
            raw_arg.type_ = match arg.kind {
                ArgKind::Text => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                ArgKind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                ArgKind::Key => {
                    raw_arg.key_spec_index = 0;
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY
                }
            };
            let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
            if arg.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if arg.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            raw_arg.flags = flags as c_int;
            raw_arg
        })
        .collect();
    args.push(zeroed_arg());
    let mut key_specs = match doc.keys {
        Keys::None => vec![],
        Keys::One => vec![key_spec(0)],
        Keys::All => vec![key_spec(-1)],
    };
    key_specs.push(zeroed_key_spec());
    let (summary, since, complexity, tips) =
        (c(doc.summary), c(doc.since), c(doc.complexity), c(doc.tips));
    let info = raw::RedisModuleCommandInfo {
        version: &VERSION,
        summary: summary.as_ptr(),
        complexity: complexity.as_ptr(),
        since: since.as_ptr(),
        history: ptr::null_mut(),
        tips: if doc.tips.is_empty() {
            ptr::null()
        } else {
            tips.as_ptr()
        },
        arity: doc.arity,
        key_specs: key_specs.as_mut_ptr(),
        args: args.as_mut_ptr(),
    };
    let c_name = c(name);
    // SAFETY: OnLoad context; every pointer in `info` is live for the call, which copies.
    let status = unsafe {
        let command = get_command(ctx.ctx, c_name.as_ptr());
        if command.is_null() {
            return Err(Error::internal(format!("{name} was not registered")));
        }
        set_info(command, &info)
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(Error::internal(format!(
            "Redis refused the command info of {name}"
        )));
    }
    Ok(())
}

const TABLE: Arg = Arg::text("table");
const PK: Arg = Arg::text("pk_json");
const ONE_ROW: &str = "O(1) on a hit; one PostgreSQL query on a miss";

pub const READ: Doc = Doc {
    summary: "Returns a PostgreSQL row as JSON, from the cache or, on a miss, from PostgreSQL",
    since: "0.1.0",
    complexity: ONE_ROW,
    arity: -3,
    keys: Keys::None,
    tips: "",
    args: &[TABLE, PK, Arg::ttl()],
};

pub const MULTIREAD: Doc = Doc {
    summary: "Returns several rows of one table, missed ones fetched in one query",
    since: "0.1.0",
    complexity: "O(N) for N keys; one PostgreSQL query for the misses",
    arity: -3,
    keys: Keys::None,
    tips: "",
    args: &[TABLE, Arg::text("json_array_of_pks"), Arg::ttl()],
};

pub const WRITE: Doc = Doc {
    summary: "Caches a row's JSON under its key (PostgreSQL is not written)",
    since: "0.1.0",
    complexity: "O(1)",
    arity: -4,
    keys: Keys::None,
    tips: "",
    args: &[TABLE, PK, Arg::text("data_json"), Arg::ttl()],
};

pub const INVALIDATE: Doc = Doc {
    summary: "Removes a row's cache entry",
    since: "0.1.0",
    complexity: "O(1)",
    arity: 3,
    keys: Keys::None,
    tips: "",
    args: &[TABLE, PK],
};

pub const FLUSH: Doc = Doc {
    summary: "Removes every cache entry of a table",
    since: "0.1.0",
    complexity: "O(N) for the N keys of the database, in slices",
    arity: 2,
    keys: Keys::None,
    tips: "request_policy:all_shards response_policy:all_succeeded",
    args: &[TABLE],
};

pub const STATS: Doc = Doc {
    summary: "Returns pgcache's counters, gauges and latencies on this node",
    since: "0.1.0",
    complexity: "O(T) for T tables",
    arity: -1,
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: &[Arg::text("RESET").optional()],
};

pub const HEALTH: Doc = Doc {
    summary: "Tells whether pgcache can do its job on this node right now",
    since: "0.1.0",
    complexity: "One PostgreSQL round trip",
    arity: 1,
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: &[],
};

pub const DRAIN: Doc = Doc {
    summary: "Refuses requests that would wait for PostgreSQL for a while, so that MODULE UNLOAD finds none in flight",
    since: "0.2.0",
    complexity: "O(1)",
    arity: -1,
    keys: Keys::None,
    tips: "",
    args: &[Arg {
        kind: ArgKind::Integer,
        optional: true,
        ..Arg::text("seconds")
    }],
};

pub const SLOWLOG: Doc = Doc {
    summary: "Lists the slowest pgcache calls on this node",
    since: "0.1.0",
    complexity: "O(N) for N entries returned",
    arity: -2,
    keys: Keys::None,
    tips: "nondeterministic_output",
    args: &[
        Arg::text("GET | LEN | RESET"),
        Arg::text("count").optional(),
    ],
};

pub const HOOK: Doc = Doc {
    summary: "Adds, removes or lists the hooks that deliver cache events",
    since: "0.1.0",
    complexity: "O(H) for H hooks",
    arity: -2,
    keys: Keys::None,
    tips: "",
    args: &[
        Arg::text("ADD | DEL | LIST | SYNC"),
        Arg::text("definition").optional().multiple(),
    ],
};

pub const DEBUG: Doc = Doc {
    summary: "Fault injection for tests (registered with debug_commands yes)",
    since: "0.1.0",
    complexity: "O(1)",
    arity: 3,
    keys: Keys::None,
    tips: "",
    args: &[Arg::text("PANIC | FILLS"), Arg::text("where")],
};

pub const GET: Doc = Doc {
    summary: "Returns the row a cache key names, from the cache or, on a miss, from PostgreSQL",
    since: "0.2.0",
    complexity: ONE_ROW,
    arity: -2,
    keys: Keys::One,
    tips: "",
    args: &[Arg::key("key"), Arg::ttl()],
};

pub const MGET: Doc = Doc {
    summary: "Returns the rows several cache keys name, missed ones fetched together",
    since: "0.2.0",
    complexity: "O(N) for N keys; one PostgreSQL query per table for the misses",
    arity: -2,
    keys: Keys::All,
    tips: "",
    args: &[Arg::key("key").multiple()],
};

pub const KEY: Doc = Doc {
    summary: "Returns the canonical cache key of a row",
    since: "0.2.0",
    complexity: "O(1); one PostgreSQL query the first time a table is named",
    arity: 3,
    keys: Keys::None,
    tips: "",
    args: &[TABLE, PK],
};
