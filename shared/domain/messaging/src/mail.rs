//! Email as the domain sees it: the mailer port, the message and its parts, and the RFC 5322
//! form (quoted-printable, base64, encoded subjects) that the SES and `.eml` adapters share.

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The largest message SES v2 accepts, attachments and their base64 included.
pub const MAX_RAW_MESSAGE_BYTES: usize = 40 * 1024 * 1024;

/// One email: the same content as a plain-text and an HTML part, and any attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The notification id it carries; names the outbox file, so a re-send replaces it.
    pub notice_id: String,
    /// The account it is about: tagged on the SES message, so a bounce or a complaint finds
    /// the account whose address it was (`notifications::feedback`).
    pub account_id: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<Attachment>,
}

/// A file sent with an email (a statement's CSV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Printable ASCII keeps it readable everywhere; anything else is replaced in the header.
    pub filename: String,
    /// A MIME type with its parameters, such as `text/csv; charset=utf-8`.
    pub content_type: String,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address or the message itself was refused: sending it again fails the same way.
    #[error("the email was rejected: {reason}")]
    Rejected {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Sending too fast or over the sending quota: retry later.
    #[error("the email was throttled: {reason}")]
    Throttled {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The mail service is unreachable, paused or misconfigured (the sender identity is not
    /// verified, the account is suspended): retry later, an operator has to act.
    #[error("the mail service is unavailable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl MailError {
    /// Permanent failures are recorded and not retried; the others go back to the queue.
    pub fn is_permanent(&self) -> bool {
        matches!(self, MailError::Rejected { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            MailError::Rejected { reason, .. }
            | MailError::Throttled { reason, .. }
            | MailError::Unavailable { reason, .. } => reason,
        }
    }
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Send one email; returns the mail service's message id.
    async fn send(&self, email: &Email) -> Result<String, MailError>;
}

/// The bare address of `Name <address>` or `address`.
pub fn bare_address(address: &str) -> &str {
    match (address.rfind('<'), address.rfind('>')) {
        (Some(start), Some(end)) if start < end => address[start + 1..end].trim(),
        _ => address.trim(),
    }
}

/// Check the configured sender (`billing@example.com` or `Billing <billing@example.com>`).
pub fn check_sender(from: &str) -> Result<String, String> {
    let from = from.trim();
    let address = bare_address(from);
    let valid = !from.chars().any(char::is_control)
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if valid {
        Ok(from.to_string())
    } else {
        Err(format!("{from:?} is not a sender address such as billing@example.com"))
    }
}

/// A file name for a notification id: `[A-Za-z0-9_-]` as is, everything else (`:`, `.`, `/`)
/// as `%XX`, so distinct ids give distinct names and none is hidden or climbs directories.
/// Very long ids are cut and suffixed with a hash of the whole id.
pub fn file_stem(notice_id: &str) -> String {
    const MAX_STEM_BYTES: usize = 200;
    let mut stem = String::new();
    for byte in notice_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            stem.push(char::from(byte));
        } else {
            stem.push_str(&format!("%{byte:02X}"));
        }
    }
    if stem.is_empty() {
        stem.push_str("notice");
    }
    if stem.len() > MAX_STEM_BYTES {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        notice_id.hash(&mut hasher);
        // Cut on a whole `%XX` escape: everything in the stem is ASCII.
        let mut cut = MAX_STEM_BYTES - 17;
        while stem[..cut].rfind('%').is_some_and(|p| p + 3 > cut) {
            cut -= 1;
        }
        stem = format!("{}-{:016x}", &stem[..cut], hasher.finish());
    }
    stem
}

/// An RFC 5322 message with a `multipart/alternative` body (text first, HTML preferred), both
/// parts quoted-printable UTF-8, CRLF line ends. With attachments the body is `multipart/mixed`:
/// that `multipart/alternative` part first, then each attachment in base64 (lines of 76).
pub fn to_eml(email: &Email, date: DateTime<Utc>) -> String {
    // "=_" never appears in quoted-printable or base64 output, so a boundary cannot occur in a
    // part. The stem has no '.', so the two boundaries differ from their 13th character on and
    // neither is a prefix of the other. RFC 2046 limits a boundary to 70 characters.
    let stem = file_stem(&email.notice_id).replace('%', "_");
    let stem = &stem[..stem.len().min(48)];
    let alternative = format!("=_ringledger_{stem}");
    let mixed = format!("=_ringledger.mixed.{stem}");
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    };
    header("From", &header_value(&email.from));
    let to: Vec<String> = email.to.iter().map(|a| header_value(a)).collect();
    // One address per line keeps every line far below the 998-character limit.
    header("To", &to.join(",\r\n "));
    header("Subject", &encode_subject(&email.subject));
    header("Date", &date.to_rfc2822());
    header("Message-ID", &format!("<{}@ringledger.local>", file_stem(&email.notice_id)));
    header("X-Ringledger-Notice-Id", &header_value(&email.notice_id));
    header("MIME-Version", "1.0");
    if email.attachments.is_empty() {
        header("Content-Type", &format!("multipart/alternative; boundary=\"{alternative}\""));
        out.push_str("\r\n");
        push_alternative(&mut out, email, &alternative);
        return out;
    }
    header("Content-Type", &format!("multipart/mixed; boundary=\"{mixed}\""));
    out.push_str("\r\n");
    out.push_str(&format!("--{mixed}\r\n"));
    out.push_str(&format!(
        "Content-Type: multipart/alternative; boundary=\"{alternative}\"\r\n\r\n"
    ));
    push_alternative(&mut out, email, &alternative);
    for attachment in &email.attachments {
        let filename = attachment_filename(&attachment.filename);
        out.push_str(&format!("--{mixed}\r\n"));
        out.push_str(&format!(
            "Content-Type: {}; name=\"{filename}\"\r\n",
            header_value(&attachment.content_type)
        ));
        out.push_str("Content-Transfer-Encoding: base64\r\n");
        out.push_str(&format!("Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n"));
        out.push_str(&base64_lines(&attachment.data));
    }
    out.push_str(&format!("--{mixed}--\r\n"));
    out
}

/// The text and HTML parts and the closing delimiter of a `multipart/alternative` body.
fn push_alternative(out: &mut String, email: &Email, boundary: &str) {
    for (content_type, part) in [("text/plain", &email.text), ("text/html", &email.html)] {
        out.push_str(&format!("--{boundary}\r\n"));
        out.push_str(&format!("Content-Type: {content_type}; charset=utf-8\r\n"));
        out.push_str("Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        out.push_str(&quoted_printable(part));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
}

/// Base64 (RFC 2045 §6.8) in lines of at most 76 characters, each ending in CRLF.
pub fn base64_lines(data: &[u8]) -> String {
    const LINE: usize = 76;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / LINE * 2 + 2);
    // Base64 is ASCII, so cutting it at any byte is cutting it at a character.
    for line in encoded.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// A file name for a quoted header parameter: printable ASCII and spaces except double quotes
/// and backslashes, at most 100 characters; anything else becomes `_`, an empty name
/// `attachment`. (Non-ASCII names would need RFC 2231 encoding; ours never need it.)
fn attachment_filename(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .take(100)
        .map(|c| {
            let quotable = (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ';
            if quotable {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "attachment".into()
    } else {
        cleaned.into()
    }
}

/// A header value on one line: control characters (CR, LF) become spaces, so a value can never
/// add a header.
fn header_value(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().into()
}

/// The subject as is when it is short printable ASCII, else RFC 2047 `Q` encoded words of at
/// most 75 characters, folded one per line.
fn encode_subject(subject: &str) -> String {
    let subject = header_value(subject);
    if subject.len() <= 900 && subject.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return subject;
    }
    const PREFIX: &str = "=?UTF-8?Q?";
    const SUFFIX: &str = "?=";
    let mut words = Vec::new();
    let mut word = String::new();
    for c in subject.chars() {
        let mut encoded = String::new();
        if c == ' ' {
            encoded.push('_');
        } else if c.is_ascii_alphanumeric() || "!*+-/".contains(c) {
            encoded.push(c);
        } else {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                encoded.push_str(&format!("={byte:02X}"));
            }
        }
        if PREFIX.len() + word.len() + encoded.len() + SUFFIX.len() > 75 {
            words.push(format!("{PREFIX}{word}{SUFFIX}"));
            word.clear();
        }
        word.push_str(&encoded);
    }
    if !word.is_empty() {
        words.push(format!("{PREFIX}{word}{SUFFIX}"));
    }
    words.join("\r\n ")
}

/// Quoted-printable (RFC 2045 §6.7): lines end in CRLF, at most 76 characters with soft breaks,
/// `=`, control and non-ASCII bytes as `=XX`, a space or tab at the end of a line encoded.
pub fn quoted_printable(text: &str) -> String {
    const MAX_LINE: usize = 76;
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push_str("\r\n");
        }
        let line = line.strip_suffix('\r').unwrap_or(line).as_bytes();
        let mut length = 0;
        for (position, &byte) in line.iter().enumerate() {
            let last = position + 1 == line.len();
            let token = match byte {
                b' ' | b'\t' if !last => char::from(byte).to_string(),
                b'!'..=b'<' | b'>'..=b'~' => char::from(byte).to_string(),
                _ => format!("={byte:02X}"),
            };
            // Leave room for the soft break's `=` unless this token ends the line.
            let room = if last { MAX_LINE } else { MAX_LINE - 1 };
            if length + token.len() > room {
                out.push_str("=\r\n");
                length = 0;
            }
            out.push_str(&token);
            length += token.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_quoted_printable(encoded: &str) -> String {
        let joined = encoded.replace("=\r\n", "").replace("\r\n", "\n");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

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

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        let samples = [
            "plain".to_string(),
            "trailing space \nand tab\t\nend".into(),
            "= sign and ünïcödé and emoji \u{1F4DE}".into(),
            "x".repeat(300),
            "é".repeat(100),
            "a b ".repeat(50),
        ];
        for sample in samples {
            let encoded = quoted_printable(&sample);
            for line in encoded.split("\r\n") {
                assert!(line.len() <= 76, "{line:?}");
                assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
                assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t'));
            }
            assert_eq!(decode_quoted_printable(&encoded), sample);
        }
    }

    #[test]
    fn an_eml_is_multipart_alternative_with_both_parts() {
        let date = DateTime::parse_from_rfc3339("2026-11-04T10:00:00Z").unwrap().to_utc();
        let eml = to_eml(&email(), date);
        let (head, body) = eml.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("From: Ringledger Billing <billing@ringledger.example>\r\n"));
        assert!(head.contains("To: ops@acme.example,\r\n cfo@acme.example\r\n"));
        assert!(head.contains("Subject: Payment receipt: $50.00 added to your balance\r\n"));
        assert!(head.contains("Date: Wed, 4 Nov 2026 10:00:00 +0000\r\n"));
        assert!(head.contains("MIME-Version: 1.0\r\n"));
        assert!(head.contains(
            "Content-Type: multipart/alternative; boundary=\"=_ringledger_receipt_3Apay_1\""
        ));
        let parts: Vec<&str> = body.split("--=_ringledger_receipt_3Apay_1").collect();
        assert_eq!(parts.len(), 4, "preamble, text, html, closing");
        assert_eq!(parts[3], "--\r\n");
        let (text_head, text) = parts[1].split_once("\r\n\r\n").unwrap();
        assert!(text_head.contains("text/plain; charset=utf-8"));
        assert_eq!(decode_quoted_printable(text.strip_suffix("\r\n").unwrap()), email().text);
        let (html_head, html) = parts[2].split_once("\r\n\r\n").unwrap();
        assert!(html_head.contains("text/html; charset=utf-8"));
        assert_eq!(decode_quoted_printable(html.strip_suffix("\r\n").unwrap()), email().html);
        assert!(eml.split("\r\n").all(|line| line.len() <= 998));
        assert!(!eml.replace("\r\n", "").contains('\n'), "CRLF only");
    }

    #[test]
    fn header_values_cannot_inject_headers_and_unicode_subjects_are_encoded() {
        let mut hostile = email();
        hostile.subject = "Reçu \r\nBcc: victim@example.com".into();
        hostile.to = vec!["a@b.example\r\nBcc: x@y.example".into()];
        let eml = to_eml(&hostile, Utc::now());
        let head = eml.split_once("\r\n\r\n").unwrap().0;
        assert!(!head.lines().any(|l| l.starts_with("Bcc:")), "{head}");
        assert!(head.contains("Subject: =?UTF-8?Q?Re=C3=A7u"));
        let long = encode_subject(&"é".repeat(60));
        assert!(long.split("\r\n ").all(|w| w.len() <= 75 && w.starts_with("=?UTF-8?Q?")));
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

    fn decode_base64_lines(encoded: &str) -> Vec<u8> {
        let joined: String = encoded.split("\r\n").collect();
        base64::engine::general_purpose::STANDARD.decode(joined).unwrap()
    }

    #[test]
    fn an_eml_with_attachments_is_multipart_mixed_with_the_alternative_part_first() {
        let date = DateTime::parse_from_rfc3339("2026-11-04T10:00:00Z").unwrap().to_utc();
        let email = with_attachment();
        let eml = to_eml(&email, date);
        let (head, body) = eml.split_once("\r\n\r\n").unwrap();
        let mixed = "=_ringledger.mixed.statement_3A2026-10-01_3A2026-10-31";
        let alternative = "=_ringledger_statement_3A2026-10-01_3A2026-10-31";
        assert!(head.contains(&format!("Content-Type: multipart/mixed; boundary=\"{mixed}\"")));
        assert!(head.contains("Subject: Payment receipt: $50.00 added to your balance\r\n"));
        let parts: Vec<&str> = body.split(&format!("--{mixed}")).collect();
        assert_eq!(parts.len(), 4, "preamble, alternative, attachment, closing");
        assert_eq!(parts[0], "");
        assert_eq!(parts[3], "--\r\n");

        let (alternative_head, inner) = parts[1].split_once("\r\n\r\n").unwrap();
        assert_eq!(
            alternative_head,
            format!("\r\nContent-Type: multipart/alternative; boundary=\"{alternative}\"")
        );
        let inner: Vec<&str> = inner.split(&format!("--{alternative}")).collect();
        assert_eq!(inner.len(), 4, "preamble, text, html, closing");
        let (_, text) = inner[1].split_once("\r\n\r\n").unwrap();
        assert_eq!(decode_quoted_printable(text.strip_suffix("\r\n").unwrap()), email.text);
        let (_, html) = inner[2].split_once("\r\n\r\n").unwrap();
        assert_eq!(decode_quoted_printable(html.strip_suffix("\r\n").unwrap()), email.html);
        assert_eq!(inner[3], "--\r\n");

        let (attachment_head, data) = parts[2].split_once("\r\n\r\n").unwrap();
        let filename = "statement-acme-2026-10-01-2026-10-31.csv";
        assert_eq!(
            attachment_head,
            format!(
                "\r\nContent-Type: text/csv; charset=utf-8; name=\"{filename}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"{filename}\""
            )
        );
        let data = data.strip_suffix("\r\n").unwrap();
        assert!(data.split("\r\n").all(|line| line.len() <= 76 && !line.is_empty()));
        assert_eq!(data.split("\r\n").next().unwrap().len(), 76, "full lines are 76");
        assert_eq!(decode_base64_lines(data), email.attachments[0].data);
        assert!(!eml.replace("\r\n", "").contains('\n'), "CRLF only");
    }

    #[test]
    fn an_eml_without_attachments_is_unchanged_by_them_being_possible() {
        let date = DateTime::parse_from_rfc3339("2026-11-04T10:00:00Z").unwrap().to_utc();
        let eml = to_eml(&email(), date);
        assert!(!eml.contains("multipart/mixed") && !eml.contains("base64"));
        assert!(eml.ends_with("--=_ringledger_receipt_3Apay_1--\r\n"));
    }

    #[test]
    fn base64_lines_round_trip_at_every_length() {
        for length in [0, 1, 2, 3, 56, 57, 58, 114, 1000] {
            let data: Vec<u8> = (0..length).map(|i| (i * 7 % 256) as u8).collect();
            let encoded = base64_lines(&data);
            assert!(encoded.split("\r\n").all(|line| line.len() <= 76), "{length}");
            assert_eq!(encoded.is_empty(), data.is_empty());
            assert_eq!(decode_base64_lines(&encoded), data, "{length}");
        }
    }

    #[test]
    fn attachment_file_names_cannot_break_their_header() {
        assert_eq!(attachment_filename("a\"b\\c\r\nBcc: x.csv"), "a_b_c__Bcc: x.csv");
        assert_eq!(attachment_filename("résumé.csv"), "r_sum_.csv");
        assert_eq!(attachment_filename(" \r\n"), "__");
        assert_eq!(attachment_filename("   "), "attachment");
        assert_eq!(attachment_filename(&"x".repeat(300)).len(), 100);
    }

    #[test]
    fn file_names_are_distinct_safe_and_bounded() {
        assert_eq!(file_stem("acme:low_balance:7"), "acme%3Alow_balance%3A7");
        assert_ne!(file_stem("a:b"), file_stem("a_b"));
        assert_eq!(file_stem("../../etc/passwd"), "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd");
        let long = file_stem(&":".repeat(200));
        assert!(long.len() <= 200, "{}", long.len());
        assert_ne!(long, file_stem(&":".repeat(199)));
    }

    #[test]
    fn senders_are_checked() {
        assert!(check_sender("billing@ringledger.example").is_ok());
        assert!(check_sender("Billing <billing@ringledger.example>").is_ok());
        assert!(check_sender("billing").is_err());
        assert!(check_sender("a@b.example\r\nBcc: x@y.example").is_err());
        assert_eq!(
            bare_address("Billing <billing@ringledger.example>"),
            "billing@ringledger.example"
        );
    }
}
