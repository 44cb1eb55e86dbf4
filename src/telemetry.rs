//! Logging on stderr (stdout stays clean for CLI output such as `init --json`) through `tracing`
//! (request spans carry a `request_id` from tracing-actix-web). The format follows `log.format`:
//! `auto` (default) writes human-readable lines when stderr is a terminal and JSON lines
//! otherwise (a journal, a file, a log shipper); `pretty` and `json` force one. `FLOWGUARD_LOG`
//! overrides `log.level` (e.g. `debug`). Secrets are never logged: handlers log codes and ids,
//! never bodies.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Where the logger runs: the server (`serve`) or a one-shot CLI command. CLI commands do not
/// print the stores' migration lines (`rusqlite_migration` at info), which are noise there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `flowguard serve`.
    Server,
    /// Any other subcommand.
    Cli,
}

/// Whether lines are written for people (`true`) or as JSON (`false`) given `log.format` and
/// whether stderr is a terminal.
pub fn human_format(format: &str, stderr_is_terminal: bool) -> bool {
    match format {
        "pretty" | "text" | "human" => true,
        "json" => false,
        _ => stderr_is_terminal,
    }
}

/// Install the global subscriber once (later calls are ignored).
pub fn init(log: &LogSettings, mode: Mode) {
    let explicit = std::env::var("FLOWGUARD_LOG").ok();
    let mut filter = explicit
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    if mode == Mode::Cli && explicit.is_none() {
        if let Ok(d) = "rusqlite_migration=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if human_format(&log.format, std::io::stderr().is_terminal()) {
        builder.try_init()
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_terminal_unless_forced() {
        assert!(human_format("auto", true));
        assert!(!human_format("auto", false));
        assert!(!human_format("json", true));
        assert!(human_format("pretty", false));
    }
}
