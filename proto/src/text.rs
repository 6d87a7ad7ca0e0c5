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

/// What a URL's user information reads as when it is shown.
pub const REDACTED_USER_INFO: &str = "REDACTED";

/// Where a URL's user information (`user:password@`) would be: the bytes
/// from after the scheme's `:` and its slashes up to the last `@` of the
/// authority (which ends at `/`, `\`, `?` or `#`, as browsers and the
/// `url` crate read http(s) URLs: `http:user:pw@host` and
/// `http:\\user:pw@host` hold user information too).
fn user_info_range(url: &str) -> Option<std::ops::Range<usize>> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let after_scheme = colon + 1;
    let start = after_scheme
        + url[after_scheme..]
            .bytes()
            .take_while(|b| matches!(b, b'/' | b'\\'))
            .count();
    let authority_end = url[start..]
        .find(['/', '\\', '?', '#'])
        .map_or(url.len(), |end| start + end);
    let at = url[start..authority_end].rfind('@')?;
    Some(start..start + at)
}

/// Whether `url` carries user information (`user:password@host`).
pub fn has_user_info(url: &str) -> bool {
    user_info_range(url).is_some()
}

/// `url` with its user information replaced by [`REDACTED_USER_INFO`], so
/// an error or a log line that shows it never shows a password.
pub fn redacted_url(url: &str) -> std::borrow::Cow<'_, str> {
    match user_info_range(url) {
        Some(range) => format!(
            "{}{REDACTED_USER_INFO}{}",
            &url[..range.start],
            &url[range.end..]
        )
        .into(),
        None => url.into(),
    }
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
    fn user_information_is_found_and_hidden_however_the_url_is_spelled() {
        for (url, shown) in [
            (
                "http://bob:PASSWORD@host/photo.png",
                "http://REDACTED@host/photo.png",
            ),
            ("https://bob@host/", "https://REDACTED@host/"),
            (
                "http://a@b:PASSWORD@host:8080/x",
                "http://REDACTED@host:8080/x",
            ),
            ("HTTP://bob:PASSWORD@host?q", "HTTP://REDACTED@host?q"),
            ("http:bob:PASSWORD@host/", "http:REDACTED@host/"),
            ("http:\\\\bob:PASSWORD@host/", "http:\\\\REDACTED@host/"),
            ("ftp://bob:PASSWORD@host/", "ftp://REDACTED@host/"),
        ] {
            assert!(has_user_info(url), "{url}");
            assert_eq!(redacted_url(url), shown);
        }
        for url in [
            "http://host/photo.png?by=bob@example.com",
            "http://host/@bob",
            "https://host#@x",
            "not a url @ all",
            "",
        ] {
            assert!(!has_user_info(url), "{url}");
            assert_eq!(redacted_url(url), url);
        }
    }

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
