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

use config::{Environment, File, FileFormat, Map, Value};
use serde::de::DeserializeOwned;

use crate::schema::{Config, Mode};
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

/// Deserializes each section on its own, so a wrong type in one section does not hide
/// the problems of the others, collects every unknown key, then validates.
fn from_tree(mut root: Map<String, Value>, base: &Path) -> Result<Config, LoadError> {
    let mut problems = Vec::new();
    let mut broken = Vec::new();
    let mut config = Config::default();
    section(
        &mut root,
        "mode",
        &mut config.mode,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "network",
        &mut config.network,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "tunnel",
        &mut config.tunnel,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "services",
        &mut config.services,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "connection",
        &mut config.connection,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "balancer",
        &mut config.balancer,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "breaker",
        &mut config.breaker,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "throttle",
        &mut config.throttle,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "security",
        &mut config.security,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "monitor",
        &mut config.monitor,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "control",
        &mut config.control,
        &mut problems,
        &mut broken,
    );
    section(
        &mut root,
        "logging",
        &mut config.logging,
        &mut problems,
        &mut broken,
    );
    let mut unknown: Vec<_> = root.into_keys().collect();
    unknown.sort();
    for key in unknown {
        problems.push(Problem::new(&key, "unknown key"));
    }
    config.resolve_paths(base);
    // A section that failed to deserialize holds defaults; checking those would only
    // add noise such as "missing" for keys the file did set.
    problems.extend(
        validate::validate(&config)
            .into_iter()
            .filter(|p| !broken.contains(&section_of(&p.path))),
    );
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid(problems))
    }
}

/// Deserializes `root[key]` into `slot` if present, recording unknown keys and the
/// first type error with their full key paths. On a type error `slot` keeps its
/// default and `key` is added to `broken`.
fn section<T: DeserializeOwned>(
    root: &mut Map<String, Value>,
    key: &'static str,
    slot: &mut T,
    problems: &mut Vec<Problem>,
    broken: &mut Vec<&'static str>,
) {
    let Some(value) = root.remove(key) else {
        return;
    };
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    let result = serde_ignored::deserialize(tracked, |path| {
        unknown.push(join(key, &path.to_string()));
    });
    for path in unknown {
        problems.push(Problem::new(&path, "unknown key"));
    }
    match result {
        Ok(v) => *slot = v,
        Err(e) => {
            broken.push(key);
            let path = join(key, &track.path().to_string());
            problems.push(Problem::new(&path, clean_type_error(&e.to_string())));
        }
    }
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

fn section_of(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or_default()
}

fn join(section: &str, rest: &str) -> String {
    if rest.is_empty() || rest == "." {
        section.to_string()
    } else if rest.starts_with('[') {
        format!("{section}{rest}")
    } else {
        format!("{section}.{rest}")
    }
}

/// The `config` crate appends ` for key ...` with a partial path; ours is complete.
fn clean_type_error(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => {
            let tail = &message[i..];
            let origin = tail.find(" in ").map(|j| &tail[j..]).unwrap_or("");
            format!("{}{}", &message[..i], origin)
        }
        None => message.to_string(),
    }
}
