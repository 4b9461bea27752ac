//! `fusion ingest FILE…`: NDJSON event files (`-` for stdin) into the store
//! `serve` uses, or into a running server with `--server`. Prints accepted /
//! duplicate / rejected / warning counts; each rejected line, and each warning
//! (a field kept but not used by its type), is reported on stderr with its
//! file, line number and reasons.
//!
//! Locally, events go through the same checks as the service (validation,
//! role checks against the replayed log, group-committed appends); scores are
//! derived from the log by whoever opens it next. Reading and validating run
//! on their own threads, ahead of the commits, so the disk and the CPU overlap.
//! A line that is not JSON is rejected on its own (a file is not one request).
//! A byte order mark at the start of a file is skipped. A rejected line is
//! kept in the store's dead-letter store, as the service keeps a rejected
//! event (route `fusion ingest`, request `FILE:LINE`).
//!
//! With `--server`, requests are sized in bytes (`--request-bytes`, under the
//! server's `--max-body`), gzip-compressed unless `--no-gzip`; a request the
//! server finds too large (413) is split in two, down to a single line, which
//! is then reported as rejected; 503 and 507 are retried after the server's
//! `Retry-After`, a bounded number of times. Every line is sent, so the
//! server keeps each one it rejects in its dead-letter store.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::Value;

use super::{DeadLetterArgs, StoreArgs};
use crate::domain::Event;
use crate::http::rejected::{Arrival, reason_of};
use crate::ingest::{self, FieldError, Rejection, Validated, Warning};
use crate::score::ScoringModel;
use crate::store::dead_letters::{DeadLetters, MAX_LETTERS_PER_REQUEST, Retention};

/// Lines per batch handed to the engine.
const BATCH: usize = 20_000;
/// Bytes per batch handed to the engine.
const BATCH_BYTES: usize = 64 << 20;
/// Most lines per request with `--server` (the byte budget usually binds first).
const SERVER_BATCH: usize = 50_000;
/// Rejections printed in full; the rest are only counted.
const SHOW_REJECTIONS: usize = 50;
/// Tries of one request that the server answers 503 or 507.
const MAX_ATTEMPTS: u32 = 6;
/// Longest wait between two tries, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// NDJSON files; `-` reads standard input
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Send to a running server (e.g. http://127.0.0.1:8080) instead of the store
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: most bytes of lines per request; keep it under the server's --max-body
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_bytes: u64,
    /// With --server: send requests uncompressed (default: gzip)
    #[arg(long)]
    pub no_gzip: bool,
    /// API key for --server (an ingest or admin key)
    #[arg(
        long,
        env = "FUSION_API_KEY",
        hide_env_values = true,
        requires = "server"
    )]
    pub api_key: Option<String>,
    /// Trust this PEM CA certificate for an https --server (else the web's usual roots)
    #[arg(long, requires = "server")]
    pub ca_cert: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Refuse events dated more than this ahead of the clock (24h, 90m, 30s, 2d;
    /// with --server, the server's own setting applies)
    #[arg(long, default_value = "24h", value_parser = super::future_skew)]
    pub max_future_skew: chrono::Duration,
    /// Locally, rejected lines are kept in the store's dead-letter store
    /// (as the service keeps them) with this retention
    #[command(flatten)]
    pub dead_letters: DeadLetterArgs,
}

#[derive(Debug, Default)]
struct Totals {
    accepted: usize,
    duplicates: usize,
    rejected: usize,
    warnings: usize,
    shown: usize,
}

impl Totals {
    /// Counts `count` rejections and prints the first ones of `rejected`;
    /// `lines` maps an index in the request to its line number.
    fn report(&mut self, source: &str, lines: &[usize], rejected: &[Rejection], count: usize) {
        self.rejected += count;
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

    fn warn(&mut self, source: &str, lines: &[usize], warnings: &[Warning]) {
        self.warnings += warnings.len();
        for w in warnings {
            if self.shown < SHOW_REJECTIONS {
                eprintln!(
                    "warning {source}:{} (id {}): {}: {}",
                    lines.get(w.index).copied().unwrap_or(0),
                    w.id.as_deref().unwrap_or("?"),
                    w.field,
                    w.message
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
    /// Raw lines: what `--server` sends, and what a rejected line is kept as.
    raw: Vec<Vec<u8>>,
    good: Vec<(usize, Event)>,
    bad: Vec<Rejection>,
    warnings: Vec<Warning>,
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

/// Reads a file in batches of non-blank lines (at most `size` lines, and
/// `max_bytes` unless one line is larger) and validates them in parallel.
fn read_batches(
    mut reader: Box<dyn BufRead + Send>,
    source: String,
    size: usize,
    max_bytes: usize,
    model: &ScoringModel,
    mut emit: impl FnMut(Batch) -> bool,
) -> anyhow::Result<()> {
    let mut line_no = 0usize;
    loop {
        let mut raw: Vec<Vec<u8>> = Vec::with_capacity(size.min(4096));
        let mut lines = Vec::with_capacity(size.min(4096));
        let mut bytes = 0u64;
        let mut held = 0usize;
        while raw.len() < size && (raw.is_empty() || held < max_bytes) {
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("cannot read {source}"))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            bytes += n as u64;
            if line_no == 1 && buf.starts_with(BOM) {
                buf.drain(..BOM.len());
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            held += buf.len();
            raw.push(buf);
            lines.push(line_no);
        }
        if raw.is_empty() {
            return Ok(());
        }
        let parsed: Vec<Result<Validated, Rejection>> = raw
            .par_iter()
            .enumerate()
            .map(|(i, line)| ingest::parse_event(line, i, &model.currency))
            .collect();
        let mut good = Vec::with_capacity(parsed.len());
        let mut bad = Vec::new();
        let mut warnings = Vec::new();
        for (i, r) in parsed.into_iter().enumerate() {
            match r {
                Ok(v) => {
                    warnings.extend(v.warnings.into_iter().map(|w| Warning {
                        index: i,
                        id: Some(v.event.id.to_string()),
                        field: w.field,
                        message: w.message,
                    }));
                    good.push((i, v.event));
                }
                Err(rejection) => bad.push(rejection),
            }
        }
        let batch = Batch {
            source: source.clone(),
            lines,
            raw,
            good,
            bad,
            warnings,
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
        Some(url) => {
            let client = Client::new(
                url,
                !args.no_gzip,
                args.api_key.clone(),
                args.ca_cert.as_deref(),
            )?;
            let budget = usize::try_from(args.request_bytes).unwrap_or(usize::MAX);
            ingest_server(&client, budget, &args.store, inputs, &bar)?
        }
        None => ingest_local(
            &args.store,
            args.dead_letters.retention(),
            args.max_future_skew,
            inputs,
            &bar,
        )?,
    };
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    writeln!(
        super::stdout(),
        "accepted={} duplicates={} rejected={} warnings={}",
        totals.accepted,
        totals.duplicates,
        totals.rejected,
        totals.warnings
    )?;
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
    retention: Retention,
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
        let letters = DeadLetters::beside(engine.store(), &store.data_dir)
            .context("cannot open the dead-letter store")?;
        let model = engine.model().clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
        let reader = std::thread::spawn(move || -> anyhow::Result<()> {
            for (r, _, source) in inputs {
                // The raw lines stay until the batch is stored: a rejected
                // one is kept as it was read.
                read_batches(r, source, BATCH, BATCH_BYTES, &model, |b| {
                    tx.blocking_send(b).is_ok()
                })?;
            }
            Ok(())
        });
        let mut totals = Totals::default();
        // Only the log is written here: the scoring state is derived from it
        // when a service or command opens the store, so folding the events
        // into this process's state would be thrown away at exit. The state
        // replayed at start gives the kinds of known entities; the engine
        // keeps those of new ones across batches, so role conflicts are
        // caught exactly as the service catches them.
        while let Some(batch) = rx.recv().await {
            bar.inc(batch.bytes);
            let report = engine
                .store_checked(batch.good, batch.bad, false, chrono::Utc::now())
                .await?;
            totals.accepted += report.accepted;
            totals.duplicates += report.duplicates;
            keep_rejected(
                &letters,
                retention,
                (&batch.source, &batch.lines, &batch.raw),
                &report.rejected,
            )
            .await?;
            totals.report(
                &batch.source,
                &batch.lines,
                &report.rejected,
                report.rejected_count,
            );
            totals.warn(&batch.source, &batch.lines, &batch.warnings);
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
        engine.store().close().await;
        Ok(totals)
    })
}

/// Keeps a batch's rejected lines in the dead-letter store, as the
/// service keeps a request's: route `fusion ingest`, the request named by
/// file and line, at most `MAX_LETTERS_PER_REQUEST` per batch (the rest
/// counted).
async fn keep_rejected(
    letters: &DeadLetters,
    retention: Retention,
    (source, lines, raw): (&str, &[usize], &[Vec<u8>]),
    rejected: &[Rejection],
) -> anyhow::Result<()> {
    if rejected.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let made = rejected
        .iter()
        .take(MAX_LETTERS_PER_REQUEST)
        .map(|r| {
            let line = lines.get(r.index).copied().unwrap_or(0);
            let arrival = Arrival::command(&format!("{source}:{line}"), now);
            arrival.letter(
                reason_of(&r.errors),
                r.errors.clone(),
                raw.get(r.index).map_or(&[][..], |l| l.trim_ascii_end()),
                rejected.len(),
                None,
            )
        })
        .collect();
    crate::http::rejected::keep(letters, retention, made, rejected.len())
        .await
        .context("cannot keep the rejected lines in the dead-letter store")
}

/// Every line goes to the server, which answers for each and keeps each
/// one it rejects in its dead-letter store (issue 16: a rejected line must
/// not live only on this machine's stderr). Lines are still read here first
/// (with `--model`'s currency table, the built-in one by default: keep it
/// the server's) for the request sizes and the warnings. A line that is not
/// JSON would make a whole NDJSON request malformed, so each such line goes
/// alone: the server keeps it as a malformed body.
fn ingest_server(
    client: &Client,
    request_bytes: usize,
    store: &StoreArgs,
    inputs: Vec<Input>,
    bar: &ProgressBar,
) -> anyhow::Result<Totals> {
    let model = super::load_model(store.model.as_deref())?;
    let mut totals = Totals::default();
    let mut failure: Option<anyhow::Error> = None;
    for (r, _, source) in inputs {
        read_batches(r, source, SERVER_BATCH, request_bytes, &model, |b| {
            bar.inc(b.bytes);
            totals.warn(&b.source, &b.lines, &b.warnings);
            let (texts, malformed): (Vec<usize>, Vec<usize>) =
                (0..b.raw.len()).partition(|&i| ingest::is_json_text(&b.raw[i]));
            let sent = if texts.is_empty() {
                Ok(())
            } else {
                send_lines(client, &b, &texts, &mut totals)
            }
            .and_then(|()| {
                malformed
                    .iter()
                    .try_for_each(|&i| send_malformed(client, &b, i, &mut totals))
            });
            match sent {
                Ok(()) => true,
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

/// Sends the lines `keep` of a batch as one request; a request the server
/// finds too large is split in two, down to one line, which is then
/// reported as rejected.
fn send_lines(
    client: &Client,
    b: &Batch,
    keep: &[usize],
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let mut body = Vec::new();
    for &i in keep {
        body.extend_from_slice(b.raw[i].strip_suffix(b"\n").unwrap_or(&b.raw[i]));
        body.push(b'\n');
    }
    let lines: Vec<usize> = keep.iter().map(|&i| b.lines[i]).collect();
    match client.post(&body)? {
        Answer::Report(r) => {
            totals.accepted += r.accepted;
            totals.duplicates += r.duplicates;
            totals.report(&b.source, &lines, &r.rejected, r.rejected_count);
            Ok(())
        }
        // Every line sent together is JSON: the server found otherwise.
        Answer::Malformed(text) => bail!("the server found a request malformed: {text}"),
        Answer::TooLarge if keep.len() > 1 => {
            let (first, second) = keep.split_at(keep.len() / 2);
            send_lines(client, b, first, totals)?;
            send_lines(client, b, second, totals)
        }
        Answer::TooLarge => {
            let rejection = Rejection {
                index: 0,
                id: b
                    .good
                    .iter()
                    .find(|(i, _)| *i == keep[0])
                    .map(|(_, e)| e.id.to_string()),
                errors: vec![FieldError {
                    field: String::new(),
                    message: "the line is larger than the server accepts in one request (413)"
                        .to_string(),
                }],
            };
            totals.report(&b.source, &lines, &[rejection], 1);
            Ok(())
        }
    }
}

/// Sends line `i` of a batch, which is not JSON, alone: the server answers
/// 400 and keeps it as a malformed body; it is reported with this
/// command's own reading of it.
fn send_malformed(client: &Client, b: &Batch, i: usize, totals: &mut Totals) -> anyhow::Result<()> {
    let line = b.raw[i].strip_suffix(b"\n").unwrap_or(&b.raw[i]);
    let lines = [b.lines[i]];
    match client.post(line)? {
        Answer::Malformed(_) | Answer::TooLarge => {
            let mut rejection = b
                .bad
                .iter()
                .find(|r| r.index == i)
                .cloned()
                .context("a line that is not JSON has no rejection of its own")?;
            rejection.index = 0;
            totals.report(&b.source, &lines, &[rejection], 1);
            Ok(())
        }
        Answer::Report(r) => {
            // A server that reads the line as JSON after all: its answer.
            totals.accepted += r.accepted;
            totals.duplicates += r.duplicates;
            totals.report(&b.source, &lines, &r.rejected, r.rejected_count);
            Ok(())
        }
    }
}

/// A server's answer to one request of events.
enum Answer {
    Report(ServerReport),
    /// 413: the request is larger than the server accepts.
    TooLarge,
    /// 400 on the body as a whole, with the server's detail.
    Malformed(String),
}

struct ServerReport {
    accepted: usize,
    duplicates: usize,
    rejected: Vec<Rejection>,
    rejected_count: usize,
}

/// The client side of `POST /v1/events`.
struct Client {
    agent: ureq::Agent,
    endpoint: String,
    gzip: bool,
    /// Sent as `Authorization: Bearer`.
    api_key: Option<String>,
}

impl Client {
    /// `ca_cert`: a PEM CA to trust for an https server.
    fn new(
        url: &str,
        gzip: bool,
        api_key: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Ok(Self {
            agent: config.build().into(),
            endpoint: format!("{}/v1/events", url.trim_end_matches('/')),
            gzip,
            api_key,
        })
    }

    /// Posts an NDJSON body; retries 429, 503 and 507 after `Retry-After`
    /// (nothing of the request was stored, and an id sent twice is one
    /// event anyway).
    fn post(&self, ndjson: &[u8]) -> anyhow::Result<Answer> {
        let compressed;
        let (body, encoding) = if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(ndjson.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(ndjson)?;
            compressed = gz.finish()?;
            (&compressed[..], "gzip")
        } else {
            (ndjson, "identity")
        };
        let endpoint = &self.endpoint;
        let mut attempt = 1;
        loop {
            let mut req = self
                .agent
                .post(endpoint)
                .header("Content-Type", "application/x-ndjson")
                .header("Content-Encoding", encoding);
            if let Some(key) = &self.api_key {
                req = req.header("Authorization", &format!("Bearer {key}"));
            }
            let mut resp = req
                .send(body)
                .with_context(|| format!("cannot reach {endpoint}"))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let mut text = String::new();
            resp.body_mut()
                .as_reader()
                .read_to_string(&mut text)
                .context("cannot read the server's answer")?;
            match status {
                200..=299 => return Ok(Answer::Report(server_report(&text)?)),
                413 => return Ok(Answer::TooLarge),
                400 => return Ok(Answer::Malformed(text)),
                429 | 503 | 507 if attempt < MAX_ATTEMPTS => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(1)).min(MAX_RETRY_WAIT);
                    tracing::warn!(status, attempt, ?wait, "the server asks to retry later");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                _ => bail!(
                    "the server answered {status}{}: {text}",
                    if attempt > 1 {
                        format!(" after {attempt} attempts")
                    } else {
                        String::new()
                    }
                ),
            }
        }
    }
}

fn server_report(text: &str) -> anyhow::Result<ServerReport> {
    let v: Value = serde_json::from_str(text).context("the server's answer is not JSON")?;
    let count = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
    let rejected: Vec<Rejection> = v
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
    // A server from before `rejected_count` lists every rejection.
    let rejected_count = v
        .get("rejected_count")
        .and_then(Value::as_u64)
        .map_or(rejected.len(), |n| n as usize);
    Ok(ServerReport {
        accepted: count("accepted"),
        duplicates: count("duplicates"),
        rejected,
        rejected_count,
    })
}
