//! `sssonector`: the binary. Parses the command line and hands each subcommand to its
//! module; the work itself lives in the `sssonector-actors` and `sssonector-config`
//! crates.

#![forbid(unsafe_code)]

mod bench;
mod cert;
mod cli;
mod config_check;
mod ctl;
mod demo;
mod demo_tunnel;
mod run;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sssonector_actors::Error;

use crate::cli::{CertCommand, Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run(args) => run::run(&args.config),
        Command::Config {
            command: ConfigCommand::Check(args),
        } => config_check::check(&args.config),
        Command::Cert {
            command: CertCommand::Init(args),
        } => report(cert::init(&args)),
        Command::Demo(args) => report(demo::demo(&args)),
        Command::Ctl(args) => ctl::ctl(&args),
        Command::Bench(args) => report(bench::bench(&args)),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sssonector", &mut script);
            print_out(&String::from_utf8_lossy(&script));
            0
        }
    };
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

/// Writes `text` to standard output. A reader that went away (`ctl status | head -1`)
/// is not an error: the rest of the output is simply not wanted.
pub(crate) fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints a failed command's error with its code on standard error and returns the
/// exit status.
pub(crate) fn report(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error[{}]: {err}", err.code());
            err.code().exit_status()
        }
    }
}

/// Stops child daemons as an operator would: SIGTERM to all, up to 5 s for their
/// graceful stop, then SIGKILL for any still running; each is reaped.
pub(crate) fn stop_children(children: &mut [std::process::Child]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    for c in children.iter() {
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for c in children.iter_mut() {
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}
