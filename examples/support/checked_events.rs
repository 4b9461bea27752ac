//! An NDJSON file of events read and validated whole, as the examples that
//! replay a generated stream read it (`live_events`, `live_build`).

use fusion::domain::Event;
use fusion::score::ScoringModel;
use serde_json::Value;

/// The file's JSON values, and its events with their indices among them.
pub type Checked = (Vec<Value>, Vec<(usize, Event)>);

/// The file read and checked ([`Checked`]); an error when a line is not
/// JSON or any event is invalid.
pub fn read_checked(path: &str, model: &ScoringModel) -> anyhow::Result<Checked> {
    let bytes = std::fs::read(path)?;
    let values = fusion::ingest::parse_ndjson(&bytes)?;
    let checked = fusion::ingest::validate_all(&values, &model.currency);
    anyhow::ensure!(
        checked.rejected.is_empty(),
        "{} invalid events",
        checked.rejected.len()
    );
    Ok((values, checked.good))
}
