//! How a command is described, once, beside its handler (`Command`): its name, the function
//! Redis calls, its flags, and what COMMAND INFO and COMMAND DOCS say of it: summary, since,
//! arguments (from which its arity follows), key specs (so cluster clients route the
//! commands that name keys and ACL key patterns apply to them) and command tips. Registered
//! through `redis::command`.

use crate::commands::Handler;
use crate::error::Error;
use crate::redis::{self, command::Registration};
use crate::requests::reply::Reply;
use crate::stats::Tracked;
use redis_module::Context;

pub use crate::redis::command::{Arg, Entry, Keys, add_category, set_category};

/// One command, described once: what registers it, what `dispatch` checks its calls
/// against, what COMMAND INFO / DOCS say, and what its heading in docs/commands.md shows.
pub struct Command {
    /// `pgcache.read`.
    pub name: &'static str,
    /// The function Redis calls (`command_fn!` of this description, or a faster path of its
    /// own that falls back to `dispatch`).
    pub entry: Entry,
    pub handler: Handler,
    /// What STATS counts and times its calls as, if it does.
    pub tracked: Option<Tracked>,
    /// Redis command flags (`readonly`, `write deny-oom`, `admin` ...).
    pub flags: &'static str,
    pub summary: &'static str,
    pub since: &'static str,
    pub complexity: &'static str,
    pub keys: Keys,
    /// Command tips (`request_policy:all_shards` ...), space separated; "" for none.
    pub tips: &'static str,
    /// The arguments after the name; they decide the arity.
    pub args: Params,
}

impl Command {
    /// The fewest arguments a call has, the name included.
    pub const fn min_args(&self) -> usize {
        self.args.min
    }

    /// The most arguments a call may have, the name included (None: no limit).
    pub const fn max_args(&self) -> Option<usize> {
        self.args.max
    }

    /// Redis's arity: exact when positive, a minimum when negative, the name included.
    pub const fn arity(&self) -> i32 {
        match self.max_args() {
            Some(max) if max == self.min_args() => max as i32,
            _ => -(self.min_args() as i32),
        }
    }

    /// Whether a call with `argc` arguments (the name included) has a count it accepts.
    #[inline]
    pub fn accepts(&self, argc: usize) -> Result<(), Reply> {
        let within = argc >= self.args.min && self.args.max.is_none_or(|max| argc <= max);
        if within {
            Ok(())
        } else {
            Err(Reply::WrongArity)
        }
    }

    /// The arguments as docs/commands.md's heading shows them: `<table> <pk_json> [ttl]`, `<key>
    /// [key ...]`, `GET | LEN | RESET [count]` (upper-case names are literal words).
    #[cfg(test)]
    pub fn usage(&self) -> String {
        self.args
            .list
            .iter()
            .map(|arg| {
                let literal = arg.name.chars().all(|c| !c.is_ascii_lowercase());
                let shown = match arg.token {
                    Some(token) if arg.kind.is_pure_token() => token.to_string(),
                    Some(token) => format!("{token} <{}>", arg.name),
                    None if literal => arg.name.to_string(),
                    None => format!("<{}>", arg.name),
                };
                match (arg.optional, arg.multiple) {
                    (false, false) => shown,
                    (false, true) => format!("{shown} [{} ...]", arg.name),
                    (true, false) if arg.token.is_some() => {
                        format!("[{}]", shown.replace(['<', '>'], ""))
                    }
                    (true, false) => format!("[{}]", shown.trim_matches(['<', '>'])),
                    (true, true) => match arg.token {
                        Some(token) => format!("[{token} {} ...]", arg.name),
                        None => format!("[{} ...]", arg.name),
                    },
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A command's arguments after its name, and the argument counts (the name included) they
/// allow, worked out when the description is compiled: `dispatch` checks every call against
/// them, so they must not cost a loop per call.
#[derive(Clone, Copy)]
pub struct Params {
    pub list: &'static [Arg],
    min: usize,
    /// None: no limit (an argument that repeats).
    max: Option<usize>,
}

impl Params {
    pub const fn new(list: &'static [Arg]) -> Params {
        let (mut min, mut max, mut i) = (1, Some(1 + list.len()), 0);
        while i < list.len() {
            // A token and its value are two arguments; a word alone is one.
            let width = if list[i].token.is_some() && !list[i].kind.is_pure_token() {
                2
            } else {
                1
            };
            if !list[i].optional {
                min += width;
            }
            if list[i].multiple {
                max = None;
            } else if let Some(m) = max {
                max = Some(m + width - 1);
            }
            i += 1;
        }
        Params { list, min, max }
    }
}

/// Registers `command` with Redis, with its COMMAND INFO / DOCS.
pub fn register(ctx: &Context, command: &Command) -> Result<(), Error> {
    redis::command::register(
        ctx,
        &Registration {
            name: command.name,
            entry: command.entry,
            flags: command.flags,
            summary: command.summary,
            since: command.since,
            complexity: command.complexity,
            tips: command.tips,
            arity: command.arity(),
            keys: command.keys,
            args: command.args.list,
        },
    )
    .map_err(Error::internal)
}

/// The arguments most commands share.
pub const TABLE: Arg = Arg::text("table");
pub const PK: Arg = Arg::text("pk_json");
/// The complexity of the commands that read one row.
pub const ONE_ROW: &str = "O(1) on a hit; one PostgreSQL query on a miss";
