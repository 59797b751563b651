//! `sssonector ctl`: one request to a running daemon's control socket.
//!
//! Exit status: 0 when the daemon answered ok, 1 on an error reply (or a request that
//! cannot be built), 2 when the daemon cannot be reached.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sssonector_actors::control::protocol::ProtocolError;
use sssonector_actors::Error;

use crate::cli::CtlArgs;

/// Runs `ctl` and returns the exit status.
pub fn ctl(args: &CtlArgs) -> i32 {
    let request = match request(&args.command, &args.args) {
        Ok(r) => r,
        Err(e) => return crate::report(Err(e)),
    };
    let line = match exchange(&args.socket, &request, args.timeout) {
        Ok(l) => l,
        Err(e) => return crate::report(Err(e)),
    };
    let reply: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => return crate::report(Err(Error::Internal(format!("reply is not JSON: {e}")))),
    };
    let ok = reply["ok"] == true;
    if args.json {
        crate::print_out(&line);
    } else if ok {
        crate::print_out(&render(&args.command, &reply["data"]));
    } else {
        let err = &reply["error"];
        eprintln!(
            "error[{}]: {}",
            err["code"].as_str().unwrap_or("E_INTERNAL"),
            err["message"].as_str().unwrap_or("no message")
        );
        if err["details"].as_object().is_some_and(|d| !d.is_empty()) {
            eprintln!("{}", err["details"]);
        }
    }
    if ok {
        0
    } else {
        1
    }
}

/// Builds `{"id": 1, "command": ..., "args": {...}}` from `key=value` words. A value
/// that reads as a JSON number, boolean or null is sent as one; anything else is a
/// string (so `level=debug` and `address=10.0.0.1:80` need no quoting).
fn request(command: &str, words: &[String]) -> Result<Value, Error> {
    let mut args = Map::new();
    for word in words {
        let (key, raw) = word.split_once('=').ok_or_else(|| {
            Error::from(ProtocolError::BadArgs {
                command: "ctl",
                message: format!("expected key=value, got {word:?}"),
            })
        })?;
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
            _ => Value::String(raw.to_string()),
        };
        args.insert(key.to_string(), value);
    }
    Ok(json!({ "id": 1, "command": command, "args": args }))
}

/// Sends one request line and returns the reply line.
pub(crate) fn exchange(socket: &Path, request: &Value, timeout: Duration) -> Result<String, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|source| Error::Unreachable {
        path: socket.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| Error::io(socket, e))?;
    let mut bytes = serde_json::to_vec(request).expect("a JSON value serializes");
    bytes.push(b'\n');
    // A daemon that refuses the connection (E_CONN_LIMIT) writes its reply and closes
    // before reading: the write then fails, but the reply is there to be read.
    let written = stream.write_all(&bytes);
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    let n = match (read, written) {
        (Ok(n), _) if n > 0 => n,
        (_, Err(e)) => return Err(Error::io(socket, e)),
        (read, Ok(())) => read.map_err(|e| Error::io(socket, e))?,
    };
    if n == 0 {
        let closed = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the daemon closed without a reply",
        );
        return Err(Error::io(socket, closed));
    }
    Ok(line)
}

/// Human output: `help` as a command list, anything else as `key.path: value` lines in
/// key order.
fn render(command: &str, data: &Value) -> String {
    let mut lines = Vec::new();
    if command == "help" {
        let mut rows = Vec::new();
        for c in data["commands"].as_array().into_iter().flatten() {
            let args: Vec<String> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let text = format!(
                        "{}=<{}>",
                        a["name"].as_str().unwrap_or("?"),
                        a["type"].as_str().unwrap_or("?")
                    );
                    if a["required"] == true {
                        text
                    } else {
                        format!("[{text}]")
                    }
                })
                .collect();
            let usage = format!("{} {}", c["name"].as_str().unwrap_or("?"), args.join(" "));
            let summary = c["summary"].as_str().unwrap_or("");
            rows.push((usage.trim_end().to_string(), summary));
        }
        // The description column starts after the longest usage, so none runs into it.
        let width = rows.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
        for (usage, summary) in rows {
            lines.push(format!("  {usage:<width$}  {summary}"));
        }
    } else {
        flatten("", data, &mut lines);
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push(format!("{prefix}: {s}")),
        other => out.push(format!("{prefix}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_words_become_typed_json_args() {
        let words: Vec<String> = [
            "level=debug",
            "rate=1000",
            "on=true",
            "address=10.0.0.1:80",
            "community=007",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let req = request("x", &words).expect("valid words");
        assert_eq!(
            req["args"],
            json!({"level": "debug", "rate": 1000, "on": true, "address": "10.0.0.1:80", "community": "007"})
        );
        assert!(request("x", &["novalue".to_string()]).is_err());
    }

    #[test]
    fn nested_data_prints_as_key_paths() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({"mode": "server", "components": {"daemon": "running"}, "changes": [], "n": 2}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                "changes: []",
                "components.daemon: running",
                "mode: server",
                "n: 2"
            ]
        );
    }
}
