//! Issue 12 on PostgreSQL: keys every server shares, erasure that reaches
//! every copy (the materialised table included), and TLS to the database.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use fusion::store::{EventStore, PostgresStore, StoreError};
use serde_json::json;

use crate::certs::pki;
use crate::pg::LocalServer;
use crate::pg_e2e::{Sql, fresh_db, poll};
use crate::security::{call, keys};
use crate::support::{Launch, Server, bin, free_port};

fn on_database(dir: &std::path::Path, url: &str, env: &[(&str, &str)]) -> Server {
    Server::launch(
        dir,
        &Launch {
            extra: &["--database-url", url, "--demo"],
            env,
            ..Launch::default()
        },
    )
}

#[test]
fn keys_on_postgres_reach_every_server_within_seconds() {
    let db = fresh_db();
    let store = ["--database-url", db.url.as_str()];
    let admin = keys(&["create", "--role", "admin"], &store);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let servers = [
        on_database(d1.path(), &db.url, &[]),
        on_database(d2.path(), &db.url, &[]),
    ];
    for s in &servers {
        assert_eq!(call(s, "GET", "/v1/brands/sweater", None, None).status, 401);
        assert_eq!(
            call(s, "GET", "/v1/brands/sweater", Some(&admin), None).status,
            200
        );
    }
    let read = keys(&["create", "--role", "read"], &store);
    let status =
        |s: &Server, key: &str| call(s, "GET", "/v1/brands/sweater", Some(key), None).status;
    poll(
        "both servers to accept the new key",
        Duration::from_secs(30),
        || {
            servers
                .iter()
                .all(|s| status(s, &read) == 200)
                .then_some(())
        },
    );
    keys(&["revoke", &read], &store);
    poll(
        "both servers to refuse the revoked key",
        Duration::from_secs(30),
        || {
            servers
                .iter()
                .all(|s| status(s, &read) == 401)
                .then_some(())
        },
    );
    // A session made on one server is good on the other (one signing secret).
    let r = call(&servers[0], "POST", "/v1/session", Some(&admin), None);
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let other = servers[1].request("GET", "/v1/brands/sweater", &[("Cookie", &cookie)], None);
    assert_eq!(other.status, 200);
}

/// The (person, brand) pairs the API lists for these brands.
fn served(s: &Server, key: &str, brands: &[String]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for b in brands {
        let r = call(
            s,
            "GET",
            &format!("/v1/brands/{b}/relationships?limit=1000"),
            Some(key),
            None,
        );
        if r.status == 404 {
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        for item in r.body["items"].as_array().unwrap() {
            out.insert((item["person"].as_str().unwrap().into(), b.clone()));
        }
    }
    out
}

fn table(sql: &Sql) -> BTreeSet<(String, String)> {
    sql.query("SELECT person, brand FROM relationship_scores", &[])
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Regression: the materialisation upserted the current scores and deleted
/// only an erased entity's own rows, so a relationship that vanished for
/// another reason (consent withdrawn; a follower's relationship that
/// existed only through an erased influencer) kept a stale row.
#[test]
fn no_row_survives_for_a_relationship_the_api_no_longer_serves_and_erasure_reaches_every_copy() {
    let db = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let admin = "p".repeat(40);
    let s = on_database(dir.path(), &db.url, &[("FUSION_ADMIN_KEY", &admin)]);
    let sql = Sql::connect(&db.url);
    let brands: Vec<String> = ["sweater", "bistro"].map(String::from).to_vec();
    let agree = |what: &str| {
        poll(what, Duration::from_secs(30), || {
            let api = served(&s, &admin, &brands);
            (table(&sql) == api).then_some(api)
        })
    };
    let before = agree("the table to hold what the API serves");
    let fans: Vec<&(String, String)> = before
        .iter()
        .filter(|(p, _)| p.starts_with("fan"))
        .collect();
    assert!(
        fans.len() >= 6,
        "the fans' relationships through the artist: {before:?}"
    );

    let withdraw = json!({"id": "fan2-withdraws", "type": "consent", "time": "2026-11-14T00:00:00Z",
                          "person": "fan2", "granted": false});
    assert_eq!(
        call(&s, "POST", "/v1/events", Some(&admin), Some(&withdraw)).status,
        200
    );
    let erased_events = sql.count(
        "SELECT count(*) FROM events WHERE 'artist' = ANY(refs)",
        &[],
    );
    assert!(erased_events > 0);
    let r = call(&s, "DELETE", "/v1/entities/artist", Some(&admin), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events_removed"], erased_events);

    let after = agree("the table to lose what the API no longer serves");
    let vanished: Vec<_> = before.difference(&after).collect();
    assert!(
        vanished
            .iter()
            .any(|(p, _)| p.starts_with("fan") && p != "fan2"),
        "a follower's relationship through the artist vanished: {vanished:?}"
    );
    assert!(
        after
            .iter()
            .all(|(p, b)| p != "fan2" && p != "artist" && b != "artist")
    );
    for (person, brand) in &vanished {
        let r = call(
            &s,
            "GET",
            &format!("/v1/relationships/{person}/{brand}"),
            Some(&admin),
            None,
        );
        assert_eq!(
            r.status, 404,
            "{person}-{brand} is still served: {}",
            r.body
        );
    }
    // Every copy that exists: the log, the registrations, the table; and the audit.
    assert_eq!(
        sql.count(
            "SELECT count(*) FROM events WHERE 'artist' = ANY(refs)",
            &[]
        ),
        0
    );
    assert_eq!(
        sql.count("SELECT count(*) FROM entities WHERE id = 'artist'", &[]),
        0
    );
    let audit = sql.query(
        "SELECT key_id, subject_hash, events FROM erasure_audit",
        &[],
    );
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0].get::<_, Option<String>>(0).as_deref(),
        Some("bootstrap")
    );
    assert_eq!(audit[0].get::<_, Option<i64>>(2), Some(erased_events));
    let salt: Vec<u8> = sql.query(
        "SELECT value FROM fusion_secrets WHERE name = 'erasure-salt'",
        &[],
    )[0]
    .get(0);
    assert_eq!(
        audit[0].get::<_, String>(1),
        fusion::auth::subject_hash(&salt, "artist")
    );
    let dump = sql.count(
        "SELECT count(*) FROM erasure_audit WHERE subject_hash LIKE '%artist%' OR key_id LIKE '%artist%'",
        &[],
    );
    assert_eq!(dump, 0);
}

/// A PostgreSQL of its own that speaks TLS on 127.0.0.1 with a certificate
/// for `localhost` from a CA made here.
fn tls_server(pki: &crate::certs::Pki) -> (LocalServer, u16) {
    let port = free_port();
    let cert = std::fs::read(&pki.cert).unwrap();
    let key = std::fs::read(&pki.key).unwrap();
    let server = LocalServer::start_with(
        port,
        &[("server.crt", &cert, 0o644), ("server.key", &key, 0o600)],
        |root| {
            format!(
                "-c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                root.join("server.crt").display(),
                root.join("server.key").display()
            )
        },
    )
    .unwrap_or_else(|why| panic!("{why}"));
    (server, port)
}

/// One runtime for the whole test: a store's connections live on the
/// runtime that opened them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let pki = pki(&["localhost"]);
    let (server, port) = tls_server(&pki);
    let db = server.create_db().await;
    let ca = pki.ca.display().to_string();
    let url = |host: &str, mode: &str, root: &str| {
        format!(
            "host={host} port={port} user=postgres dbname={db} sslmode={mode} sslrootcert={root}"
        )
    };
    async fn connect(u: String) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::connect(&u).await?;
        store.count().await?;
        Ok(store)
    }

    // verify-full: the chain and the name.
    let store = connect(url("localhost", "verify-full", &ca)).await.unwrap();
    let sql = crate::pg::client(&server.url(&db)).await;
    let encrypted: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'fusion' AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the pool's connections use TLS");
    drop(store);
    // The certificate names localhost, not 127.0.0.1: verify-full refuses,
    // verify-ca (the chain only) accepts.
    let wrong_name = connect(url("127.0.0.1", "verify-full", &ca))
        .await
        .unwrap_err();
    assert!(
        wrong_name
            .to_string()
            .to_lowercase()
            .contains("certificate"),
        "{wrong_name}"
    );
    connect(url("127.0.0.1", "verify-ca", &ca)).await.unwrap();
    // Another CA is not trusted, whatever the name.
    let stranger = crate::certs::pki(&["localhost"]);
    let stranger_ca = stranger.ca.display().to_string();
    assert!(
        connect(url("localhost", "verify-full", &stranger_ca))
            .await
            .is_err()
    );
    assert!(
        connect(url("localhost", "verify-ca", &stranger_ca))
            .await
            .is_err()
    );
    // require: encrypted, certificate unchecked (libpq's meaning).
    let require = format!("host=127.0.0.1 port={port} user=postgres dbname={db} sslmode=require");
    connect(require).await.unwrap();

    // The command line takes the same strings.
    let out = Command::new(bin())
        .args([
            "migrate",
            "--database-url",
            &url("localhost", "verify-full", &ca),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
