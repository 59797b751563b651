//! # sssonector-config
//!
//! The configuration of an SSSonector daemon: its [schema], layered
//! [loading](load()) from YAML/JSON/TOML plus `SSSONECTOR_*` environment overrides,
//! [validation](validate()) that reports every problem at once with its key path, and
//! [`diff`] for reloads.
//!
//! # Layout
//! - [`schema`]: the sections and fields, defaults in [`schema::defaults`].
//! - [`value`]: value types checked after parsing ([`Parsed`], [`Port`], [`HostPort`]).
//! - `load`: file + environment → [`Config`], or [`LoadError`] with every problem.
//! - `tree`: the file as a value tree and the deserializer that words its errors.
//! - `validate`: the rules; [`Problem`] is one violation.
//! - `diff`: [`Change`]s between two configurations, each with its [`Component`].
//! - `secret`: [`Secret`], printed as `***` everywhere.

#![forbid(unsafe_code)]

mod diff;
mod load;
pub mod schema;
mod secret;
mod tree;
mod validate;
pub mod value;

pub use diff::{diff, Change, Component, RESTART_KEYS};
pub use load::{from_str, load, load_with_env, mode_of, LoadError, ENV_PREFIX};
pub use schema::*;
pub use secret::{Secret, REDACTED};
pub use validate::{allow_entry_is_valid, validate, Problem};
pub use value::{DurationValue, FileMode, HostPort, HumanDuration, Parsed, Port};

/// The formats a configuration can be written in.
pub use config::FileFormat;

impl Config {
    /// The mode; validation guarantees it is set.
    pub fn mode(&self) -> Mode {
        self.mode
            .expect("config::load refuses a configuration without a mode")
    }

    /// SHA-256 of the effective configuration as JSON, so two daemons or two reloads
    /// can tell whether they run the same thing. Secrets are left out (they print as
    /// `***`): a hash of a short community string could be reversed by guessing.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(self).expect("the schema serializes to JSON");
        let hash = Sha256::digest(&bytes);
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}
