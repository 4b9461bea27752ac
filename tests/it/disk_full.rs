//! A full disk under the embedded store (issue #9, item 7), on a real full
//! disk: a small tmpfs that the test fills. The tests run as root (here and
//! in CI); a mount that fails fails the test, it never skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::resilience::poll;
use crate::support::Server;

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (run it as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `file` until the file system refuses (ENOSPC).
fn fill(file: &Path) {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Small writes take what the big ones left.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

fn batch(first: usize, n: usize) -> String {
    let text = "a long review of the knitwear, ".repeat(30);
    (first..first + n)
        .map(|i| {
            json!({"id": format!("e{i}"), "type": "post", "time": "2026-11-02T10:00:00Z",
                   "person": format!("p{}", i % 50), "brand": "knit", "text": text, "sentiment": 0.6})
            .to_string()
                + "\n"
        })
        .collect()
}

/// Regression: on a full disk a write answered 500 "internal error" with no
/// Retry-After, `/readyz` still said ready, and after space was freed every
/// write kept failing until a restart (redb refuses everything after an I/O
/// error until it is reopened). Now: 507 with Retry-After, not ready with
/// the reason, ready again by itself once there is space, and every
/// acknowledged event is there after a restart.
#[test]
fn a_full_disk_answers_507_says_not_ready_and_recovers_by_itself() {
    let disk = Tmpfs::mount("8m");
    let data: PathBuf = disk.path().join("data");
    let filler = disk.path().join("filler");
    let s = Server::start(&data, &[]);
    let mut acked = 0usize;
    let mut next = 0usize;
    let r = s.post_ndjson(&batch(next, 50));
    assert_eq!(r.status, 200, "{}", r.body);
    acked += r.body["accepted"].as_u64().unwrap() as usize;
    next += 50;

    fill(&filler);
    let full = poll("a write to be refused", Duration::from_secs(60), || {
        let r = s.post_ndjson(&batch(next, 50));
        next += 50;
        match r.status {
            200 => {
                acked += r.body["accepted"].as_u64().unwrap() as usize;
                None
            }
            _ => Some(r),
        }
    });
    assert_eq!(full.status, 507, "{}", full.body);
    assert_eq!(full.content_type, "application/problem+json");
    assert_eq!(full.body["type"], "/problems/store-full", "{}", full.body);
    assert!(full.retry_after.is_some());
    let ready = s.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.retry_after.is_some());
    let reason = ready.body["detail"].as_str().unwrap();
    assert!(reason.contains("full"), "{reason}");
    // What is known can still be read.
    assert_eq!(
        s.get("/v1/relationships/p1/knit?at=2026-11-03T00:00:00Z")
            .status,
        200
    );
    // Still full: still refused, with a Retry-After.
    let again = s.post_ndjson(&batch(next, 50));
    next += 50;
    assert_eq!(again.status, 507, "{}", again.body);

    std::fs::remove_file(&filler).unwrap();
    poll("/readyz to answer 200", Duration::from_secs(60), || {
        (s.get("/readyz").status == 200).then_some(())
    });
    let r = s.post_ndjson(&batch(next, 50));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 50, "{}", r.body);
    acked += 50;
    assert_eq!(s.event_count(), acked as u64);

    let data = s.kill();
    let s = Server::start(&data, &[]);
    assert_eq!(s.event_count(), acked as u64);
    let body: Value = s.get("/v1/entities/p1/events?limit=1000").body;
    assert!(!body["items"].as_array().unwrap().is_empty());
}
