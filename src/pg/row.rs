//! A result row, whichever way it came: decoded by the driver on a worker's session, or as
//! the text PostgreSQL sent over a connection the event loop reads (`cache::onloop`). The
//! code that reads a QUERY's or a lookup's answer reads either alike.

use crate::error::{Error, Result};

pub enum Row {
    /// Decoded by tokio-postgres (results in the types' binary formats).
    Driver(tokio_postgres::Row),
    /// Every column as PostgreSQL's text (None for NULL): results requested in text format.
    Text(Vec<Option<String>>),
}

impl Row {
    /// Column `i`, a text column, None for NULL.
    pub fn text(&self, i: usize) -> Result<Option<&str>> {
        match self {
            Row::Driver(row) => row
                .try_get::<_, Option<&str>>(i)
                .map_err(|e| Error::internal(format!("column {i} of a result: {e}"))),
            Row::Text(columns) => columns
                .get(i)
                .map(Option::as_deref)
                .ok_or_else(|| missing(i)),
        }
    }

    /// Column `i`, a text column that is never NULL.
    pub fn string(&self, i: usize) -> Result<String> {
        self.text(i)?
            .map(str::to_string)
            .ok_or_else(|| Error::internal(format!("column {i} of a result is NULL")))
    }

    /// Column `i`, a bigint (count, ordinal) that is never NULL.
    pub fn int8(&self, i: usize) -> Result<i64> {
        match self {
            Row::Driver(row) => row
                .try_get::<_, i64>(i)
                .map_err(|e| Error::internal(format!("column {i} of a result: {e}"))),
            Row::Text(_) => {
                let text = self.string(i)?;
                text.parse().map_err(|_| {
                    Error::internal(format!("column {i} of a result is not a bigint: {text}"))
                })
            }
        }
    }

    /// Column `i` moved out where the row owns it as text (no copy of a large JSON answer).
    pub fn take_string(&mut self, i: usize) -> Result<String> {
        match self {
            Row::Text(columns) => columns
                .get_mut(i)
                .ok_or_else(|| missing(i))?
                .take()
                .ok_or_else(|| Error::internal(format!("column {i} of a result is NULL"))),
            Row::Driver(_) => self.string(i),
        }
    }
}

impl From<tokio_postgres::Row> for Row {
    fn from(row: tokio_postgres::Row) -> Self {
        Row::Driver(row)
    }
}

fn missing(i: usize) -> Error {
    Error::internal(format!("a result row has no column {i}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rows_read_as_the_driver_s_would() {
        let mut row = Row::Text(vec![Some("[1]".into()), Some("-42".into()), None]);
        assert_eq!(row.text(0).unwrap(), Some("[1]"));
        assert_eq!(row.int8(1).unwrap(), -42);
        assert_eq!(row.text(2).unwrap(), None);
        assert!(row.string(2).is_err());
        assert!(row.text(3).is_err());
        assert!(row.int8(0).is_err());
        assert_eq!(row.take_string(0).unwrap(), "[1]");
        assert!(row.take_string(0).is_err(), "taken once");
    }
}
