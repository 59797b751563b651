//! `sssonector`: the binary. Parses the command line and hands each subcommand to its
//! module; the work itself lives in the `sssonector-actors` and `sssonector-config`
//! crates.

#![forbid(unsafe_code)]

mod cert;
mod cli;
mod config_check;
mod demo;
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
        Command::Ctl(_) => report(Err(Error::NotAvailable(
            "sssonector ctl (the control socket)",
        ))),
        Command::Bench(_) => report(Err(Error::NotAvailable("sssonector bench"))),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "sssonector",
                &mut std::io::stdout(),
            );
            0
        }
    };
    ExitCode::from(u8::try_from(status).unwrap_or(1))
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
