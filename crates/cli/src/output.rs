//! Where a command's output goes: NDJSON events on stdout with `--json`, human text on stderr.

use protocol::Event;
use std::io::Write;

pub struct Output {
    pub json: bool,
}

/// An error that carries its machine-readable `code` (for the `error` event) and the process
/// exit status. Attach one with `anyhow::Error::new(Coded::new(..))` or `.context(Coded::..)`.
#[derive(Debug)]
pub struct Coded {
    pub code: &'static str,
    pub exit: i32,
    pub message: String,
}

impl Coded {
    pub fn new(code: &'static str, exit: i32, message: impl Into<String>) -> Coded {
        Coded {
            code,
            exit,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

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
        let message = describe(err);
        self.event(&Event::Error {
            message: message.clone(),
            code: error_code(err).into(),
        });
        self.log(format!("error: {message}"));
        exit_code(err)
    }
}

/// A clap parse error: help and version print as usual (exit 0); a real argument error is
/// printed as clap words it, and with `--json` anywhere on the line also as an `error` event.
/// Returns the exit status (2 for argument errors, as every other usage error).
pub fn argument_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            2
        } else {
            0
        };
    }
    let json = std::env::args_os().any(|a| a == "--json");
    if json {
        // clap's words up to its usage line, e.g. "invalid value 'x' for '--init <PRESET>'
        // [possible values: tiny, ...]", on one line.
        let rendered = e.render().to_string();
        let message = rendered
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Usage:"))
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_string();
        Output::new(true).event(&Event::Error {
            message,
            code: "invalid_argument".into(),
        });
    }
    let _ = e.print();
    2
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message already
/// holds (library errors often print their source in their own message too).
pub fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// The class of an uncoded library error, so that the same failure has the same code and
/// exit status in every command: model and checkpoint files (formats), tokenizers and data.
fn library_class(err: &anyhow::Error) -> Option<(&'static str, i32)> {
    err.chain().find_map(|c| {
        if c.downcast_ref::<formats::FormatError>().is_some() {
            Some(("model", 3))
        } else if let Some(d) = c.downcast_ref::<data::DataError>() {
            Some(match d {
                data::DataError::Tokenizer(_) => ("model", 3),
                _ => ("data", 4),
            })
        } else {
            None
        }
    })
}

/// A short machine-readable code for an error, from its outermost typed cause.
pub fn error_code(err: &anyhow::Error) -> &'static str {
    if let Some(c) = coded(err) {
        c.code
    } else if let Some((code, _)) = library_class(err) {
        code
    } else if err
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some())
    {
        "io"
    } else {
        "error"
    }
}

/// The exit status for an error: the outermost `Coded`'s, else its library class's, else 2.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    coded(err)
        .map(|c| c.exit)
        .or_else(|| library_class(err).map(|(_, exit)| exit))
        .unwrap_or(2)
}

/// The outermost `Coded` of an error, whether it was the error itself or a context.
fn coded(err: &anyhow::Error) -> Option<&Coded> {
    err.downcast_ref::<Coded>()
        .or_else(|| err.chain().find_map(|c| c.downcast_ref::<Coded>()))
}
