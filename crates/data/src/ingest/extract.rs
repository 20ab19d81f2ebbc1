//! From file bytes to documents: what kind of file it is, its text (HTML stripped), and for
//! JSON/JSONL the record shape detected per file. Problems become warnings with line numbers.

use crate::chat::ChatMessage;
use serde_json::Value;

/// One training document before tokenisation.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// Plain text: every token is trained.
    Text(String),
    /// A prompt and the completion to learn.
    Pair { prompt: String, completion: String },
    /// A conversation rendered with the chat template; assistant turns are learned.
    Chat(Vec<ChatMessage>),
}

/// What a file was found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileClass {
    Text(&'static str),
    Json,
    Jsonl,
    Binary,
    Unsupported(&'static str),
}

/// A problem in one file; `line` is 1-based (or the item number of a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Extracted {
    pub documents: Vec<Document>,
    /// Line (JSONL) or item (JSON array) of each document, when records have one.
    pub lines: Vec<usize>,
    pub format: &'static str,
    pub warnings: Vec<Warning>,
}

const BINARY_EXTS: &[&str] = &[
    "png",
    "jpg",
    "jpeg",
    "gif",
    "bmp",
    "ico",
    "webp",
    "tif",
    "tiff",
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "7z",
    "rar",
    "tar",
    "exe",
    "dll",
    "so",
    "dylib",
    "o",
    "a",
    "class",
    "jar",
    "pyc",
    "bin",
    "gguf",
    "safetensors",
    "pt",
    "pth",
    "ckpt",
    "onnx",
    "npy",
    "npz",
    "parquet",
    "arrow",
    "mp3",
    "mp4",
    "wav",
    "ogg",
    "flac",
    "mov",
    "avi",
    "mkv",
    "woff",
    "woff2",
    "ttf",
    "otf",
    "db",
    "sqlite",
    "idx",
    "mask",
];
const UNSUPPORTED_EXTS: &[(&str, &str)] = &[
    (
        "pdf",
        "PDF text extraction is not supported; convert it to text first",
    ),
    (
        "docx",
        "Word documents are not supported; convert to text first",
    ),
    (
        "doc",
        "Word documents are not supported; convert to text first",
    ),
    (
        "odt",
        "OpenDocument files are not supported; convert to text first",
    ),
    ("xlsx", "spreadsheets are not supported; export as CSV"),
    ("epub", "EPUB is not supported; convert to text first"),
];
const CODE_EXTS: &[&str] = &[
    "rs",
    "py",
    "c",
    "h",
    "cc",
    "cpp",
    "hpp",
    "cxx",
    "js",
    "mjs",
    "ts",
    "tsx",
    "jsx",
    "go",
    "java",
    "kt",
    "swift",
    "rb",
    "php",
    "cs",
    "scala",
    "sh",
    "bash",
    "zsh",
    "fish",
    "ps1",
    "lua",
    "pl",
    "r",
    "jl",
    "hs",
    "ml",
    "ex",
    "exs",
    "erl",
    "clj",
    "sql",
    "toml",
    "yaml",
    "yml",
    "ini",
    "cfg",
    "conf",
    "xml",
    "css",
    "scss",
    "vue",
    "svelte",
    "dart",
    "zig",
    "nim",
    "m",
    "mm",
    "f90",
    "cmake",
    "mk",
    "dockerfile",
    "proto",
    "graphql",
    "tex",
    "bib",
];

/// Classifies by extension, then by content (a NUL byte in the first 8 KiB means binary).
pub fn classify(name: &str, bytes: &[u8]) -> FileClass {
    let ext = std::path::Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if let Some((_, why)) = UNSUPPORTED_EXTS.iter().find(|(e, _)| *e == ext) {
        return FileClass::Unsupported(why);
    }
    if BINARY_EXTS.contains(&ext.as_str()) || bytes[..bytes.len().min(8192)].contains(&0) {
        return FileClass::Binary;
    }
    match ext.as_str() {
        "jsonl" | "ndjson" => FileClass::Jsonl,
        "json" => FileClass::Json,
        "md" | "markdown" | "mdx" => FileClass::Text("markdown"),
        "rst" => FileClass::Text("rst"),
        "html" | "htm" | "xhtml" => FileClass::Text("html"),
        "csv" | "tsv" => FileClass::Text("csv"),
        e if CODE_EXTS.contains(&e) => FileClass::Text("code"),
        _ => FileClass::Text("text"),
    }
}

/// UTF-8 text of a file; invalid sequences become U+FFFD with a warning naming the line.
pub fn decode_text(bytes: &[u8], warnings: &mut Vec<Warning>) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            warnings.push(Warning {
                line: Some(line),
                message: format!("invalid UTF-8 at byte {at}; invalid bytes replaced with U+FFFD"),
            });
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// The separator line TinyStories and GPT-2 style corpora put between documents.
const DOC_SEPARATOR: &str = "<|endoftext|>";

/// Documents of a text file: split at `<|endoftext|>` lines when present, else the whole file.
pub fn text_documents(kind: &str, text: &str) -> Vec<Document> {
    let text = if kind == "html" {
        strip_html(text)
    } else {
        text.to_string()
    };
    let has_separator = text.lines().any(|l| l.trim() == DOC_SEPARATOR);
    if !has_separator {
        return if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![Document::Text(text)]
        };
    }
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim() == DOC_SEPARATOR {
            push_trimmed(&mut docs, &cur);
            cur.clear();
        } else {
            cur.push_str(line);
        }
    }
    push_trimmed(&mut docs, &cur);
    docs
}

fn push_trimmed(docs: &mut Vec<Document>, s: &str) {
    let t = s.trim();
    if !t.is_empty() {
        docs.push(Document::Text(t.to_string()));
    }
}

/// The record shapes we recognise in JSON/JSONL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    PromptCompletion,
    QuestionAnswer,
    Alpaca,
    Messages,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Text => "text",
            Shape::PromptCompletion => "prompt_completion",
            Shape::QuestionAnswer => "question_answer",
            Shape::Alpaca => "alpaca",
            Shape::Messages => "messages",
        }
    }
    fn fields(self) -> &'static str {
        match self {
            Shape::Text => "\"text\"",
            Shape::PromptCompletion => "\"prompt\" and \"completion\"",
            Shape::QuestionAnswer => "\"question\" and \"answer\"",
            Shape::Alpaca => "\"instruction\" and \"output\"",
            Shape::Messages => "\"messages\"",
        }
    }
    fn detect(v: &Value) -> Option<Shape> {
        let o = v.as_object()?;
        let has = |k: &str| o.contains_key(k);
        Some(if has("messages") {
            Shape::Messages
        } else if has("prompt") && has("completion") {
            Shape::PromptCompletion
        } else if has("instruction") && has("output") {
            Shape::Alpaca
        } else if has("question") && has("answer") {
            Shape::QuestionAnswer
        } else if has("text") {
            Shape::Text
        } else {
            return None;
        })
    }
}

fn string_field(v: &Value, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err(format!("field \"{key}\" is missing")),
        Some(other) => Err(format!(
            "field \"{key}\" is {}, not a string",
            kind_name(other)
        )),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Message content is a string or a list of parts (`{"type":"text","text":...}`).
fn content_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.get("text")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| "a content part has no \"text\"".to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.concat()),
        Value::Null => Ok(String::new()),
        other => Err(format!("content is {}", kind_name(other))),
    }
}

fn record(shape: Shape, v: &Value) -> Result<Document, String> {
    Ok(match shape {
        Shape::Text => Document::Text(string_field(v, "text")?),
        Shape::PromptCompletion => Document::Pair {
            prompt: string_field(v, "prompt")?,
            completion: string_field(v, "completion")?,
        },
        Shape::QuestionAnswer => Document::Pair {
            prompt: string_field(v, "question")?,
            completion: string_field(v, "answer")?,
        },
        Shape::Alpaca => {
            let instruction = string_field(v, "instruction")?;
            let input = match v.get("input") {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let prompt = if input.trim().is_empty() {
                instruction
            } else {
                format!("{instruction}\n\n{input}")
            };
            Document::Pair {
                prompt,
                completion: string_field(v, "output")?,
            }
        }
        Shape::Messages => {
            let msgs = v
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("field \"messages\" is not an array")?;
            let mut out = Vec::with_capacity(msgs.len());
            for (i, m) in msgs.iter().enumerate() {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}] has no string \"role\""))?;
                let content = content_text(m.get("content").unwrap_or(&Value::Null))
                    .map_err(|e| format!("messages[{i}]: {e}"))?;
                out.push(ChatMessage::new(role, content));
            }
            if !out.iter().any(|m| m.role == "assistant") {
                return Err("the conversation has no assistant message".into());
            }
            Document::Chat(out)
        }
    })
}

/// Records of a JSONL file; the shape of the first valid record is the file's format.
pub fn jsonl_documents(text: &str) -> Extracted {
    let mut ex = Extracted::default();
    let mut shape: Option<Shape> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                ex.warnings.push(Warning {
                    line: Some(n),
                    message: format!("invalid JSON: {e}"),
                });
                continue;
            }
        };
        add_record(&mut ex, &mut shape, &v, n);
    }
    ex.format = shape.map(Shape::name).unwrap_or("unknown");
    ex
}

fn add_record(ex: &mut Extracted, shape: &mut Option<Shape>, v: &Value, n: usize) {
    let s = match *shape {
        Some(s) => s,
        None => match Shape::detect(v) {
            Some(s) => {
                *shape = Some(s);
                s
            }
            None => {
                ex.warnings.push(Warning {
                    line: Some(n),
                    message: "record has none of text, prompt/completion, question/answer, instruction/output, messages".into(),
                });
                return;
            }
        },
    };
    match record(s, v) {
        Ok(d) => {
            ex.documents.push(d);
            ex.lines.push(n);
        }
        Err(e) => ex.warnings.push(Warning {
            line: Some(n),
            message: format!("{e} (the file's records have {})", s.fields()),
        }),
    }
}

/// A `.json` file: an array of records, one record, or else plain text.
pub fn json_documents(text: &str) -> Extracted {
    let mut ex = Extracted::default();
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            ex.warnings.push(Warning {
                line: Some(e.line()),
                message: format!("invalid JSON: {e}"),
            });
            ex.format = "unknown";
            return ex;
        }
    };
    let mut shape = None;
    match &v {
        Value::Array(items) if items.iter().any(|i| Shape::detect(i).is_some()) => {
            for (i, item) in items.iter().enumerate() {
                add_record(&mut ex, &mut shape, item, i + 1);
            }
        }
        Value::Object(_) if Shape::detect(&v).is_some() => add_record(&mut ex, &mut shape, &v, 1),
        _ => {
            ex.documents = text_documents("json", text);
            ex.format = "text";
            return ex;
        }
    }
    ex.format = shape.map(Shape::name).unwrap_or("unknown");
    ex
}

/// HTML to text: drops scripts, styles, comments and tags; block tags become line breaks;
/// common entities are decoded.
pub fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map(|p| p + 3).unwrap_or(rest.len());
        } else if rest.starts_with('<') {
            let end = rest.find('>').map(|p| p + 1).unwrap_or(rest.len());
            let inner = &lower[i + 1..];
            let tag: String = inner
                .strip_prefix('/')
                .unwrap_or(inner)
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            i += end;
            if (tag == "script" || tag == "style") && !rest.starts_with("</") {
                let close = format!("</{tag}");
                i = lower[i..].find(&close).map(|p| i + p).unwrap_or(html.len());
                continue;
            }
            const BLOCK: &[&str] = &[
                "p",
                "br",
                "div",
                "li",
                "tr",
                "h1",
                "h2",
                "h3",
                "h4",
                "h5",
                "h6",
                "pre",
                "blockquote",
                "section",
                "article",
                "header",
                "footer",
                "table",
                "ul",
                "ol",
                "title",
            ];
            if BLOCK.contains(&tag.as_str()) {
                out.push('\n');
            }
        } else if rest.starts_with('&') {
            let (text, used) = decode_entity(rest);
            out.push_str(&text);
            i += used;
        } else {
            let next = rest.find(['<', '&']).unwrap_or(rest.len());
            out.push_str(&rest[..next]);
            i += next;
        }
    }
    // Collapse runs of blank lines and trailing spaces.
    let mut cleaned = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let l = line.trim_end();
        if l.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        cleaned.push_str(l);
        cleaned.push('\n');
    }
    cleaned.trim().to_string()
}

fn decode_entity(s: &str) -> (String, usize) {
    let Some(end) = s[..s.len().min(12)].find(';') else {
        return ("&".into(), 1);
    };
    let name = &s[1..end];
    let ch = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" | "#39" => Some('\''),
        "nbsp" => Some(' '),
        _ => name
            .strip_prefix("#x")
            .or_else(|| name.strip_prefix("#X"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
            .and_then(char::from_u32),
    };
    match ch {
        Some(c) => (c.to_string(), end + 1),
        None => ("&".into(), 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_stripped() {
        let t = strip_html("<html><head><style>p{}</style><script>x<y</script></head><body><h1>Title</h1><p>A &amp; B&#33; &lt;tag&gt;</p><!-- c --><p>two</p></body></html>");
        assert_eq!(t, "Title\n\nA & B! <tag>\n\ntwo");
    }

    #[test]
    fn endoftext_splits_documents() {
        let d = text_documents("text", "a\n<|endoftext|>\nb\n<|endoftext|>\n");
        assert_eq!(
            d,
            vec![Document::Text("a".into()), Document::Text("b".into())]
        );
    }

    #[test]
    fn jsonl_shapes_and_warnings() {
        let ex =
            jsonl_documents("{\"prompt\":\"p\",\"completion\":\"c\"}\n{bad\n\n{\"text\":\"x\"}\n");
        assert_eq!(ex.format, "prompt_completion");
        assert_eq!(ex.documents.len(), 1);
        assert_eq!(ex.warnings.len(), 2);
        assert_eq!(ex.warnings[0].line, Some(2));
        assert_eq!(ex.warnings[1].line, Some(4));
    }

    #[test]
    fn classify_by_extension_and_content() {
        assert_eq!(
            classify("a.pdf", b"%PDF"),
            FileClass::Unsupported(UNSUPPORTED_EXTS[0].1)
        );
        assert_eq!(classify("a.dat", b"ab\0c"), FileClass::Binary);
        assert_eq!(classify("a.rs", b"fn main(){}"), FileClass::Text("code"));
        assert_eq!(classify("a.JSONL", b"{}"), FileClass::Jsonl);
    }
}
