//! Byte sizes as people type them: `4096`, `512K`, `64MiB`, `1G`, `2T`.

/// Parses a size with an optional binary suffix (K, M, G, T, with or without `iB`/`B`; case-insensitive).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "`{text}` is not a size: expected a number with an optional K, M, G or T suffix"
        ));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size suffix `{other}` in `{text}`: use K, M, G or T (powers of 1024)"
            ));
        }
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats bytes the way `parse_size` reads them, exactly when possible (`1G`, `1536M`, `4097`).
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        assert_eq!(parse_size(" 8M "), Ok(8 << 20));
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert!(parse_size("G").unwrap_err().contains("not a size"));
        assert!(
            parse_size("1X")
                .unwrap_err()
                .contains("unknown size suffix")
        );
        assert!(
            parse_size("1.5G")
                .unwrap_err()
                .contains("unknown size suffix")
        );
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("20000000T").unwrap_err().contains("too large"));
    }

    #[test]
    fn formats_round_trip() {
        for bytes in [1u64 << 30, 1536 << 20, 4097, 512, 3 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(0), "0");
    }

    proptest::proptest! {
        /// Any text is a size or an error, never a panic; and every size reads back from how
        /// it is shown.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,24}") {
            let _ = parse_size(&text);
        }

        #[test]
        fn sizes_round_trip_through_their_display(bytes: u64) {
            proptest::prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }

        #[test]
        fn suffixes_multiply(n in 0u64..(1 << 20), unit in 0usize..5) {
            let (suffix, shift) = [("", 0), ("K", 10), ("MiB", 20), ("g", 30), ("TB", 40)][unit];
            proptest::prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
        }
    }
}
