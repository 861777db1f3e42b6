//! Rendering shared by every command: JSON documents, sizes, and writing to stdout (the
//! only place pgwarden prints its results).

use std::io::Write;

/// JSON with two-space indentation and a trailing newline.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(s) => s + "\n",
        // Serializing plain data structs cannot fail; keep a valid document regardless.
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// Writes `text` to stdout. A closed pipe (`pgwarden tune | head`) is not an error worth a
/// message.
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// A byte count as people read it: `12 kB`, `3.4 MB`, `1.2 GB`.
pub fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.0} kB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 kB");
        assert_eq!(size(12 * 1024), "12 kB");
        assert_eq!(size(3 * 1024 * 1024 + 400 * 1024), "3.4 MB");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5.0 GB");
    }

    #[test]
    fn json_ends_with_a_newline() {
        assert_eq!(json(&serde_json::json!({"a": 1})), "{\n  \"a\": 1\n}\n");
    }
}
