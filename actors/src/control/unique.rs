//! Duplicate keys in a control request, found before the request is read.
//!
//! serde_json keeps the last of two equal keys, so `{"command":"status","command":"stop"}`
//! would run `stop` while anyone reading the first key (a wrapper, a reviewer, a grep
//! of the audit log) sees `status`. A request must mean one thing, so a repeated key at
//! any depth refuses it, as duplicate YAML keys in the config already are.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A key that appears twice in one JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The repeated key, unescaped.
    pub key: String,
    /// Nesting depth of its object: 0 for the request itself.
    pub depth: usize,
}

/// The first key repeated within one object of `line`, at any depth. `None` too when
/// `line` is not JSON: the typed parse reports that.
pub fn first_duplicate(line: &[u8]) -> Option<Duplicate> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(line);
    let _ = Walk {
        depth: 0,
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

/// Walks one JSON value, keeping the keys of each object it is in.
struct Walk<'a> {
    depth: usize,
    found: &'a mut Option<Duplicate>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Walk { depth, found } = self;
        while seq
            .next_element_seed(Walk {
                depth: depth + 1,
                found: &mut *found,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { depth, found } = self;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                *found = Some(Duplicate { key, depth });
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Walk {
                depth: depth + 1,
                found: &mut *found,
            })?;
            seen.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(line: &str) -> Option<(String, usize)> {
        first_duplicate(line.as_bytes()).map(|d| (d.key, d.depth))
    }

    #[test]
    fn a_repeated_key_is_found_at_any_depth_and_escapes_do_not_hide_it() {
        assert_eq!(
            dup(r#"{"id":1,"command":"status","command":"stop"}"#),
            Some(("command".into(), 0))
        );
        assert_eq!(
            dup(r#"{"command":"x","args":{"a":1,"a":2}}"#),
            Some(("a".into(), 1))
        );
        assert_eq!(
            dup(r#"{"args":{"l":[{"k":1},{"d":1,"d":2}]}}"#),
            Some(("d".into(), 3))
        );
        assert_eq!(
            dup(r#"{"command":"status","comm\u0061nd":"stop"}"#),
            Some(("command".into(), 0))
        );
    }

    #[test]
    fn unique_keys_and_non_json_find_nothing() {
        assert_eq!(dup(r#"{"id":1,"command":"status","args":{"id":2}}"#), None);
        assert_eq!(dup(r#"[{"a":1},{"a":1}]"#), None);
        assert_eq!(dup("not json"), None);
        assert_eq!(dup(r#"{"a":1,"#), None);
    }
}
