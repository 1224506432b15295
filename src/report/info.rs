//! The `pgcache` section of INFO: the PGCACHE.STATS figures, nested ones flattened
//! (`read_p99_us`), each shown by Redis as `pgcache_<name>`, and one dict line per table.

use crate::error;
use crate::redis::info::{self, InfoSection};
use crate::report::listing;
use crate::requests::reply::Reply;

/// Registers the section. At load.
pub fn register(ctx: &redis_module::Context) {
    info::register(ctx, |section| {
        error::panic::guard("the INFO section", || write(section))
    });
}

/// The `pgcache` INFO section: the PGCACHE.STATS figures, nested ones flattened
/// (`read_p99_us`), each shown by Redis as `pgcache_<name>`.
fn write(section: &InfoSection) {
    fn add(section: &InfoSection, name: &str, value: &Reply) {
        match value {
            Reply::Int(n) => section.int(name, *n),
            Reply::Double(d) => section.double(name, *d),
            Reply::Bulk(s) => section.text(name, s),
            Reply::Map(entries) => {
                for (inner, v) in entries {
                    add(section, &format!("{name}_{inner}"), v);
                }
            }
            _ => {}
        }
    }
    section.begin();
    for (name, value) in listing::all() {
        match &value {
            Reply::Map(tables) if name == "tables" => {
                for (table, figures) in tables {
                    add_table(section, table, figures);
                }
            }
            Reply::Map(entries) => {
                for (inner, v) in entries {
                    add(section, inner, v);
                }
            }
            _ => add(section, &name, &value),
        }
    }
}

/// One table's figures as a dict field, the way Redis shows `db0:keys=1,expires=0`:
/// `pgcache_table_users:calls=3,hits=2,...` (characters other than letters, digits, `.`,
/// `-` and `_` in the name become `_`).
fn add_table(section: &InfoSection, table: &str, figures: &Reply) {
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
    let Reply::Map(figures) = figures else {
        return;
    };
    section.dict(&format!("table_{name}"), |section| {
        for (figure, value) in figures {
            match value {
                Reply::Int(n) => section.int(figure, *n),
                Reply::Double(d) => section.double(figure, *d),
                _ => {}
            }
        }
    });
}
