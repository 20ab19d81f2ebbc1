//! `generate --chat --messages FILE`: a whole conversation given at once (the studio's chat
//! sends every turn and the system message), a JSON array of {"role", "content"} whose last
//! message is the user's turn to answer.

use anyhow::{bail, Context};
use data::chat::ChatMessage;
use std::path::Path;

/// The turns before the last one, and the last user message.
pub fn load(path: &Path) -> anyhow::Result<(Vec<ChatMessage>, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--messages {}: cannot read it", path.display()))?;
    parse(&text).with_context(|| format!("--messages {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<(Vec<ChatMessage>, String)> {
    let v: serde_json::Value =
        serde_json::from_str(text).context("expected a JSON array of {\"role\", \"content\"}")?;
    let items = v
        .as_array()
        .context("expected a JSON array of {\"role\", \"content\"}")?;
    let mut messages = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if !matches!(role, "system" | "user" | "assistant") {
            bail!(
                "message {i}: role must be system, user or assistant, not {:?}",
                m["role"]
            );
        }
        let content = m["content"]
            .as_str()
            .with_context(|| format!("message {i}: content must be a string"))?;
        messages.push(ChatMessage::new(role, content));
    }
    match messages.pop() {
        Some(last) if last.role == "user" => Ok((messages, last.content)),
        _ => bail!("the last message must be the user's"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn the_last_user_turn_is_split_from_the_history() {
        let (history, last) = parse(
            r#"[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},
                {"role":"assistant","content":"hello"},{"role":"user","content":"and?"}]"#,
        )
        .unwrap();
        assert_eq!(last, "and?");
        let roles: Vec<&str> = history.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        assert_eq!(history[2].content, "hello");
    }

    #[test]
    fn bad_conversations_say_what_is_wrong() {
        for (text, want) in [
            ("{}", "JSON array"),
            (r#"[{"role":"bot","content":"x"}]"#, "message 0: role"),
            (r#"[{"role":"user","content":3}]"#, "message 0: content"),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]"#,
                "last message",
            ),
            ("[]", "last message"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
