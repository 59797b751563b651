//! Layered loading: a file (YAML, JSON or TOML by its extension), then environment
//! overrides, then validation.
//!
//! Environment variables `SSSONECTOR_<SECTION>__<KEY>` override file values, with `__`
//! between nested keys: `SSSONECTOR_THROTTLE__RATE=1000`,
//! `SSSONECTOR_MONITOR__SNMP__COMMUNITY=x`. Three traps of the `config` crate are
//! handled here: `separator("__")` would also make the prefix separator `__`, so
//! `prefix_separator("_")` is set; keys are lowercased, which our snake_case keys
//! survive; and `try_parsing(true)` would turn a community `"007"` into the number 7,
//! so values stay strings and each field's type parses them (lists accept a
//! comma-separated string for the same reason).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::rc::Rc;

use config::{Environment, File, FileFormat, Map, Value};
use serde::Deserialize;

use crate::schema::{Config, Mode};
use crate::tree::{path_string, unknown_key, ErrorKind, Seg, Tree, TreeDe, UnknownKeys};
use crate::validate::{self, Problem};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "SSSONECTOR";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file's extension names no format we read.
    #[error("{}: unsupported config format, use .yaml, .yml, .json or .toml", .0.display())]
    UnsupportedFormat(PathBuf),
    /// The file could not be read or is not well-formed YAML/JSON/TOML.
    #[error("{0}")]
    Syntax(String),
    /// The file parsed but its content is wrong; every problem found.
    #[error("{} problem(s): {}", .0.len(), Problems(.0))]
    Invalid(Vec<Problem>),
}

impl LoadError {
    /// Every problem, one per entry, each starting with its key path where it has one.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            LoadError::Invalid(p) => p.clone(),
            other => vec![Problem::new("", other.to_string())],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl std::fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Loads `path` with overrides from the process environment and validates it.
///
/// # Errors
/// [`LoadError`] with every problem found.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with_env(path, std::env::vars())
}

/// Loads `path` with overrides from `env` (name, value pairs; only names starting with
/// `SSSONECTOR_` count) and validates it.
///
/// Relative file paths in the configuration are taken relative to the file's folder.
///
/// # Errors
/// [`LoadError`] with every problem found.
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, LoadError> {
    let root = layered(path, env)?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    from_tree(root, absolute.parent().unwrap_or(Path::new("/")))
}

/// The `mode` that `path` with the process environment's overrides asks for, read on
/// its own: a reload refuses a mode change before the rest of the file is judged by the
/// other mode's rules. `None` when the file cannot be read or its mode is not valid.
pub fn mode_of(path: &Path) -> Option<Mode> {
    let mut root = layered(path, std::env::vars()).ok()?;
    root.remove("mode")?.try_deserialize().ok()
}

/// The file's tree with the environment's overrides laid over it, not yet checked.
fn layered(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Map<String, Value>, LoadError> {
    let format = format_of(path)?;
    let env: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")))
        .collect();
    let layered = config::Config::builder()
        .add_source(File::new(&path.to_string_lossy(), format))
        .add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(false)
                .source(Some(env)),
        )
        .build()
        .map_err(|e| LoadError::Syntax(e.to_string()))?;
    layered
        .try_deserialize()
        .map_err(|e| LoadError::Syntax(e.to_string()))
}

/// Parses configuration text in `format`, without environment overrides; relative
/// paths are taken relative to `base`. Used for embedded configurations.
///
/// # Errors
/// [`LoadError`] with every problem found.
pub fn from_str(text: &str, format: FileFormat, base: &Path) -> Result<Config, LoadError> {
    let root: Map<String, Value> = config::Config::builder()
        .add_source(File::from_str(text, format))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| LoadError::Syntax(e.to_string()))?;
    from_tree(root, base)
}

fn format_of(path: &Path) -> Result<FileFormat, LoadError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => Ok(FileFormat::Yaml),
        Some("json") => Ok(FileFormat::Json),
        Some("toml") => Ok(FileFormat::Toml),
        _ => Err(LoadError::UnsupportedFormat(path.to_path_buf())),
    }
}

/// Deserializes the schema from the file's tree in rounds, so that one wrong value does
/// not hide the others: each round's error is recorded and the bad value taken out (it
/// then takes its default) until the schema deserializes; a missing required key gets
/// an empty placeholder so the rest of its item is still checked. Then every unknown
/// key is reported and the result validated.
fn from_tree(root: Map<String, Value>, base: &Path) -> Result<Config, LoadError> {
    let mut tree = Tree::Table(root.into_iter().map(|(k, v)| (k, v.into())).collect());
    let mut problems = Vec::new();
    // Key paths whose value was replaced: validating the replacement would only add
    // noise such as "missing" for a key the file did set.
    let mut replaced: Vec<String> = Vec::new();
    // List items taken out, by the list's path, as positions in the file.
    let mut taken: Vec<(String, usize)> = Vec::new();
    let mut placeholders: Vec<Vec<Seg>> = Vec::new();
    let mut config = None;
    // Each round takes a node out or adds one placeholder, so this many always do.
    for _ in 0..=2 * tree.count() {
        let unknown = UnknownKeys::default();
        let err = match Config::deserialize(TreeDe::root(tree.clone(), Rc::clone(&unknown))) {
            Ok(c) => {
                for (path, known) in unknown.take() {
                    let key = match path.last() {
                        Some(Seg::Key(k)) => k.clone(),
                        _ => String::new(),
                    };
                    problems.push(Problem::new(&path_string(&path), unknown_key(&key, known)));
                }
                config = Some(c);
                break;
            }
            Err(e) => e,
        };
        let mut path = err.path.clone().unwrap_or_default();
        if placeholders.contains(&path) {
            // The key needs more than a placeholder: drop the item holding it.
            path.pop();
        } else {
            problems.push(Problem::new(&path_string(&path), err.message()));
            if let ErrorKind::Missing(_) = err.kind {
                if let Some((Seg::Key(key), parent)) = path.split_last() {
                    if let Some(Tree::Table(t)) = tree.get_mut(parent) {
                        t.insert(key.clone(), Tree::Text(String::new()));
                        placeholders.push(path.clone());
                        replaced.push(path_string(&path));
                        continue;
                    }
                }
                path.pop();
            }
        }
        replaced.push(path_string(&path));
        if let Some((Seg::Index(i), list)) = path.split_last() {
            taken.push((path_string(list), *i));
        }
        if !tree.remove(&path) {
            break;
        }
    }
    let Some(mut config) = config else {
        return Err(LoadError::Invalid(problems));
    };
    config.resolve_paths(base);
    problems.extend(
        validate::validate(&config)
            .into_iter()
            .map(|mut p| {
                p.path = in_file(&p.path, &taken);
                p
            })
            .filter(|p| !replaced.iter().any(|r| r.is_empty() || within(&p.path, r))),
    );
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid(problems))
    }
}

/// Whether `path` is `outer` or a key below it.
fn within(path: &str, outer: &str) -> bool {
    path.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Renumbers the list items of a validation path (positions in the loaded lists) as
/// positions in the file, given the items `taken` out of each list.
fn in_file(path: &str, taken: &[(String, usize)]) -> String {
    if taken.is_empty() {
        return path.to_string();
    }
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find(']').map(|c| open + c) else {
            break;
        };
        match rest[open + 1..close].parse::<usize>() {
            Ok(loaded) => {
                let gone: Vec<usize> = taken
                    .iter()
                    .filter(|(list, _)| *list == out)
                    .map(|(_, i)| *i)
                    .collect();
                let file = (0..)
                    .filter(|i| !gone.contains(i))
                    .nth(loaded)
                    .expect("an unbounded range has an nth item");
                out.push_str(&format!("[{file}]"));
            }
            Err(_) => out.push_str(&rest[open..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

impl Config {
    /// Makes relative file paths relative to `base` (the config file's folder), so the
    /// daemon finds its files whatever its working directory.
    fn resolve_paths(&mut self, base: &Path) {
        let files = [
            &mut self.tunnel.cert_file,
            &mut self.tunnel.key_file,
            &mut self.tunnel.ca_file,
            &mut self.security.crl_file,
            &mut self.security.audit_log,
            &mut self.logging.file,
        ];
        for f in files.into_iter().flatten() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if self.control.socket.is_relative() && !self.control.socket.as_os_str().is_empty() {
            self.control.socket = base.join(&self.control.socket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{in_file, within};

    #[test]
    fn validation_paths_count_list_items_as_the_file_does() {
        let taken = vec![
            ("tunnel.servers".to_string(), 0),
            ("tunnel.servers".to_string(), 2),
            ("services[1].endpoints".to_string(), 0),
        ];
        assert_eq!(
            in_file("tunnel.servers[0].weight", &taken),
            "tunnel.servers[1].weight"
        );
        assert_eq!(in_file("tunnel.servers[1]", &taken), "tunnel.servers[3]");
        assert_eq!(
            in_file("services[1].endpoints[0].address", &taken),
            "services[1].endpoints[1].address"
        );
        assert_eq!(in_file("network.routes[0]", &taken), "network.routes[0]");
        assert_eq!(in_file("mode", &[]), "mode");
    }

    #[test]
    fn a_replaced_value_covers_the_keys_below_it() {
        assert!(within("services[0].name", "services[0]"));
        assert!(within("services[0]", "services[0]"));
        assert!(!within("services[0]x", "services[0]"));
        assert!(!within("services[1].name", "services[0]"));
    }
}
