//! A throwaway PostgreSQL for the tests, and the tests that only make sense
//! for the PostgreSQL backend (migrations, materialised scores, outages).
//! The behaviour both backends share is in `store.rs`.
//!
//! The server comes from `FUSION_TEST_DATABASE_URL` when set; otherwise one is
//! started per test process from the local binaries (`initdb`, `pg_ctl`), as
//! the `postgres` user when the tests run as root, with its data and unix
//! socket in a temporary directory and `fsync` on (durability is under test).
//! A detached watchdog stops it and deletes the directory when the test
//! process ends, however it ends. Each test gets its own database, so tests
//! run in parallel. Without a URL or binaries the tests fail and say why.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use fusion::domain::EntityId;
use fusion::store::{EventStore, PostgresStore, ScoreRow, StoreError};

const MISSING: &str = "the PostgreSQL tests need a server: install PostgreSQL \
    (`apt-get install postgresql`, which provides initdb and pg_ctl) or set \
    FUSION_TEST_DATABASE_URL to a database the tests may create databases in";

/// The process-wide server: its connection string (without a database name),
/// or why there is none.
static SHARED: LazyLock<Result<Shared, String>> = LazyLock::new(|| {
    if let Ok(url) = std::env::var("FUSION_TEST_DATABASE_URL") {
        return Ok(Shared {
            base: url,
            external: true,
            _server: None,
        });
    }
    let server = LocalServer::start()?;
    Ok(Shared {
        base: server.base_url(),
        external: false,
        _server: Some(server),
    })
});

struct Shared {
    base: String,
    /// Someone else's server: drop the databases we create there.
    external: bool,
    _server: Option<LocalServer>,
}

fn shared() -> &'static Shared {
    match &*SHARED {
        Ok(s) => s,
        Err(why) => panic!("{why}"),
    }
}

/// Runs `body` on a runtime of two workers with a fresh database (its
/// URL) and `n` stores connected to it, as `n` servers of one database
/// are (the tests of concurrent appends from several servers). The
/// database lives until `body` ends.
pub fn with_connected_stores<Fut: std::future::Future<Output = ()>>(
    n: usize,
    body: impl FnOnce(String, Vec<fusion::store::PostgresStore>) -> Fut,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        let mut stores = Vec::with_capacity(n);
        for _ in 0..n {
            stores.push(
                fusion::store::PostgresStore::connect(&db.url)
                    .await
                    .unwrap(),
            );
        }
        body(db.url.clone(), stores).await;
    });
}

/// A fresh, empty database on the shared server, for one test.
pub struct TestDb {
    pub url: String,
    name: String,
    base: &'static str,
    external: bool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let shared = shared();
        let name = create_database(&shared.base).await;
        TestDb {
            url: with_dbname(&shared.base, &name),
            name,
            base: &shared.base,
            external: shared.external,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A server of our own disappears whole at exit; someone else's keeps
        // what we leave, so clean up there. Drop cannot await: use a thread
        // with its own runtime.
        if !self.external {
            return;
        }
        let (base, name) = (self.base.to_string(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(client) = admin_client(&base).await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn admin_client(base: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn create_database(base: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "t_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = admin_client(base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e:?}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e:?}"));
    name
}

/// `base` with its database replaced by `name`, in either connection-string
/// form: `postgres://user@host:port/db?opts` or `key=value ...`.
fn with_dbname(base: &str, name: &str) -> String {
    if let Some(scheme_end) = base.find("://") {
        let (head, query) = match base.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (base, None),
        };
        let after = scheme_end + 3;
        let authority_end = head[after..].find('/').map_or(head.len(), |i| after + i);
        let mut url = format!("{}/{name}", &head[..authority_end]);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url
    } else {
        // In key=value form a later key wins.
        format!("{base} dbname={name}")
    }
}

/// A PostgreSQL server of our own, in a temporary directory.
pub struct LocalServer {
    bin: PathBuf,
    root: PathBuf,
    as_postgres: bool,
    port: u16,
    /// More `postgres` options (after the defaults, so they win).
    options: String,
}

const PORT: u16 = 5432;

impl LocalServer {
    /// initdb + start; a watchdog stops the server and removes its directory
    /// when this process ends.
    pub fn start() -> Result<LocalServer, String> {
        Self::start_with(PORT, &[], |_| String::new())
    }

    /// A server on `port` with `files` (name, contents, mode) written to
    /// its directory first and more `postgres` options made from that
    /// directory (e.g. TCP and TLS for the TLS tests).
    pub fn start_with(
        port: u16,
        files: &[(&str, &[u8], u32)],
        options: impl FnOnce(&Path) -> String,
    ) -> Result<LocalServer, String> {
        use std::os::unix::fs::PermissionsExt;
        let bin = find_bin_dir().ok_or_else(|| MISSING.to_string())?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "fusion-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sock"))
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        // PostgreSQL refuses to run as root.
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        for (name, contents, mode) in files {
            let path = root.join(name);
            std::fs::write(&path, contents)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                })
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let options = options(&root);
        let server = LocalServer {
            bin,
            root,
            as_postgres,
            port,
            options,
        };
        if as_postgres {
            server.run(
                Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&server.root),
            )?;
        }
        server.spawn_watchdog()?;
        let data = server.root.join("data");
        server.run(server.pg("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
        server.start_again()?;
        Ok(server)
    }

    pub fn base_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.root.join("sock").display(),
            self.port
        )
    }

    /// A URL to a database on this server (created by `create_db`).
    pub fn url(&self, db: &str) -> String {
        with_dbname(&self.base_url(), db)
    }

    pub async fn create_db(&self) -> String {
        create_database(&self.base_url()).await
    }

    /// `pg_ctl start -w`: returns once the server accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let opts = format!(
            "-k {} -p {} -c listen_addresses='' -c fsync=on -c max_connections=300 {}",
            self.root.join("sock").display(),
            self.port,
            self.options
        );
        self.run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(self.root.join("data"))
                .arg("-l")
                .arg(self.root.join("log"))
                .args(["-w", "-o", &opts, "start"])
                // Its own process group: a Ctrl-C meant for the tests must
                // not skip the watchdog's orderly stop.
                .process_group(0),
        )
    }

    /// `pg_ctl stop -m fast`: disconnects every client, then stops.
    pub fn stop(&self) -> Result<(), String> {
        self.run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(self.root.join("data"))
                .args(["-w", "-m", "fast", "stop"]),
        )
    }

    fn pg(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, cmd: &mut Command) -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed ({}): {}{}\nserver log: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
            ))
        }
    }

    /// A detached shell that outlives us: once this process is gone it stops
    /// the server (statics are never dropped, so no destructor would) and
    /// deletes the directory.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let runuser = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {runuser}'{pg_ctl}' -D '{data}' -m immediate stop; rm -rf '{root}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.root.join("data").display(),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the watchdog shell: {e}"))
    }
}

/// The directory holding `initdb` and `pg_ctl`: PATH first, then Debian's
/// versioned directories (newest first), where they are not on PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(d) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_tools(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

// ---------------------------------------------------------------------------
// Tests of what only the PostgreSQL backend does.

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn score(person: &str, brand: &str, score: f64) -> ScoreRow {
    ScoreRow {
        person: person.into(),
        brand: brand.into(),
        score,
        raw: score - 50.0,
        components: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        as_of: at(0),
    }
}

pub async fn client(url: &str) -> tokio_postgres::Client {
    admin_client(url)
        .await
        .expect("connect to the test database")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_even_when_two_servers_start_together() {
    let db = TestDb::new().await;
    let (a, b) = tokio::join!(
        PostgresStore::migrate(&db.url),
        PostgresStore::migrate(&db.url)
    );
    let mut all = [a.unwrap(), b.unwrap()].concat();
    all.sort();
    assert_eq!(
        all,
        [
            "0001_events",
            "0002_relationship_scores",
            "0003_event_digests",
            "0004_security",
            "0005_log_positions",
            "0010_dead_letters",
            "0011_snapshots",
            "0012_alerts",
            "0013_log_follow",
            "0014_snapshot_chunks",
            "0015_context_position",
        ]
    );
    assert!(PostgresStore::migrate(&db.url).await.unwrap().is_empty());
    // connect migrates too, and finds nothing left to do.
    let store = PostgresStore::connect(&db.url).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 0);
}

/// The example of docs/postgres.md, kept honest.
const TOP_ADVOCATES: &str = "SELECT person, score FROM relationship_scores \
    WHERE brand = $1 ORDER BY score DESC, person LIMIT 10";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialised_scores_are_replaced_and_readable_with_sql() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    store
        .write_scores(&[
            score("ann", "knit", 70.0),
            score("bob", "knit", 80.0),
            score("cat", "knit", 20.0),
            score("ann", "bistro", 90.0),
            // The same relationship twice in one batch: the last row wins.
            score("cat", "knit", 10.0),
        ])
        .await
        .unwrap();
    // A refresh replaces the table: what it does not name is gone.
    store
        .write_scores(&[
            score("ann", "knit", 95.0),
            score("bob", "knit", 80.0),
            score("cat", "knit", 10.0),
            score("ann", "bistro", 90.0),
        ])
        .await
        .unwrap();

    let sql = client(&db.url).await;
    let top: Vec<(String, f64)> = sql
        .query(TOP_ADVOCATES, &[&"knit"])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        top,
        [
            ("ann".into(), 95.0),
            ("bob".into(), 80.0),
            ("cat".into(), 10.0)
        ]
    );
    let row = sql
        .query_one(
            "SELECT raw, sentiment, sales, service, engagement, influence, values_, as_of \
             FROM relationship_scores WHERE person = 'ann' AND brand = 'knit'",
            &[],
        )
        .await
        .unwrap();
    let components: Vec<f64> = (1..7).map(|i| row.get(i)).collect();
    assert_eq!(row.get::<_, f64>(0), 45.0);
    assert_eq!(components, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(row.get::<_, DateTime<Utc>>(7), at(0));

    let ann = EntityId::new("ann").unwrap();
    assert_eq!(store.delete_scores_for(&ann).await.unwrap(), 2);
    // Erasing a brand also removes the scores of its relationships.
    store.erase(&EntityId::new("knit").unwrap()).await.unwrap();
    let left: i64 = sql
        .query_one("SELECT count(*) FROM relationship_scores", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_documented_in_the_database() {
    let db = TestDb::new().await;
    PostgresStore::migrate(&db.url).await.unwrap();
    let undocumented: Vec<String> = client(&db.url)
        .await
        .query(
            "SELECT c.table_name || '.' || c.column_name FROM information_schema.columns c \
             WHERE c.table_schema = 'public' \
               AND c.table_name IN ('events', 'entities', 'relationship_scores', \
                                    'api_keys', 'fusion_secrets', 'erasure_audit') \
               AND col_description((quote_ident(c.table_name))::regclass, c.ordinal_position) IS NULL \
               AND c.column_name <> 'id'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(undocumented, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("host={} port=5432 user=postgres", dir.path().display());
    match PostgresStore::connect(&url).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    match PostgresStore::connect("host=/x port=notaport").await {
        Err(StoreError::Internal(msg)) => assert!(msg.contains("invalid database url"), "{msg}"),
        other => panic!("expected Internal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_by_the_server_are_replaced_before_use() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    store
        .append(
            vec![crate::store::purchase("e1", 1, "ann", "knit")],
            fusion::store::AppendMode::EachEvent,
        )
        .await
        .unwrap();
    assert_eq!(store.count().await.unwrap(), 1);
    let killed: i64 = client(&db.url)
        .await
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) k",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1);
    // Every pooled connection is dead; Verified recycling notices and opens
    // new ones, so callers see no error at all.
    let appended = store
        .append(
            vec![crate::store::purchase("e2", 2, "ann", "knit")],
            fusion::store::AppendMode::EachEvent,
        )
        .await
        .unwrap();
    assert_eq!(appended.inserted(), [true]);
    assert_eq!(store.count().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_makes_the_store_unavailable_until_it_returns() {
    // Its own server: stopping the shared one would break the other tests.
    let server = LocalServer::start().unwrap_or_else(|why| panic!("{why}"));
    let url = server.url(&server.create_db().await);
    let store = PostgresStore::connect(&url).await.unwrap();
    store
        .append(
            vec![crate::store::purchase("e1", 1, "ann", "knit")],
            fusion::store::AppendMode::EachEvent,
        )
        .await
        .unwrap();

    server.stop().unwrap();
    let down = store
        .append(
            vec![crate::store::purchase("e2", 2, "ann", "knit")],
            fusion::store::AppendMode::EachEvent,
        )
        .await;
    assert!(
        matches!(down, Err(StoreError::Unavailable(_))),
        "append while down: {down:?}"
    );
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.scan().await,
        Err(StoreError::Unavailable(_))
    ));

    server.start_again().unwrap();
    store.ping().await.unwrap();
    let appended = store
        .append(
            vec![
                crate::store::purchase("e1", 1, "ann", "knit"),
                crate::store::purchase("e2", 2, "ann", "knit"),
            ],
            fusion::store::AppendMode::EachEvent,
        )
        .await
        .unwrap();
    // e1 was committed before the outage and survived it; e2 never was.
    assert_eq!(appended.inserted(), [false, true]);
    assert_eq!(store.count().await.unwrap(), 2);
}

/// Rows stored before migration 0003 have no digest: connecting fills them
/// from the stored bodies (and until then the body decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_rows_get_their_digests_when_the_service_connects() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    let events: Vec<_> = (0..25)
        .map(|i| crate::store::purchase(&format!("e{i}"), i, "ann", "knit"))
        .collect();
    store
        .append(events.clone(), fusion::store::AppendMode::EachEvent)
        .await
        .unwrap();
    let sql = client(&db.url).await;
    let digests = "SELECT id, digest FROM events ORDER BY id";
    let before: Vec<(String, Vec<u8>)> = sql
        .query(digests, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    sql.batch_execute("UPDATE events SET digest = NULL")
        .await
        .unwrap();
    drop(store);
    let store = PostgresStore::connect(&db.url).await.unwrap();
    let after: Vec<(String, Vec<u8>)> = sql
        .query(digests, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(after, before);
    let again = store
        .append(events, fusion::store::AppendMode::EachEvent)
        .await
        .unwrap();
    assert_eq!(again.duplicates(), 25);
}
