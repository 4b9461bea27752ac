//! Placeholder until the VADER port lands (issue 5).

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SentimentScores {
    pub compound: f64,
    pub pos: f64,
    pub neu: f64,
    pub neg: f64,
}

pub fn polarity_scores(_text: &str) -> SentimentScores {
    SentimentScores {
        compound: 0.0,
        pos: 0.0,
        neu: 0.0,
        neg: 0.0,
    }
}
