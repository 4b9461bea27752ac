//! `fusion ingest FILE…`: NDJSON event files (`-` for stdin) into the store
//! `serve` uses, or into a running server with `--server`. Prints accepted /
//! duplicate / rejected counts; each rejected line is reported on stderr with
//! its file, line number and reasons.
//!
//! Locally, events go through the same checks as the service (validation,
//! role checks against the replayed log, group-committed appends); scores are
//! derived from the log by whoever opens it next. Reading and validating run
//! on their own threads, ahead of the commits, so the disk and the CPU overlap.
//! A line that is not JSON is rejected on its own (a file is not one request).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::Value;

use super::StoreArgs;
use crate::domain::Event;
use crate::ingest::{self, FieldError, Rejection};

/// Lines per batch handed to the engine (and per request with `--server`).
const BATCH: usize = 20_000;
const SERVER_BATCH: usize = 5_000;
/// Rejections printed in full; the rest are only counted.
const SHOW_REJECTIONS: usize = 50;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// NDJSON files; `-` reads standard input
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Send to a running server (e.g. http://127.0.0.1:8080) instead of the store
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Refuse events dated more than this ahead of the clock (24h, 90m, 30s, 2d;
    /// with --server, the server's own setting applies)
    #[arg(long, default_value = "24h", value_parser = super::future_skew)]
    pub max_future_skew: chrono::Duration,
}

#[derive(Debug, Default)]
struct Totals {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    shown: usize,
}

impl Totals {
    fn report(&mut self, source: &str, lines: &[usize], rejected: &[Rejection]) {
        self.rejected += rejected.len();
        for r in rejected {
            if self.shown < SHOW_REJECTIONS {
                let reasons: Vec<String> = r
                    .errors
                    .iter()
                    .map(|e| {
                        if e.field.is_empty() {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.field, e.message)
                        }
                    })
                    .collect();
                eprintln!(
                    "rejected {source}:{} (id {}): {}",
                    lines.get(r.index).copied().unwrap_or(0),
                    r.id.as_deref().unwrap_or("?"),
                    reasons.join("; ")
                );
                self.shown += 1;
            }
        }
    }
}

/// One batch of a file: the line number of each entry, and the entries.
struct Batch {
    source: String,
    lines: Vec<usize>,
    /// Raw lines, for `--server`.
    raw: Vec<Vec<u8>>,
    good: Vec<(usize, Event)>,
    bad: Vec<Rejection>,
    bytes: u64,
}

fn open(path: &PathBuf) -> anyhow::Result<(Box<dyn BufRead + Send>, Option<u64>, String)> {
    if path.as_os_str() == "-" {
        return Ok((
            Box::new(BufReader::new(std::io::stdin())),
            None,
            "stdin".into(),
        ));
    }
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((
        Box::new(BufReader::with_capacity(1 << 20, f)),
        len,
        path.display().to_string(),
    ))
}

/// Reads a file in batches of non-blank lines and validates them in parallel.
fn read_batches(
    mut reader: Box<dyn BufRead + Send>,
    source: String,
    size: usize,
    keep_raw: bool,
    mut emit: impl FnMut(Batch) -> bool,
) -> anyhow::Result<()> {
    let mut line_no = 0usize;
    loop {
        let mut raw: Vec<Vec<u8>> = Vec::with_capacity(size);
        let mut lines = Vec::with_capacity(size);
        let mut bytes = 0u64;
        while raw.len() < size {
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("cannot read {source}"))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            bytes += n as u64;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            raw.push(buf);
            lines.push(line_no);
        }
        if raw.is_empty() {
            return Ok(());
        }
        let parsed: Vec<Result<Event, Vec<FieldError>>> = raw
            .par_iter()
            .map(|line| match serde_json::from_slice::<Value>(line) {
                Ok(v) => ingest::validate(&v).map_err(|errs| errs.into_iter().collect()),
                Err(e) => Err(vec![FieldError {
                    field: String::new(),
                    message: format!("malformed JSON: {e}"),
                }]),
            })
            .collect();
        let mut good = Vec::with_capacity(parsed.len());
        let mut bad = Vec::new();
        for (i, r) in parsed.into_iter().enumerate() {
            match r {
                Ok(e) => good.push((i, e)),
                Err(errors) => bad.push(Rejection {
                    index: i,
                    id: serde_json::from_slice::<Value>(&raw[i])
                        .ok()
                        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string)),
                    errors,
                }),
            }
        }
        let batch = Batch {
            source: source.clone(),
            lines,
            raw: if keep_raw { raw } else { Vec::new() },
            good,
            bad,
            bytes,
        };
        if !emit(batch) {
            return Ok(());
        }
    }
}

fn progress(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut inputs = Vec::new();
    for f in &args.files {
        inputs.push(open(f)?);
    }
    let total_bytes: Option<u64> = inputs.iter().map(|(_, len, _)| *len).sum();
    let bar = progress(total_bytes);
    let totals = match &args.server {
        Some(url) => ingest_server(url, inputs, &bar)?,
        None => ingest_local(&args.store, args.max_future_skew, inputs, &bar)?,
    };
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "accepted={} duplicates={} rejected={}",
        totals.accepted, totals.duplicates, totals.rejected
    );
    let n = totals.accepted + totals.duplicates + totals.rejected;
    eprintln!(
        "{n} events in {secs:.2} s ({:.0} events/s)",
        n as f64 / secs.max(1e-9)
    );
    Ok(())
}

type Input = (Box<dyn BufRead + Send>, Option<u64>, String);

fn ingest_local(
    store: &StoreArgs,
    max_future_skew: chrono::Duration,
    inputs: Vec<Input>,
    bar: &ProgressBar,
) -> anyhow::Result<Totals> {
    let rt = super::runtime()?;
    rt.block_on(async {
        let options = crate::engine::EngineOptions {
            max_future_skew,
            ..Default::default()
        };
        let engine = super::open_engine(store, options).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
        let reader = std::thread::spawn(move || -> anyhow::Result<()> {
            for (r, _, source) in inputs {
                read_batches(r, source, BATCH, false, |b| tx.blocking_send(b).is_ok())?;
            }
            Ok(())
        });
        let mut totals = Totals::default();
        // Only the log is written here: the scoring state is derived from it
        // when a service or command opens the store, so folding the events
        // into this process's state would be thrown away at exit. The state
        // replayed at start gives the kinds of known entities; `pending`
        // carries those of new ones across batches, so role conflicts are
        // caught exactly as the service catches them.
        let mut pending = HashMap::new();
        while let Some(batch) = rx.recv().await {
            bar.inc(batch.bytes);
            let (report, _stored) = engine
                .store_checked(
                    batch.good,
                    batch.bad,
                    false,
                    false,
                    chrono::Utc::now(),
                    &mut pending,
                )
                .await?;
            totals.accepted += report.accepted;
            totals.duplicates += report.duplicates;
            totals.report(&batch.source, &batch.lines, &report.rejected);
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
        Ok(totals)
    })
}

fn ingest_server(url: &str, inputs: Vec<Input>, bar: &ProgressBar) -> anyhow::Result<Totals> {
    let endpoint = format!("{}/v1/events", url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut totals = Totals::default();
    let mut failure: Option<anyhow::Error> = None;
    for (r, _, source) in inputs {
        read_batches(r, source, SERVER_BATCH, true, |b| {
            bar.inc(b.bytes);
            // Lines that are not events never leave this machine.
            totals.report(&b.source, &b.lines, &b.bad);
            let keep: Vec<usize> = b.good.iter().map(|(i, _)| *i).collect();
            if keep.is_empty() {
                return true;
            }
            let mut body = Vec::new();
            for &i in &keep {
                body.extend_from_slice(b.raw[i].strip_suffix(b"\n").unwrap_or(&b.raw[i]));
                body.push(b'\n');
            }
            let lines: Vec<usize> = keep.iter().map(|&i| b.lines[i]).collect();
            match send(&agent, &endpoint, body) {
                Ok(report) => {
                    totals.accepted += report.0;
                    totals.duplicates += report.1;
                    totals.report(&b.source, &lines, &report.2);
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(totals)
}

fn send(
    agent: &ureq::Agent,
    endpoint: &str,
    body: Vec<u8>,
) -> anyhow::Result<(usize, usize, Vec<Rejection>)> {
    let mut resp = agent
        .post(endpoint)
        .header("Content-Type", "application/x-ndjson")
        .send(&body[..])
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status();
    let mut text = String::new();
    resp.body_mut()
        .as_reader()
        .read_to_string(&mut text)
        .context("cannot read the server's answer")?;
    if !status.is_success() {
        bail!("the server answered {status}: {text}");
    }
    let v: Value = serde_json::from_str(&text).context("the server's answer is not JSON")?;
    let count = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
    let rejected = v
        .get("rejected")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|r| Rejection {
                    index: r.get("index").and_then(Value::as_u64).unwrap_or(0) as usize,
                    id: r.get("id").and_then(Value::as_str).map(str::to_string),
                    errors: r
                        .get("errors")
                        .and_then(Value::as_array)
                        .map(|es| {
                            es.iter()
                                .map(|e| FieldError {
                                    field: e
                                        .get("field")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .to_string(),
                                    message: e
                                        .get("message")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((count("accepted"), count("duplicates"), rejected))
}
