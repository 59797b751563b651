//! The control protocol, shared by the daemon's control socket and `sssonector ctl`.
//!
//! Newline-delimited JSON over a Unix stream socket; many requests per connection,
//! answered in order.
//!
//! ```text
//! request:  {"id": 7, "command": "log.level", "args": {"level": "debug"}}
//! success:  {"id": 7, "ok": true, "data": {...}}
//! failure:  {"id": 7, "ok": false, "error": {"code": "E_BAD_ARGS", "message": "...", "details": {...}}}
//! ```
//!
//! `id` is any JSON value and is echoed (null when absent or unreadable); `args` is an
//! object and may be left out. Parsing is pure: a line becomes a typed [`Command`] or a
//! [`ProtocolError`] with a stable code, checked in this order: not JSON
//! (`E_BAD_JSON`), wrong shape (`E_BAD_REQUEST`), unknown command
//! (`E_UNKNOWN_COMMAND`), arguments missing, unknown or mistyped (`E_BAD_ARGS`).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sssonector_config::LogLevel;

use crate::error::{Error, ErrorCode};

/// Longest request line accepted, bytes, newline included.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a request could not be carried out as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON, or not UTF-8.
    #[error("request is not JSON: {0}")]
    BadJson(String),
    /// JSON, but not `{"command": "...", ...}`.
    #[error("request must be an object with a string \"command\" and an object \"args\": {0}")]
    BadRequest(String),
    /// No such command.
    #[error("unknown command {0:?}; \"help\" lists them")]
    UnknownCommand(String),
    /// Arguments missing, unknown or of the wrong type.
    #[error("{command}: {message}")]
    BadArgs {
        /// The command.
        command: &'static str,
        /// What is wrong, from serde or our own checks.
        message: String,
    },
    /// The line exceeded [`MAX_LINE`]; it was discarded.
    #[error("request line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// The client sent nothing for this long; the connection is closed.
    #[error("no request for {0:?}, closing")]
    Timeout(Duration),
}

impl ProtocolError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadJson(_) => ErrorCode::BadJson,
            ProtocolError::BadRequest(_) => ErrorCode::BadRequest,
            ProtocolError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            ProtocolError::BadArgs { .. } => ErrorCode::BadArgs,
            ProtocolError::LineTooLong => ErrorCode::LineTooLong,
            ProtocolError::Timeout(_) => ErrorCode::Timeout,
        }
    }
}

/// Arguments of `endpoint.add`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointAdd {
    /// Service name.
    pub service: String,
    /// `host:port` of the backend.
    pub address: String,
    /// Weight for weighted round robin.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Arguments naming one endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRef {
    /// Service name.
    pub service: String,
    /// `host:port` of the backend.
    pub address: String,
}

/// Arguments of `breaker.reset`: one endpoint's breaker, or all of a service's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerReset {
    /// Service name.
    pub service: String,
    /// Endpoint; all of the service's when absent.
    #[serde(default)]
    pub address: Option<String>,
}

/// Arguments of `limits.set`; at least one is given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSet {
    /// Per-connection rate, bytes per second.
    #[serde(default)]
    pub rate: Option<u64>,
    /// Per-connection burst, bytes.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Global rate, bytes per second; 0 removes the global limit.
    #[serde(default)]
    pub global_rate: Option<u64>,
    /// Only this connection (peer name); all when absent.
    #[serde(default)]
    pub connection: Option<String>,
}

/// Arguments of `log.level`: set when given, report otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLogLevel {
    /// The new level.
    #[serde(default)]
    pub level: Option<LogLevel>,
}

/// Arguments of `fault` (debug builds only): which actor to make panic.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The actor: `balancer`, `snmp`, `ratelimit`, `audit`, `control`, `prometheus`,
    /// `snmp_traps`, `tun`, `listener`, `dialer`, `service`.
    pub actor: String,
    /// For `balancer` (server) and `service` (client): which service's; the first
    /// by name when absent.
    #[serde(default)]
    pub service: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Every command, with its typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Version and build.
    Version,
    /// Mode, uptime, config file and digest, every component's state.
    Status,
    /// Component, resource and connectivity checks with an overall verdict.
    Health,
    /// The counters Prometheus shows.
    Metrics,
    /// Tunnel peers and streams.
    Connections,
    /// Service endpoints with health and load.
    Endpoints,
    /// Add an endpoint to a service.
    EndpointAdd(EndpointAdd),
    /// Remove an endpoint.
    EndpointRemove(EndpointRef),
    /// Stop sending new streams to an endpoint.
    EndpointDrain(EndpointRef),
    /// Circuit breaker states.
    Breakers,
    /// Certificates, CA bundle and CRL in use, and the last swap and refusal.
    Certs,
    /// Close breakers.
    BreakerReset(BreakerReset),
    /// Rate limits in force.
    Limits,
    /// Change rate limits.
    LimitsSet(LimitsSet),
    /// Report or set the log level.
    LogLevel(SetLogLevel),
    /// Reload the configuration file.
    Reload,
    /// Stop the daemon gracefully.
    Stop,
    /// The commands and their arguments.
    Help,
    /// Debug builds only, not in `help`: make an actor panic, to prove it is
    /// restarted. A release build answers `E_UNKNOWN_COMMAND`.
    #[cfg(debug_assertions)]
    Fault(Fault),
}

/// One argument of a command, for `help`.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    /// Argument name.
    pub name: &'static str,
    /// JSON type: `string`, `integer`.
    pub kind: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// What it means.
    pub doc: &'static str,
}

/// A command's name, arguments and meaning: the source of `help`.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// The name sent as `"command"`.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Its arguments.
    pub args: &'static [ArgSpec],
    /// Whether it changes the daemon (and so is written to the audit log).
    pub changes_state: bool,
}

const fn arg(name: &'static str, kind: &'static str, required: bool, doc: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        required,
        doc,
    }
}

const fn spec(
    name: &'static str,
    summary: &'static str,
    args: &'static [ArgSpec],
    changes_state: bool,
) -> CommandSpec {
    CommandSpec {
        name,
        summary,
        args,
        changes_state,
    }
}

const ENDPOINT: [ArgSpec; 2] = [
    arg("service", "string", true, "service name"),
    arg("address", "string", true, "endpoint host:port"),
];

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    spec("help", "list the commands and their arguments", &[], false),
    spec("version", "version of the daemon", &[], false),
    spec(
        "status",
        "mode, uptime, config file and digest, state of every component",
        &[],
        false,
    ),
    spec(
        "health",
        "component, resource and connectivity checks: healthy, degraded or unhealthy",
        &[],
        false,
    ),
    spec(
        "metrics",
        "the counters Prometheus and SNMP show",
        &[],
        false,
    ),
    spec(
        "connections",
        "tunnel peers and streams: identity, addresses, since, bytes, rate",
        &[],
        false,
    ),
    spec(
        "endpoints",
        "service endpoints with health, breaker and load",
        &[],
        false,
    ),
    spec(
        "endpoint.add",
        "add an endpoint to a service",
        &[
            ENDPOINT[0],
            ENDPOINT[1],
            arg("weight", "integer", false, "weight, default 1"),
        ],
        true,
    ),
    spec(
        "endpoint.remove",
        "remove an endpoint; its live streams finish",
        &ENDPOINT,
        true,
    ),
    spec(
        "endpoint.drain",
        "send no new streams to an endpoint",
        &ENDPOINT,
        true,
    ),
    spec(
        "breakers",
        "circuit breaker state of every endpoint",
        &[],
        false,
    ),
    spec(
        "certs",
        "certificate chain, CA bundle and CRL in use: subjects, SANs, serials, days to expiry; last swap and refusal",
        &[],
        false,
    ),
    spec(
        "breaker.reset",
        "close an endpoint's breaker, or all of a service's",
        &[
            ENDPOINT[0],
            arg(
                "address",
                "string",
                false,
                "endpoint host:port; all when absent",
            ),
        ],
        true,
    ),
    spec(
        "limits",
        "rate limits in force, global and per connection",
        &[],
        false,
    ),
    spec(
        "limits.set",
        "change rate limits at run time (give at least one of rate, burst, global_rate)",
        &[
            arg("rate", "integer", false, "bytes per second per connection"),
            arg("burst", "integer", false, "bucket size, bytes"),
            arg(
                "global_rate",
                "integer",
                false,
                "bytes per second for all; 0 = none",
            ),
            arg(
                "connection",
                "string",
                false,
                "only this peer; all when absent",
            ),
        ],
        true,
    ),
    spec(
        "log.level",
        "report the log level, or set it",
        &[arg(
            "level",
            "string",
            false,
            "error, warn, info, debug or trace",
        )],
        true,
    ),
    spec(
        "reload",
        "reload the configuration file (as SIGHUP)",
        &[],
        true,
    ),
    spec(
        "stop",
        "stop gracefully (as SIGTERM); the reply comes first",
        &[],
        true,
    ),
];

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::Status => "status",
            Command::Health => "health",
            Command::Metrics => "metrics",
            Command::Connections => "connections",
            Command::Endpoints => "endpoints",
            Command::EndpointAdd(_) => "endpoint.add",
            Command::EndpointRemove(_) => "endpoint.remove",
            Command::EndpointDrain(_) => "endpoint.drain",
            Command::Breakers => "breakers",
            Command::Certs => "certs",
            Command::BreakerReset(_) => "breaker.reset",
            Command::Limits => "limits",
            Command::LimitsSet(_) => "limits.set",
            Command::LogLevel(_) => "log.level",
            Command::Reload => "reload",
            Command::Stop => "stop",
            Command::Help => "help",
            #[cfg(debug_assertions)]
            Command::Fault(_) => "fault",
        }
    }

    /// Whether carrying it out changes the daemon. `log.level` without a level only
    /// reports.
    pub fn changes_state(&self) -> bool {
        match self {
            Command::LogLevel(a) => a.level.is_some(),
            other => spec_of(other.name()).is_some_and(|s| s.changes_state),
        }
    }

    /// Builds the command `name` from its arguments.
    ///
    /// # Errors
    /// `E_UNKNOWN_COMMAND` or `E_BAD_ARGS`.
    pub fn from_parts(name: &str, args: Map<String, Value>) -> Result<Self, ProtocolError> {
        #[cfg(debug_assertions)]
        if name == "fault" {
            return Ok(Command::Fault(typed("fault", args)?));
        }
        let spec = spec_of(name).ok_or_else(|| ProtocolError::UnknownCommand(name.to_string()))?;
        let name = spec.name;
        let cmd = match name {
            "endpoint.add" => Command::EndpointAdd(typed(name, args)?),
            "endpoint.remove" => Command::EndpointRemove(typed(name, args)?),
            "endpoint.drain" => Command::EndpointDrain(typed(name, args)?),
            "breaker.reset" => Command::BreakerReset(typed(name, args)?),
            "limits.set" => {
                let set: LimitsSet = typed(name, args)?;
                if set.rate.is_none() && set.burst.is_none() && set.global_rate.is_none() {
                    return Err(ProtocolError::BadArgs {
                        command: name,
                        message: "give at least one of rate, burst, global_rate".into(),
                    });
                }
                Command::LimitsSet(set)
            }
            "log.level" => Command::LogLevel(typed(name, args)?),
            _ => {
                let NoArgs {} = typed(name, args)?;
                match name {
                    "version" => Command::Version,
                    "status" => Command::Status,
                    "health" => Command::Health,
                    "metrics" => Command::Metrics,
                    "connections" => Command::Connections,
                    "endpoints" => Command::Endpoints,
                    "breakers" => Command::Breakers,
                    "certs" => Command::Certs,
                    "limits" => Command::Limits,
                    "reload" => Command::Reload,
                    "stop" => Command::Stop,
                    _ => Command::Help,
                }
            }
        };
        Ok(cmd)
    }
}

fn spec_of(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|s| s.name == name)
}

fn typed<T: DeserializeOwned>(
    command: &'static str,
    args: Map<String, Value>,
) -> Result<T, ProtocolError> {
    serde_json::from_value(Value::Object(args)).map_err(|e| ProtocolError::BadArgs {
        command,
        message: e.to_string(),
    })
}

/// A parsed request: its id and command, or its id and what was wrong.
pub type Parsed = (Value, Result<Command, ProtocolError>);

/// Parses one request line (without or with its trailing newline).
pub fn parse(line: &[u8]) -> Parsed {
    if line.trim_ascii().is_empty() {
        let empty = ProtocolError::BadRequest("the line is empty".into());
        return (Value::Null, Err(empty));
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return (Value::Null, Err(ProtocolError::BadJson(e.to_string()))),
    };
    if let Some(dup) = super::unique::first_duplicate(line) {
        // A repeated `id` has no one value to echo.
        let id = match (&value, dup.depth, dup.key.as_str()) {
            (_, 0, "id") => Value::Null,
            (Value::Object(o), _, _) => o.get("id").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let message = format!("duplicate key {:?}", dup.key);
        return (id, Err(ProtocolError::BadRequest(message)));
    }
    let Value::Object(mut request) = value else {
        return (
            Value::Null,
            Err(ProtocolError::BadRequest("not an object".into())),
        );
    };
    let id = request.remove("id").unwrap_or(Value::Null);
    let command = match request.remove("command") {
        Some(Value::String(c)) => c,
        Some(_) => {
            return (
                id,
                Err(ProtocolError::BadRequest(
                    "\"command\" is not a string".into(),
                )),
            )
        }
        None => return (id, Err(ProtocolError::BadRequest("no \"command\"".into()))),
    };
    let args = match request.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => {
            return (
                id,
                Err(ProtocolError::BadRequest(
                    "\"args\" is not an object".into(),
                )),
            )
        }
    };
    if let Some(extra) = request.keys().next() {
        return (
            id,
            Err(ProtocolError::BadRequest(format!(
                "unknown field {extra:?}"
            ))),
        );
    }
    (id, Command::from_parts(&command, args))
}

/// The reply to a successful request.
pub fn ok_reply(id: &Value, data: Value) -> Value {
    json!({ "id": id, "ok": true, "data": data })
}

/// The reply to a failed request.
pub fn error_reply(id: &Value, err: &Error) -> Value {
    json!({ "id": id, "ok": false, "error": err.to_json() })
}

/// The data of `help`.
pub fn help() -> Value {
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(|c| {
            let args: Vec<Value> = c
                .args
                .iter()
                .map(|a| json!({ "name": a.name, "type": a.kind, "required": a.required, "doc": a.doc }))
                .collect();
            json!({ "name": c.name, "summary": c.summary, "args": args, "changes_state": c.changes_state })
        })
        .collect();
    json!({ "commands": commands })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> Option<ErrorCode> {
        parse(line.as_bytes()).1.err().map(|e| e.code())
    }

    #[cfg(debug_assertions)]
    #[test]
    fn fault_parses_in_debug_builds_only_and_is_not_in_help() {
        assert_eq!(
            parse(br#"{"command": "fault", "args": {"actor": "snmp"}}"#).1,
            Ok(Command::Fault(Fault {
                actor: "snmp".into(),
                service: None
            }))
        );
        assert_eq!(
            code(r#"{"command": "fault", "args": {"actor": "snmp", "x": 1}}"#),
            Some(ErrorCode::BadArgs)
        );
        assert!(spec_of("fault").is_none());
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn fault_is_an_unknown_command_in_release_builds() {
        assert_eq!(
            code(r#"{"command": "fault", "args": {"actor": "snmp"}}"#),
            Some(ErrorCode::UnknownCommand)
        );
    }

    #[test]
    fn well_formed_requests_parse_into_typed_commands() {
        let (id, cmd) = parse(br#"{"id": 7, "command": "status", "args": {}}"#);
        assert_eq!((id, cmd), (json!(7), Ok(Command::Status)));
        let (id, cmd) =
            parse(br#"{"id": "a", "command": "log.level", "args": {"level": "debug"}}"#);
        assert_eq!(id, json!("a"));
        assert_eq!(
            cmd,
            Ok(Command::LogLevel(SetLogLevel {
                level: Some(LogLevel::Debug)
            }))
        );
        let (_, cmd) =
            parse(br#"{"command": "endpoint.add", "args": {"service": "web", "address": "b:1"}}"#);
        assert_eq!(
            cmd,
            Ok(Command::EndpointAdd(EndpointAdd {
                service: "web".into(),
                address: "b:1".into(),
                weight: 1
            }))
        );
        assert_eq!(parse(br#"{"command": "help"}"#).1, Ok(Command::Help));
    }

    #[test]
    fn each_kind_of_bad_input_has_its_code() {
        let table = [
            ("not json", ErrorCode::BadJson),
            ("{\"command\": \"st", ErrorCode::BadJson),
            ("\u{7f}\u{0}", ErrorCode::BadJson),
            ("[1, 2]", ErrorCode::BadRequest),
            ("{\"id\": 1}", ErrorCode::BadRequest),
            ("{\"command\": 5}", ErrorCode::BadRequest),
            (
                "{\"command\": \"status\", \"args\": [1]}",
                ErrorCode::BadRequest,
            ),
            (
                "{\"command\": \"status\", \"extra\": 1}",
                ErrorCode::BadRequest,
            ),
            ("{\"command\": \"frobnicate\"}", ErrorCode::UnknownCommand),
            (
                "{\"command\": \"status\", \"args\": {\"x\": 1}}",
                ErrorCode::BadArgs,
            ),
            (
                "{\"command\": \"log.level\", \"args\": {\"level\": 3}}",
                ErrorCode::BadArgs,
            ),
            (
                "{\"command\": \"log.level\", \"args\": {\"level\": \"loud\"}}",
                ErrorCode::BadArgs,
            ),
            (
                "{\"command\": \"endpoint.add\", \"args\": {\"service\": \"web\"}}",
                ErrorCode::BadArgs,
            ),
            (
                "{\"command\": \"limits.set\", \"args\": {\"rate\": \"fast\"}}",
                ErrorCode::BadArgs,
            ),
            (
                "{\"command\": \"limits.set\", \"args\": {}}",
                ErrorCode::BadArgs,
            ),
        ];
        for (line, want) in table {
            assert_eq!(code(line), Some(want), "{line}");
        }
    }

    #[test]
    fn the_id_is_echoed_even_when_the_command_is_bad() {
        let (id, cmd) = parse(br#"{"id": 9, "command": "nope"}"#);
        assert_eq!(id, json!(9));
        assert!(cmd.is_err());
    }

    /// `help` is generated from COMMANDS; this holds COMMANDS to the typed parser: the
    /// documented arguments parse, a missing required one or an extra one does not.
    #[test]
    fn help_matches_what_the_parser_accepts() {
        for spec in COMMANDS {
            let sample = |a: &ArgSpec| match a.kind {
                "integer" => json!(1),
                _ if a.name == "level" => json!("info"),
                _ => json!("x"),
            };
            let all: Map<String, Value> = spec
                .args
                .iter()
                .map(|a| (a.name.to_string(), sample(a)))
                .collect();
            let parsed = Command::from_parts(spec.name, all.clone()).expect(spec.name);
            assert_eq!(parsed.name(), spec.name);
            for required in spec.args.iter().filter(|a| a.required) {
                let mut fewer = all.clone();
                fewer.remove(required.name);
                assert!(
                    Command::from_parts(spec.name, fewer).is_err(),
                    "{} without {}",
                    spec.name,
                    required.name
                );
            }
            let mut more = all;
            more.insert("surplus".into(), json!(1));
            assert!(
                Command::from_parts(spec.name, more).is_err(),
                "{} took an unknown argument",
                spec.name
            );
        }
    }

    #[test]
    fn only_changing_commands_are_audited() {
        assert!(Command::Stop.changes_state());
        assert!(Command::Reload.changes_state());
        assert!(!Command::Status.changes_state());
        assert!(!Command::LogLevel(SetLogLevel { level: None }).changes_state());
        assert!(Command::LogLevel(SetLogLevel {
            level: Some(LogLevel::Warn)
        })
        .changes_state());
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let ok = ok_reply(&json!(3), json!({"a": 1}));
        assert_eq!(ok, json!({"id": 3, "ok": true, "data": {"a": 1}}));
        let err = error_reply(
            &json!(4),
            &Error::from(ProtocolError::UnknownCommand("x".into())),
        );
        assert_eq!(err["ok"], false);
        assert_eq!(err["error"]["code"], "E_UNKNOWN_COMMAND");
        assert!(err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"x\"")));
    }
}
