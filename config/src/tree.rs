//! The parsed file as a generic value tree, and a serde deserializer over it that
//! speaks the operator's language.
//!
//! serde stops at the first error, and its messages name Rust types (`expected u32`,
//! `enum Mode`). So [`load`](crate::load) deserializes the schema from a [`Tree`] in
//! rounds: each round's first error is recorded with its key path, the bad value is
//! taken out of the tree (its field then takes its default) and the next round starts,
//! until the schema deserializes. This deserializer knows every key path itself, the
//! keys each section accepts (for "did you mean") and the values each enum accepts,
//! and it words each error from serde's structured calls (`invalid_type`,
//! `unknown_variant`, ...) rather than from Rust type names.
//!
//! Values are as lenient as the `config` crate's: text `"1000"` reads as a number
//! (environment overrides are text) and a number reads as text (`keepalive: 30`
//! reaches the duration check, which says it needs a unit).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use config::{Value, ValueKind};
use serde::de::{self, value::StrDeserializer, IntoDeserializer, Unexpected, Visitor};

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key of a section or map.
    Key(String),
    /// A list item, numbered as in the file.
    Index(usize),
}

/// Writes a key path the way problems show it: `tunnel.servers[1].weight`.
pub(crate) fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A value of the configuration file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tree {
    /// An empty value (`key:` in YAML).
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    /// A section or map; sorted, so problems come in a stable order.
    Table(BTreeMap<String, Tree>),
    /// A list; each item keeps its position in the file, so problems name it even
    /// after an earlier item was taken out.
    List(Vec<(usize, Tree)>),
}

impl From<Value> for Tree {
    fn from(v: Value) -> Self {
        match v.kind {
            ValueKind::Nil => Tree::Nil,
            ValueKind::Boolean(b) => Tree::Bool(b),
            ValueKind::I64(n) => Tree::Int(n.into()),
            ValueKind::I128(n) => Tree::Int(n),
            ValueKind::U64(n) => Tree::Int(n.into()),
            ValueKind::U128(n) => i128::try_from(n).map_or(Tree::Text(n.to_string()), Tree::Int),
            ValueKind::Float(f) => Tree::Float(f),
            ValueKind::String(s) => Tree::Text(s),
            ValueKind::Table(t) => Tree::Table(t.into_iter().map(|(k, v)| (k, v.into())).collect()),
            ValueKind::Array(a) => Tree::List(a.into_iter().map(Tree::from).enumerate().collect()),
        }
    }
}

impl Tree {
    /// The node at `path`, if there is one.
    pub(crate) fn get_mut(&mut self, path: &[Seg]) -> Option<&mut Tree> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        let child = match (self, first) {
            (Tree::Table(t), Seg::Key(k)) => t.get_mut(k)?,
            (Tree::List(l), Seg::Index(i)) => l.iter_mut().find(|(n, _)| n == i).map(|(_, v)| v)?,
            _ => return None,
        };
        child.get_mut(rest)
    }

    /// How many nodes the tree has, itself included.
    pub(crate) fn count(&self) -> usize {
        1 + match self {
            Tree::Table(t) => t.values().map(Tree::count).sum(),
            Tree::List(l) => l.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }

    /// Takes the node at `path` out of the tree; false if there was none.
    pub(crate) fn remove(&mut self, path: &[Seg]) -> bool {
        let Some((last, parent)) = path.split_last() else {
            return false;
        };
        match (self.get_mut(parent), last) {
            (Some(Tree::Table(t)), Seg::Key(k)) => t.remove(k).is_some(),
            (Some(Tree::List(l)), Seg::Index(i)) => {
                let before = l.len();
                l.retain(|(n, _)| n != i);
                l.len() != before
            }
            _ => false,
        }
    }

    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Tree::Nil => Unexpected::Unit,
            Tree::Bool(b) => Unexpected::Bool(*b),
            Tree::Int(n) => match i64::try_from(*n) {
                Ok(n) => Unexpected::Signed(n),
                Err(_) => Unexpected::Other("a very large number"),
            },
            Tree::Float(f) => Unexpected::Float(*f),
            Tree::Text(s) => Unexpected::Str(s),
            Tree::Table(_) => Unexpected::Map,
            Tree::List(_) => Unexpected::Seq,
        }
    }
}

/// What went wrong, with the key path once it is known.
#[derive(Debug, PartialEq)]
pub(crate) struct TreeError {
    /// Set by the innermost value that saw the error.
    pub(crate) path: Option<Vec<Seg>>,
    pub(crate) kind: ErrorKind,
}

#[derive(Debug, PartialEq)]
pub(crate) enum ErrorKind {
    /// A wrong value, already worded for the operator.
    Message(String),
    /// A required key is absent.
    Missing(&'static str),
    /// A key the section does not have, with the keys it has.
    UnknownKey(String, &'static [&'static str]),
}

impl TreeError {
    fn new(kind: ErrorKind) -> Self {
        Self { path: None, kind }
    }

    /// Sets the path if no inner value did; a missing or unknown key is named below
    /// the section that noticed it.
    fn at(mut self, path: &[Seg]) -> Self {
        if self.path.is_none() {
            let mut full = path.to_vec();
            match &self.kind {
                ErrorKind::Missing(key) => full.push(Seg::Key((*key).to_string())),
                ErrorKind::UnknownKey(key, _) => full.push(Seg::Key(key.clone())),
                ErrorKind::Message(_) => {}
            }
            self.path = Some(full);
        }
        self
    }

    /// The message shown after the key path.
    pub(crate) fn message(&self) -> String {
        match &self.kind {
            ErrorKind::Message(m) => m.clone(),
            ErrorKind::Missing(_) => "missing".to_string(),
            ErrorKind::UnknownKey(key, known) => unknown_key(key, known),
        }
    }
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for TreeError {}

impl de::Error for TreeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(ErrorKind::Message(msg.to_string()))
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::new(ErrorKind::Message(format!(
            "expected {}, found {}",
            expected(&exp.to_string()),
            found(&unexp)
        )))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::new(ErrorKind::Message(format!(
            "{} is not {}",
            found(&unexp),
            expected(&exp.to_string())
        )))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(ErrorKind::Message(format!(
            "unknown value '{variant}', expected one of {}",
            expected.join(", ")
        )))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::new(ErrorKind::UnknownKey(field.to_string(), expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(ErrorKind::Missing(field))
    }
}

/// serde's description of what a type accepts, in the operator's words.
fn expected(serde_says: &str) -> String {
    let words = match serde_says {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "i8" | "u64" | "i16" | "i32" | "i64" | "i128" | "u128" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "path string" => "text",
        "a sequence" => "a list",
        "option" => "a value",
        "a map" => "a section of keys",
        s if s.starts_with("struct ") => "a section of keys",
        s => return s.to_string(),
    };
    words.to_string()
}

/// A value as the operator wrote it.
fn found(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Str(s) => format!("'{s}'"),
        Unexpected::Signed(n) => n.to_string(),
        Unexpected::Unsigned(n) => n.to_string(),
        Unexpected::Float(f) => f.to_string(),
        Unexpected::Bool(b) => b.to_string(),
        Unexpected::Unit => "nothing".to_string(),
        Unexpected::Seq => "a list".to_string(),
        Unexpected::Map => "a section".to_string(),
        Unexpected::Char(c) => format!("'{c}'"),
        Unexpected::Other(o) => (*o).to_string(),
        other => other.to_string(),
    }
}

/// "unknown key", with the closest key the section has when one is close enough to be
/// a typo of it.
pub(crate) fn unknown_key(key: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min();
    match best {
        Some((_, k)) => format!("unknown key, did you mean `{k}`?"),
        None => "unknown key".to_string(),
    }
}

/// Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j] (optimal string alignment).
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Unknown keys met while deserializing: the path and the keys valid there.
pub(crate) type UnknownKeys = Rc<RefCell<Vec<(Vec<Seg>, &'static [&'static str])>>>;

/// Deserializes one node of the tree.
pub(crate) struct TreeDe {
    value: Tree,
    path: Vec<Seg>,
    unknown: UnknownKeys,
}

impl TreeDe {
    /// A deserializer of `value`, the root, recording unknown keys in `unknown`.
    pub(crate) fn root(value: Tree, unknown: UnknownKeys) -> Self {
        Self {
            value,
            path: Vec::new(),
            unknown,
        }
    }

    fn child(&self, value: Tree, seg: Seg) -> Self {
        let mut path = self.path.clone();
        path.push(seg);
        Self {
            value,
            path,
            unknown: Rc::clone(&self.unknown),
        }
    }

    /// Visits a text value as a number or boolean where it reads as one.
    fn scalar<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        let path = self.path.clone();
        let result = match &self.value {
            Tree::Text(s) => {
                let t = s.trim();
                if let Ok(n) = t.parse::<u64>() {
                    visitor.visit_u64(n)
                } else if let Ok(n) = t.parse::<i64>() {
                    visitor.visit_i64(n)
                } else if let Ok(b) = t.parse::<bool>() {
                    visitor.visit_bool(b)
                } else if let Ok(f) = t.parse::<f64>() {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(s)
                }
            }
            _ => return self.any(visitor),
        };
        result.map_err(|e: TreeError| e.at(&path))
    }

    fn any<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        let path = self.path.clone();
        let result = match self.value {
            Tree::Nil => visitor.visit_unit(),
            Tree::Bool(b) => visitor.visit_bool(b),
            Tree::Int(n) => {
                if let Ok(n) = u64::try_from(n) {
                    visitor.visit_u64(n)
                } else if let Ok(n) = i64::try_from(n) {
                    visitor.visit_i64(n)
                } else {
                    visitor.visit_i128(n)
                }
            }
            Tree::Float(f) => visitor.visit_f64(f),
            Tree::Text(ref s) => visitor.visit_str(s),
            Tree::Table(ref t) => {
                let entries: Vec<_> = t.clone().into_iter().collect();
                visitor.visit_map(TableAccess {
                    parent: &self,
                    entries: entries.into_iter(),
                    pending: None,
                })
            }
            Tree::List(ref l) => visitor.visit_seq(ListAccess {
                parent: &self,
                items: l.clone().into_iter(),
            }),
        };
        result.map_err(|e: TreeError| e.at(&path))
    }
}

struct TableAccess<'a> {
    parent: &'a TreeDe,
    entries: std::vec::IntoIter<(String, Tree)>,
    pending: Option<(String, Tree)>,
}

impl<'de> de::MapAccess<'de> for TableAccess<'_> {
    type Error = TreeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TreeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let key_de: StrDeserializer<'_, TreeError> = key.as_str().into_deserializer();
        let k = seed
            .deserialize(key_de)
            .map_err(|e| e.at(&self.parent.path))?;
        self.pending = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TreeError> {
        let (key, value) = self
            .pending
            .take()
            .expect("serde asks for a value only after its key");
        seed.deserialize(self.parent.child(value, Seg::Key(key)))
    }
}

struct ListAccess<'a> {
    parent: &'a TreeDe,
    items: std::vec::IntoIter<(usize, Tree)>,
}

impl<'de> de::SeqAccess<'de> for ListAccess<'_> {
    type Error = TreeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TreeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, value)) => seed
                .deserialize(self.parent.child(value, Seg::Index(i)))
                .map(Some),
        }
    }
}

macro_rules! scalars {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
            self.scalar(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for TreeDe {
    type Error = TreeError;

    scalars!(deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64);

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        self.any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        let path = self.path.clone();
        let text = match &self.value {
            Tree::Bool(b) => b.to_string(),
            Tree::Int(n) => n.to_string(),
            Tree::Float(f) => f.to_string(),
            _ => return self.any(visitor),
        };
        visitor
            .visit_string(text)
            .map_err(|e: TreeError| e.at(&path))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TreeError> {
        let path = self.path.clone();
        match self.value {
            Tree::Nil => visitor.visit_none().map_err(|e: TreeError| e.at(&path)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        if let Tree::Table(t) = &self.value {
            let mut unknown = self.unknown.borrow_mut();
            for key in t.keys().filter(|k| !fields.contains(&k.as_str())) {
                let mut path = self.path.clone();
                path.push(Seg::Key(key.clone()));
                unknown.push((path, fields));
            }
        }
        self.any(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TreeError> {
        let path = self.path.clone();
        let result = match &self.value {
            Tree::Text(s) => {
                let access: StrDeserializer<'_, TreeError> = s.as_str().into_deserializer();
                visitor.visit_enum(access)
            }
            // `min_version: 1.3` in YAML is a number; the variants are named "1.3".
            Tree::Float(_) | Tree::Int(_) => {
                let text = match &self.value {
                    Tree::Float(f) => f.to_string(),
                    Tree::Int(n) => n.to_string(),
                    _ => unreachable!("matched above"),
                };
                let access: de::value::StringDeserializer<TreeError> = text.into_deserializer();
                visitor.visit_enum(access)
            }
            other => Err(TreeError::new(ErrorKind::Message(format!(
                "expected one of {}, found {}",
                variants.join(", "),
                found(&other.unexpected())
            )))),
        };
        result.map_err(|e: TreeError| e.at(&path))
    }

    serde::forward_to_deserialize_any! {
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_of_two_letters_is_one_edit() {
        assert_eq!(edit_distance("listen_prot", "listen_port"), 1);
        assert_eq!(edit_distance("comunity", "community"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn a_typo_gets_the_closest_key_and_a_stranger_gets_none() {
        let known = ["listen_address", "listen_port", "servers", "keepalive"];
        assert_eq!(
            unknown_key("listen_prot", &known),
            "unknown key, did you mean `listen_port`?"
        );
        assert_eq!(
            unknown_key("keepalve", &known),
            "unknown key, did you mean `keepalive`?"
        );
        assert_eq!(unknown_key("colour", &known), "unknown key");
        assert_eq!(unknown_key("x", &["y"]), "unknown key");
    }

    #[test]
    fn paths_read_as_written() {
        let path = [
            Seg::Key("tunnel".into()),
            Seg::Key("servers".into()),
            Seg::Index(1),
            Seg::Key("weight".into()),
        ];
        assert_eq!(path_string(&path), "tunnel.servers[1].weight");
    }
}
