//! The CSV reading both tables share: `#` comment lines, blank lines, a required header row,
//! trimmed fields and the line number of every row for the error messages.

use crate::TaxError;

/// One data row: its line in the file (1-based, counting comments and blank lines) and its
/// fields, trimmed.
#[derive(Debug)]
pub(crate) struct Record {
    pub line: u64,
    pub fields: Vec<String>,
}

/// Read `text` as CSV with the header `header` (compared trimmed and case-insensitively) and at
/// most `max_rows` data rows.
pub(crate) fn read(
    text: &str,
    header: &'static str,
    max_rows: usize,
) -> Result<Vec<Record>, TaxError> {
    // Spreadsheets often save UTF-8 with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let columns: Vec<&str> = header.split(',').collect();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());

    let mut header_seen = false;
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = reader.read_record(&mut record).map_err(|error| TaxError::Csv {
            line: error.position().map_or(0, |position| content_line(text, position)),
            message: error.to_string(),
        })?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, |position| content_line(text, position));
        let fields: Vec<String> = record.iter().map(|field| field.trim().to_string()).collect();
        // A line of spaces reads as one empty field: a blank line.
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        if !header_seen {
            let matches = fields.len() == columns.len()
                && fields
                    .iter()
                    .zip(&columns)
                    .all(|(found, want)| found.eq_ignore_ascii_case(want));
            if !matches {
                return Err(TaxError::BadHeader {
                    line,
                    expected: header,
                    found: fields.join(","),
                });
            }
            header_seen = true;
            continue;
        }
        if fields.len() != columns.len() {
            return Err(TaxError::WrongColumnCount {
                line,
                expected: columns.len(),
                found: fields.len(),
                header,
            });
        }
        if rows.len() == max_rows {
            return Err(TaxError::TooManyRows { line, max: max_rows });
        }
        rows.push(Record { line, fields });
    }
    if !header_seen {
        return Err(TaxError::BadHeader { line: 1, expected: header, found: String::new() });
    }
    Ok(rows)
}

/// The line a record's content starts on. The reader reports where it started reading the
/// record, which is before any blank and comment lines it skipped to get there.
fn content_line(text: &str, position: &csv::Position) -> u64 {
    let mut line = position.line();
    let mut rest =
        usize::try_from(position.byte()).ok().and_then(|at| text.get(at..)).unwrap_or("");
    while let Some(end) = rest.find('\n') {
        let content = rest[..end].trim_end_matches('\r');
        if !content.is_empty() && !content.starts_with('#') {
            break;
        }
        rest = &rest[end + 1..];
        line += 1;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "a,b";

    #[test]
    fn line_numbers_count_comments_and_blank_lines() {
        let text = "# comment\n\na,b\n   \n# another, with a comma\n1,2\n\n\"x, y\",3\n";
        let rows = read(text, HEADER, 10).unwrap();
        let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![6, 8]);
        assert_eq!(rows[1].fields, vec!["x, y".to_string(), "3".to_string()]);
    }

    #[test]
    fn fields_are_trimmed_and_the_header_is_case_insensitive() {
        let rows = read("\u{feff} A , B \r\n  1 ,  2  \r\n", HEADER, 10).unwrap();
        assert_eq!(rows[0].fields, vec!["1".to_string(), "2".to_string()]);
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn the_header_is_required() {
        let error = read("1,2\n", HEADER, 10).unwrap_err();
        assert!(matches!(&error, TaxError::BadHeader { line: 1, found, .. } if found == "1,2"));
        let error = read("# only a comment\n\n", HEADER, 10).unwrap_err();
        assert!(matches!(error, TaxError::BadHeader { line: 1, .. }));
        assert!(error.to_string().contains("`a,b`"), "{error}");
    }

    #[test]
    fn rows_must_have_every_column() {
        let error = read("a,b\n1,2\n1\n", HEADER, 10).unwrap_err();
        assert!(matches!(error, TaxError::WrongColumnCount { line: 3, expected: 2, found: 1, .. }));
        let error = read("a,b\n1,2,3\n", HEADER, 10).unwrap_err();
        assert!(matches!(error, TaxError::WrongColumnCount { line: 2, found: 3, .. }));
    }

    #[test]
    fn the_row_count_is_limited() {
        assert_eq!(read("a,b\n1,2\n3,4\n", HEADER, 2).unwrap().len(), 2);
        let error = read("a,b\n1,2\n3,4\n5,6\n", HEADER, 2).unwrap_err();
        assert!(matches!(error, TaxError::TooManyRows { line: 4, max: 2 }));
    }
}
