//! `sssonector config check --config FILE`.

use std::path::Path;

use sssonector_actors::Error;

/// Prints the effective configuration as JSON (secrets redacted) and returns 0, or
/// prints every problem, one per line, and returns 2.
pub fn check(path: &Path) -> i32 {
    match sssonector_config::load(path) {
        Ok(config) => {
            let json =
                serde_json::to_string_pretty(&config).expect("the schema serializes to JSON");
            crate::print_out(&format!("{json}\n"));
            0
        }
        Err(e) => print_problems(path, e),
    }
}

/// Prints why `path` was refused, one problem per line, and returns the exit status 2.
pub fn print_problems(path: &Path, err: sssonector_config::LoadError) -> i32 {
    let problems = err.problems();
    let err = Error::from(err);
    eprintln!("error[{}]: {} is invalid", err.code(), path.display());
    for problem in problems {
        eprintln!("  {problem}");
    }
    err.code().exit_status()
}
