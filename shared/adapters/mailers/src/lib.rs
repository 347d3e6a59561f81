//! The mailer port's adapters: SES v2 (AWS) and a folder of `.eml` files (the local outbox);
//! and the text-message port's: SNS (AWS) and `.sms.txt` files beside the `.eml` ones.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_sdk_sesv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{
    Body, Content, Destination, EmailContent, Message, MessageTag, RawMessage,
};
use chrono::Utc;
use messaging::mail::{
    bare_address, file_stem, to_eml, BoxError, Email, MailError, Mailer, MAX_RAW_MESSAGE_BYTES,
};
use messaging::text::{TextMessage, TextSender};

/// Sends through SES's v2 API: `SendEmail` with simple content (HTML and text parts), or, for
/// an email with attachments, with raw content: the MIME message [`to_eml`] writes.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    configuration_set: Option<String>,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        SesMailer { client, configuration_set: None }
    }

    /// Send through an SES configuration set (event publishing, dedicated IPs).
    pub fn with_configuration_set(mut self, name: Option<String>) -> Self {
        self.configuration_set = name.filter(|n| !n.is_empty());
        self
    }
}

fn utf8(data: &str) -> Result<Content, MailError> {
    Content::builder().data(data).charset("UTF-8").build().map_err(|e| MailError::Rejected {
        reason: "the email content is incomplete".into(),
        source: Some(Box::new(e)),
    })
}

#[async_trait]
impl Mailer for SesMailer {
    #[tracing::instrument(skip_all, fields(notice_id = %email.notice_id, recipients = email.to.len()), err)]
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        let content = if email.attachments.is_empty() {
            let message = Message::builder()
                .subject(utf8(&email.subject)?)
                .body(Body::builder().text(utf8(&email.text)?).html(utf8(&email.html)?).build())
                .build();
            EmailContent::builder().simple(message).build()
        } else {
            let mime = to_eml(email, Utc::now()).into_bytes();
            if mime.len() > MAX_RAW_MESSAGE_BYTES {
                return Err(MailError::Rejected {
                    reason: format!(
                        "the email is {} bytes with its attachments; SES takes at most {}",
                        mime.len(),
                        MAX_RAW_MESSAGE_BYTES
                    ),
                    source: None,
                });
            }
            let raw = RawMessage::builder().data(Blob::new(mime)).build().map_err(|e| {
                MailError::Rejected {
                    reason: "the raw email is incomplete".into(),
                    source: Some(Box::new(e)),
                }
            })?;
            EmailContent::builder().raw(raw).build()
        };
        // The destination is given for raw messages too: SES sends to it, not to the headers.
        let output = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(Destination::builder().set_to_addresses(Some(email.to.clone())).build())
            .content(content)
            .set_configuration_set_name(self.configuration_set.clone())
            .set_email_tags(account_tag(email))
            .send()
            .await
            .map_err(|error| classify_ses_error(error, &email.from))?;
        // SES always answers with an id; an answer without one is still a sent email.
        Ok(output.message_id.unwrap_or_default())
    }
}

/// The `account_id` message tag (SES puts it on bounce and complaint notifications). Account
/// ids are `[A-Za-z0-9_-]`, which a tag value accepts as it is.
fn account_tag(email: &Email) -> Option<Vec<MessageTag>> {
    let account = email.account_id.as_deref()?;
    MessageTag::builder().name("account_id").value(account).build().ok().map(|tag| vec![tag])
}

/// Which SES failures are permanent. `BadRequest` (an invalid address; moto and SES v1 call it
/// `InvalidParameterValue`) and `MessageRejected` for a recipient or the content are properties
/// of this email. `MessageRejected` naming the sender is the sender identity not being verified:
/// configuration, so it is retried like an outage until an operator fixes it (and then the
/// queue's DLQ keeps the notices).
fn classify_ses_error<R>(error: SdkError<SendEmailError, R>, from: &str) -> MailError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let boxed = |error: SdkError<SendEmailError, R>| -> Option<BoxError> { Some(Box::new(error)) };
    let SdkError::ServiceError(service) = &error else {
        let reason = DisplayErrorContext(&error).to_string();
        return match error {
            // The request could not be built from this email: the same email fails again.
            SdkError::ConstructionFailure(_) => {
                MailError::Rejected { reason, source: boxed(error) }
            }
            _ => MailError::Unavailable { reason, source: boxed(error) },
        };
    };
    let message = service.err().message().unwrap_or_default();
    // The code and SES's message, for the logs and the notice's record; the whole error,
    // response included, stays reachable as the source.
    let reason = format!("{}: {message}", service.err().code().unwrap_or("unknown SES error"));
    match service.err() {
        SendEmailError::BadRequestException(_) => {
            MailError::Rejected { reason, source: boxed(error) }
        }
        SendEmailError::MessageRejected(_) if !message.contains(bare_address(from)) => {
            MailError::Rejected { reason, source: boxed(error) }
        }
        SendEmailError::TooManyRequestsException(_) | SendEmailError::LimitExceededException(_) => {
            MailError::Throttled { reason, source: boxed(error) }
        }
        other if other.code() == Some("InvalidParameterValue") => {
            MailError::Rejected { reason, source: boxed(error) }
        }
        other if other.code() == Some("Throttling") => {
            MailError::Throttled { reason, source: boxed(error) }
        }
        _ => MailError::Unavailable { reason, source: boxed(error) },
    }
}

/// Writes each email as the RFC 5322 message [`to_eml`] makes (the same bytes SES gets for an
/// email with attachments) into a folder, one `<notification id>.eml` per notice: the local runner's outbox. A re-send
/// replaces the file, so the folder holds each notice once.
#[derive(Debug, Clone)]
pub struct FileMailer {
    pub dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileMailer { dir: dir.into() }
    }

    /// Where the email of `notice_id` is written.
    pub fn path_for(&self, notice_id: &str) -> PathBuf {
        self.dir.join(format!("{}.eml", file_stem(notice_id)))
    }
}

#[async_trait]
impl Mailer for FileMailer {
    /// Returns the file's path as the message id.
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        if email.to.is_empty() {
            return Err(MailError::Rejected { reason: "no recipients".into(), source: None });
        }
        let eml = to_eml(email, Utc::now());
        let path = self.path_for(&email.notice_id);
        write_atomically(&self.dir, &path, eml.as_bytes()).await.map_err(|error| {
            MailError::Unavailable {
                reason: format!("cannot write {}", path.display()),
                source: Some(Box::new(error)),
            }
        })?;
        Ok(path.display().to_string())
    }
}

/// Sends text messages through SNS `Publish` to a phone number, as transactional SMS (the
/// type that is delivered at once and may reach numbers that opted out of promotions only), with
/// an optional sender id where the destination country takes one.
#[derive(Debug, Clone)]
pub struct SnsTexts {
    client: aws_sdk_sns::Client,
    sender_id: Option<String>,
}

impl SnsTexts {
    pub fn new(client: aws_sdk_sns::Client, sender_id: Option<String>) -> Self {
        SnsTexts { client, sender_id: sender_id.filter(|s| !s.is_empty()) }
    }
}

fn sms_attribute(value: &str) -> Option<aws_sdk_sns::types::MessageAttributeValue> {
    aws_sdk_sns::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .ok()
}

#[async_trait]
impl TextSender for SnsTexts {
    #[tracing::instrument(skip_all, fields(text_id = %message.id), err)]
    async fn send_text(&self, message: &TextMessage) -> Result<String, MailError> {
        let mut publish = self.client.publish().phone_number(&message.to).message(&message.body);
        if let Some(kind) = sms_attribute("Transactional") {
            publish = publish.message_attributes("AWS.SNS.SMS.SMSType", kind);
        }
        if let Some(sender) = self.sender_id.as_deref().and_then(sms_attribute) {
            publish = publish.message_attributes("AWS.SNS.SMS.SenderID", sender);
        }
        match publish.send().await {
            Ok(output) => Ok(output.message_id.unwrap_or_default()),
            Err(error) => {
                use aws_sdk_sns::error::ProvideErrorMetadata as _;
                let reason = aws_sdk_sns::error::DisplayErrorContext(&error).to_string();
                let code = error.code().unwrap_or_default().to_string();
                let source: Option<BoxError> = Some(Box::new(error));
                Err(match code.as_str() {
                    // The number or the text is refused: the same text fails again.
                    "InvalidParameter" | "InvalidParameterValue" | "OptedOut" => {
                        MailError::Rejected { reason, source }
                    }
                    "Throttling" | "ThrottledException" => MailError::Throttled { reason, source },
                    _ => MailError::Unavailable { reason, source },
                })
            }
        }
    }
}

/// Writes each text as `<id>.sms.txt` (`To:` and the body) into the local outbox, beside the
/// `.eml` files; a re-send replaces the file.
#[derive(Debug, Clone)]
pub struct FileTexts {
    pub dir: PathBuf,
}

impl FileTexts {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileTexts { dir: dir.into() }
    }

    /// Where the text of `id` is written.
    pub fn path_for(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{}.sms.txt", file_stem(id)))
    }
}

#[async_trait]
impl TextSender for FileTexts {
    /// Returns the file's path as the message id.
    async fn send_text(&self, message: &TextMessage) -> Result<String, MailError> {
        let path = self.path_for(&message.id);
        let contents = format!("To: {}\n\n{}\n", message.to, message.body);
        write_atomically(&self.dir, &path, contents.as_bytes()).await.map_err(|error| {
            MailError::Unavailable {
                reason: format!("cannot write {}", path.display()),
                source: Some(Box::new(error)),
            }
        })?;
        Ok(path.display().to_string())
    }
}

/// Write to a temporary file beside `path`, then rename: a reader never sees half an email.
async fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    tokio::fs::write(&temporary, bytes).await?;
    tokio::fs::rename(&temporary, path).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use messaging::mail::Attachment;

    fn email() -> Email {
        Email {
            notice_id: "receipt:pay_1".into(),
            account_id: None,
            from: "Ringledger Billing <billing@ringledger.example>".into(),
            to: vec!["ops@acme.example".into(), "cfo@acme.example".into()],
            subject: "Payment receipt: $50.00 added to your balance".into(),
            text: "Hello \u{2014} résumé = 100%  \nsecond line\n".into(),
            html: format!("<p>{}</p>\n", "long ".repeat(40)),
            attachments: vec![],
        }
    }

    fn with_attachment() -> Email {
        Email {
            notice_id: "statement:2026-10-01:2026-10-31".into(),
            attachments: vec![Attachment {
                filename: "statement-acme-2026-10-01-2026-10-31.csv".into(),
                content_type: "text/csv; charset=utf-8".into(),
                data: (0..=255u8).cycle().take(1000).collect(),
            }],
            ..email()
        }
    }

    #[tokio::test]
    async fn the_file_mailer_writes_attachments_too() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = FileMailer::new(dir.path());
        let email = with_attachment();
        let path = mailer.send(&email).await.unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        let expected = to_eml(&email, Utc::now());
        let without_date = |eml: &str| -> String {
            eml.split("\r\n").filter(|l| !l.starts_with("Date: ")).collect::<Vec<_>>().join("\r\n")
        };
        assert_eq!(without_date(&written), without_date(&expected));
    }

    #[tokio::test]
    async fn the_file_mailer_writes_one_file_per_notice_and_replaces_it_on_resend() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = FileMailer::new(dir.path().join("outbox"));
        let first = mailer.send(&email()).await.unwrap();
        let again = mailer.send(&email()).await.unwrap();
        assert_eq!(first, again);
        assert!(first.ends_with("receipt%3Apay_1.eml"), "{first}");
        let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox")).unwrap().collect();
        assert_eq!(files.len(), 1);
        let eml = std::fs::read_to_string(&first).unwrap();
        assert!(eml.contains("To: ops@acme.example,\r\n cfo@acme.example"));
        let mut nobody = email();
        nobody.to.clear();
        assert!(mailer.send(&nobody).await.unwrap_err().is_permanent());
    }

    fn ses_error(error: SendEmailError) -> MailError {
        classify_ses_error(
            SdkError::service_error(error, ()),
            "Billing <billing@ringledger.example>",
        )
    }

    fn meta(code: &str, message: &str) -> aws_sdk_sesv2::error::ErrorMetadata {
        aws_sdk_sesv2::error::ErrorMetadata::builder().code(code).message(message).build()
    }

    #[test]
    fn ses_errors_are_permanent_only_when_this_email_is_at_fault() {
        use aws_sdk_sesv2::types::error::{
            BadRequestException, MessageRejected, SendingPausedException, TooManyRequestsException,
        };
        let bad_address = ses_error(SendEmailError::BadRequestException(
            BadRequestException::builder()
                .meta(meta("BadRequestException", "Missing final '@domain'"))
                .build(),
        ));
        assert!(bad_address.is_permanent());
        assert_eq!(bad_address.reason(), "BadRequestException: Missing final '@domain'");
        let recipient = ses_error(SendEmailError::MessageRejected(
            MessageRejected::builder()
                .meta(meta("MessageRejected", "Email address is not verified: ops@acme.example"))
                .build(),
        ));
        assert!(recipient.is_permanent(), "{recipient}");
        let sender = ses_error(SendEmailError::MessageRejected(
            MessageRejected::builder()
                .meta(meta(
                    "MessageRejected",
                    "Email address is not verified. The following identities failed the check \
                     in region US-EAST-1: billing@ringledger.example",
                ))
                .build(),
        ));
        assert!(matches!(sender, MailError::Unavailable { .. }), "{sender}");
        let throttled = ses_error(SendEmailError::TooManyRequestsException(
            TooManyRequestsException::builder().meta(meta("TooManyRequestsException", "")).build(),
        ));
        assert!(matches!(throttled, MailError::Throttled { .. }), "{throttled}");
        let paused = ses_error(SendEmailError::SendingPausedException(
            SendingPausedException::builder().meta(meta("SendingPausedException", "")).build(),
        ));
        assert!(matches!(paused, MailError::Unavailable { .. }), "{paused}");
        let v1_invalid =
            ses_error(SendEmailError::generic(meta("InvalidParameterValue", "Missing domain")));
        assert!(v1_invalid.is_permanent(), "{v1_invalid}");
        let timeout: SdkError<SendEmailError, ()> = SdkError::timeout_error("slow");
        let timeout = classify_ses_error(timeout, "billing@ringledger.example");
        assert!(matches!(timeout, MailError::Unavailable { .. }), "{timeout}");
        assert!(
            std::error::Error::source(&timeout).is_some(),
            "the SDK error is kept as the source"
        );
    }
}
