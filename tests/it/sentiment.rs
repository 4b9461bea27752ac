//! `fusion::sentiment` and `fusion sentiment` against the reference: every
//! sentence of fixtures/sentiment/golden.tsv (written by
//! scripts/vader_golden.py from vaderSentiment 3.3.2) must score the same, and
//! inputs the golden file cannot hold (empty, huge, invalid UTF-8) must give a
//! defined result without panicking.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use fusion::sentiment::{SentimentScores, polarity_scores};

const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sentiment")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One golden row: the reference's numbers as printed, and the sentence.
struct Golden {
    printed: [String; 4],
    scores: SentimentScores,
    text: String,
}

fn golden() -> Vec<Golden> {
    let file = fixture("golden.tsv");
    let mut lines = file.split('\n');
    assert_eq!(lines.next(), Some("compound\tpos\tneu\tneg\ttext"));
    lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            assert_eq!(fields.len(), 5, "malformed golden line {line:?}");
            let number = |i: usize| -> f64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|e| panic!("bad number in golden line {line:?}: {e}"))
            };
            Golden {
                printed: std::array::from_fn(|i| fields[i].to_string()),
                scores: SentimentScores {
                    compound: number(0),
                    pos: number(1),
                    neu: number(2),
                    neg: number(3),
                },
                text: fields[4].to_string(),
            }
        })
        .collect()
}

/// Runs the built binary with `args`, `input` on stdin; returns (status, stdout).
fn run_fusion(args: &[&str], input: &[u8]) -> (std::process::ExitStatus, Vec<u8>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fusion"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("failed to start fusion");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // Write from another thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("failed to wait for fusion");
    writer
        .join()
        .expect("writer thread panicked")
        .expect("failed to write stdin");
    (output.status, output.stdout)
}

fn assert_sane(s: SentimentScores, what: &str) {
    for (name, value, low) in [
        ("compound", s.compound, -1.0),
        ("pos", s.pos, 0.0),
        ("neu", s.neu, 0.0),
        ("neg", s.neg, 0.0),
    ] {
        assert!(
            value.is_finite() && (low..=1.0).contains(&value),
            "{what}: {name} = {value} out of range"
        );
    }
    // The three shares sum to 1 up to their rounding to 3 decimals.
    let shares = s.pos + s.neu + s.neg;
    assert!(
        (shares - 1.0).abs() <= 0.002,
        "{what}: pos+neu+neg = {shares}"
    );
}

#[test]
fn every_golden_sentence_matches_the_reference() {
    let rows = golden();
    assert!(rows.len() >= 600, "only {} golden sentences", rows.len());
    let mut mismatches = Vec::new();
    for row in &rows {
        let got = polarity_scores(&row.text);
        let want = row.scores;
        let close = [
            (got.compound, want.compound),
            (got.pos, want.pos),
            (got.neu, want.neu),
            (got.neg, want.neg),
        ]
        .iter()
        .all(|(g, w)| (g - w).abs() <= TOLERANCE);
        if !close {
            mismatches.push(format!(
                "{:?}\n    got  {got:?}\n    want {want:?}",
                row.text
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} sentences differ from vaderSentiment 3.3.2:\n{}",
        mismatches.len(),
        rows.len(),
        mismatches.join("\n")
    );
}

#[test]
fn cli_prints_the_golden_numbers_as_python_does() {
    let rows = golden();
    let input: String = rows.iter().map(|row| format!("{}\n", row.text)).collect();
    let (status, stdout) = run_fusion(&["sentiment"], input.as_bytes());
    assert!(status.success(), "fusion sentiment exited with {status}");
    let stdout = String::from_utf8(stdout).expect("output is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), rows.len(), "one output line per input line");
    for (line, row) in lines.iter().zip(&rows) {
        assert_eq!(*line, row.printed.join("\t"), "for {:?}", row.text);
    }
}

#[test]
fn empty_and_whitespace_only_text_score_zero() {
    // The reference returns all four as 0.0 when there are no tokens.
    let zero = SentimentScores {
        compound: 0.0,
        pos: 0.0,
        neu: 0.0,
        neg: 0.0,
    };
    for text in ["", " ", "\t\n  \r\n", "\u{a0}\u{3000}\u{2028}\u{1c}"] {
        assert_eq!(polarity_scores(text), zero, "for {text:?}");
    }
}

#[test]
fn one_megabyte_texts_score_without_panicking() {
    // Real sentences with every rule in play, including many "but"s (the
    // reference's `_but_check` is quadratic; ours must not be).
    let sentences = fixture("sentences.txt");
    let mut text = String::new();
    while text.len() < 1 << 20 {
        text.push_str(&sentences);
    }
    let scores = polarity_scores(&text);
    assert_sane(scores, "1 MB of fixture sentences");
    assert!(
        scores.compound > 0.99,
        "so many positive words saturate compound: {scores:?}"
    );

    // Degenerate shapes: one giant token, only emoji, only "but", only "no".
    let one_token = "a".repeat(1 << 20);
    assert_eq!(polarity_scores(&one_token).neu, 1.0);
    let emoji = "😀".repeat((1 << 20) / 4);
    assert_sane(polarity_scores(&emoji), "1 MB of emoji");
    let buts = "good but ".repeat((1 << 20) / 9);
    assert_sane(polarity_scores(&buts), "1 MB of 'good but'");
    let nos = "no ".repeat((1 << 20) / 3);
    assert_sane(polarity_scores(&nos), "1 MB of 'no'");
}

#[test]
fn cli_decodes_invalid_utf8_lossily() {
    let (status, stdout) = run_fusion(&["sentiment"], b"good\n\xff\xfe bad\n");
    assert!(status.success(), "fusion sentiment exited with {status}");
    let stdout = String::from_utf8(stdout).expect("output is UTF-8");
    // Python: polarity_scores("good") and polarity_scores("\ufffd\ufffd bad").
    assert_eq!(
        stdout,
        "0.4404\t1.0\t0.0\t0.0\n-0.5423\t0.0\t0.222\t0.778\n"
    );
}
