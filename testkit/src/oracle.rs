//! PostgreSQL's own answer to a statement, spelled as the JSON pgcache replies with, got
//! without wrapping the statement in any SQL (pgcache's or another): an oracle must not share
//! the SQL it checks (issue #70: the alias `q` that pgcache put around statements hid a wrong
//! answer from the fuzzer and the tests, whose oracle wrapped them the same way).
//!
//! The statement runs as written, prepared with the parameter types PostgreSQL infers and its
//! parameters sent as text (read by their types' input, as pgcache sends them), in a
//! transaction rolled back. Its values
//! come back in binary, column by column; each column's values are then handed back to
//! PostgreSQL as parameters of the column's own type and turned into JSON by its `to_json`
//! (what `row_to_json` does for each column). A row is `{"<column>":<value>,...}` in the
//! statement's column order. An anonymous record (`ROW(...)`) has no type to bind its value
//! as: its fields are read from its binary form (each carries its type) and become
//! `{"f1":...,"f2":...}`, as PostgreSQL names them.

use postgres::types::{Format, IsNull, ToSql, Type};
use std::collections::HashMap;
use std::error::Error;

type BoxError = Box<dyn Error + Sync + Send>;

/// A value in binary; None: NULL.
type Value = Option<Vec<u8>>;
/// A record's fields: each its type and value.
type Fields = Vec<(u32, Value)>;
/// An array's dimensions and its elements in order.
type Array = (Vec<usize>, Vec<Value>);

/// `record`, the type of `ROW(...)` and of a sub-select's row.
const RECORD: u32 = 2249;
/// `record[]`.
const RECORD_ARRAY: u32 = 2287;

/// PostgreSQL's answer: the JSON array pgcache would reply with, and the column names in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub json: String,
    pub columns: Vec<String>,
}

/// Runs `sql` with `params` on `client` (whose session settings spell the values) and spells
/// its answer as pgcache's JSON. Err: PostgreSQL's refusal, as its message.
pub fn answer(client: &mut postgres::Client, sql: &str, params: &[&str]) -> Result<Answer, String> {
    let statement = client.prepare(sql).map_err(message)?;
    let texts: Vec<TextParam> = params.iter().map(|p| TextParam(p)).collect();
    let args: Vec<&(dyn ToSql + Sync)> = texts.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    // In a transaction rolled back: whatever a function of the statement does to the session
    // (`set_config`) is undone before its values are spelled, and never reaches the next.
    let mut transaction = client.transaction().map_err(message)?;
    let rows = transaction.query(&statement, &args).map_err(message)?;
    transaction.rollback().map_err(message)?;
    let columns: Vec<String> = statement
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let mut types = Types::default();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); rows.len()];
    for (i, column) in statement.columns().iter().enumerate() {
        let values: Vec<Value> = rows.iter().map(|row| row.get::<_, Raw>(i).0).collect();
        let json = types.spell(client, column.type_().oid(), &values)?;
        for (row, value) in cells.iter_mut().zip(json) {
            row.push(value);
        }
    }
    let rows: Vec<String> = cells
        .iter()
        .map(|values| {
            let fields: Vec<String> = columns
                .iter()
                .zip(values)
                .map(|(name, value)| format!("{}:{value}", quote(name)))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    Ok(Answer {
        json: format!("[{}]", rows.join(",")),
        columns,
    })
}

fn message(e: postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string())
}

/// `name` as a JSON string.
fn quote(name: &str) -> String {
    serde_json::to_string(name).expect("a string is JSON")
}

/// The types met so far, by oid: each a `Type` the driver can bind values of.
#[derive(Default)]
struct Types {
    known: HashMap<u32, Type>,
}

impl Types {
    /// The driver's `Type` of `oid`, looked up once.
    fn of(&mut self, client: &mut postgres::Client, oid: u32) -> Result<Type, String> {
        if let Some(known) = self.known.get(&oid) {
            return Ok(known.clone());
        }
        let name: String = client
            .query_one("SELECT pg_catalog.format_type($1, NULL)", &[&oid])
            .map_err(message)?
            .get(0);
        // The driver resolves a parameter's type (custom ones from the catalog) as it prepares.
        let probe = client
            .prepare(&format!("SELECT $1::{name}"))
            .map_err(message)?;
        let found = probe.params()[0].clone();
        self.known.insert(oid, found.clone());
        Ok(found)
    }

    /// Each value (binary, of the type `oid`; None: NULL) as PostgreSQL's `to_json` spells it.
    fn spell(
        &mut self,
        client: &mut postgres::Client,
        oid: u32,
        values: &[Value],
    ) -> Result<Vec<String>, String> {
        match oid {
            RECORD => self.records(client, values),
            RECORD_ARRAY => self.record_arrays(client, values),
            _ => self.bound(client, oid, values),
        }
    }

    /// Values of a type of their own: bound as that type, converted by `to_json`, in chunks
    /// (a statement takes at most 65,535 parameters).
    fn bound(
        &mut self,
        client: &mut postgres::Client,
        oid: u32,
        values: &[Value],
    ) -> Result<Vec<String>, String> {
        // Typed by the statement's declared parameter types, not by casts in its text: a cast
        // to `character` is one to char(1), which cuts a char(3)'s value.
        let ty = self.of(client, oid)?;
        let present: Vec<&Vec<u8>> = values.iter().flatten().collect();
        let mut spelled: Vec<String> = Vec::with_capacity(present.len());
        for chunk in present.chunks(1000) {
            let items: Vec<String> = (1..=chunk.len())
                .map(|n| format!("pg_catalog.to_json(${n})::text"))
                .collect();
            let sql = format!("SELECT ARRAY[{}]::text[]", items.join(", "));
            let statement = client
                .prepare_typed(&sql, &vec![ty.clone(); chunk.len()])
                .map_err(message)?;
            let binary: Vec<BinaryParam> = chunk.iter().map(|v| BinaryParam(v)).collect();
            let args: Vec<&(dyn ToSql + Sync)> =
                binary.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let row = client.query_one(&statement, &args).map_err(message)?;
            spelled.extend(row.get::<_, Vec<String>>(0));
        }
        let mut spelled = spelled.into_iter();
        Ok(values
            .iter()
            .map(|v| match v {
                Some(_) => spelled.next().expect("one spelling per value"),
                None => "null".to_string(),
            })
            .collect())
    }

    /// Anonymous records: each field converted with the other values of its type, then
    /// `{"f1":...}` in field order.
    fn records(
        &mut self,
        client: &mut postgres::Client,
        values: &[Value],
    ) -> Result<Vec<String>, String> {
        let records: Vec<Option<Fields>> = values
            .iter()
            .map(|v| v.as_deref().map(fields).transpose())
            .collect::<Result<_, _>>()?;
        // Fields grouped by type, each remembering where it goes.
        let mut by_type: HashMap<u32, Vec<(usize, usize, Value)>> = HashMap::new();
        for (r, record) in records.iter().enumerate() {
            for (f, (oid, value)) in record.iter().flatten().enumerate() {
                by_type.entry(*oid).or_default().push((r, f, value.clone()));
            }
        }
        let mut spelled: HashMap<(usize, usize), String> = HashMap::new();
        for (oid, placed) in by_type {
            let values: Vec<Value> = placed.iter().map(|(_, _, v)| v.clone()).collect();
            for ((r, f, _), json) in placed.iter().zip(self.spell(client, oid, &values)?) {
                spelled.insert((*r, *f), json);
            }
        }
        Ok(records
            .iter()
            .enumerate()
            .map(|(r, record)| match record {
                None => "null".to_string(),
                Some(record) => {
                    let fields: Vec<String> = (0..record.len())
                        .map(|f| format!("\"f{}\":{}", f + 1, spelled[&(r, f)]))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
            })
            .collect())
    }

    /// Arrays of anonymous records: their elements as `records`, nested as the array's
    /// dimensions are (`to_json` spells a multidimensional array as arrays in arrays).
    fn record_arrays(
        &mut self,
        client: &mut postgres::Client,
        values: &[Value],
    ) -> Result<Vec<String>, String> {
        let arrays: Vec<Option<Array>> = values
            .iter()
            .map(|v| v.as_deref().map(array).transpose())
            .collect::<Result<_, _>>()?;
        let elements: Vec<Value> = arrays
            .iter()
            .flatten()
            .flat_map(|(_, elements)| elements.iter().cloned())
            .collect();
        let mut spelled = self.records(client, &elements)?.into_iter();
        Ok(arrays
            .iter()
            .map(|a| match a {
                None => "null".to_string(),
                Some((dims, elements)) => {
                    let flat: Vec<String> = elements
                        .iter()
                        .map(|_| spelled.next().expect("one spelling per element"))
                        .collect();
                    nest(dims, &flat)
                }
            })
            .collect())
    }
}

/// `flat` laid out in `dims` as nested JSON arrays (`[]` for no dimension).
fn nest(dims: &[usize], flat: &[String]) -> String {
    match dims {
        [] => "[]".to_string(),
        [_] => format!("[{}]", flat.join(",")),
        [n, rest @ ..] => {
            let size = flat.len() / n.max(&1);
            let parts: Vec<String> = flat.chunks(size.max(1)).map(|c| nest(rest, c)).collect();
            format!("[{}]", parts.join(","))
        }
    }
}

/// Reads big-endian integers off a binary value.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn i32(&mut self) -> Result<i32, String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or("a binary value ends early")?;
        self.0 = rest;
        Ok(i32::from_be_bytes(*head))
    }

    /// A length-prefixed value (-1: NULL).
    fn value(&mut self) -> Result<Value, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        if self.0.len() < len {
            return Err("a binary value ends early".into());
        }
        let (value, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(Some(value.to_vec()))
    }
}

/// A record's binary form (`record_send`): its fields' types and values.
fn fields(bytes: &[u8]) -> Result<Fields, String> {
    let mut r = Reader(bytes);
    let n = r.i32()?;
    (0..n).map(|_| Ok((r.i32()? as u32, r.value()?))).collect()
}

/// An array's binary form (`array_send`): its dimensions and its elements in order.
fn array(bytes: &[u8]) -> Result<Array, String> {
    let mut r = Reader(bytes);
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let _element_type = r.i32()?;
    let mut dims = Vec::new();
    for _ in 0..ndim {
        dims.push(r.i32()?.max(0) as usize);
        let _lower_bound = r.i32()?;
    }
    let count: usize = if dims.is_empty() {
        0
    } else {
        dims.iter().product()
    };
    let elements = (0..count).map(|_| r.value()).collect::<Result<_, _>>()?;
    Ok((dims, elements))
}

/// A value as the driver received it, in binary (any type).
struct Raw(Value);

impl<'a> postgres::types::FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw, BoxError> {
        Ok(Raw(Some(raw.to_vec())))
    }

    fn from_sql_null(_: &Type) -> Result<Raw, BoxError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter sent as text, read by its type's input.
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    postgres::types::to_sql_checked!();
}

/// A value sent back in the binary form it came in.
#[derive(Debug)]
struct BinaryParam<'a>(&'a [u8]);

impl ToSql for BinaryParam<'_> {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Each object's keys in the order the JSON text gives them, for an array of objects (a
/// `serde_json::Value` forgets the order, which is the statement's column order).
pub fn keys_in_order(text: &str) -> Result<Vec<Vec<String>>, String> {
    use serde::Deserializer as _;
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// One object: its keys.
    struct Keys;
    impl<'de> DeserializeSeed<'de> for Keys {
        type Value = Vec<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    /// The array: each object's keys.
    struct Rows;
    impl<'de> Visitor<'de> for Rows {
        type Value = Vec<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array of objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Vec<String>>, A::Error> {
            let mut rows = Vec::new();
            while let Some(keys) = seq.next_element_seed(Keys)? {
                rows.push(keys);
            }
            Ok(rows)
        }
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_seq(Rows)
        .map_err(|e| e.to_string())
}
