//! The canonical JSON of a payload written straight from its type: what
//! `serde_json::to_vec(&serde_json::to_value(payload)?)` writes, without the `Value` tree.
//!
//! The tree sorts every object's keys (its maps are `BTreeMap`s), and building it was most of
//! a batched append's encoding: a `String` for every key, a node for every field, a map entry
//! for every member, all of it written out and dropped again (about 4.6 CPU-µs an event;
//! BENCHMARKS.md, session 17). Here each object's members are written in the order the type
//! gives them, then put in key order in place if they are not in it already.
//!
//! Written by hand rather than taken from a canonical-JSON crate: the log's bytes are defined as
//! what `serde_json` writes from a `Value` (keys in UTF-8 byte order, serde_json's escaping), and
//! the crates that sort keys in one pass through a `serde_json` formatter define them otherwise:
//! `canon-json` (RFC 8785) orders keys by UTF-16 code units, `olpc-cjson` writes control
//! characters unescaped. Either would change the bytes, and so the hashes, of some events.
//! Anything this writer does not handle as the tree would (floats, which the log refuses
//! anyway, 128-bit integers, non-string map keys, a key written twice, an error from the
//! type's own `Serialize`) makes it give up with [`GiveUp`]; the caller then takes the tree's
//! way, which writes the same bytes or names the error. A test holds it to the tree's bytes.

use std::borrow::Cow;
use std::fmt::Display;

use serde::ser::{self, Serialize};

/// Why the writer gave up; the caller encodes through `serde_json::Value` instead.
#[derive(Debug)]
pub struct GiveUp;

impl Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not written canonically in one pass")
    }
}

impl std::error::Error for GiveUp {}

impl ser::Error for GiveUp {
    fn custom<T: Display>(_: T) -> GiveUp {
        GiveUp
    }
}

/// Appends the canonical JSON of `value` to `out`. On `Err`, `out` holds a partial write
/// after its original length; the caller truncates it.
pub fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), GiveUp> {
    let mut writer = Writer {
        out,
        members: Vec::with_capacity(32),
        scratch: Vec::new(),
    };
    value.serialize(&mut writer)
}

/// `text` as a JSON string, escaped by serde_json's own rules, as the tree's strings are.
pub(crate) fn json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing to a Vec does not fail");
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// The members of every object being written, innermost last.
    members: Vec<Member>,
    /// Where an object's members are copied while they are put in order.
    scratch: Vec<u8>,
}

/// One `"key":value` of an object, at `start..end` in the output.
struct Member {
    key: Cow<'static, str>,
    start: usize,
    end: usize,
}

impl Writer<'_> {
    fn string(&mut self, text: &str) {
        json_string(self.out, text);
    }

    fn integer(&mut self, number: impl itoa::Integer) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
    }

    fn open_object(&mut self) -> Object {
        self.out.push(b'{');
        Object {
            first_member: self.members.len(),
            start: self.out.len(),
        }
    }

    /// Writes `"key":` and returns where the member starts.
    fn key(&mut self, object: &Object, key: &str) -> usize {
        if self.members.len() > object.first_member {
            self.out.push(b',');
        }
        let start = self.out.len();
        self.string(key);
        self.out.push(b':');
        start
    }

    /// Opens `{"variant":`, the object the tree wraps a non-unit variant in.
    fn wrap(&mut self, variant: &'static str) -> Object {
        let object = self.open_object();
        let start = self.key(&object, variant);
        // The member's end is known only once its value is written; a one-member object
        // needs no sorting, so its end is never read.
        self.members.push(Member {
            key: Cow::Borrowed(variant),
            start,
            end: start,
        });
        object
    }

    /// Puts the object's members in key order and closes it.
    fn close_object(&mut self, object: Object) -> Result<(), GiveUp> {
        let members = &mut self.members[object.first_member..];
        let sorted = members.windows(2).all(|pair| pair[0].key < pair[1].key);
        if !sorted {
            members.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            if members.windows(2).any(|pair| pair[0].key == pair[1].key) {
                // The tree keeps the last of two equal keys; rare enough not to copy.
                return Err(GiveUp);
            }
            // Every member's bytes are moved, none changes length, so the offsets an
            // enclosing object holds stay right.
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.out[object.start..]);
            self.out.truncate(object.start);
            for (i, member) in members.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                let from = member.start - object.start;
                let to = member.end - object.start;
                self.out.extend_from_slice(&self.scratch[from..to]);
            }
        }
        self.members.truncate(object.first_member);
        self.out.push(b'}');
        Ok(())
    }
}

/// An object being written: its members are `members[first_member..]`, its text starts at
/// `start` (after the brace).
struct Object {
    first_member: usize,
    start: usize,
}

/// The writer inside an object, or inside an array (`object: None`), or inside the one-member
/// object that wraps an enum's variant (`wrapped`: closed after the inner value).
pub struct Compound<'w, 'a> {
    writer: &'w mut Writer<'a>,
    object: Option<Object>,
    first: bool,
    wrapped: Option<Object>,
    /// A map's key, between `serialize_key` and `serialize_value`.
    key: Option<String>,
}

impl<'w, 'a> Compound<'w, 'a> {
    fn array(writer: &'w mut Writer<'a>, wrapped: Option<Object>) -> Self {
        writer.out.push(b'[');
        Compound {
            writer,
            object: None,
            first: true,
            wrapped,
            key: None,
        }
    }

    fn object(writer: &'w mut Writer<'a>, wrapped: Option<Object>) -> Self {
        let object = writer.open_object();
        Compound {
            writer,
            object: Some(object),
            first: true,
            wrapped,
            key: None,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        if !self.first {
            self.writer.out.push(b',');
        }
        self.first = false;
        value.serialize(&mut *self.writer)
    }

    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), GiveUp> {
        let object = self
            .object
            .as_ref()
            .expect("members are written into objects");
        let start = self.writer.key(object, &key);
        value.serialize(&mut *self.writer)?;
        let end = self.writer.out.len();
        self.writer.members.push(Member { key, start, end });
        Ok(())
    }

    fn end_array(self) -> Result<(), GiveUp> {
        self.writer.out.push(b']');
        self.unwrap()
    }

    fn end_object(mut self) -> Result<(), GiveUp> {
        let object = self.object.take().expect("an object");
        self.writer.close_object(object)?;
        self.unwrap()
    }

    /// Closes the object wrapping a variant, if there is one.
    fn unwrap(self) -> Result<(), GiveUp> {
        match self.wrapped {
            Some(object) => self.writer.close_object(object),
            None => Ok(()),
        }
    }
}

/// Serializer methods that write a whole number.
macro_rules! integers {
    ($($method:ident: $number:ty),*) => {$(
        fn $method(self, v: $number) -> Result<(), GiveUp> {
            self.integer(v);
            Ok(())
        }
    )*};
}

/// Serializer methods that give up on a kind of value.
macro_rules! refused {
    ($ok:ty: $($method:ident: $value:ty),*) => {$(
        fn $method(self, _: $value) -> Result<$ok, GiveUp> {
            Err(GiveUp)
        }
    )*};
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = GiveUp;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), GiveUp> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    integers!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64
    );
    // The tree holds no 128-bit integer beyond 64 bits, and the log no float.
    refused!(
        (): serialize_i128: i128,
        serialize_u128: u128,
        serialize_f32: f32,
        serialize_f64: f64
    );
    fn serialize_char(self, v: char) -> Result<(), GiveUp> {
        self.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), GiveUp> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), GiveUp> {
        // The tree holds bytes as an array of numbers.
        use ser::SerializeSeq;
        let mut array = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            array.serialize_element(byte)?;
        }
        array.end()
    }
    fn serialize_none(self) -> Result<(), GiveUp> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), GiveUp> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), GiveUp> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), GiveUp> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), GiveUp> {
        self.string(variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        let object = self.wrap(variant);
        value.serialize(&mut *self)?;
        self.close_object(object)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(Compound::array(self, None))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(Compound::array(self, None))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(Compound::array(self, None))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, GiveUp> {
        let wrapped = self.wrap(variant);
        Ok(Compound::array(self, Some(wrapped)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(Compound::object(self, None))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'w, 'a>, GiveUp> {
        Ok(Compound::object(self, None))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'w, 'a>, GiveUp> {
        let wrapped = self.wrap(variant);
        Ok(Compound::object(self, Some(wrapped)))
    }
}

/// serde's four traits for what the tree writes as an array, each adding an element.
macro_rules! elements {
    ($($serialize:ident :: $add:ident),*) => {$(
        impl ser::$serialize for Compound<'_, '_> {
            type Ok = ();
            type Error = GiveUp;
            fn $add<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
                self.element(value)
            }
            fn end(self) -> Result<(), GiveUp> {
                self.end_array()
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// serde's two traits for a struct's fields, each adding a member.
macro_rules! fields {
    ($($serialize:ident),*) => {$(
        impl ser::$serialize for Compound<'_, '_> {
            type Ok = ();
            type Error = GiveUp;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), GiveUp> {
                self.member(Cow::Borrowed(key), value)
            }
            fn end(self) -> Result<(), GiveUp> {
                self.end_object()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), GiveUp> {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        let key = self.key.take().ok_or(GiveUp)?;
        self.member(Cow::Owned(key), value)
    }
    fn end(self) -> Result<(), GiveUp> {
        self.end_object()
    }
}

/// A map's key as text: strings only (the tree also turns numbers and booleans into keys; no
/// payload has such a map, so the writer gives up on them).
struct KeyText;

impl ser::Serializer for KeyText {
    type Ok = String;
    type Error = GiveUp;
    type SerializeSeq = ser::Impossible<String, GiveUp>;
    type SerializeTuple = ser::Impossible<String, GiveUp>;
    type SerializeTupleStruct = ser::Impossible<String, GiveUp>;
    type SerializeTupleVariant = ser::Impossible<String, GiveUp>;
    type SerializeMap = ser::Impossible<String, GiveUp>;
    type SerializeStruct = ser::Impossible<String, GiveUp>;
    type SerializeStructVariant = ser::Impossible<String, GiveUp>;

    fn serialize_str(self, v: &str) -> Result<String, GiveUp> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, GiveUp> {
        Ok(v.to_string())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, GiveUp> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, GiveUp> {
        value.serialize(self)
    }
    refused!(
        String: serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_f32: f32,
        serialize_f64: f64
    );
    fn serialize_bytes(self, _: &[u8]) -> Result<String, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_none(self) -> Result<String, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_unit(self) -> Result<String, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, GiveUp> {
        Err(GiveUp)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, GiveUp> {
        Err(GiveUp)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::*;

    /// What the tree writes, or `None` where it fails.
    fn through_value<T: Serialize>(value: &T) -> Option<Vec<u8>> {
        serde_json::to_vec(&serde_json::to_value(value).ok()?).ok()
    }

    fn written<T: Serialize>(value: &T) -> Option<Vec<u8>> {
        let mut out = b"prefix".to_vec();
        write(value, &mut out).ok()?;
        Some(out.split_off(6))
    }

    /// Written here, or given up on, every value comes out as the tree writes it.
    fn same<T: Serialize + std::fmt::Debug>(value: T) -> bool {
        let tree = through_value(&value);
        match written(&value) {
            Some(bytes) => {
                assert_eq!(
                    Some(String::from_utf8(bytes).unwrap()),
                    tree.map(|t| String::from_utf8(t).unwrap()),
                    "{value:?}"
                );
                true
            }
            None => false,
        }
    }

    #[derive(Debug, Serialize)]
    struct Unsorted {
        zeta: u8,
        alpha: Option<String>,
        mid: Vec<Inner>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        beta: Shape,
        tagged: Tagged,
        #[serde(rename = "Übung")]
        umlaut: (),
        #[serde(rename = "a\"b")]
        quoted: bool,
    }

    #[derive(Debug, Serialize)]
    struct Inner {
        y: i64,
        x: u64,
        map: BTreeMap<String, i32>,
    }

    #[derive(Debug, Serialize)]
    enum Shape {
        Unit,
        Newtype(Inner),
        Tuple(u8, String),
        Struct { b: u8, a: u8 },
    }

    #[derive(Debug, Serialize)]
    #[serde(tag = "to", rename_all = "snake_case")]
    enum Tagged {
        Home,
        Office { name: String },
    }

    fn inner(y: i64) -> Inner {
        Inner {
            y,
            x: u64::MAX,
            map: [
                ("b".to_owned(), 2),
                ("a".to_owned(), -1),
                ("".to_owned(), 0),
            ]
            .into(),
        }
    }

    #[test]
    fn values_come_out_as_the_tree_writes_them() {
        let strings = [
            "",
            "山田 太郎",
            "a\"b\\c\n\t\u{0}\u{1f}\u{7f}",
            "😀 \u{2028}",
        ];
        let shapes = || {
            [
                Shape::Unit,
                Shape::Newtype(inner(i64::MIN)),
                Shape::Tuple(7, "t".into()),
                Shape::Struct { b: 1, a: 2 },
            ]
        };
        let mut checked = 0;
        for text in strings {
            for (beta, tagged) in shapes().into_iter().zip([
                Tagged::Home,
                Tagged::Office { name: text.into() },
                Tagged::Home,
                Tagged::Office { name: "x".into() },
            ]) {
                let value = Unsorted {
                    zeta: 255,
                    alpha: Some(text.into()),
                    mid: vec![inner(0), inner(-5)],
                    skipped: None,
                    beta,
                    tagged,
                    umlaut: (),
                    quoted: true,
                };
                assert!(same(value));
                checked += 1;
            }
        }
        assert_eq!(checked, 16);
        // Maps in any order, keys that escape, nested maps, bytes, chars, options.
        let map: HashMap<String, Vec<Option<char>>> = (0..50)
            .map(|i| (format!("k{}\"{}", 50 - i, i % 7), vec![Some('é'), None]))
            .collect();
        assert!(same(map));
        assert!(same(serde_bytes_like(&[0, 1, 255])));
        assert!(same(Vec::<u8>::new()));
        assert!(same(BTreeMap::<String, ()>::new()));
        assert!(same(
            serde_json::json!({"z": [1, {"b": null, "a": "x"}], "a": -3})
        ));
    }

    /// Bytes as serde's `serialize_bytes` writes them.
    fn serde_bytes_like(bytes: &[u8]) -> impl Serialize + std::fmt::Debug + '_ {
        #[derive(Debug)]
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(bytes)
    }

    /// What it does not write as the tree would, it gives up on, for the tree to write.
    #[test]
    fn it_gives_up_where_the_tree_differs_or_fails() {
        assert!(!same(1.5f64));
        assert!(!same(serde_json::json!({"a": {"b": [1, 2.5]}})));
        assert!(!same(u128::MAX));
        assert!(!same(BTreeMap::from([(1u8, "one")])));
        #[derive(Debug, Serialize)]
        struct Twice {
            b: u8,
            #[serde(rename = "b")]
            again: u8,
            a: u8,
        }
        assert!(!same(Twice {
            b: 1,
            again: 2,
            a: 3
        }));
    }
}
