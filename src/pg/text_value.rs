//! A parameter's value sent as its text, of whatever type PostgreSQL inferred for it: as a
//! driver sends it (psycopg, JDBC's strings), so that the planner sees the value itself,
//! read by its type's input function at bind. Bound as `$n::text::type` instead, the value
//! is an expression the planner cannot see into: its estimates change, and so does the
//! order it evaluates a WHERE's conditions in, which decides whether a cast that refuses
//! some row's value (`'NaN'::numeric::integer`) is ever evaluated on it.

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

#[derive(Debug, Clone)]
pub struct TextValue(pub String);

impl ToSql for TextValue {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// `values` as text parameters.
pub fn text_values(values: &[String]) -> Vec<TextValue> {
    values.iter().cloned().map(TextValue).collect()
}
