//! Ollama's `Modelfile` for an exported GGUF: `FROM ./model.gguf`, the chat template rewritten
//! from the model's Jinja template into Ollama's Go-template syntax, `PARAMETER stop` for the
//! template's end-of-turn markers, the template's default system prompt as `SYSTEM`, and
//! temperature / top_p / top_k / repeat_penalty from generation_config.json when present.
//!
//! Converted families (recognised by their markers, not by parsing the Jinja): ChatML
//! (`<|im_start|>`/`<|im_end|>`), Llama 3 (`<|start_header_id|>`/`<|eot_id|>`) and Llama 2 /
//! Mistral (`[INST]`/`[/INST]`, with `<<SYS>>` when the template has it). A model without a
//! template gets the raw-prompt template `{{ .Prompt }}`; any other template is refused with
//! an error that says so.

use anyhow::bail;
use std::fmt::Write as _;

/// The chat template families we convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFamily {
    ChatMl,
    Llama3,
    /// `[INST] ... [/INST]`; `sys_tags` when the system prompt goes in `<<SYS>>` tags.
    Inst {
        sys_tags: bool,
    },
}

impl ChatFamily {
    pub fn detect(jinja: &str) -> Option<ChatFamily> {
        if jinja.contains("<|im_start|>") && jinja.contains("<|im_end|>") {
            Some(ChatFamily::ChatMl)
        } else if jinja.contains("<|start_header_id|>") && jinja.contains("<|eot_id|>") {
            Some(ChatFamily::Llama3)
        } else if jinja.contains("[INST]") && jinja.contains("[/INST]") {
            Some(ChatFamily::Inst {
                sys_tags: jinja.contains("<<SYS>>"),
            })
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChatFamily::ChatMl => "ChatML",
            ChatFamily::Llama3 => "Llama 3",
            ChatFamily::Inst { .. } => "Llama 2 / Mistral [INST]",
        }
    }

    /// The Go template. Only user and assistant turns come from `.Messages`; the system
    /// prompt comes from `.System` (the request's system message, else `SYSTEM`), so it is
    /// written once whichever way it arrives.
    fn go_template(self) -> String {
        match self {
            ChatFamily::ChatMl => concat!(
                "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n",
                "{{- range .Messages }}\n",
                "{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n",
                "{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n",
                "{{ end }}\n",
                "{{- end }}<|im_start|>assistant\n",
            )
            .to_string(),
            ChatFamily::Llama3 => concat!(
                "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>\n",
                "{{- end }}\n",
                "{{- range .Messages }}\n",
                "{{- if or (eq .Role \"user\") (eq .Role \"assistant\") }}",
                "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n",
                "{{- end }}\n",
                "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
            )
            .to_string(),
            ChatFamily::Inst { sys_tags } => {
                let system = if sys_tags {
                    "<<SYS>>\n{{ $.System }}\n<</SYS>>\n\n"
                } else {
                    "{{ $.System }}\n\n"
                };
                format!(
                    concat!(
                        "{{{{- $first := true }}}}\n",
                        "{{{{- range .Messages }}}}\n",
                        "{{{{- if eq .Role \"user\" }}}}[INST] ",
                        "{{{{ if and $first $.System }}}}{system}{{{{ end }}}}",
                        "{{{{ $first = false }}}}{{{{ .Content }}}} [/INST]\n",
                        "{{{{- else if eq .Role \"assistant\" }}}} {{{{ .Content }}}}</s>\n",
                        "{{{{- end }}}}\n",
                        "{{{{- end }}}}",
                    ),
                    system = system
                )
            }
        }
    }

    /// Markers that end a turn (Ollama stops generating at any of them).
    fn stops(self) -> &'static [&'static str] {
        match self {
            ChatFamily::ChatMl => &["<|im_start|>", "<|im_end|>"],
            ChatFamily::Llama3 => &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            ChatFamily::Inst { .. } => &["[INST]", "[/INST]"],
        }
    }

    /// Where a literal default system prompt starts in the Jinja text.
    fn system_openers(self) -> &'static [&'static str] {
        match self {
            ChatFamily::ChatMl => &["<|im_start|>system\n", "<|im_start|>system\\n"],
            ChatFamily::Llama3 => &[
                "<|start_header_id|>system<|end_header_id|>\n\n",
                "<|start_header_id|>system<|end_header_id|>\\n\\n",
            ],
            ChatFamily::Inst { .. } => &["<<SYS>>\n", "<<SYS>>\\n"],
        }
    }

    fn system_closer(self) -> &'static str {
        match self {
            ChatFamily::ChatMl => "<|im_end|>",
            ChatFamily::Llama3 => "<|eot_id|>",
            ChatFamily::Inst { .. } => "<</SYS>>",
        }
    }
}

/// The default system prompt a template writes when the conversation has none: a literal
/// between the family's system opener and closer (not an expression: no quotes, braces, `+`).
pub fn default_system(jinja: &str, family: ChatFamily) -> Option<String> {
    for opener in family.system_openers() {
        let Some(start) = jinja.find(opener) else {
            continue;
        };
        let rest = &jinja[start + opener.len()..];
        let end = rest.find(family.system_closer())?;
        let text = rest[..end].replace("\\n", "\n");
        let text = text.trim_end_matches('\n');
        let literal = !text.is_empty() && !text.contains(['\'', '"', '{', '}', '+', '%']);
        return literal.then(|| text.to_string());
    }
    None
}

/// What the Modelfile is made from.
pub struct ModelfileInput<'a> {
    /// The GGUF's path relative to the Modelfile (`./model.gguf`).
    pub from: &'a str,
    pub chat_template: Option<&'a str>,
    /// The model's end-of-sequence token text, added to the stops.
    pub eos_token: Option<&'a str>,
    pub generation_config: Option<&'a serde_json::Value>,
}

/// A `"""`-quoted Modelfile value, refused when the text itself holds `"""`.
fn triple_quoted(what: &str, text: &str) -> anyhow::Result<String> {
    if text.contains("\"\"\"") {
        bail!("the {what} contains \"\"\", which a Modelfile cannot quote");
    }
    Ok(format!("\"\"\"{text}\"\"\""))
}

/// The Modelfile text.
pub fn modelfile(i: &ModelfileInput) -> anyhow::Result<String> {
    let mut out = String::from("# Written by neuralforge export --format ollama\n");
    let _ = writeln!(out, "FROM {}", i.from);
    let mut stops: Vec<String> = Vec::new();
    match i.chat_template {
        None => {
            out.push_str("# The model has no chat template: prompts go in as they are.\n");
            let _ = writeln!(out, "TEMPLATE \"\"\"{{{{ .Prompt }}}}\"\"\"");
        }
        Some(jinja) => {
            let Some(family) = ChatFamily::detect(jinja) else {
                let head: String = jinja.chars().take(80).collect();
                bail!(
                    "the model's chat template ({head:?}...) is not one export --format ollama \
                     converts (ChatML <|im_start|>, Llama 3 <|start_header_id|>, Llama 2 / \
                     Mistral [INST]); export --format gguf and write the Modelfile's TEMPLATE \
                     by hand"
                );
            };
            let _ = writeln!(
                out,
                "# Chat template: {} (converted from the GGUF's Jinja template)",
                family.name()
            );
            let _ = writeln!(
                out,
                "TEMPLATE {}",
                triple_quoted("template", &family.go_template())?
            );
            if let Some(sys) = default_system(jinja, family) {
                let _ = writeln!(
                    out,
                    "SYSTEM {}",
                    triple_quoted("default system prompt", &sys)?
                );
            }
            stops.extend(family.stops().iter().map(|s| s.to_string()));
        }
    }
    if let Some(eos) = i.eos_token.filter(|e| !e.is_empty()) {
        if !stops.iter().any(|s| s == eos) {
            stops.push(eos.to_string());
        }
    }
    for s in &stops {
        if s.contains(['"', '\n', '\\']) {
            continue; // not expressible as a plain quoted stop; the EOS id still ends a turn
        }
        let _ = writeln!(out, "PARAMETER stop \"{s}\"");
    }
    if let Some(g) = i.generation_config {
        for (key, param) in [
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("repetition_penalty", "repeat_penalty"),
        ] {
            if let Some(v) = g
                .get(key)
                .and_then(|v| v.as_f64())
                .filter(|v| v.is_finite())
            {
                let _ = writeln!(out, "PARAMETER {param} {v}");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_chatml_modelfile() {
        let g = serde_json::json!({"temperature": 0.2, "top_p": 0.9, "do_sample": true});
        let m = modelfile(&ModelfileInput {
            from: "./model.gguf",
            chat_template: Some(SMOLLM2),
            eos_token: Some("<|im_end|>"),
            generation_config: Some(&g),
        })
        .unwrap();
        assert!(m.contains("\nFROM ./model.gguf\n"), "{m}");
        let want_template = "TEMPLATE \"\"\"{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n{{- range .Messages }}\n{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}\n{{- end }}<|im_start|>assistant\n\"\"\"\n";
        assert!(m.contains(want_template), "{m}");
        assert!(m.contains(
            "SYSTEM \"\"\"You are a helpful AI assistant named SmolLM, trained by Hugging Face\"\"\"\n"
        ));
        // eos is already one of the ChatML stops: listed once.
        assert_eq!(m.matches("PARAMETER stop \"<|im_end|>\"").count(), 1);
        assert!(m.contains("PARAMETER stop \"<|im_start|>\"\n"));
        assert!(m.contains("PARAMETER temperature 0.2\n"));
        assert!(m.contains("PARAMETER top_p 0.9\n"));
        assert!(!m.contains("do_sample"));
    }

    #[test]
    fn llama3_and_inst_families() {
        let l3 = "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}";
        let m = modelfile(&ModelfileInput {
            from: "./model.gguf",
            chat_template: Some(l3),
            eos_token: Some("<|end_of_text|>"),
            generation_config: None,
        })
        .unwrap();
        assert!(
            m.contains("<|start_header_id|>assistant<|end_header_id|>\n\n\"\"\""),
            "{m}"
        );
        for s in ["<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"] {
            assert!(m.contains(&format!("PARAMETER stop \"{s}\"")), "{s}: {m}");
        }
        assert!(
            !m.contains("SYSTEM"),
            "no literal default system prompt: {m}"
        );
        let l2 = "{% if messages[0]['role'] == 'system' %}{% set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{% endif %}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}";
        assert_eq!(
            ChatFamily::detect(l2),
            Some(ChatFamily::Inst { sys_tags: true })
        );
        let m = modelfile(&ModelfileInput {
            from: "./m.gguf",
            chat_template: Some(l2),
            eos_token: Some("</s>"),
            generation_config: None,
        })
        .unwrap();
        assert!(m.contains("[INST] {{ if and $first $.System }}<<SYS>>\n{{ $.System }}\n<</SYS>>\n\n{{ end }}{{ $first = false }}{{ .Content }} [/INST]"), "{m}");
        assert!(m.contains("{{- else if eq .Role \"assistant\" }} {{ .Content }}</s>"));
        assert!(m.contains("PARAMETER stop \"</s>\""));
        assert!(
            !m.contains("SYSTEM \"\"\""),
            "the <<SYS>> content is an expression: {m}"
        );
    }

    #[test]
    fn no_template_is_a_raw_prompt_and_unknown_ones_are_refused() {
        let m = modelfile(&ModelfileInput {
            from: "./model.gguf",
            chat_template: None,
            eos_token: None,
            generation_config: None,
        })
        .unwrap();
        assert!(m.contains("TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n"), "{m}");
        assert!(!m.contains("PARAMETER stop"));
        let gemma = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}";
        let e = modelfile(&ModelfileInput {
            from: "./model.gguf",
            chat_template: Some(gemma),
            eos_token: None,
            generation_config: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("ChatML") && e.contains("start_of_turn"), "{e}");
    }

    #[test]
    fn default_system_only_from_literals() {
        let t = "{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}<|im_start|>";
        assert_eq!(
            default_system(t, ChatFamily::ChatMl).as_deref(),
            Some("Be brief.")
        );
        let t = "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}";
        assert_eq!(default_system(t, ChatFamily::ChatMl), None);
    }
}
