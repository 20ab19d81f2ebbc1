//! `neuralforge options COMMAND`: a command's flags as JSON (name, help, default, kind,
//! choices, group), read from the same clap definition that parses them. The studio builds
//! its config form from this, so the two can never disagree.

use crate::output::Output;
use clap::ArgAction;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// The subcommand whose options to describe (e.g. train).
    pub command: String,
}

pub fn run(args: Args, root: &clap::Command, _out: &Output) -> anyhow::Result<()> {
    let Some(cmd) = root.find_subcommand(&args.command) else {
        let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
        return Err(crate::output::Coded::new(
            "invalid_argument",
            2,
            format!(
                "options: no command {:?}; one of: {}",
                args.command,
                names.join(", ")
            ),
        )
        .into());
    };
    println!("{}", serde_json::to_string(&describe(cmd))?);
    Ok(())
}

/// The schema of one command's options.
pub fn describe(cmd: &clap::Command) -> Value {
    let options: Vec<Value> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_long().is_some())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version" | "json"))
        .map(describe_arg)
        .collect();
    json!({"command": cmd.get_name(), "options": options})
}

fn describe_arg(a: &clap::Arg) -> Value {
    let name = a.get_id().as_str().to_string();
    let flag = format!("--{}", a.get_long().unwrap_or_default());
    let help = a
        .get_help()
        .map(|h| h.to_string())
        .unwrap_or_default()
        .split(" [default: ")
        .next()
        .unwrap_or_default()
        .to_string();
    let choices: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    let clap_default = a
        .get_default_values()
        .first()
        .map(|v| v.to_string_lossy().to_string());
    let default = crate::trainer::settings::default_of(&name)
        .map(str::to_string)
        .or(clap_default);
    let value_name = a
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string());
    let kind = if matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        "bool"
    } else if !choices.is_empty() {
        "choice"
    } else {
        kind_of(&name, value_name.as_deref(), default.as_deref())
    };
    json!({
        "name": name, "flag": flag, "help": help, "default": default,
        "value_name": value_name, "kind": kind, "choices": choices,
        "group": a.get_help_heading().unwrap_or("Options"),
    })
}

/// "path", "int", "float" or "string" from the value name and the default.
fn kind_of(name: &str, value_name: Option<&str>, default: Option<&str>) -> &'static str {
    let v = value_name.unwrap_or("");
    if ["PATH", "FILE", "RUN_DIR", "DIR", "FILE.toml"].contains(&v) || name == "out" {
        return "path";
    }
    let plain = default.map(|d| d.split(' ').next().unwrap_or(d));
    match plain {
        Some(d) if d.parse::<u64>().is_ok() && !d.contains('.') && v != "F" => "int",
        Some(d) if d.parse::<f64>().is_ok() => "float",
        _ if v == "N" => "int",
        _ if v == "F" => "float",
        _ => "string",
    }
}

/// `command` with "[default: X]" appended to the help of every train setting that has one
/// (the settings are optional so that flags can override a config file; clap cannot show
/// defaults it does not apply).
pub fn with_train_defaults(command: clap::Command) -> clap::Command {
    command.mut_subcommand("train", |train| {
        let ids: Vec<String> = train
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        ids.into_iter().fold(
            train,
            |cmd, id| match crate::trainer::settings::default_of(&id) {
                Some(d) => cmd.mut_arg(id, |a| {
                    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                    a.help(format!("{help} [default: {d}]"))
                }),
                None => cmd,
            },
        )
    })
}
