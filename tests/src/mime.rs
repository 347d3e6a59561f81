//! Reading the MIME messages SES (moto) received: just enough to take a message apart.

/// The header block and the body of a MIME entity.
pub fn split_entity(entity: &str) -> (&str, &str) {
    entity.split_once("\r\n\r\n").expect("a header block and a body")
}

/// A header's value, folded lines joined.
pub fn header(head: &str, name: &str) -> String {
    let unfolded = head.replace("\r\n ", " ");
    unfolded
        .split("\r\n")
        .filter_map(|line| line.split_once(": "))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no {name} header in\n{head}"))
}

pub fn boundary(content_type: &str) -> String {
    content_type
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
        .to_string()
}

/// The parts of a multipart body, without preamble and closing delimiter.
pub fn parts<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let pieces: Vec<&str> = body.split(delimiter.as_str()).collect();
    assert_eq!(pieces.last(), Some(&"--\r\n"), "the body ends with the closing delimiter");
    pieces[1..pieces.len() - 1]
        .iter()
        .map(|part| part.strip_prefix("\r\n").expect("CRLF after a delimiter"))
        .collect()
}

pub fn decode_quoted_printable(encoded: &str) -> String {
    let joined = encoded.replace("=\r\n", "").replace("\r\n", "\n");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Standard base64 with padding.
pub fn decode_base64(encoded: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(encoded).expect("valid base64")
}
