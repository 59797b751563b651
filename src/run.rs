//! `sssonector run --config FILE`: the daemon in the foreground.

use std::path::Path;

use slog::error;
use sssonector_actors::logging;

use crate::config_check::print_problems;

/// Runs until stopped; returns the exit status (0 after a graceful stop, 2 for an
/// invalid configuration, 1 when the daemon cannot start).
pub fn run(path: &Path) -> i32 {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let config = match sssonector_config::load(&path) {
        Ok(c) => c,
        Err(e) => return print_problems(&path, e),
    };
    let logs = match logging::build(&config.logging) {
        Ok(l) => l,
        Err(e) => return crate::report(Err(e)),
    };
    let system = actix_rt::System::new();
    let started = system.block_on(async {
        sssonector_actors::start(
            config,
            path.clone(),
            logs.logger.clone(),
            logs.handle.clone(),
        )
    });
    let status = match started {
        Ok(_daemon) => match system.run_with_code() {
            Ok(code) => code,
            Err(e) => {
                let err = sssonector_actors::Error::io("actix system", e);
                error!(logs.logger, "runtime failed"; "code" => err.code(), "error" => %err);
                1
            }
        },
        Err(err) => {
            error!(logs.logger, "daemon cannot start"; "code" => err.code(), "error" => %err);
            err.code().exit_status()
        }
    };
    // Dropping the logger flushes the queued lines before the process exits.
    drop(logs);
    status
}
