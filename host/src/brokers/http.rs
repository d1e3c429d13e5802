//! The HTTP plumbing the adapters share: one client (rustls), a time limit on
//! every call, 429 read the same way everywhere, and errors that never carry
//! a URL or a credential.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;

use super::BrokerError;
use super::secrets::scrub;

/// A client with `timeout` on every call.
///
/// # Errors
/// When the TLS backend cannot start.
pub fn client(timeout: Duration) -> Result<Client, BrokerError> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("tradehost/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BrokerError::Protocol(scrub(&e.without_url().to_string())))
}

/// An answer: its status and its body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The body, parsed.
    pub body: Value,
    /// The body as sent, for messages (scrubbed).
    pub text: String,
}

/// Send `request`: a timeout, a dropped connection and a 429 come back as
/// their [`BrokerError`]; any other answer as an [`Answer`] for the adapter to read.
///
/// # Errors
/// As above.
pub async fn send(request: RequestBuilder) -> Result<Answer, BrokerError> {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(BrokerError::Timeout),
        // `without_url`: the URL may hold a token (Telegram's does).
        Err(e) => {
            return Err(BrokerError::Unavailable(scrub(
                &e.without_url().to_string(),
            )));
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok());
    let text = match response.text().await {
        Ok(t) => t,
        Err(e) if e.is_timeout() => return Err(BrokerError::Timeout),
        Err(e) => {
            return Err(BrokerError::Unavailable(scrub(
                &e.without_url().to_string(),
            )));
        }
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(BrokerError::RateLimited(
            retry_after
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(60.0))),
        ));
    }
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    // Scrubbed whole, then cut: cut first, a secret straddling the cut would leave its first characters behind.
    Ok(Answer {
        status,
        body,
        text: scrub(&text).chars().take(300).collect::<String>(),
    })
}

/// The first error message in an answer, in any of the shapes brokers use:
/// `{"message": …}`, `{"errors": [{"message": …}]}`, or the raw text.
#[must_use]
pub fn message(answer: &Answer) -> String {
    let b = &answer.body;
    let m = b["message"]
        .as_str()
        .or_else(|| b["errors"][0]["message"].as_str())
        .or_else(|| b["data"]["message"].as_str())
        .map_or_else(
            || {
                if answer.text.is_empty() {
                    answer.status.to_string()
                } else {
                    answer.text.clone()
                }
            },
            str::to_owned,
        );
    scrub(&format!("HTTP {}: {m}", answer.status.as_u16()))
}

/// A 5xx: the call may have happened.
#[must_use]
pub fn server_error(answer: &Answer) -> BrokerError {
    BrokerError::Unavailable(message(answer))
}

/// `base` without a trailing slash.
#[must_use]
pub fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A URL path segment: everything but the unreserved characters percent-encoded
/// (`NSE_EQ|INE002A01018` → `NSE_EQ%7CINE002A01018`).
#[must_use]
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
