//! Structured logging with slog: JSON or terminal lines, to standard error or a file,
//! with a level that can change while the daemon runs.
//!
//! The chain is `RuntimeLevel -> slog-async -> format -> writer`. The level filter sits
//! in front of the async channel so that a suppressed record costs one atomic load and
//! never crosses threads. slog's `max_level_trace` and `release_max_level_trace`
//! features keep debug and trace compiled into release builds, so raising the level at
//! run time shows them.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slog::{o, Drain, Level, Logger};
use sssonector_config::{LogFormat, LogLevel, Logging};

use crate::error::{Error, Result};

/// Records queued for the writer thread before new ones are dropped (and the drop
/// reported), so a stuck disk cannot block the data path.
const ASYNC_QUEUE: usize = 4096;

/// Changes the level of a running logger.
#[derive(Clone, Debug)]
pub struct LogHandle {
    level: Arc<AtomicUsize>,
}

impl LogHandle {
    fn new(level: LogLevel) -> Self {
        Self {
            level: Arc::new(AtomicUsize::new(to_slog(level).as_usize())),
        }
    }

    /// Sets the least severe level written from now on.
    pub fn set_level(&self, level: LogLevel) {
        self.level
            .store(to_slog(level).as_usize(), Ordering::Relaxed);
    }

    /// The current level.
    pub fn level(&self) -> LogLevel {
        let current = self.level.load(Ordering::Relaxed);
        LogLevel::ALL
            .into_iter()
            .find(|l| to_slog(*l).as_usize() == current)
            .unwrap_or_default()
    }
}

fn to_slog(level: LogLevel) -> Level {
    match level {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warning,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    }
}

/// Passes records at or above the handle's level.
struct RuntimeLevel<D> {
    drain: D,
    level: Arc<AtomicUsize>,
}

impl<D: Drain> Drain for RuntimeLevel<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> std::result::Result<Self::Ok, Self::Err> {
        if self.is_enabled(record.level()) {
            self.drain.log(record, values).map(Some)
        } else {
            Ok(None)
        }
    }

    fn is_enabled(&self, level: Level) -> bool {
        level.as_usize() <= self.level.load(Ordering::Relaxed)
    }
}

/// A running logger. Keep it alive for the life of the process: dropping it flushes
/// the queued records.
pub struct Logs {
    /// The root logger; children add their own keys.
    pub logger: Logger,
    /// Changes the level at run time.
    pub handle: LogHandle,
    _guard: Option<slog_async::AsyncGuard>,
}

/// Builds the logger `config` describes.
///
/// # Errors
/// `E_IO` when the log file cannot be opened.
pub fn build(config: &Logging) -> Result<Logs> {
    let writer: Box<dyn Write + Send> = match &config.file {
        Some(path) => Box::new(open_append(path)?),
        None => Box::new(io::stderr()),
    };
    let handle = LogHandle::new(config.level);
    let (drain, guard) = match config.format {
        LogFormat::Json => async_drain(
            slog_json::Json::new(writer)
                .set_newlines(true)
                .add_default_keys()
                .build()
                .fuse(),
        ),
        LogFormat::Term => async_drain(
            slog_term::FullFormat::new(slog_term::PlainDecorator::new(writer))
                .build()
                .fuse(),
        ),
    };
    let drain = RuntimeLevel {
        drain,
        level: handle.level.clone(),
    }
    .fuse();
    let logger = Logger::root(drain, o!("version" => env!("CARGO_PKG_VERSION")));
    Ok(Logs {
        logger,
        handle,
        _guard: Some(guard),
    })
}

fn async_drain<D>(drain: D) -> (slog::Fuse<slog_async::Async>, slog_async::AsyncGuard)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    let (drain, guard) = slog_async::Async::new(drain)
        .chan_size(ASYNC_QUEUE)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .thread_name("sssonector-log".into())
        .build_with_guard();
    (drain.fuse(), guard)
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_changes_at_run_time_reach_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("log.json");
        let config = Logging {
            level: LogLevel::Info,
            format: LogFormat::Json,
            file: Some(file.clone()),
        };
        let logs = build(&config).expect("logger builds");
        slog::debug!(logs.logger, "hidden"; "n" => 1);
        slog::info!(logs.logger, "shown"; "n" => 2);
        logs.handle.set_level(LogLevel::Debug);
        assert_eq!(logs.handle.level(), LogLevel::Debug);
        slog::debug!(logs.logger, "now shown"; "n" => 3);
        drop(logs);
        let text = std::fs::read_to_string(&file).expect("log written");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        let msgs: Vec<_> = lines
            .iter()
            .map(|l| l["msg"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(msgs, ["shown", "now shown"]);
        assert_eq!(lines[1]["level"], "DEBG");
        assert_eq!(lines[1]["n"], 3);
    }

    #[test]
    fn term_format_writes_readable_lines_with_their_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("log.txt");
        let config = Logging {
            level: LogLevel::Warn,
            format: LogFormat::Term,
            file: Some(file.clone()),
        };
        let logs = build(&config).expect("logger builds");
        slog::info!(logs.logger, "below the level");
        slog::warn!(logs.logger, "peer slow"; "code" => crate::ErrorCode::Io);
        drop(logs);
        let text = std::fs::read_to_string(&file).expect("log written");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("WARN peer slow") && text.contains("code: E_IO"),
            "{text}"
        );
    }

    #[test]
    fn an_unopenable_log_file_is_an_io_error() {
        let config = Logging {
            file: Some("/nonexistent/dir/log".into()),
            ..Logging::default()
        };
        let err = build(&config).err().expect("cannot open");
        assert_eq!(err.code(), crate::ErrorCode::Io);
    }
}
