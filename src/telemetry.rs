//! Logging: JSON lines on stderr (stdout stays clean for CLI output such as `init --json`) through `tracing` (request spans carry a `request_id` from
//! tracing-actix-web). `FLOWGUARD_LOG` overrides `log.level` (e.g. `debug`). Secrets are never
//! logged: handlers log codes and ids, never bodies.

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Install the global subscriber once (later calls are ignored).
pub fn init(log: &LogSettings) {
    let filter = std::env::var("FLOWGUARD_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}
