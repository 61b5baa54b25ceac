//! Chat template tests. Expected renderings come from transformers' own Jinja environment
//! (`transformers.utils.chat_template_utils._compile_jinja_template(source).render(...)`,
//! transformers 5.24.0 with jinja2 3.1.6 from PyPI, in a throwaway venv), with
//! `messages = MESSAGES`, `add_generation_prompt=True`, `bos_token="<s>"`, `eos_token="</s>"`.
//! The SmolLM2 template itself is checked in `tests/tokenizer.rs`.

mod common;

use common::{gguf_with, string, strings};
use max_serve::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError, CHATML_TEMPLATE};
use max_serve::gguf::MetadataValue;

fn messages() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "  Be brief.  "),
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "4"),
    ]
}

fn render(source: &str) -> String {
    let template = ChatTemplate::new(source, Some("<s>".into()), Some("</s>".into())).unwrap();
    template.render(&messages(), true).unwrap()
}

#[test]
fn block_whitespace_namespace_and_loop_controls_match_transformers() {
    let source = "{{ bos_token }}\n{%- set ns = namespace(system='') %}\n{% for m in messages %}\n  {% if m.role == 'system' %}\n    {% set ns.system = m.content.strip() %}\n    {% continue %}\n  {% endif %}\n<{{ m['role'] | upper }}>{{ m['content'] | trim }}</{{ m.role }}>\n{% endfor %}\n{% if ns.system %}[sys: {{ ns.system }}]{% endif %}\n{% if add_generation_prompt %}<ASSISTANT>{% endif %}\n{{ eos_token }}";
    assert_eq!(
        render(source),
        "<s><USER>What is 2+2?</user>\n<ASSISTANT>4</assistant>\n[sys: Be brief.]<ASSISTANT></s>"
    );
}

#[test]
fn tojson_matches_python_json_dumps() {
    let source = "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ {\"b\": 1, \"a\": [1, 2.5, 1.0, none, true, \"x\\\"y\\n\\u00e9\\t\"]} | tojson }}|{{ {\"b\": 1, \"a\": 2} | tojson(sort_keys=true) }}|{{ \"é🍕\" | tojson(ensure_ascii=true) }}|{{ [[], {}] | tojson(indent=1) }}|{{ {\"k\": [1]} | tojson(separators=(\",\", \":\")) }}";
    assert_eq!(
        render(source),
        "[{\"role\": \"system\", \"content\": \"  Be brief.  \"}, {\"role\": \"user\", \"content\": \"What is 2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]|{\n  \"role\": \"system\",\n  \"content\": \"  Be brief.  \"\n}|{\"b\": 1, \"a\": [1, 2.5, 1.0, null, true, \"x\\\"y\\né\\t\"]}|{\"a\": 2, \"b\": 1}|\"\\u00e9\\ud83c\\udf55\"|[\n [],\n {}\n]|{\"k\":[1]}"
    );
}

#[test]
fn python_methods_match_transformers() {
    let source = "{% for m in messages %}{% if m.content.startswith('What') %}Q:{% endif %}{{ m.content.split(' ') | length }};{% for k, v in m.items() %}{{ k }}={{ v }},{% endfor %}{{ m.get('missing', 'dflt') }}|{{ m.content.lower().replace(' ', '_') }}\n{% endfor %}";
    assert_eq!(
        render(source),
        "6;role=system,content=  Be brief.  ,dflt|__be_brief.__\nQ:3;role=user,content=What is 2+2?,dflt|what_is_2+2?\n1;role=assistant,content=4,dflt|4\n"
    );
}

#[test]
fn generation_tags_render_their_body() {
    let source = "{% for m in messages %}\n{%- if m.role == 'assistant' %}\n{%- generation %}{{ m.content }}{% endgeneration %}\n{%- else %}{{ m.role }}: {{ m.content }}{% endif %}\n{% endfor %}";
    assert_eq!(render(source), "system:   Be brief.  user: What is 2+2?4");
}

#[test]
fn template_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<ChatTemplate>();
}

#[test]
fn raise_exception_rejects_the_conversation() {
    let template = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    let err = template.render(&messages(), false).unwrap_err();
    assert!(
        matches!(&err, ChatTemplateError::Raised(m) if m == "Conversation must start with a user message"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "chat template rejected the conversation: Conversation must start with a user message");
    assert_eq!(template.render(&[ChatMessage::new("user", "hi")], false).unwrap(), "ok");
}

#[test]
fn broken_templates_are_errors() {
    let err = ChatTemplate::new("{% for m in messages %}{{ m.content }}", None, None).unwrap_err();
    assert!(matches!(err, ChatTemplateError::Syntax(_)), "{err:?}");
    assert!(err.to_string().starts_with("chat template does not compile"), "{err}");

    let template = ChatTemplate::new("line one\n{{ messages | no_such_filter }}", None, None).unwrap();
    let err = template.render(&messages(), false).unwrap_err();
    assert!(matches!(err, ChatTemplateError::Render(_)), "{err:?}");
    assert!(err.to_string().contains("no_such_filter"), "{err}");

    let template = ChatTemplate::new("{{ undefined_thing | tojson }}", None, None).unwrap();
    assert!(matches!(template.render(&messages(), false), Err(ChatTemplateError::Render(_))));

    let template = ChatTemplate::new("{{ messages | tojson(indent=[1]) }}", None, None).unwrap();
    assert!(matches!(template.render(&messages(), false), Err(ChatTemplateError::Render(_))));
}

#[test]
fn strftime_now_renders_a_date() {
    let template = ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}", None, None).unwrap();
    let date = template.render(&[], false).unwrap();
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{date}");
    assert!(parts[0].parse::<u32>().unwrap() >= 2024, "{date}");
}

#[test]
fn chatml_fallback_for_models_without_a_template() {
    let tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let file = gguf_with(&[
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
        ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
    ]);
    let template = ChatTemplate::from_gguf(&file).unwrap();
    assert!(template.is_fallback());
    assert_eq!(template.source(), CHATML_TEMPLATE);
    let prompt = template.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(prompt, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(template.render(&[], false).unwrap(), "");

    // With a template in the file, bos_token/eos_token are the token texts.
    let file = gguf_with(&[
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.bos_token_id", MetadataValue::U32(1)),
        ("tokenizer.ggml.eos_token_id", MetadataValue::U32(2)),
        ("tokenizer.chat_template", string("{{ bos_token }}|{{ eos_token }}")),
    ]);
    let template = ChatTemplate::from_gguf(&file).unwrap();
    assert!(!template.is_fallback());
    assert_eq!(template.render(&[], false).unwrap(), "<|im_start|>|<|im_end|>");

    // A template of the wrong type is named in the error.
    let file = gguf_with(&[("tokenizer.chat_template", MetadataValue::U32(7))]);
    let err = ChatTemplate::from_gguf(&file).unwrap_err();
    assert!(err.to_string().contains("tokenizer.chat_template"), "{err}");
}
