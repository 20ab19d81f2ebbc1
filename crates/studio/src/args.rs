//! Settings from the browser turned into a child's argument vector. Keys are the train
//! settings with `_` (as in config.toml); each becomes `--key-with-dashes=value` (one
//! argument, so a value can never be read as a flag). Paths are checked here (exist, readable)
//! and then passed as plain arguments: no shell ever sees them.

use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};
use std::path::Path;

/// Train settings that name a path to read.
const PATH_KEYS: &[&str] = &["model", "tokenizer", "data", "val_data", "config"];
/// Settings the studio sets itself.
const RESERVED: &[&str] = &["out", "resume", "json", "dry_run", "no_progress"];

fn key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A path the user typed must exist and be readable; the message names the setting.
pub fn check_path(key: &str, value: &str) -> ApiResult<()> {
    let p = Path::new(value);
    let meta = std::fs::metadata(p).map_err(|_| {
        ApiError::bad_request(
            "missing_path",
            format!("{key}: no such file or folder: {value}"),
        )
    })?;
    let readable = if meta.is_dir() {
        std::fs::read_dir(p).is_ok()
    } else {
        std::fs::File::open(p).is_ok()
    };
    if !readable {
        return Err(ApiError::bad_request(
            "unreadable_path",
            format!("{key}: cannot read {value}"),
        ));
    }
    Ok(())
}

fn scalar(key: &str, v: &Value) -> ApiResult<Option<String>> {
    Ok(match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(_) => None,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_config",
                format!("{key}: expected a number, string or boolean"),
            ))
        }
    })
}

/// `--key=value` arguments for every setting of `config` (sorted by key).
pub fn train_args(config: &Map<String, Value>) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for (key, v) in config {
        if !key_ok(key) {
            return Err(ApiError::bad_request(
                "invalid_config",
                format!("{key:?} is not a setting name"),
            ));
        }
        if RESERVED.contains(&key.as_str()) {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        if let Value::Bool(b) = v {
            if *b {
                out.push(flag);
            }
            continue;
        }
        if let Some(s) = scalar(key, v)? {
            if PATH_KEYS.contains(&key.as_str()) {
                check_path(key, &s)?;
            }
            out.push(format!("{flag}={s}"));
        }
    }
    Ok(out)
}

/// The generic form for other commands (generate, import, export): same rules, but the
/// caller names which keys are paths.
pub fn flag_args(
    flags: &Map<String, Value>,
    path_keys: &[&str],
    allowed: &[&str],
) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for (key, v) in flags {
        if !allowed.contains(&key.as_str()) {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        if let Value::Bool(b) = v {
            if *b {
                out.push(flag);
            }
            continue;
        }
        if let Some(s) = scalar(key, v)? {
            if path_keys.contains(&key.as_str()) {
                check_path(key, &s)?;
            }
            out.push(format!("{flag}={s}"));
        }
    }
    Ok(out)
}

/// Config objects merged: keys of `top` win.
pub fn merged(base: &Value, top: &Value) -> Map<String, Value> {
    let mut m = base.as_object().cloned().unwrap_or_default();
    if let Some(t) = top.as_object() {
        for (k, v) in t {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_become_single_arguments() {
        let c = json!({"lr": 0.001, "steps": 5, "no_progress": true, "lora_targets": "q,v",
                       "schedule": "--evil", "seed": null})
        .as_object()
        .cloned()
        .unwrap();
        let a = train_args(&c).unwrap();
        assert_eq!(
            a,
            vec![
                "--lora-targets=q,v",
                "--lr=0.001",
                "--schedule=--evil",
                "--steps=5"
            ]
        );
    }

    #[test]
    fn shell_metacharacters_are_just_a_missing_path() {
        let c = json!({"data": "/tmp/x; touch /tmp/pwned $(id)"})
            .as_object()
            .cloned()
            .unwrap();
        let e = train_args(&c).unwrap_err();
        assert_eq!(e.code, "missing_path");
        assert!(!Path::new("/tmp/pwned").exists());
    }

    #[test]
    fn bad_keys_are_refused() {
        let c = json!({"lr; rm": 1}).as_object().cloned().unwrap();
        assert_eq!(train_args(&c).unwrap_err().code, "invalid_config");
    }
}
