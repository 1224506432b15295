//! The `pgcache` section of INFO: the PGCACHE.STATS figures, nested ones flattened
//! (`read_p99_us`), each shown by Redis as `pgcache_<name>`, and one dict line per table;
//! then, for each named source, one dict line of its own figures and one per table of it.

use crate::config::current;
use crate::error;
use crate::model::source::SourceId;
use crate::redis::info::{self, InfoSection};
use crate::report::{figures, listing};
use crate::requests::reply::Reply;
use crate::stats;

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
    for (name, value) in listing::all(SourceId::DEFAULT) {
        match &value {
            Reply::Map(tables) if name == "tables" => {
                for (table, figures) in tables {
                    add_table(section, "table_", table, figures);
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
    add_named_sources(section);
}

/// Each named source's figures (its counters and gauges; the server's gauges are shown once,
/// above) as the dict line `pgcache_source_<name>:hits=...`, and its tables' as
/// `pgcache_source_<name>_table_<table>:calls=...`.
fn add_named_sources(section: &InfoSection) {
    for id in current::named_ids() {
        let Some(name) = current::name(id) else {
            continue;
        };
        section.dict(&format!("source_{name}"), |section| {
            for (counter, value) in stats::of(id).counters() {
                section.int(counter, value.try_into().unwrap_or(i64::MAX));
            }
            for gauge in figures::gauges(id).into_iter().filter(|g| g.of_source) {
                match gauge.value {
                    figures::Value::Int(n) => section.int(gauge.name, n),
                    figures::Value::Ratio(r) => section.double(gauge.name, r),
                }
            }
        });
        for (table, figures) in &listing::tables(id) {
            add_table(section, &format!("source_{name}_table_"), table, figures);
        }
    }
}

/// One table's figures as a dict field, the way Redis shows `db0:keys=1,expires=0`:
/// `pgcache_table_users:calls=3,hits=2,...` (characters other than letters, digits, `.`,
/// `-` and `_` in the name become `_`).
fn add_table(section: &InfoSection, prefix: &str, table: &str, figures: &Reply) {
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
    section.dict(&format!("{prefix}{name}"), |section| {
        for (figure, value) in figures {
            match value {
                Reply::Int(n) => section.int(figure, *n),
                Reply::Double(d) => section.double(figure, *d),
                _ => {}
            }
        }
    });
}
