//! Where a command's output goes: NDJSON events on stdout with `--json`, human text on stderr.

use protocol::Event;
use std::io::Write;

pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    /// Writes an event on stdout (only in `--json` mode).
    pub fn event(&self, e: &Event) {
        if self.json {
            let _ = e.emit(&mut std::io::stdout().lock());
        }
    }

    /// A human log line on stderr.
    pub fn log(&self, msg: impl AsRef<str>) {
        let _ = writeln!(std::io::stderr().lock(), "{}", msg.as_ref());
    }

    /// Reports a failed command (an `error` event and/or a message) and returns the exit code.
    pub fn fail(&self, err: &anyhow::Error) -> i32 {
        let message = format!("{err:#}");
        self.event(&Event::Error {
            message: message.clone(),
            code: error_code(err).into(),
        });
        self.log(format!("error: {message}"));
        2
    }
}

/// A short machine-readable code for an error, from its outermost typed cause.
fn error_code(err: &anyhow::Error) -> &'static str {
    if err
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some())
    {
        "io"
    } else {
        "error"
    }
}
