//! Text messages (SMS) as the domain sees them: the port the SNS adapter and the local runner's
//! `.sms.txt` writer implement. Only the critical billing notices go by text (see
//! `notifications::worker`); failures are classified as for email ([`MailError`]).

use async_trait::async_trait;

use crate::mail::MailError;

/// The most characters a critical text carries (about two SMS segments; SNS takes up to 1,600
/// bytes, but a billing alert should read at a glance).
pub const MAX_TEXT_CHARS: usize = 320;

/// One text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMessage {
    /// The notification id it carries (`sms:<notice id>`): names the outbox file locally.
    pub id: String,
    /// E.164 (`+` and 8 to 15 digits).
    pub to: String,
    pub body: String,
}

/// Sends text messages: SNS in AWS, files locally.
#[async_trait]
pub trait TextSender: Send + Sync {
    /// Send one text; returns the service's message id.
    async fn send_text(&self, message: &TextMessage) -> Result<String, MailError>;
}

/// `body` cut to [`MAX_TEXT_CHARS`] characters (with an ellipsis when cut).
pub fn fit(body: &str) -> String {
    if body.chars().count() <= MAX_TEXT_CHARS {
        return body.to_string();
    }
    let mut cut: String = body.chars().take(MAX_TEXT_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_to_the_limit() {
        assert_eq!(fit("short"), "short");
        let long = "x".repeat(MAX_TEXT_CHARS + 10);
        let cut = fit(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT_CHARS);
        assert!(cut.ends_with('…'));
    }
}
