//! The `pgcache` section of INFO: the PGCACHE.STATS figures, nested ones flattened
//! (`read_p99_us`), each shown by Redis as `pgcache_<name>`, and one dict line per table.

use crate::error;
use crate::report::listing;
use crate::requests::reply::Reply;
use redis_module::raw;
use std::ffi::CString;

/// Registers the section. At load.
pub fn register(ctx: &redis_module::Context) {
    // SAFETY: OnLoad context; the callback lives as long as the module.
    unsafe { raw::RedisModule_RegisterInfoFunc.unwrap()(ctx.ctx, Some(info)) };
}

/// The `pgcache` INFO section: the PGCACHE.STATS figures, nested ones flattened
/// (`read_p99_us`), each shown by Redis as `pgcache_<name>`.
extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: std::os::raw::c_int) {
    error::panic::guard("the INFO section", || info_section(ctx));
}

fn info_section(ctx: *mut raw::RedisModuleInfoCtx) {
    fn add(ctx: *mut raw::RedisModuleInfoCtx, name: &str, value: &Reply) {
        let field = CString::new(name).expect("no NUL");
        // SAFETY: Redis's info context for this call.
        unsafe {
            match value {
                Reply::Int(n) => {
                    raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, field.as_ptr(), *n);
                }
                Reply::Double(d) => {
                    raw::RedisModule_InfoAddFieldDouble.unwrap()(ctx, field.as_ptr(), *d);
                }
                Reply::Bulk(s) => {
                    let text = CString::new(s.as_str()).expect("no NUL");
                    raw::RedisModule_InfoAddFieldCString.unwrap()(
                        ctx,
                        field.as_ptr(),
                        text.as_ptr(),
                    );
                }
                Reply::Map(entries) => {
                    for (inner, v) in entries {
                        add(ctx, &format!("{name}_{inner}"), v);
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: Redis's info context for this call.
    unsafe { raw::RedisModule_InfoAddSection.unwrap()(ctx, std::ptr::null()) };
    for (name, value) in listing::all() {
        match &value {
            Reply::Map(tables) if name == "tables" => {
                for (table, figures) in tables {
                    add_table(ctx, table, figures);
                }
            }
            Reply::Map(entries) => {
                for (inner, v) in entries {
                    add(ctx, inner, v);
                }
            }
            _ => add(ctx, &name, &value),
        }
    }
}

/// One table's figures as a dict field, the way Redis shows `db0:keys=1,expires=0`:
/// `pgcache_table_users:calls=3,hits=2,...` (characters other than letters, digits, `.`,
/// `-` and `_` in the name become `_`).
fn add_table(ctx: *mut raw::RedisModuleInfoCtx, table: &str, figures: &Reply) {
    let name: String = table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let Ok(field) = CString::new(format!("table_{name}")) else {
        return;
    };
    let Reply::Map(figures) = figures else {
        return;
    };
    // SAFETY: Redis's info context for this call; the strings outlive each call.
    unsafe {
        raw::RedisModule_InfoBeginDictField.unwrap()(ctx, field.as_ptr());
        for (figure, value) in figures {
            let figure = CString::new(figure.as_str()).expect("no NUL");
            match value {
                Reply::Int(n) => {
                    raw::RedisModule_InfoAddFieldLongLong.unwrap()(ctx, figure.as_ptr(), *n);
                }
                Reply::Double(d) => {
                    raw::RedisModule_InfoAddFieldDouble.unwrap()(ctx, figure.as_ptr(), *d);
                }
                _ => {}
            }
        }
        raw::RedisModule_InfoEndDictField.unwrap()(ctx);
    }
}
