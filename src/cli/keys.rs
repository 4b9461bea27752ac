//! `fusion keys create|list|revoke`: API keys in the store the service uses
//! (PostgreSQL with `--database-url`, else `keys.redb` in the data
//! directory, which works while `serve` runs). A key is printed once, at
//! creation; only its hash is kept.

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};

use super::StoreArgs;
use crate::auth::{ApiKey, KeyId, KeyRecord, Role};
use crate::store::{KeyStore, Keys};

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once: only its hash is stored)
    Create {
        /// ingest, read or admin (admin includes the others)
        #[arg(long)]
        role: Role,
        /// When the key stops working: a duration such as 90d or 12h, or an RFC 3339 time
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List every key: id, role, created, expires, last used, state
    List {
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key; every server refuses it within seconds
    Revoke {
        /// The key id (the part after `fsk_`, as `list` shows it)
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn run(args: KeysArgs) -> anyhow::Result<()> {
    let rt = super::runtime()?;
    rt.block_on(async {
        match args.command {
            KeysCommand::Create {
                role,
                expires,
                store,
            } => create(&super::open_keys(&store).await?, role, expires.as_deref()).await,
            KeysCommand::List { json, store } => list(&super::open_keys(&store).await?, json).await,
            KeysCommand::Revoke { id, store } => {
                revoke(&super::open_keys(&store).await?, &id).await
            }
        }
    })
}

/// `90d`, `12h`, `30m` from `now`, or an RFC 3339 time.
fn parse_expiry(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().ok().filter(|n| *n > 0).with_context(|| {
        format!("--expires {s:?} is neither a duration such as 90d nor an RFC 3339 time")
    })?;
    let d = match unit {
        "d" => Duration::try_days(n),
        "h" => Duration::try_hours(n),
        "m" => Duration::try_minutes(n),
        _ => None,
    }
    .with_context(|| format!("--expires {s:?}: use d, h or m, as in 90d"))?;
    now.checked_add_signed(d)
        .with_context(|| format!("--expires {s:?} is too far away"))
}

async fn create(keys: &Keys, role: Role, expires: Option<&str>) -> anyhow::Result<()> {
    let now = Utc::now();
    let expires = expires.map(|s| parse_expiry(s, now)).transpose()?;
    if expires.is_some_and(|t| t <= now) {
        bail!("--expires is in the past");
    }
    let key = ApiKey::generate();
    keys.create_key(KeyRecord::new(&key, role, now, expires))
        .await
        .context("cannot store the key")?;
    println!("{}", key.reveal());
    eprintln!(
        "created key {} ({role}{}); it is shown only now, so keep it somewhere safe",
        key.id,
        expires.map_or(String::new(), |t| format!(", expires {}", t.to_rfc3339()))
    );
    Ok(())
}

async fn list(keys: &Keys, json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let all = keys.keys().await.context("cannot read the keys")?;
    let state = |k: &KeyRecord| {
        if k.revoked.is_some_and(|t| t <= now) {
            "revoked"
        } else if k.expires.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        }
    };
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
    };
    if json {
        for k in &all {
            println!(
                "{}",
                serde_json::json!({
                    "id": k.id, "role": k.role, "created": k.created, "expires": k.expires,
                    "last_used": k.last_used, "revoked": k.revoked, "state": state(k),
                })
            );
        }
        return Ok(());
    }
    println!(
        "{:<16}  {:<6}  {:<20}  {:<20}  {:<20}  state",
        "id", "role", "created", "expires", "last used"
    );
    for k in &all {
        println!(
            "{:<16}  {:<6}  {:<20}  {:<20}  {:<20}  {}",
            k.id,
            k.role,
            time(Some(k.created)),
            time(k.expires),
            time(k.last_used),
            state(k)
        );
    }
    Ok(())
}

async fn revoke(keys: &Keys, id: &str) -> anyhow::Result<()> {
    // Accept the whole key too, so an operator can paste what leaked.
    let id = match ApiKey::parse(id) {
        Ok(key) => key.id,
        Err(_) => KeyId::new(id).context("not a key id")?,
    };
    if !keys
        .revoke_key(&id, Utc::now())
        .await
        .context("cannot revoke the key")?
    {
        bail!("no key {id}; `fusion keys list` shows the ids");
    }
    eprintln!("revoked key {id}; running servers refuse it within seconds");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_durations_or_times() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(parse_expiry("90d", now).unwrap(), now + Duration::days(90));
        assert_eq!(parse_expiry("12h", now).unwrap(), now + Duration::hours(12));
        assert_eq!(
            parse_expiry("2030-01-01T00:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2030-01-01T00:00:00+00:00"
        );
        for bad in ["", "d", "0d", "-1d", "3w", "soon", "99999999999999d"] {
            assert!(parse_expiry(bad, now).is_err(), "{bad:?}");
        }
    }
}
