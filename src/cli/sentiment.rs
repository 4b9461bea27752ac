//! `fusion sentiment`: VADER scores for lines of text on stdin, one TSV line
//! `compound pos neu neg` out per line in (API.md). Only IO and formatting
//! here; the scoring is `crate::sentiment`.

use std::io::{self, BufRead, BufReader, BufWriter, Write};

use anyhow::Context;

use crate::sentiment::{SentimentScores, polarity_scores};

/// Reads stdin line by line and prints `compound<TAB>pos<TAB>neu<TAB>neg` for
/// each line, in order, numbers as Python prints the reference's rounded
/// floats (e.g. `0.3089`, `1.0`, `0.0`).
#[derive(clap::Args, Debug)]
#[command(after_help = "Lines end at \\n (a \\r before it is dropped). \
Bytes that are not valid UTF-8 are decoded lossily: each invalid sequence \
becomes U+FFFD, which VADER scores as neutral, so every input line still \
gives exactly one output line.")]
pub struct SentimentArgs {}

pub fn run(_args: SentimentArgs) -> anyhow::Result<()> {
    let stdin = io::stdin().lock();
    // `fusion sentiment | head` closing the pipe early ends it quietly
    // (`super::stdout`).
    score_lines(BufReader::with_capacity(1 << 16, stdin), super::stdout())
        .context("failed to score stdin to stdout")
}

/// The loop of `run`, over any reader and writer.
fn score_lines(mut input: impl BufRead, output: impl Write) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, output);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let scores = polarity_scores(&String::from_utf8_lossy(line));
        write_scores(&mut out, &scores)?;
    }
    out.flush()
}

fn write_scores(out: &mut impl Write, s: &SentimentScores) -> io::Result<()> {
    // Formatted by hand into one small buffer: through `fmt` this took a fifth
    // of the command's time.
    let mut line = Vec::with_capacity(40);
    for (i, x) in [s.compound, s.pos, s.neu, s.neg].into_iter().enumerate() {
        if i > 0 {
            line.push(b'\t');
        }
        push_py_float(&mut line, x);
    }
    line.push(b'\n');
    out.write_all(&line)
}

/// Appends Python's `repr` of a float rounded to at most 4 decimals, as the
/// reference's scores are. Such a float is the double nearest to `k / 10^4`
/// for an integer `k`, and its shortest round-trip form is `k / 10^4` in
/// decimal without trailing zeros (but at least one fraction digit), which is
/// written from `k` directly. Anything else falls back to Rust's shortest
/// `Display` (the same digits as Python's `repr` from 1e-4 to 1e16).
fn push_py_float(line: &mut Vec<u8>, x: f64) {
    let k = (x * 10_000.0).round();
    if k.abs() < 1e15 && k / 10_000.0 == x {
        if x.is_sign_negative() {
            line.push(b'-');
        }
        let k = k.abs() as u64;
        let (whole, fraction) = (k / 10_000, k % 10_000);
        if whole < 10 {
            line.push(b'0' + whole as u8);
        } else {
            line.extend_from_slice(whole.to_string().as_bytes());
        }
        line.push(b'.');
        let digits = [
            fraction / 1000,
            fraction / 100 % 10,
            fraction / 10 % 10,
            fraction % 10,
        ];
        // At least one fraction digit, then up to the last non-zero one.
        let len = digits[1..]
            .iter()
            .rposition(|&d| d != 0)
            .map_or(1, |p| p + 2);
        line.extend(digits[..len].iter().map(|&d| b'0' + d as u8));
    } else if x.is_finite() && x.fract() == 0.0 {
        line.extend_from_slice(format!("{x}.0").as_bytes());
    } else {
        line.extend_from_slice(format!("{x}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on(input: &[u8]) -> String {
        let mut out = Vec::new();
        score_lines(input, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_line_out_per_line_in_formatted_like_python() {
        assert_eq!(
            run_on(b"There were no problems at all.\r\n\nNot bad at all"),
            "0.3089\t0.311\t0.689\t0.0\n0.0\t0.0\t0.0\t0.0\n0.431\t0.487\t0.513\t0.0\n"
        );
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        let out = run_on(b"good\n\xff\xfe bad\n");
        assert_eq!(out.lines().count(), 2);
    }

    fn py_float(x: f64) -> String {
        let mut line = Vec::new();
        push_py_float(&mut line, x);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn py_float_matches_python_repr() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(-0.0), "-0.0");
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(-0.5994), "-0.5994");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(-1.0), "-1.0");
        assert_eq!(py_float(0.05), "0.05");
        assert_eq!(py_float(0.123456), "0.123456");
        assert_eq!(py_float(12.5), "12.5");
    }

    #[test]
    fn py_float_agrees_with_display_on_every_four_decimal_value() {
        // For values with up to 4 decimals in [-1, 1], Python's repr is Rust's
        // shortest Display with ".0" added to whole numbers.
        for k in -10_000..=10_000 {
            let x = f64::from(k) / 10_000.0;
            let display = format!("{x}");
            let python = if display.contains('.') {
                display
            } else {
                format!("{display}.0")
            };
            assert_eq!(py_float(x), python, "for {k}/10000");
        }
    }
}
