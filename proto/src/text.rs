//! Text from outside kept to a size: a URL of 100 KB, an error that quotes
//! it, a server's answer. Whatever is cut says how long it was.

/// How much of a refused value an error quotes.
pub const QUOTED_BYTES: usize = 120;

/// `text` cut to `max` bytes on a character boundary, its length said
/// when it was cut.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// `text` quoted for an error message, cut to [`QUOTED_BYTES`].
pub fn quoted(text: &str) -> String {
    if text.len() <= QUOTED_BYTES {
        return format!("{text:?}");
    }
    let mut end = QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_with_its_length() {
        assert_eq!(truncated("short", 10), "short");
        let cut = truncated(&"é".repeat(100), 11);
        assert!(cut.starts_with("ééééé…"), "{cut}");
        assert!(cut.ends_with("(200 bytes)"), "{cut}");
        assert_eq!(quoted("a"), "\"a\"");
        let long = quoted(&"x".repeat(1000));
        assert!(
            long.len() < QUOTED_BYTES + 30 && long.ends_with("(1000 bytes)"),
            "{long}"
        );
    }
}
