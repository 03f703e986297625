//! Log setup: tracing to stderr, filtered by `RUST_LOG` (default `info`), as text or as JSON
//! lines (`--log-format json`) for log shippers.
//!
//! A JSON line is one object: `timestamp` (RFC 3339, UTC, milliseconds), `level` (`info`,
//! `warn`, ...), `worker` (`"supervisor"`, a worker's id such as `"0"`, or the subcommand),
//! `target` (the module), `message`, and `fields` (the event's structured fields, by name).
//! The worker id is a string in every line, as in the metrics' `worker` label.

use std::{fmt, sync::Arc};

use chat_supervisor::LogFormat;
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Installs the global subscriber. `identity` is the `worker` of JSON lines.
pub fn init(format: LogFormat, identity: String) {
    // Libraries are kept quiet unless RUST_LOG names them: fred below error (Redis outages are
    // logged by the bus), socketioxide off, because it logs what clients send at error level,
    // one line per frame (a client that never reads and asks for unknown namespaces wrote
    // 96,288 lines in 3 s); the worker counts refusals instead (chat-worker's `edge::counters`).
    const QUIET_LIBRARIES: [&str; 2] = ["fred=error", "socketioxide=off"];
    let given = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let mut directives = vec![given.clone()];
    for quiet in QUIET_LIBRARIES {
        let library = quiet.split('=').next().unwrap_or(quiet);
        if !given.contains(library) {
            directives.push(quiet.to_owned());
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fred=error,socketioxide=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .event_format(JsonLines {
                worker: Arc::from(identity),
            })
            .init(),
    }
}

/// The JSON line format described in the module doc.
struct JsonLines {
    worker: Arc<str>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "level": metadata.level().as_str().to_ascii_lowercase(),
            "worker": &*self.worker,
            "target": metadata.target(),
            "message": fields.message,
            "fields": fields.fields,
        });
        writeln!(writer, "{line}")
    }
}

/// An event's message and other fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn insert(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here too, printed with their Display.
        self.insert(field, format!("{value:?}").into());
    }
}
