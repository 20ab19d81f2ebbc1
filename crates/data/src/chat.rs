//! Chat templates (Hugging Face Jinja conventions) rendered with minijinja, and the byte spans
//! of assistant turns in the rendering so that ingest can train on assistant tokens only.

use crate::error::{DataError, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A rendered conversation: the text and the byte ranges the model should learn (assistant
/// turns, including the template's end-of-turn text after them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    pub text: String,
    pub assistant_spans: Vec<Range<usize>>,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles a template; `bos` / `eos` are the texts of the BOS and EOS tokens.
    pub fn new(template: &str, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks on.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| DataError::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, template.to_string())
            .map_err(|e| DataError::Template(format!("does not compile: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// Renders messages as the model expects them; `add_generation_prompt` opens an assistant
    /// turn at the end.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| DataError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| DataError::Template(format!("rendering failed: {e:#}")))
    }

    /// Renders a whole conversation and finds each assistant turn's byte span: from the start
    /// of its content (after the template's assistant header) to the end of the conversation
    /// rendered up to and including it, so the template's end-of-turn text is learned too.
    /// Works for any order of turns (system, several assistant turns in a row, no user turn,
    /// tool turns) and for templates that add a default system message: the end comes from
    /// the rendering of the prefix, the start from the generation-prompt rendering when that
    /// is a prefix, else from the last occurrence of the content before the end.
    pub fn render_with_spans(&self, messages: &[ChatMessage]) -> Result<RenderedChat> {
        let text = self.render(messages, false)?;
        let mut spans = Vec::new();
        let mut cursor = 0;
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let span = self
                .span_by_prefix(messages, i, &text, cursor)
                .or_else(|| content_span(&text, &m.content, cursor))
                .ok_or_else(|| {
                    DataError::Template(format!(
                        "cannot find assistant message {i} in the rendered conversation"
                    ))
                })?;
            cursor = span.end;
            spans.push(span);
        }
        Ok(RenderedChat {
            text,
            assistant_spans: spans,
        })
    }

    /// The span of assistant message `i` when rendering messages[..=i] gives a prefix of the
    /// whole text (true of every usual template).
    fn span_by_prefix(
        &self,
        messages: &[ChatMessage],
        i: usize,
        text: &str,
        cursor: usize,
    ) -> Option<Range<usize>> {
        let upto = self.render(&messages[..=i], false).ok()?;
        if !text.starts_with(&upto) || upto.len() <= cursor {
            return None;
        }
        let end = upto.len();
        let content = messages[i].content.trim();
        let before = self.render(&messages[..i], true).ok();
        let start = match before {
            Some(b) if upto.starts_with(&b) && b.len() >= cursor && b.len() < end => {
                // A template that ignores add_generation_prompt leaves the assistant header
                // inside; start at the content when it occurs exactly once there.
                let inside = &text[b.len()..end];
                let mut hits = inside.match_indices(content).map(|(k, _)| k);
                match (content.is_empty(), hits.next(), hits.next()) {
                    (false, Some(off), None) => b.len() + off,
                    _ => b.len(),
                }
            }
            // The generation prompt is not a prefix (e.g. a default system message appears
            // only once a message exists): the content's last occurrence before the end.
            _ if !content.is_empty() => cursor + text[cursor..end].rfind(content)?,
            _ => return None,
        };
        Some(start..end)
    }
}

/// Last resort: the content itself, searched from `cursor`.
fn content_span(text: &str, content: &str, cursor: usize) -> Option<Range<usize>> {
    let content = content.trim();
    if content.is_empty() {
        return None;
    }
    let start = text[cursor..].find(content)? + cursor;
    Some(start..start + content.len())
}

fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Today's date in a strftime format (Llama 3 templates ask for it); only the common codes.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(m as usize).saturating_sub(1).min(11)];
    format
        .replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%B", month)
        .replace("%b", &month[..3])
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Python's `json.dumps(x, ensure_ascii=False)` (what transformers' `tojson` does): ", " and
/// ": " separators, or `indent` spaces per level; keys keep their order.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_py_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_py_json(
    v: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), Error> {
    use minijinja::value::ValueKind as K;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    let json_str = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    match v.kind() {
        K::Undefined | K::None => out.push_str("null"),
        K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        K::String => out.push_str(&json_str(v.as_str().unwrap_or_default())),
        K::Number => out.push_str(&v.to_string()),
        K::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                out.push_str(&json_str(&k.to_string()));
                out.push_str(": ");
                write_py_json(&v.get_item(k)?, indent, level + 1, out)?;
            }
            if !keys.is_empty() {
                newline(out, level);
            }
            out.push('}');
        }
        K::Seq | K::Iterable | K::Plain => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, level + 1, out)?;
            }
            if !items.is_empty() {
                newline(out, level);
            }
            out.push(']');
        }
        _ => out.push_str(&json_str(&v.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = crate::tokenizer::train::CHATML_TEMPLATE;

    #[test]
    fn chatml_renders_and_spans_cover_assistant_turns() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let msgs = vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
            ChatMessage::new("assistant", "Bye."),
        ];
        let r = t.render_with_spans(&msgs).unwrap();
        assert_eq!(r.assistant_spans.len(), 2);
        assert_eq!(&r.text[r.assistant_spans[0].clone()], "Hello!<|im_end|>\n");
        assert_eq!(&r.text[r.assistant_spans[1].clone()], "Bye.<|im_end|>\n");
        let g = t.render(&msgs[..2], true).unwrap();
        assert!(g.ends_with("<|im_start|>assistant\n"));
    }

    /// SmolLM2's template shape: a default system message when the first turn is not one.
    const CHATML_DEFAULT_SYSTEM: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    /// Llama 2's shape: [INST] user [/INST] answer </s>, system folded into the first turn.
    const LLAMA2: &str = "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'system' %}{{ '<<SYS>>' + message['content'] + '<</SYS>>' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}{% else %}{{ '[' + message['role'] + '] ' + message['content'] }}{% endif %}{% endfor %}";

    /// Each assistant turn's span is its content plus the end-of-turn text, for every order of
    /// turns; everything outside the spans is context.
    #[test]
    fn spans_for_any_order_of_turns() {
        let m = ChatMessage::new;
        let cases: Vec<Vec<ChatMessage>> = vec![
            vec![m("assistant", "first"), m("assistant", "second")],
            vec![m("system", "sys"), m("assistant", "a"), m("assistant", "b")],
            vec![
                m("user", "q"),
                m("assistant", "call"),
                m("tool", "42"),
                m("assistant", "It is 42."),
            ],
            vec![m("user", "q"), m("assistant", "helpful")],
            vec![m("assistant", "You are")],
        ];
        for (src, end) in [
            (CHATML, "<|im_end|>\n"),
            (CHATML_DEFAULT_SYSTEM, "<|im_end|>\n"),
            (LLAMA2, " </s>"),
        ] {
            let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
            for msgs in &cases {
                let r = t.render_with_spans(msgs).unwrap();
                let want: Vec<String> = msgs
                    .iter()
                    .filter(|x| x.role == "assistant")
                    .map(|x| format!("{}{end}", x.content))
                    .collect();
                let got: Vec<&str> = r
                    .assistant_spans
                    .iter()
                    .map(|s| &r.text[s.clone()])
                    .collect();
                assert_eq!(got, want, "{src:.30}… {msgs:?}: {}", r.text);
                let mut last = 0;
                for sp in &r.assistant_spans {
                    assert!(sp.start >= last, "spans in order");
                    last = sp.end;
                }
            }
        }
    }

    #[test]
    fn hf_conventions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}{{ m['content'].strip() | trim }}{{ m | tojson }}{% endfor %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t
            .render(&[ChatMessage::new("user", " a<é> ")], false)
            .unwrap();
        assert_eq!(out, "<s>a<é>{\"role\": \"user\", \"content\": \" a<é> \"}");
        let err = t
            .render(&[ChatMessage::new("system", "x")], false)
            .unwrap_err();
        assert!(err.to_string().contains("no system"));
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    fn spans_of(t: &ChatTemplate, msgs: &[ChatMessage]) -> Vec<String> {
        let r = t.render_with_spans(msgs).unwrap();
        r.assistant_spans
            .iter()
            .map(|s| r.text[s.clone()].to_string())
            .collect()
    }

    #[test]
    fn common_model_templates() {
        let msgs = [
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello"),
        ];
        let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
        let t = ChatTemplate::new(llama3, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
        );
        assert_eq!(spans_of(&t, &msgs), ["Hello<|eot_id|>"]);

        let zephyr = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
        let t = ChatTemplate::new(zephyr, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n"
        );
        assert_eq!(
            t.render(&msgs[..1], true).unwrap(),
            "<|user|>\nHi</s>\n<|assistant|>\n"
        );
        assert_eq!(spans_of(&t, &msgs), ["Hello</s>\n"]);
        // A template whose generation prompt is not a prefix of the full turn: the span starts
        // at the content and still ends after the turn's closing text.
        let odd = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}{% if add_generation_prompt %}<assistant >{% endif %}";
        let t = ChatTemplate::new(odd, "", "").unwrap();
        assert_eq!(spans_of(&t, &msgs), ["Hello</assistant>"]);

        let mistral = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
        let t = ChatTemplate::new(mistral, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            "<s>[INST] Hi [/INST]Hello</s>"
        );
        assert_eq!(spans_of(&t, &msgs), ["Hello</s>"]);
        let err = t.render(&msgs[1..], false).unwrap_err().to_string();
        assert!(err.contains("alternate"), "{err}");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }
}
