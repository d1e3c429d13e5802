//! The local Telegram Bot API server: `sendMessage` under `/bot<token>/`, its per-second
//! limit answered 429 with `retry_after`, as core.telegram.org/bots/api documents.

use super::*;

pub(super) fn route(s: &mut State, r: &Request) -> Reply {
    let Some(rest) = r.path.strip_prefix("/bot") else {
        return (
            404,
            json!({ "ok": false, "error_code": 404, "description": "Not Found" }),
            None,
        );
    };
    let Some((token, method)) = rest.split_once('/') else {
        return (
            404,
            json!({ "ok": false, "error_code": 404, "description": "Not Found" }),
            None,
        );
    };
    if token != s.token {
        return token_error(Flavor::Telegram);
    }
    if method != "sendMessage" {
        return (
            404,
            json!({ "ok": false, "error_code": 404, "description": "Not Found: method not found" }),
            None,
        );
    }
    let now = std::time::Instant::now();
    while s
        .sent_at
        .front()
        .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
    {
        s.sent_at.pop_front();
    }
    if s.sent_at.len() >= s.per_second {
        return (
            429,
            json!({ "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": { "retry_after": 1 } }),
            None,
        );
    }
    let b: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let (Some(chat), Some(text)) = (
        b["chat_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| b["chat_id"].as_i64().map(|i| i.to_string())),
        b["text"].as_str(),
    ) else {
        return (
            400,
            json!({ "ok": false, "error_code": 400, "description": "Bad Request: message text is empty" }),
            None,
        );
    };
    s.sent_at.push_back(now);
    s.messages.push((chat.clone(), text.to_owned()));
    let id = s.messages.len();
    (
        200,
        json!({ "ok": true, "result": { "message_id": id, "chat": { "id": chat }, "date": 1_700_000_000, "text": text } }),
        None,
    )
}
