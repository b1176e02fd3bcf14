//! Plain-text tables for the list commands (`--json` prints the API's JSON instead).
use serde_json::Value;

/// Left-aligned columns separated by two spaces; the last column is not padded. Control
/// characters in cells are printed escaped (`\x1b`): cells carry what strangers sent
/// (a DHCP client's host name and vendor class), which must not drive the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let rows = &rows[..];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i != last {
                // Padded by hand: a format width above 65535 (a host with thousands of
                // MACs in one cell) panics.
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// `s` with every control character written as an escape (`\x1b`, `\u{9b}`).
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| match c {
            c if c.is_control() && (c as u32) < 0x80 => format!("\\x{:02x}", c as u32),
            c if c.is_control() => format!("\\u{{{:x}}}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// A cell from a JSON value: strings bare, arrays comma-joined, null empty.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A table of JSON objects, columns in the order of the first object's keys.
pub fn json_table(items: &[Value]) -> String {
    let Some(Value::Object(first)) = items.first() else {
        return String::new();
    };
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    let header: Vec<String> = keys.iter().map(|k| k.to_uppercase()).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|it| {
            keys.iter()
                .map(|k| cell(it.get(*k).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    table(
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
    )
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn time_ms(ms: u64) -> String {
    match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms)) {
        Some(t) if ms < 253_402_300_800_000 => humantime::format_rfc3339_millis(t).to_string(),
        // After 9999-12-31, which RFC 3339 cannot write: the raw number.
        _ => format!("{ms} ms after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_printed_escaped() {
        let t = table(
            &["HOSTNAME"],
            &[vec!["evil\x1b]0;owned\x07\u{9b}2J".to_string()]],
        );
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("evil\\x1b]0;owned\\x07\\u{9b}2J"), "{t:?}");
    }

    #[test]
    fn tables() {
        let t = table(
            &["NAME", "IP"],
            &[
                vec!["cn1".into(), "10.0.0.1/24".into()],
                vec!["cn100".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME   IP\ncn1    10.0.0.1/24\ncn100  \n");
        let j = json_table(&[serde_json::json!({"count": 2, "mac": "aa", "tags": ["a", "b"]})]);
        assert_eq!(j, "COUNT  MAC  TAGS\n2      aa   a,b\n");
        assert_eq!(time_ms(1_000), "1970-01-01T00:00:01.000Z");
        assert_eq!(
            time_ms(u64::MAX),
            format!("{} ms after the epoch", u64::MAX)
        );
    }

    #[test]
    fn cells_wider_than_a_format_width() {
        let wide = "aa:bb:cc:dd:ee:ff,".repeat(4_000);
        let t = table(&["MAC", "IP"], &[vec![wide.clone(), "10.0.0.1".into()]]);
        assert_eq!(t.len(), 2 * wide.len() + 4 + "IP\n10.0.0.1\n".len());
        assert!(t.starts_with("MAC ") && t.ends_with("  10.0.0.1\n"));
    }
}
