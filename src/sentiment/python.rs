//! The few Python 3 string and float semantics that vaderSentiment 3.3.2's
//! results depend on (`str.split()`, `str.strip()`, `str.strip(string.punctuation)`,
//! `str.isupper()`, `str.lower()`, `round(x, n)`), reproduced so that the port
//! tokenises and rounds exactly like the reference. No VADER rules here.
//!
//! Known limit: case and whitespace come from Rust's Unicode tables (17.0 for
//! Rust 1.95), Python 3.11's from Unicode 14.0, so the two can disagree on
//! letters cased only in the newer versions (e.g. the Garay script).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Python's `str.isspace()` per character, which `str.split()` and `str.strip()`
/// use: Unicode White_Space plus the ASCII separators U+001C..U+001F, which
/// Python counts as whitespace (bidi class B/S) and Rust does not.
pub(super) fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// `s.strip()`.
pub(super) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `s.split()`: runs of whitespace separate, no empty pieces.
pub(super) fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|piece| !piece.is_empty())
}

/// `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// `s.strip(string.punctuation)`.
pub(super) fn strip_punctuation(s: &str) -> &str {
    s.trim_matches(|c| PUNCTUATION.contains(c))
}

/// Unicode general category Lt (titlecase letters), which `str.isupper()`
/// rejects like lowercase ones; Rust has no query for it. The set has not
/// changed since Unicode 6.
fn is_titlecase(c: char) -> bool {
    matches!(
        c,
        '\u{1C5}'
            | '\u{1C8}'
            | '\u{1CB}'
            | '\u{1F2}'
            | '\u{1F88}'..='\u{1F8F}'
            | '\u{1F98}'..='\u{1F9F}'
            | '\u{1FA8}'..='\u{1FAF}'
            | '\u{1FBC}'
            | '\u{1FCC}'
            | '\u{1FFC}'
    )
}

/// `s.isupper()`: at least one cased character and none lowercase or titlecase
/// (CPython `unicode_isupper_impl`; Lowercase/Uppercase are the derived
/// properties, as in Rust's `char::is_lowercase`/`is_uppercase`). So "A1" and
/// "I" are upper, ":)" and "123" are not.
pub(super) fn is_upper(s: &str) -> bool {
    if s.is_ascii() {
        let bytes = s.as_bytes();
        return bytes.iter().any(u8::is_ascii_uppercase)
            && !bytes.iter().any(u8::is_ascii_lowercase);
    }
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// `s.lower()`: full Unicode lowercasing including the final-sigma rule, which
/// Rust's `str::to_lowercase` also applies. Borrows when nothing changes.
pub(super) fn py_lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        let lower = s.to_lowercase();
        if lower == s {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(lower)
        }
    }
}

/// `round(x, ndigits)` on a float. CPython (`float_round_impl`) rounds the exact
/// binary value to `ndigits` decimals with `_Py_dg_dtoa` (ties to even) and reads
/// the result back; Rust's `{:.N}` formatting is likewise exact with ties to
/// even, so format-and-parse gives the same double, including `-0.0`.
///
/// Fast path: when the product `x * 10^n` is exact (no rounding error, as
/// `mul_add` tells) or clearly not near a half, rounding it gives the exact
/// decimal rounding `k`, and `k / 10^n` (both exact doubles, one correctly
/// rounded division) is the double that parsing "k/10^n" gives.
pub(super) fn py_round(x: f64, ndigits: usize) -> f64 {
    const POW10: [f64; 5] = [1.0, 10.0, 100.0, 1000.0, 10000.0];
    if let Some(&scale) = POW10.get(ndigits) {
        let scaled = x * scale;
        let exact = x.mul_add(scale, -scaled) == 0.0;
        // The product's error is below 1e-10 for |scaled| < 1e6, far inside
        // this margin; larger values take the exact path.
        let clear = ((scaled - scaled.floor()) - 0.5).abs() > 1e-6;
        if scaled.abs() < 1e6 && (exact || clear) {
            let k = scaled.round_ties_even();
            // k == 0 keeps x's sign, as Python's round(-0.0001, 3) == -0.0.
            return if k == 0.0 {
                0.0f64.copysign(x)
            } else {
                k / scale
            };
        }
    }
    if !x.is_finite() {
        return x;
    }
    let mut buf = StackString::default();
    if write!(buf, "{x:.ndigits$}").is_ok()
        && let Ok(rounded) = buf.as_str().parse()
    {
        return rounded;
    }
    // Only reachable for magnitudes beyond the buffer (|x| > 1e40 or so).
    format!("{x:.ndigits$}").parse().unwrap_or(x)
}

/// A fixed buffer so exact rounding does not allocate.
struct StackString {
    bytes: [u8; 64],
    len: usize,
}

impl Default for StackString {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl StackString {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackString {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_pythons() {
        // [hex(c) for c in range(0x110000) if chr(c).isspace()] in Python 3.11.
        let python: &[u32] = &[
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ];
        let ours: Vec<u32> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_space(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, python);
    }

    #[test]
    fn split_and_strip_like_python() {
        let text = "\u{1f}a\u{a0}b  c\u{3000}\u{200b}d ";
        assert_eq!(
            py_split(text).collect::<Vec<_>>(),
            ["a", "b", "c", "\u{200b}d"]
        );
        assert_eq!(py_strip("\u{1c} x \u{2029}"), "x");
        assert_eq!(strip_punctuation("...hi!?"), "hi");
        assert_eq!(strip_punctuation("«hi»"), "«hi»");
    }

    #[test]
    fn isupper_like_python() {
        assert!(is_upper("GOOD"));
        assert!(is_upper("A1"));
        assert!(is_upper("I"));
        assert!(is_upper("ÉTÉ!"));
        assert!(!is_upper(":)"));
        assert!(!is_upper("123"));
        assert!(!is_upper("Good"));
        assert!(!is_upper("ǅA")); // titlecase letter
        assert!(!is_upper("日本"));
    }

    #[test]
    fn lower_like_python() {
        assert_eq!(py_lower("GOOD"), "good");
        assert_eq!(py_lower("ΟΔΟΣ"), "οδος"); // final sigma
        assert_eq!(py_lower("\u{212A}IND"), "kind"); // Kelvin sign
        assert!(matches!(py_lower("good"), Cow::Borrowed(_)));
    }

    #[test]
    fn round_like_python() {
        // round(x, 2) in Python 3.11 for each x.
        for (x, expected) in [
            (0.125, 0.12),
            (0.375, 0.38),
            (2.675, 2.67),
            (-0.125, -0.12),
            (0.0625, 0.06),
        ] {
            assert_eq!(py_round(x, 2), expected, "round({x}, 2)");
        }
        assert_eq!(py_round(0.00025, 4), 0.0003);
        assert!(py_round(-0.0001, 3).is_sign_negative());
        assert_eq!(py_round(1e305, 3), 1e305);
        assert!(py_round(f64::NAN, 3).is_nan());
    }

    #[test]
    fn fast_round_agrees_with_exact_round() {
        // Every value the fast path can meet in [-1, 1] on a fine grid plus
        // near-tie neighbours, against the format-and-parse definition.
        let exact = |x: f64, n: usize| -> f64 { format!("{x:.n$}").parse().unwrap() };
        for i in -50_000..=50_000 {
            let base = f64::from(i) / 50_000.0;
            let near_ties = [base + 5e-5, base - 5e-5, base + 5e-4, base + 5.000001e-4];
            for x in [base, base / 16.0, base / 64.0]
                .into_iter()
                .chain(near_ties)
            {
                for n in [3, 4] {
                    let (fast, slow) = (py_round(x, n), exact(x, n));
                    assert!(
                        fast == slow && fast.is_sign_negative() == slow.is_sign_negative(),
                        "round({x:e}, {n}): {fast} vs {slow}"
                    );
                }
            }
        }
    }
}
