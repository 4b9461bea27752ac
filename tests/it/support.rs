//! Shared test support: a real `fusion serve` process on a free loopback
//! port with its own store (embedded, or a PostgreSQL database), and a small
//! JSON client for it.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const STORY: &str = include_str!("../../fixtures/seed_story.ndjson");

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fusion")
}

/// A loopback port that is free now, for a child process to bind.
///
/// Not from the kernel's ephemeral range (`ip_local_port_range`): the tests'
/// own outgoing connections draw their local ports from there, and one took
/// a drawn port before the server bound it (CI, 2026-11-30). Ports below the
/// range are handed out in turn from a start that depends on the process id,
/// so no two draws in one test run repeat, and two runs rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(20_000));
    let span = high - low;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = (low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {high}")
}

/// A request path for a route `pattern` of the access table or the spec,
/// with `person` for `{id}` and `{person}` and `brand` for `{brand}`, that
/// ends by itself: the change feed never does, so it resumes from before
/// its window, which answers a reset and ends. Tests that walk every route
/// use it, so a new streaming route is handled once.
pub fn walkable_path(pattern: &str, person: &str, brand: &str) -> String {
    let path = pattern
        .replace("{id}", person)
        .replace("{person}", person)
        .replace("{brand}", brand);
    if pattern == "/v1/stream" {
        return format!("{path}?last_event_id=0");
    }
    path
}

/// A running `fusion serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    agent: ureq::Agent,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    pub body: Value,
    /// Every header, names lowercase, in order (Set-Cookie may repeat).
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How to start a server beyond the defaults of `Server::start`.
#[derive(Default)]
pub struct Launch<'a> {
    pub extra: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Serve HTTPS (the args carry --tls-cert/--tls-key) and trust this PEM CA.
    pub ca_pem: Option<&'a [u8]>,
}

impl Server {
    /// The value of the unlabelled metric `name` on `/metrics` (0 when
    /// absent).
    pub fn metric(&self, name: &str) -> f64 {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200);
        let text = r
            .body
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| r.body.to_string());
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or(0.0)
    }

    /// Starts a server on `data_dir` with extra arguments; waits until ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::launch(
            data_dir,
            &Launch {
                extra,
                ..Launch::default()
            },
        )
    }

    /// `start` with extra environment variables (the fault-injection hook).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(
            data_dir,
            &Launch {
                extra,
                env,
                ..Launch::default()
            },
        )
    }

    /// Starts a server as `launch` says; waits until ready. A free port is
    /// only free when it is drawn: another test's server can take it before
    /// this one binds. When the child exits early and its port is now taken,
    /// it lost that race, and it is started again on another port (at most
    /// 5 times); any other early exit fails the test.
    pub fn launch(data_dir: &Path, launch: &Launch) -> Server {
        for attempt in 1..=5 {
            let port = free_port();
            match Server::launch_on(data_dir, launch, port) {
                Ok(server) => return server,
                Err(status) => {
                    let port_taken = TcpListener::bind(("127.0.0.1", port)).is_err();
                    assert!(
                        port_taken && attempt < 5,
                        "fusion serve exited early: {status}"
                    );
                    eprintln!("port {port} was taken before fusion serve bound it; retrying");
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn launch_on(
        data_dir: &Path,
        launch: &Launch,
        port: u16,
    ) -> Result<Server, std::process::ExitStatus> {
        let bind = format!("127.0.0.1:{port}");
        let child = Command::new(bin())
            .args(["serve", "--bind", &bind, "--data-dir"])
            .arg(data_dir)
            .args(launch.extra)
            // Read-your-writes on rankings too, as the tests before issue
            // #11 expect; tests of staleness pass their own.
            .args(
                (!launch.extra.contains(&"--staleness"))
                    .then_some(["--staleness", "0"])
                    .into_iter()
                    .flatten(),
            )
            .env("RUST_LOG", "warn")
            .envs(launch.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fusion serve");
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)));
        if let Some(pem) = launch.ca_pem {
            let ca = ureq::tls::Certificate::from_pem(pem).expect("a PEM CA certificate");
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                    .build(),
            );
        }
        let scheme = if launch.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let mut server = Server {
            child,
            base: format!("{scheme}://{bind}"),
            data_dir: data_dir.to_path_buf(),
            agent: config.build().into(),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Any request: method, path, extra headers, and a body with its
    /// content type.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let sent = match body {
            Some((content_type, bytes)) => self.agent.run(
                req.header("Content-Type", content_type)
                    .body(bytes)
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        Self::reply(sent)
    }

    /// Asks the server to stop (SIGTERM) and answers its exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.child.wait().unwrap()
    }

    /// Starts a server on the PostgreSQL database at `url` (`--database-url`)
    /// with extra arguments; waits until ready. `data_dir` is still given so
    /// nothing falls back to ./data if the flag were ignored.
    pub fn start_on_database(data_dir: &Path, url: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--database-url", url];
        args.extend_from_slice(extra);
        Server::start(data_dir, &args)
    }

    /// Polls /readyz until it answers 200, for at most 60 s; the child's
    /// exit status if it exits first.
    fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.agent.get(&format!("{}/readyz", self.base)).call()
                && r.status() == 200
                && self.listens_itself()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "fusion serve did not become ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process listening on the server's port is this child.
    /// Two tests can draw the same free port; the second server then fails
    /// to bind, but its `/readyz` poll could be answered by the first one
    /// before it exits, and the test would run against another test's
    /// server (`http::oversized_bodies_are_413` once got 200 that way).
    /// Linux: the listening socket's inode (`/proc/net/tcp`) must be one of
    /// the child's descriptors.
    fn listens_itself(&self) -> bool {
        let port = self
            .base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else { return false };
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let wanted = format!(":{port:04X}");
        let inodes: Vec<String> = tcp
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // local address, state 0A (LISTEN), inode
                (f.len() > 9 && f[1].ends_with(&wanted) && f[3] == "0A")
                    .then(|| format!("socket:[{}]", f[9]))
            })
            .collect();
        let fds = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(fds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|t| inodes.iter().any(|i| t.to_str() == Some(i.as_str())))
            })
    }

    fn reply(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut resp = resp.expect("request failed");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut text = String::new();
        resp.body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .unwrap();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            content_type,
            retry_after,
            body,
            headers,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::reply(self.agent.get(&format!("{}{path}", self.base)).call())
    }

    pub fn delete(&self, path: &str) -> Reply {
        Self::reply(self.agent.delete(&format!("{}{path}", self.base)).call())
    }

    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        Self::reply(
            self.agent
                .post(&format!("{}{path}", self.base))
                .header("Content-Type", content_type)
                .send(body),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, "application/json", body.to_string().as_bytes())
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Reply {
        Self::reply(
            self.agent
                .put(&format!("{}{path}", self.base))
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes()),
        )
    }

    pub fn post_ndjson(&self, body: &str) -> Reply {
        self.post("/v1/events", "application/x-ndjson", body.as_bytes())
    }

    /// Score of a relationship at `at`, 50 when there is none.
    pub fn score(&self, person: &str, brand: &str, at: &str) -> f64 {
        let r = self.get(&format!("/v1/relationships/{person}/{brand}?at={at}"));
        match r.status {
            200 => r.body["score"].as_f64().unwrap(),
            404 => 50.0,
            s => panic!("unexpected status {s}: {}", r.body),
        }
    }

    pub fn event_count(&self) -> u64 {
        self.get("/readyz").body["events"].as_u64().unwrap()
    }

    /// Sends SIGKILL (as a crash would) while others may still use this
    /// server, e.g. a stream posting from a scoped thread: the process dies
    /// at once, and `Drop` reaps it.
    pub fn sigkill(&self) {
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Stops the process the hard way (as a crash would).
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn story_lines() -> Vec<&'static str> {
    STORY.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// An explanation of a state built from `log` (`ScoreState::build` gives
/// event `i` of the log position `i`), its events looked up there.
pub fn explain(
    state: &fusion::score::ScoreState,
    log: &[fusion::domain::Event],
    person: &fusion::domain::EntityId,
    brand: &fusion::domain::EntityId,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<fusion::score::Explanation> {
    state
        .explain(person, brand, at)
        .map(|draft| draft.finish(|p| log.get(p as usize)))
}

/// A log held in memory, for tests that feed a state in arrival order as a
/// store would: each event gets the next position, a batch the state
/// declines (late events) builds it again from the whole log, as the
/// engine does from its store.
pub struct MemoryLog {
    model: std::sync::Arc<fusion::score::ScoringModel>,
    /// Every event, by position.
    pub events: Vec<fusion::domain::Event>,
    /// The state of everything appended.
    pub state: fusion::score::ScoreState,
}

impl MemoryLog {
    /// An empty log.
    pub fn new(model: std::sync::Arc<fusion::score::ScoringModel>) -> MemoryLog {
        MemoryLog {
            state: fusion::score::ScoreState::new(std::sync::Arc::clone(&model)),
            model,
            events: Vec::new(),
        }
    }

    /// Appends a batch and folds it (or builds the state again).
    pub fn append(&mut self, batch: Vec<fusion::domain::Event>) {
        let mut logged = Vec::with_capacity(batch.len());
        for event in batch {
            logged.push(fusion::domain::Logged {
                position: self.events.len() as u64,
                event: event.clone(),
            });
            self.events.push(event);
        }
        if !self.state.apply(logged) {
            let log = self
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| fusion::domain::Logged {
                    position: i as u64,
                    event: e.clone(),
                })
                .collect();
            self.state = fusion::score::ScoreState::from_log(
                std::sync::Arc::clone(&self.model),
                Vec::new(),
                log,
            );
        }
    }
}

/// A body as two answers to the same question compare: without the
/// request's own id, which every problem carries.
pub fn comparable(mut body: Value) -> Value {
    if let Some(problem) = body.as_object_mut() {
        problem.remove("request_id");
    }
    body
}

/// A `fusion generate` stream as the service takes it: written as NDJSON,
/// parsed and validated against the default model (none rejected), in the
/// generator's (time) order.
pub fn generated_events(config: &fusion::generate::GenerateConfig) -> Vec<fusion::domain::Event> {
    let mut out = Vec::new();
    fusion::generate::write_ndjson(config, &mut out).unwrap();
    let values = fusion::ingest::parse_ndjson(&out).unwrap();
    let checked = fusion::ingest::validate_all(
        &values,
        &fusion::score::ScoringModel::default_model().currency,
    );
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    checked.good.into_iter().map(|(_, e)| e).collect()
}
