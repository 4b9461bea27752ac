//! The ceiling both PostgreSQL benches compare against: the rows of a
//! stream written with one binary COPY and one commit into an unindexed
//! table shaped like `events`. Shared by `pg_append` and `pg_ingest`.

use std::pin::pin;
use std::time::Instant;

use fusion::domain::Event;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};

/// Creates `raw_events` and copies `events` into it; answers the seconds
/// the COPY and its commit took.
pub async fn raw_copy(client: &Client, events: &[Event]) -> anyhow::Result<f64> {
    client
        .batch_execute(
            "CREATE TABLE raw_events (id text COLLATE \"C\", time timestamptz, type text, \
             refs text[] COLLATE \"C\", body jsonb)",
        )
        .await?;
    let start = Instant::now();
    client.batch_execute("BEGIN").await?;
    let sink = client
        .copy_in("COPY raw_events (id, time, type, refs, body) FROM STDIN (FORMAT binary)")
        .await?;
    let types = [
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::TEXT_ARRAY,
        Type::JSONB,
    ];
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for e in events {
        let refs: Vec<&str> = e.references().iter().map(|(id, _)| id.as_str()).collect();
        writer
            .as_mut()
            .write(&[
                &e.id.as_str(),
                &e.time,
                &e.kind.event_type().as_str(),
                &refs,
                &Json(e),
            ])
            .await?;
    }
    writer.finish().await?;
    client.batch_execute("COMMIT").await?;
    Ok(start.elapsed().as_secs_f64())
}
