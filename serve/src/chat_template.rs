//! Chat templates: turning a conversation into the prompt text a chat model was trained on.
//!
//! Models ship their template as Jinja source (`tokenizer.chat_template` in GGUF metadata,
//! `chat_template` in a Hugging Face `tokenizer_config.json`). Templates are written for
//! Hugging Face transformers' Jinja environment, so this module sets MiniJinja up the same way:
//!
//! - `trim_blocks` and `lstrip_blocks` on (a block tag's own line leaves no whitespace);
//! - `{% break %}`/`{% continue %}`;
//! - variables `messages` (a list of `{role, content}` maps), `add_generation_prompt`,
//!   `bos_token` and `eos_token` (empty strings when the model has none);
//! - functions `raise_exception(message)` (templates reject bad conversations with it; it
//!   becomes [`ChatTemplateError::Raised`]) and `strftime_now(format)` (the current UTC time);
//! - a `tojson` filter that writes what Python's `json.dumps(..., ensure_ascii=False)` writes
//!   (`", "` and `": "` separators, `indent=`, `sort_keys=`, `separators=`), not MiniJinja's
//!   HTML-safe JSON;
//! - Python's `str`/`dict`/`list` methods (`.strip()`, `.startswith()`, `.items()`, ...);
//! - transformers' `{% generation %}...{% endgeneration %}` tag (it marks the assistant's
//!   tokens for training and renders its body unchanged), rewritten to an always-true `if`.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::gguf::{GgufError, GgufFile};

/// The GGUF metadata key holding the template.
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// ChatML, the format of SmolLM, Qwen and many others; used when a model has no template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The name templates are registered under; it appears in error locations.
const TEMPLATE_NAME: &str = "chat_template";

/// Errors from compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template (or the special tokens for it) could not be read from the GGUF file.
    #[error("GGUF chat template metadata: {0}")]
    Metadata(#[from] GgufError),
    /// The template is not valid Jinja.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception`, i.e. it rejects this conversation.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// Rendering failed for another reason (unknown filter, wrong types, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// Result alias for this module.
pub type Result<T, E = ChatTemplateError> = std::result::Result<T, E>;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// The message of `raise_exception`, carried as the MiniJinja error's source so that render
/// can tell a deliberate rejection from a broken template.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Raised(String);

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    is_fallback: bool,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("is_fallback", &self.is_fallback)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` with the given special-token texts (`None` renders as `""`).
    pub fn new(source: impl Into<String>, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        Self::build(source.into(), false, bos_token, eos_token)
    }

    /// The ChatML template ([`CHATML_TEMPLATE`]).
    pub fn chatml(bos_token: Option<String>, eos_token: Option<String>) -> Self {
        // CHATML_TEMPLATE is a constant that compiles; the test suite renders it.
        Self::build(CHATML_TEMPLATE.to_string(), true, bos_token, eos_token)
            .unwrap_or_else(|e| unreachable!("built-in ChatML template: {e}"))
    }

    /// The template of a GGUF model: `tokenizer.chat_template`, with `bos_token`/`eos_token`
    /// the texts of `tokenizer.ggml.bos_token_id`/`eos_token_id`.
    ///
    /// A model without `tokenizer.chat_template` falls back to ChatML ([`CHATML_TEMPLATE`]),
    /// which is right for ChatML models and a reasonable guess for others;
    /// [`is_fallback`](Self::is_fallback) tells the caller so it can warn.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let token = |key: &str| -> Result<Option<String>> {
            if gguf.get(key).is_none() {
                return Ok(None);
            }
            let id = gguf.get_uint(key)?;
            let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
            // An out-of-range id is the tokenizer's error to report; here it only means the
            // template gets no text for that token.
            Ok(usize::try_from(id).ok().and_then(|i| tokens.get(i)).cloned())
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        let eos = token("tokenizer.ggml.eos_token_id")?;
        match gguf.get(KEY_CHAT_TEMPLATE) {
            Some(_) => Self::new(gguf.get_str(KEY_CHAT_TEMPLATE)?, bos, eos),
            None => Ok(Self::chatml(bos, eos)),
        }
    }

    fn build(source: String, is_fallback: bool, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatTemplateError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(&source))
            .map_err(|e| ChatTemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source,
            is_fallback,
            bos_token: bos_token.unwrap_or_default(),
            eos_token: eos_token.unwrap_or_default(),
        })
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the ChatML fallback for a model that has no template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the header of an
    /// assistant turn, so the model's continuation is the reply.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| ChatTemplateError::Render(describe(&e)))?;
        template.render(ctx).map_err(|e| match raised_message(&e) {
            Some(message) => ChatTemplateError::Raised(message),
            None => ChatTemplateError::Render(describe(&e)),
        })
    }
}

/// Rewrites `{% generation %}`/`{% endgeneration %}` (a transformers extension MiniJinja does
/// not know) to `{% if true %}`/`{% endif %}`, keeping the tags' whitespace-control markers so
/// the output is unchanged. Text outside block tags is never touched.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let Some(end) = rest.find("%}") else {
            break;
        };
        let tag = &rest[..end + 2];
        rest = &rest[end + 2..];
        // Whitespace-control markers (`-`, `+`) sit right inside the delimiters.
        let inner = &tag[2..end];
        let after_open = inner.trim_start_matches(['-', '+']);
        let open = &inner[..inner.len() - after_open.len()];
        let body = after_open.trim_end_matches(['-', '+']);
        let close = &after_open[body.len()..];
        match body.trim() {
            "generation" => out.push_str(&format!("{{%{open} if true {close}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{open} endif {close}%}}")),
            _ => out.push_str(tag),
        }
    }
    out.push_str(rest);
    out
}

/// The error's message and where in the template it happened.
fn describe(e: &Error) -> String {
    let mut text = e.to_string();
    // `to_string` names the line but not the code; the offending line helps the most when a
    // model's template breaks.
    if let (Some(line), Some(source)) = (e.line(), e.template_source()) {
        if let Some(code) = source.lines().nth(line.saturating_sub(1)) {
            let code = code.trim();
            let short: String = code.chars().take(160).collect();
            let ellipsis = if short.len() < code.len() { "..." } else { "" };
            text.push_str(&format!(": `{short}{ellipsis}`"));
        }
    }
    text
}

fn raised_message(e: &Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(Raised(message)) = err.downcast_ref::<Raised>() {
            return Some(message.clone());
        }
        source = err.source();
    }
    None
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(Raised(message)))
}

/// `strftime_now(format)`: templates use it to put today's date in the system prompt.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    strftime(&format, secs as i64)
}

/// Formats the UTC time `secs` after the Unix epoch with C `strftime` directives: `%Y %y %m
/// %d %e %j %H %I %M %S %p %a %A %b %B %%`. Others are copied through unchanged.
pub(crate) fn strftime(format: &str, secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
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
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (hour, minute, second) = (in_day / 3600, in_day % 3600 / 60, in_day % 60);
    let (year, month, day) = civil_from_days(days);
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    // 1970-01-01 was a Thursday (DAYS[0]).
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{hour12:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the era-based algorithm: 400-year eras
/// of 146097 days, years starting in March so the leap day is last).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: `(year, month, day)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// `value | tojson(indent=None, sort_keys=False, separators=None)`, as Python's `json.dumps`
/// with `ensure_ascii=False` writes it (transformers registers exactly that as `tojson`).
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string")),
        },
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let separators = kwargs.get::<Option<Value>>("separators")?;
    kwargs.assert_all_used()?;
    // Python's defaults: ", " between items without indent, "," with it (the newline follows).
    let (item_sep, key_sep) = match separators.filter(|v| !v.is_none()) {
        Some(seps) => {
            let item = seps.get_item_by_index(0).ok().and_then(|v| v.as_str().map(str::to_string));
            let key = seps.get_item_by_index(1).ok().and_then(|v| v.as_str().map(str::to_string));
            match (item, key) {
                (Some(item), Some(key)) => (item, key),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
        None => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let writer = JsonWriter { indent, item_sep, key_sep, sort_keys, ensure_ascii };
    let mut out = String::new();
    writer.write(value, 0, &mut out)?;
    Ok(Value::from(out))
}

struct JsonWriter {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// Deepest nesting `tojson` writes; bounds the recursion on self-referencing values.
const MAX_JSON_DEPTH: usize = 128;

impl JsonWriter {
    fn write(&self, value: &Value, depth: usize, out: &mut String) -> std::result::Result<(), Error> {
        if depth > MAX_JSON_DEPTH {
            return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
        }
        match value.kind() {
            ValueKind::Undefined => {
                return Err(Error::new(ErrorKind::UndefinedError, "tojson: value is undefined"));
            }
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&value.to_string()),
            ValueKind::String => write_json_string(value.as_str().unwrap_or_default(), self.ensure_ascii, out),
            ValueKind::Map => {
                let mut entries: Vec<(String, Value)> = Vec::new();
                for key in value.try_iter()? {
                    let item = value.get_item(&key)?;
                    let key = match key.as_str() {
                        Some(s) => s.to_string(),
                        None => key.to_string(),
                    };
                    entries.push((key, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.write_container(('{', '}'), entries.len(), depth, out, |i, out| {
                    write_json_string(&entries[i].0, self.ensure_ascii, out);
                    out.push_str(&self.key_sep);
                    self.write(&entries[i].1, depth + 1, out)
                })?;
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.write_container(('[', ']'), items.len(), depth, out, |i, out| {
                    self.write(&items[i], depth + 1, out)
                })?;
            }
            _ => write_json_string(&value.to_string(), self.ensure_ascii, out),
        }
        Ok(())
    }

    fn write_container(
        &self,
        (open, close): (char, char),
        len: usize,
        depth: usize,
        out: &mut String,
        mut item: impl FnMut(usize, &mut String) -> std::result::Result<(), Error>,
    ) -> std::result::Result<(), Error> {
        out.push(open);
        if len == 0 {
            out.push(close);
            return Ok(());
        }
        for i in 0..len {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            if let Some(indent) = &self.indent {
                out.push('\n');
                out.push_str(&indent.repeat(depth + 1));
            }
            item(i, out)?;
        }
        if let Some(indent) = &self.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth));
        }
        out.push(close);
        Ok(())
    }
}

/// A JSON string literal; non-ASCII is kept as is unless `ensure_ascii`, which writes it as
/// `\uXXXX` escapes (UTF-16 surrogate pairs beyond the BMP), as Python does.
fn write_json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC (a Thursday, leap day).
        let secs = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", secs), "2024-02-29 13:05:09");
        assert_eq!(strftime("%d %b %Y", secs), "29 Feb 2024");
        assert_eq!(strftime("%A %B %e %j %I%p %y %% %Q", secs), "Thursday February 29 060 01PM 24 % %Q");
        assert_eq!(strftime("%a %Y-%m-%d", 0), "Thu 1970-01-01");
        assert_eq!(strftime("%Y-%m-%d", -1), "1969-12-31");
        assert_eq!(strftime("%Y-%m-%d %a", 951_782_400), "2000-02-29 Tue");
    }

    #[test]
    fn generation_tags_become_if_true() {
        assert_eq!(
            rewrite_generation_tags("a{% generation %}b{%- endgeneration +%}c{{ x }}{% if y %}{% endif %}"),
            "a{% if true %}b{%- endif +%}c{{ x }}{% if y %}{% endif %}"
        );
        assert_eq!(rewrite_generation_tags("x {% unterminated"), "x {% unterminated");
        assert_eq!(rewrite_generation_tags("{%generation%}"), "{% if true %}");
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
