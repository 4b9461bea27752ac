//! Sentiment of free text: VADER (Hutto & Gilbert 2014), a faithful port of
//! the reference Python package vaderSentiment 3.3.2, so that scores agree with
//! it to the printed digit (checked against its output in
//! `fixtures/sentiment/golden.tsv`). Pure computation: no IO, never panics on
//! any `&str`, linear in the text length.
//!
//! - `vader`: the rules, function by function from the reference.
//! - `lexicon`: the embedded lexicons (`data/`, MIT, see `data/LICENSE`) and
//!   the reference's word lists.
//! - `python`: the Python string and rounding semantics the results depend on.

mod lexicon;
mod python;
mod vader;

/// VADER's scores for one text, rounded as the reference rounds them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SentimentScores {
    /// Normalised sum of valences in [-1, 1], rounded to 4 decimals.
    pub compound: f64,
    /// Share of positive weight, rounded to 3 decimals.
    pub pos: f64,
    /// Share of neutral weight, rounded to 3 decimals.
    pub neu: f64,
    /// Share of negative weight, rounded to 3 decimals.
    pub neg: f64,
}

/// `SentimentIntensityAnalyzer().polarity_scores(text)` of vaderSentiment 3.3.2.
/// Text with no tokens (empty or whitespace only) scores 0 on all four, as in
/// the reference.
pub fn polarity_scores(text: &str) -> SentimentScores {
    vader::polarity_scores(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(compound: f64, pos: f64, neu: f64, neg: f64) -> SentimentScores {
        SentimentScores {
            compound,
            pos,
            neu,
            neg,
        }
    }

    // Expected values are the reference's output (Python 3.11, vaderSentiment
    // 3.3.2); the rounded values are the same doubles, so equality is exact.

    #[test]
    fn no_before_a_lexicon_word_negates_it() {
        // 3.3.2 "no" rule: "no" is zeroed and "problems" is negated.
        assert_eq!(
            polarity_scores("There were no problems at all."),
            scores(0.3089, 0.311, 0.689, 0.0)
        );
    }

    #[test]
    fn caps_boosters_and_exclamations_add_up() {
        assert_eq!(
            polarity_scores("VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!"),
            scores(0.9469, 0.706, 0.294, 0.0)
        );
    }

    #[test]
    fn but_shifts_weight_to_the_second_clause() {
        assert_eq!(
            polarity_scores(
                "The plot was good, but the characters are uncompelling and the dialog is not great."
            ),
            scores(-0.7042, 0.094, 0.579, 0.327)
        );
    }

    #[test]
    fn but_check_scales_the_first_equal_value_like_list_index() {
        // The reference's `sentiments.index(sentiment)` quirk: "best" (3.2) is
        // halved to 1.6, then "accept" (1.6) finds it first, so "best" is
        // halved again and "accept" keeps 1.6. Scaling each word once would
        // give compound 0.7184.
        assert_eq!(
            polarity_scores("the best phone, but I accept it"),
            scores(0.5267, 0.468, 0.532, 0.0)
        );
    }

    #[test]
    fn emoji_become_their_descriptions() {
        assert_eq!(
            polarity_scores("Catch utf-8 emoji such as 💘 and 💋 and 😁"),
            scores(0.875, 0.417, 0.583, 0.0)
        );
    }

    #[test]
    fn least_kind_of_and_emoticons() {
        assert_eq!(
            polarity_scores("At least it isn't a horrible book."),
            scores(0.431, 0.322, 0.678, 0.0)
        );
        assert_eq!(
            polarity_scores("The book was only kind of good."),
            scores(0.3832, 0.303, 0.697, 0.0)
        );
        assert_eq!(
            polarity_scores("Make sure you :) or :D today!"),
            scores(0.8633, 0.706, 0.294, 0.0)
        );
        assert_eq!(
            polarity_scores("Not bad at all"),
            scores(0.431, 0.487, 0.513, 0.0)
        );
    }

    #[test]
    fn no_tokens_score_zero() {
        let zero = scores(0.0, 0.0, 0.0, 0.0);
        assert_eq!(polarity_scores(""), zero);
        assert_eq!(polarity_scores(" \t\n\u{a0}\u{3000}"), zero);
        assert_eq!(polarity_scores("a"), scores(0.0, 0.0, 1.0, 0.0));
    }
}
