//! Events as webhooks, signed per the Standard Webhooks specification: each
//! event is POSTed as its CloudEvents JSON with `webhook-id` (the event's
//! id: a consumer drops one it has seen), `webhook-timestamp` (Unix
//! seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">` under the secret (`whsec_<base64 key>`).
//!
//! Only a 2xx answer delivers; anything else, or no answer within the
//! timeout, fails the event, which the events queue keeps (on disk) and
//! retries with exponential backoff and full jitter, then parks in its
//! dead-letter list (shown by `/health`).

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use convo_domain::ports::{EventPublisher, OutgoingEvent};
use convo_schema::events::EventType;
use http_body_util::Full;

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&k, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

/// A URL as logs show it: scheme, host, port and path, without what may
/// be a credential (user info, query, fragment).
pub fn shown(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme_str().unwrap_or("?"),
            u.host().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(a URL)".into(),
    }
}

pub struct WebhookPublisher {
    pub urls: Vec<String>,
    pub key: Vec<u8>,
    /// Only these types are sent (None: every type).
    pub types: Option<HashSet<EventType>>,
    pub timeout: Duration,
    pub client: crate::net::HttpClient,
}

impl WebhookPublisher {
    async fn post(&self, url: &str, event: &OutgoingEvent) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("convo/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(&self.key, &event.id, timestamp, &event.body))
            .body(Full::new(Bytes::from(event.body.clone())))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(format!("{} did not answer within {:?}", shown(url), self.timeout)),
            Ok(Err(e)) => Err(format!("{}: {e}", shown(url))),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("{} answered {}", shown(url), resp.status())),
        }
    }
}

#[async_trait]
impl EventPublisher for WebhookPublisher {
    /// Every event to every URL, concurrently; an event is delivered once
    /// every URL took it (a retry posts it to all again, with the same
    /// `webhook-id`).
    async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), String>> {
        futures::future::join_all(events.iter().map(|e| async move {
            if self.types.as_ref().is_some_and(|t| !t.contains(&e.event_type)) {
                return Ok(());
            }
            let results = futures::future::join_all(self.urls.iter().map(|u| self.post(u, e))).await;
            let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        }))
        .await
    }
}

/// Where events go when no destination is configured: nowhere (taken off
/// the queue).
pub struct Nowhere;

#[async_trait]
impl EventPublisher for Nowhere {
    async fn publish(&self, events: &[OutgoingEvent]) -> Vec<Result<(), String>> {
        events.iter().map(|_| Ok(())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_no_credential_of_a_url() {
        assert_eq!(
            shown("https://u:p@hooks.example.com:8443/in?token=s3cret#x"),
            "https://hooks.example.com:8443/in"
        );
        assert_eq!(shown("http://127.0.0.1:9/x"), "http://127.0.0.1:9/x");
    }

    /// The Standard Webhooks specification's own example
    /// (standard-webhooks/spec, "Signature scheme").
    #[test]
    fn signs_as_the_specification_does() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
