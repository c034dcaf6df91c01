//! "Did you mean": the keys a schema table accepts, read from the serde
//! structs that parse it (so the list cannot drift from the parser), and
//! the accepted word nearest to a misspelled one.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names `T` deserializes from (renames applied); empty for a
/// type that is not a struct.
pub(super) fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Capture) {
        Err(Captured::Fields(fields)) => fields,
        _ => &[],
    }
}

/// The word of `known` nearest to `typed`, when it is near enough to be
/// what was meant: at most two edits, and fewer than half the word.
pub(crate) fn nearest<'a>(
    typed: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(typed, k), k))
        .filter(|(d, k)| *d <= 2 && *d * 2 < Ord::max(typed.len(), k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A deserializer that answers a struct's field list and nothing else.
struct Capture;

#[derive(Debug)]
enum Captured {
    Fields(&'static [&'static str]),
    Other,
}

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Captured::Other
    }
}

impl<'de> Deserializer<'de> for Capture {
    type Error = Captured;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Captured> {
        Err(Captured::Fields(fields))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Captured> {
        Err(Captured::Other)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(rename = "type")]
        ty: String,
        required: bool,
    }

    #[test]
    fn a_structs_keys_are_read_from_its_deserializer_with_renames() {
        assert_eq!(keys_of::<Sample>(), ["type", "required"]);
        assert!(keys_of::<String>().is_empty());
    }

    #[test]
    fn a_near_miss_is_matched_and_a_stranger_is_not() {
        let known = ["list", "read", "create", "update", "delete"];
        assert_eq!(nearest("delet", known), Some("delete"));
        assert_eq!(nearest("raed", known), Some("read"));
        assert_eq!(nearest("colour", known), None);
        assert_eq!(nearest("x", known), None);
    }
}
