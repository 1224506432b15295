//! Registering commands: CreateCommand with the function Redis calls, then what COMMAND INFO
//! and COMMAND DOCS say (`RedisModule_SetCommandInfo`, which copies what it is given), and
//! the `pgcache` ACL category; `entry!` makes the function Redis calls from a safe one.

use redis_module::{Context, raw};
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::raw::c_int;
use std::ptr;

/// The function Redis calls for a command (`entry!` makes one).
pub type Entry = raw::RedisModuleCmdFunc;

/// The `extern "C"` function Redis calls for a command, made from `$run`, a
/// `fn(&Context, &Args)` (or a closure of that shape): it borrows the arguments and always
/// tells Redis the call was handled (errors are replies).
macro_rules! entry {
    ($run:expr) => {{
        unsafe extern "C" fn entry(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::os::raw::c_int,
        ) -> std::os::raw::c_int {
            // SAFETY: Redis passes its context and `argc` live arguments for the call.
            let args = unsafe { $crate::redis::args::Args::from_raw(argv, argc) };
            $crate::redis::command::run(&redis_module::Context::new(ctx), &args, $run);
            redis_module::raw::REDISMODULE_OK as std::os::raw::c_int
        }
        Some(entry as unsafe extern "C" fn(_, _, _) -> _)
    }};
}
pub(crate) use entry;

/// Calls `f` (statically: a closure given to `entry!` is inlined into the function Redis
/// calls, not reached through a pointer).
#[inline(always)]
pub fn run<F: FnOnce(&Context, &crate::redis::args::Args)>(
    ctx: &Context,
    args: &crate::redis::args::Args,
    f: F,
) {
    f(ctx, args)
}

/// What Redis is told of a command.
pub struct Registration<'a> {
    pub name: &'a str,
    pub entry: Entry,
    /// Redis command flags (`readonly`, `write deny-oom`, `admin` ...).
    pub flags: &'a str,
    pub summary: &'a str,
    pub since: &'a str,
    pub complexity: &'a str,
    /// Command tips (`request_policy:all_shards` ...), space separated; "" for none.
    pub tips: &'a str,
    /// Exact when positive, a minimum when negative, the name included.
    pub arity: i32,
    pub keys: Keys,
    /// The arguments after the name.
    pub args: &'a [Arg],
}

/// The key arguments of a command: every one is a cache key it reads.
#[derive(Clone, Copy)]
pub enum Keys {
    None,
    /// Argument 1.
    One,
    /// Arguments 1 to the last, or to the one before a trailing `AFTER <lsn>`: no key spec
    /// can say that, so the spec is marked incomplete and the command tells Redis the
    /// positions when asked (`getkeys-api`, `keys_before_after`).
    AllBeforeAfter,
}

/// The positions of the keys in a call of a `Keys::AllBeforeAfter` command of `argc`
/// arguments (`arg(i)` is argument `i`): they end before its trailing options, each a word
/// of `OPTION_WORDS` and a value. A cache key is never such a bare word (it starts with the
/// cache prefix and has a `:`), so the words end the keys.
pub fn keys_before_after<'a>(
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
) -> std::ops::Range<usize> {
    let mut end = argc;
    for _ in OPTION_WORDS {
        let word = if end >= 4 { arg(end - 2) } else { &[] };
        if !OPTION_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w)) {
            break;
        }
        end -= 2;
    }
    1..end
}

/// The words of the options that may follow MGET's keys.
const OPTION_WORDS: [&[u8]; 2] = [b"AFTER", b"MAXSTALE"];

/// True when Redis calls a `getkeys-api` command only to learn where its keys are (for
/// cluster routing, ACL key checks and CLIENT TRACKING), not to run it.
pub fn is_keys_position_request(ctx: &Context) -> bool {
    ctx.is_keys_position_request()
}

/// Tells Redis, during a keys position request, that argument `position` is a key the
/// command reads.
pub fn report_read_key(ctx: &Context, position: usize) {
    let Ok(position) = c_int::try_from(position) else {
        return;
    };
    // SAFETY: reading function pointers Redis filled in at load; the context is the one
    // Redis passed for this position request, and `position` is an argument of the call.
    unsafe {
        if let Some(with_flags) = raw::RedisModule_KeyAtPosWithFlags {
            let flags = raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS;
            with_flags(ctx.ctx, position, flags as c_int);
        } else if let Some(at) = raw::RedisModule_KeyAtPos {
            at(ctx.ctx, position);
        }
    }
}

#[derive(Clone, Copy)]
pub enum ArgKind {
    Text,
    Key,
    Integer,
    /// A word alone (`WITHAGE`): its token is the whole argument.
    PureToken,
}

#[derive(Clone, Copy)]
pub struct Arg {
    pub name: &'static str,
    pub kind: ArgKind,
    pub optional: bool,
    pub multiple: bool,
    /// The literal word before the value (`AFTER <lsn>`): two arguments of a call.
    pub token: Option<&'static str>,
}

impl ArgKind {
    pub const fn is_pure_token(self) -> bool {
        matches!(self, ArgKind::PureToken)
    }
}

impl Arg {
    pub const fn text(name: &'static str) -> Arg {
        Arg {
            name,
            kind: ArgKind::Text,
            optional: false,
            multiple: false,
            token: None,
        }
    }
    pub const fn key(name: &'static str) -> Arg {
        Arg {
            kind: ArgKind::Key,
            ..Arg::text(name)
        }
    }
    pub const fn integer(name: &'static str) -> Arg {
        Arg {
            kind: ArgKind::Integer,
            ..Arg::text(name)
        }
    }
    pub const fn ttl() -> Arg {
        Arg::integer("ttl").optional()
    }
    /// `[TTL <seconds>]`: how long a result is cached (PGCACHE.QUERY, whose parameters
    /// come before it).
    pub const fn ttl_seconds() -> Arg {
        Arg {
            token: Some("TTL"),
            ..Arg::integer("seconds").optional()
        }
    }
    /// `[AFTER <lsn>]`: the reply reflects every transaction committed up to that position.
    pub const fn after() -> Arg {
        Arg {
            token: Some("AFTER"),
            ..Arg::text("lsn").optional()
        }
    }
    /// `[WITHAGE]`: the reply comes with how far behind PostgreSQL it may be.
    pub const fn with_age() -> Arg {
        Arg {
            kind: ArgKind::PureToken,
            token: Some("WITHAGE"),
            ..Arg::text("withage").optional()
        }
    }
    /// `[WITHKEY]`: the reply comes with the key that holds the result.
    pub const fn with_key() -> Arg {
        Arg {
            kind: ArgKind::PureToken,
            token: Some("WITHKEY"),
            ..Arg::text("withkey").optional()
        }
    }
    /// `[SOURCE <name>]`: the database the call reads (or whose entries it changes); the
    /// default source without it.
    pub const fn source() -> Arg {
        Arg {
            token: Some("SOURCE"),
            ..Arg::text("name").optional()
        }
    }
    /// `[TAG <tag> ...]`: tags the call's entries carry, for `PGCACHE.INVALIDATE TAG`.
    pub const fn tags() -> Arg {
        Arg {
            token: Some("TAG"),
            ..Arg::text("tag").optional().multiple()
        }
    }
    /// `[MAXSTALE <ms>]`: the call's own bound on how old its answer may be.
    pub const fn max_stale() -> Arg {
        Arg {
            token: Some("MAXSTALE"),
            ..Arg::integer("ms").optional()
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

/// Registers `command` (CreateCommand, then its COMMAND INFO / DOCS).
pub fn register(ctx: &Context, command: &Registration) -> Result<(), String> {
    let (first_key, last_key, key_step) = match command.keys {
        Keys::None => (0, 0, 0),
        Keys::One => (1, 1, 1),
        Keys::AllBeforeAfter => (1, -1, 1),
    };
    let flags = match command.keys {
        Keys::AllBeforeAfter => format!("{} getkeys-api", command.flags),
        _ => command.flags.to_string(),
    };
    let (name, flags) = (c(command.name), c(&flags));
    // SAFETY: called from OnLoad with its context.
    let status = unsafe {
        raw::RedisModule_CreateCommand.unwrap()(
            ctx.ctx,
            name.as_ptr(),
            command.entry,
            flags.as_ptr(),
            first_key,
            last_key,
            key_step,
        )
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(format!("could not register {}", command.name));
    }
    set(ctx, command)
}

/// Sets the command's COMMAND INFO / DOCS. A server without the API (before Redis 7) is left
/// as it is: the key positions given to CreateCommand still route the commands.
fn set(ctx: &Context, doc: &Registration) -> Result<(), String> {
    let name = doc.name;
    let (Some(get_command), Some(set_info)) = (
        // SAFETY: reading function pointers Redis filled in at load.
        unsafe { raw::RedisModule_GetCommand },
        unsafe { raw::RedisModule_SetCommandInfo },
    ) else {
        return Ok(());
    };
    // Every string lives until SetCommandInfo has copied it.
    let texts: Vec<CString> = doc.args.iter().map(|a| c(a.name)).collect();
    let tokens: Vec<Option<CString>> = doc.args.iter().map(|a| a.token.map(c)).collect();
    let mut args: Vec<raw::RedisModuleCommandArg> = doc
        .args
        .iter()
        .zip(&texts)
        .zip(&tokens)
        .map(|((arg, name), token)| {
            let mut raw_arg = zeroed_arg();
            raw_arg.name = name.as_ptr();
            raw_arg.token = token.as_ref().map_or(ptr::null(), |t| t.as_ptr());
            raw_arg.key_spec_index = -1;
            raw_arg.type_ = match arg.kind {
                ArgKind::Text => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
                ArgKind::PureToken => {
                    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN
                }
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
        Keys::AllBeforeAfter => {
            let mut spec = key_spec(-1);
            spec.flags |= u64::from(raw::REDISMODULE_CMD_KEY_INCOMPLETE);
            vec![spec]
        }
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
            return Err(format!("{name} was not registered"));
        }
        set_info(command, &info)
    };
    if status != raw::REDISMODULE_OK as c_int {
        return Err(format!("Redis refused the command info of {name}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::keys_before_after;

    #[test]
    fn trailing_options_and_their_values_are_not_keys() {
        let keys = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            keys_before_after(args.len(), |i| args[i])
        };
        assert_eq!(keys(&["MGET", "k", "l", "AFTER", "0/1"]), 1..3);
        assert_eq!(keys(&["MGET", "k", "after", "0/1"]), 1..2);
        assert_eq!(keys(&["MGET", "k", "a"]), 1..3);
        assert_eq!(keys(&["MGET", "k", "MAXSTALE", "5", "AFTER", "0/1"]), 1..2);
        assert_eq!(
            keys(&["MGET", "k", "l", "AFTER", "0/1", "maxstale", "5"]),
            1..3
        );
        // Too short to hold a key before AFTER: every argument is taken as a key.
        assert_eq!(keys(&["MGET", "AFTER", "0/1"]), 1..3);
        assert_eq!(keys(&["MGET", "k", "l", "AFTERS", "0/1"]), 1..5);
    }
}
