//! Writing a document's field values as JSON text, for [`crate::BodyWriter`].
//!
//! `serde_json` escapes a string one byte at a time through a table, and a replay writes some
//! forty strings for every event it folds (names, addresses, ids, times): that loop was a fifth
//! of the folding thread's time (BENCHMARKS.md, session 15). Nearly none of those strings needs
//! an escape, so this writer checks a whole string at once (a loop the compiler vectorises) and
//! copies it as it stands; a string that does need escaping, and every value that is not a
//! string, a whole number, a bool or a null (a float, a list, an object, an enum with data),
//! goes to `serde_json` as before. Written by hand because no crate writes serde values with
//! this fast path; the output is byte for byte what `serde_json` writes (tested below).

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Appends `value` as JSON text.
pub(crate) fn write_value<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    if value.serialize(Plain(out)).is_err() {
        // `Plain` wrote nothing before refusing (each refusal comes before any write).
        // Serialising into a String fails only for a value that is not JSON (a map with
        // non-string keys), which no projection writes: the same rule as `serde_json::json!`.
        let text = serde_json::to_string(value).expect("a document's field is JSON");
        out.push_str(&text);
    }
}

/// Whether `text` can stand between quotes as it is: no control character, quote or backslash
/// (the only characters JSON requires escaped, and the only ones `serde_json` escapes).
pub const fn needs_no_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if escaped(bytes[i]) {
            return false;
        }
        i += 1;
    }
    true
}

const fn escaped(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

fn write_str(out: &mut String, text: &str) {
    // Sixteen bytes at a time without an early exit, so that the compiler checks each block
    // in a few vector instructions.
    let mut blocks = text.as_bytes().chunks_exact(16);
    let mut escapes = false;
    for block in &mut blocks {
        escapes |= block.iter().fold(false, |any, &byte| any | escaped(byte));
    }
    escapes |= blocks.remainder().iter().any(|&byte| escaped(byte));
    if escapes {
        let quoted = serde_json::to_string(text).expect("a string is JSON");
        out.push_str(&quoted);
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// The values written without `serde_json`; every other kind is refused before anything is
/// written, for [`write_value`] to hand to `serde_json`.
struct Plain<'a>(&'a mut String);

/// `Plain` does not write this kind of value.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for Refused {}

impl ser::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Refused {
        Refused
    }
}

impl Plain<'_> {
    fn integer(self, value: impl itoa::Integer) -> Result<(), Refused> {
        self.0.push_str(itoa::Buffer::new().format(value));
        Ok(())
    }
}

impl<'a> ser::Serializer for Plain<'a> {
    type Ok = ();
    type Error = Refused;
    type SerializeSeq = Impossible<(), Refused>;
    type SerializeTuple = Impossible<(), Refused>;
    type SerializeTupleStruct = Impossible<(), Refused>;
    type SerializeTupleVariant = Impossible<(), Refused>;
    type SerializeMap = Impossible<(), Refused>;
    type SerializeStruct = Impossible<(), Refused>;
    type SerializeStructVariant = Impossible<(), Refused>;

    fn serialize_str(self, value: &str) -> Result<(), Refused> {
        write_str(self.0, value);
        Ok(())
    }

    fn serialize_bool(self, value: bool) -> Result<(), Refused> {
        self.0.push_str(if value { "true" } else { "false" });
        Ok(())
    }

    fn serialize_i8(self, value: i8) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_i16(self, value: i16) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_i32(self, value: i32) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_i64(self, value: i64) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_u8(self, value: u8) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_u16(self, value: u16) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_u32(self, value: u32) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_u64(self, value: u64) -> Result<(), Refused> {
        self.integer(value)
    }

    fn serialize_none(self) -> Result<(), Refused> {
        self.0.push_str("null");
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), Refused> {
        self.0.push_str("null");
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Refused> {
        self.0.push_str("null");
        Ok(())
    }

    /// An enum's variant without data: its (renamed) name, as `serde_json` writes it.
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
    ) -> Result<(), Refused> {
        write_str(self.0, name);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Refused> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Refused> {
        value.serialize(self)
    }

    // Everything below goes to serde_json.

    fn serialize_f32(self, _: f32) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_f64(self, _: f64) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_i128(self, _: i128) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_u128(self, _: u128) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_char(self, _: char) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Refused> {
        Err(Refused)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Refused> {
        Err(Refused)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Refused> {
        Err(Refused)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Refused> {
        Err(Refused)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Refused> {
        Err(Refused)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Refused> {
        Err(Refused)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Refused> {
        Err(Refused)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Refused> {
        Err(Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn written<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = String::new();
        write_value(&mut out, value);
        out
    }

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        HomeAddress,
        Office { name: String },
    }

    #[derive(Serialize)]
    struct Wrapped(u16);

    /// Every kind of value a document holds, written as serde_json writes it; the strings
    /// cover each character JSON escapes, the characters around them, and Japanese text.
    #[test]
    fn values_are_written_exactly_as_serde_json_writes_them() {
        let mut strings: Vec<String> = (0u8..=0x7f).map(|b| format!("a{}z", b as char)).collect();
        strings.extend(
            [
                "",
                "山田 太郎",
                "ヤマダ \"タロウ\"",
                "東京都\\文京区",
                "改行\n",
                "\u{7f}\u{80}\u{2028}",
            ]
            .map(str::to_owned),
        );
        for text in &strings {
            assert_eq!(
                written(text),
                serde_json::to_string(text).unwrap(),
                "{text:?}"
            );
            assert_eq!(
                needs_no_escape(text),
                !written(text).contains('\\'),
                "{text:?}"
            );
        }
        let uuid = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let none: Option<&str> = None;
        let cases: Vec<(String, String)> = vec![
            (written(&uuid), serde_json::to_string(&uuid).unwrap()),
            (
                written(&i64::MIN),
                serde_json::to_string(&i64::MIN).unwrap(),
            ),
            (
                written(&u64::MAX),
                serde_json::to_string(&u64::MAX).unwrap(),
            ),
            (written(&-7i8), "-7".to_owned()),
            (written(&true), "true".to_owned()),
            (written(&none), "null".to_owned()),
            (written(&Some("x")), "\"x\"".to_owned()),
            (written(&()), "null".to_owned()),
            (written(&Wrapped(8)), "8".to_owned()),
            (written(&Kind::HomeAddress), "\"home_address\"".to_owned()),
            (
                written(&Kind::Office {
                    name: "本院".into(),
                }),
                serde_json::to_string(&Kind::Office {
                    name: "本院".into(),
                })
                .unwrap(),
            ),
            (written(&1.5f64), "1.5".to_owned()),
            (written(&f64::NAN), "null".to_owned()),
            (written(&'"'), "\"\\\"\"".to_owned()),
            (written(&["a", "b"]), "[\"a\",\"b\"]".to_owned()),
            (
                written(&json!({"k": [1, null]})),
                "{\"k\":[1,null]}".to_owned(),
            ),
            (written(&Some(vec![1, 2])), "[1,2]".to_owned()),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
