//! libpq's password file (`~/.pgpass`): finding the password for a connection in it.

use super::PgSettings;

/// Finds the password for this connection in a `.pgpass` file's text: lines of
/// `host:port:database:user:password`, `*` matching anything, `\:` and `\\` escaped.
pub fn lookup(text: &str, pg: &PgSettings) -> Option<String> {
    let port = pg.port.to_string();
    let wanted = [pg.host.as_str(), port.as_str(), &pg.database, &pg.user];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_line(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = fields[..4].iter().zip(wanted).all(|(f, w)| {
            f == "*" || f == w || (w == "127.0.0.1" || w.starts_with('/')) && f == "localhost"
        });
        if matches {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().unwrap().push(next);
                }
            }
            ':' => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}
