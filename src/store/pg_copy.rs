//! Reading the log from PostgreSQL with `COPY (SELECT ...) TO STDOUT (FORMAT binary)`, and
//! writing rows for `COPY ... FROM STDIN (FORMAT binary)` (a rebuild's documents).
//!
//! Written by hand because sqlx hands over a `COPY` as raw bytes and no crate that works with
//! sqlx parses PostgreSQL's binary copy format (tokio-postgres has one, for its own client).
//! It is worth it: a million events come out of `COPY` in about a second, where decoding the
//! same rows through sqlx's query path takes several (BENCHMARKS.md).
//!
//! The format (PostgreSQL manual, "COPY", "Binary Format"): an 11-byte signature, a 32-bit
//! flags word, a 32-bit header-extension length and that many bytes; then one tuple after
//! another: a 16-bit field count (-1 ends the data), and for each field a 32-bit length (-1 for
//! NULL) and that many bytes. Every integer is big-endian.

use uuid::Uuid;

use super::{RawEvent, StoreError};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The start of a binary copy: the signature, no flags, no header extension.
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
}

/// One row of a binary copy whose columns are all text (or `json`, whose binary form is its
/// text): each field its length and its bytes, nothing escaped.
pub fn write_text_row(out: &mut Vec<u8>, fields: &[&str]) {
    let count = i16::try_from(fields.len()).expect("a handful of columns");
    out.extend_from_slice(&count.to_be_bytes());
    for field in fields {
        let length = i32::try_from(field.len()).expect("a document under 2 GB");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
}

/// The end of a binary copy.
pub fn write_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Which columns a scan of the log carries (PostgreSQL's binary copy, SQLite's scan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Columns {
    /// Every column of [`RawEvent`], in order (export, audit: they compare the columns with
    /// the stored bytes).
    #[default]
    All,
    /// Position, body and hash: all that decoding an event needs (a fold reads about 15%
    /// fewer bytes this way from PostgreSQL, and SQLite's scan makes three allocations an event
    /// fewer); the other fields of each [`RawEvent`] are left empty.
    ForDecoding,
}

impl Columns {
    /// The columns selected, in order (both backends' scans; SQLite's inserts name all).
    pub const fn names(self) -> &'static str {
        match self {
            Columns::All => {
                "position, event_id, stream, version, event_type, schema_version, recorded_at, body, hash"
            }
            Columns::ForDecoding => "position, body, hash",
        }
    }

    fn count(self) -> i16 {
        match self {
            Columns::All => 9,
            Columns::ForDecoding => 3,
        }
    }
}

/// The query whose binary copy [`Parser`] reads.
pub fn statement(after: i64, columns: Columns) -> String {
    let selected = columns.names();
    format!(
        "COPY (SELECT {selected} FROM events WHERE position > {after} ORDER BY position)
         TO STDOUT (FORMAT binary)"
    )
}

/// Takes the copy's bytes in chunks cut anywhere and yields whole rows.
#[derive(Default)]
pub struct Parser {
    columns: Columns,
    buffer: Vec<u8>,
    /// Where the next unread byte of `buffer` is.
    at: usize,
    header_read: bool,
    ended: bool,
}

impl Parser {
    pub fn new(columns: Columns) -> Parser {
        Parser {
            columns,
            ..Parser::default()
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.at > 0 {
            self.buffer.drain(..self.at);
            self.at = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole row, or `None` until more bytes arrive (or after the end marker).
    pub fn next_row(&mut self) -> Result<Option<RawEvent>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        if !self.header_read {
            let Some(header) = self.buffer.get(self.at..self.at + SIGNATURE.len() + 8) else {
                return Ok(None);
            };
            if &header[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad("the copy does not start with PostgreSQL's signature"));
            }
            let extension = be_u32(&header[SIGNATURE.len() + 4..]) as usize;
            let total = SIGNATURE.len() + 8 + extension;
            if self.buffer.len() - self.at < total {
                return Ok(None);
            }
            self.at += total;
            self.header_read = true;
        }
        let mut cursor = Cursor {
            bytes: &self.buffer[self.at..],
            at: 0,
        };
        let Some(count) = cursor.take(2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            self.ended = true;
            return Ok(None);
        }
        let expected = self.columns.count();
        if count != expected {
            return Err(bad(&format!("a row has {count} fields, not {expected}")));
        }
        let mut fields: [&[u8]; 9] = [&[]; 9];
        for field in fields.iter_mut().take(expected as usize) {
            let Some(length) = cursor.take(4) else {
                return Ok(None);
            };
            let length = be_u32(length) as i32;
            if length < 0 {
                return Err(bad("a column of the log is NULL"));
            }
            let Some(bytes) = cursor.take(length as usize) else {
                return Ok(None);
            };
            *field = bytes;
        }
        let text = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|_| bad("a text column is not UTF-8"))
        };
        let event = match self.columns {
            Columns::All => RawEvent {
                position: be_i64(fields[0])?,
                event_id: Uuid::from_slice(fields[1]).map_err(|_| bad("event_id is not a UUID"))?,
                stream: text(fields[2])?,
                version: be_i64(fields[3])?,
                event_type: text(fields[4])?,
                schema_version: be_i32(fields[5])?,
                recorded_at: be_i64(fields[6])?,
                body: fields[7].to_vec(),
                hash: fields[8].to_vec(),
            },
            Columns::ForDecoding => {
                RawEvent::for_decoding(be_i64(fields[0])?, fields[1].to_vec(), fields[2].to_vec())
            }
        };
        self.at += cursor.at;
        Ok(Some(event))
    }

    /// Whether the end marker was read.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.bytes.get(self.at..self.at + n)?;
        self.at += n;
        Some(bytes)
    }
}

fn bad(what: &str) -> StoreError {
    StoreError::Scan(format!("reading the log by COPY: {what}"))
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("four bytes"))
}

fn be_i32(bytes: &[u8]) -> Result<i32, StoreError> {
    Ok(i32::from_be_bytes(
        bytes
            .try_into()
            .map_err(|_| bad("an int4 is not 4 bytes"))?,
    ))
}

fn be_i64(bytes: &[u8]) -> Result<i64, StoreError> {
    Ok(i64::from_be_bytes(
        bytes
            .try_into()
            .map_err(|_| bad("an int8 is not 8 bytes"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn copy_of(rows: i64) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for position in 1..=rows {
            out.extend_from_slice(&9i16.to_be_bytes());
            field(&mut out, &position.to_be_bytes());
            field(&mut out, Uuid::from_u128(position as u128).as_bytes());
            field(&mut out, b"qr-1");
            field(&mut out, &position.to_be_bytes());
            field(&mut out, b"QrIssued");
            field(&mut out, &1i32.to_be_bytes());
            field(&mut out, &(position * 10).to_be_bytes());
            field(&mut out, b"{\"a\":1}");
            field(&mut out, &[position as u8; 32]);
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_come_out_whole_however_the_bytes_are_cut() {
        let bytes = copy_of(3);
        for cut in 1..bytes.len() {
            let mut parser = Parser::default();
            let mut rows = Vec::new();
            for chunk in bytes.chunks(cut) {
                parser.push(chunk);
                while let Some(row) = parser.next_row().unwrap() {
                    rows.push(row);
                }
            }
            assert!(parser.ended(), "cut {cut}");
            let positions: Vec<i64> = rows.iter().map(|r| r.position).collect();
            assert_eq!(positions, [1, 2, 3], "cut {cut}");
            assert_eq!(rows[2].event_id, Uuid::from_u128(3));
            assert_eq!(rows[2].recorded_at, 30);
            assert_eq!(rows[1].stream, "qr-1");
            assert_eq!(rows[0].hash, vec![1u8; 32]);
        }
    }

    #[test]
    fn a_copy_for_decoding_carries_position_body_and_hash() {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for position in 1..=2i64 {
            out.extend_from_slice(&3i16.to_be_bytes());
            field(&mut out, &position.to_be_bytes());
            field(&mut out, b"{\"a\":1}");
            field(&mut out, &[position as u8; 32]);
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        let mut parser = Parser::new(Columns::ForDecoding);
        parser.push(&out);
        let first = parser.next_row().unwrap().unwrap();
        let second = parser.next_row().unwrap().unwrap();
        assert_eq!((first.position, &first.body[..]), (1, &b"{\"a\":1}"[..]));
        assert_eq!(second.hash, vec![2u8; 32]);
        assert!(parser.next_row().unwrap().is_none() && parser.ended());
        // A full copy read as one for decoding is refused, not misread.
        let mut parser = Parser::new(Columns::ForDecoding);
        parser.push(&copy_of(1));
        assert!(parser.next_row().is_err());
    }

    #[test]
    fn text_rows_are_written_as_lengths_and_bytes() {
        let mut out = Vec::new();
        write_header(&mut out);
        write_text_row(&mut out, &["ab", "", "本\t"]);
        write_trailer(&mut out);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\0\x03".to_vec();
        expected.extend_from_slice(b"\0\0\0\x02ab\0\0\0\0\0\0\0\x04");
        expected.extend_from_slice("本\t".as_bytes());
        expected.extend_from_slice(b"\xff\xff");
        assert_eq!(out, expected);
    }

    #[test]
    fn a_wrong_signature_or_shape_is_an_error() {
        let mut parser = Parser::default();
        parser.push(b"NOTACOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0");
        assert!(parser.next_row().is_err());

        let mut bytes = copy_of(1);
        bytes[SIGNATURE.len() + 12] = 8; // the first row's field count: 8
        let mut parser = Parser::default();
        parser.push(&bytes);
        assert!(parser.next_row().is_err());
    }
}
