//! The VADER rules (Hutto & Gilbert 2014), ported function by function from
//! vaderSentiment 3.3.2 (`vaderSentiment/vaderSentiment.py`): emoji
//! replacement, tokenisation, per-token valence with its modifiers, the "but"
//! shift and the final scoring. Function names follow the reference so each
//! rule can be checked against it; quirks of the reference are reproduced on
//! purpose, because the goal is identical numbers. No IO.
//!
//! Where the reference is quadratic (it lowercases the whole token list for
//! every lexicon word, and `_but_check` calls `list.index` per element) the
//! port computes the same result in (near) linear time.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::SentimentScores;
use super::lexicon::{
    C_INCR, N_SCALAR, booster, booster_phrase, emoji_description, negated, special_case, valence,
};
use super::python::{is_upper, py_lower, py_round, py_split, py_strip, strip_punctuation};

/// `SentimentIntensityAnalyzer.polarity_scores`.
pub(super) fn polarity_scores(text: &str) -> SentimentScores {
    let text = replace_emojis(text);
    let text = py_strip(&text);
    let words = SentiText::new(text);
    let n = words.len();

    let mut sentiments = Vec::with_capacity(n);
    for i in 0..n {
        // Boosters and "kind of" carry no valence of their own: they modify
        // the word they precede (see `scalar_inc_dec`).
        if words.tokens[i].booster.is_some()
            || (i + 1 < n && words.lower(i) == "kind" && words.lower(i + 1) == "of")
        {
            sentiments.push(0.0);
            continue;
        }
        sentiments.push(sentiment_valence(&words, i));
    }
    but_check(&words, &mut sentiments);
    score_valence(&sentiments, text)
}

/// The emoji loop at the top of `polarity_scores`: each code point with an
/// entry in emoji_utf8_lexicon.txt becomes its description, preceded by a space
/// unless the previous character was an ASCII space. No space is added after
/// it, so "😀abc" reads "grinning faceabc", as in the reference.
fn replace_emojis(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| emoji_description(c).is_some()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut prev_space = true;
    for c in text.chars() {
        if let Some(description) = emoji_description(c) {
            if !prev_space {
                out.push(' ');
            }
            out.push_str(description);
            prev_space = false;
        } else {
            out.push(c);
            prev_space = c == ' ';
        }
    }
    Cow::Owned(out)
}

/// `SentiText`: the tokens (`words_and_emoticons`) with what the rules ask of
/// them, computed once per token instead of per use.
struct SentiText<'a> {
    tokens: Vec<Token<'a>>,
    is_cap_diff: bool,
}

/// One token (split and stripped) as the rules see it.
struct Token<'a> {
    /// `token.lower()`.
    lower: Cow<'a, str>,
    /// `self.lexicon.get(lower)`.
    valence: Option<f64>,
    /// `BOOSTER_DICT.get(lower)`.
    booster: Option<f64>,
    /// `token.isupper()`.
    upper: bool,
}

impl<'a> SentiText<'a> {
    fn new(text: &'a str) -> Self {
        let tokens: Vec<Token> = py_split(text)
            .map(|token| {
                let text = strip_punc_if_word(token);
                let lower = py_lower(text);
                Token {
                    valence: valence(&lower),
                    booster: booster(&lower),
                    upper: is_upper(text),
                    lower,
                }
            })
            .collect();
        let is_cap_diff = allcap_differential(&tokens);
        Self {
            tokens,
            is_cap_diff,
        }
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn lower(&self, i: usize) -> &str {
        &self.tokens[i].lower
    }

    /// `words_and_emoticons[i].lower() in self.lexicon`.
    fn in_lexicon(&self, i: usize) -> bool {
        self.tokens[i].valence.is_some()
    }

    /// The `N` lowercased tokens starting at `from`, for phrase lookups.
    fn lower_range<const N: usize>(&self, from: usize) -> [&str; N] {
        std::array::from_fn(|k| self.lower(from + k))
    }
}

/// `SentiText._strip_punc_if_word`: strip leading and trailing ASCII
/// punctuation unless that leaves two characters or fewer (then it was likely
/// an emoticon such as ":)" and stays whole). Characters are code points, as
/// Python's `len` counts them.
fn strip_punc_if_word(token: &str) -> &str {
    let stripped = strip_punctuation(token);
    if stripped.chars().nth(2).is_none() {
        token
    } else {
        stripped
    }
}

/// `allcap_differential`: some, but not all, tokens are ALL CAPS.
fn allcap_differential(tokens: &[Token]) -> bool {
    let allcap_words = tokens.iter().filter(|t| t.upper).count();
    let cap_differential = tokens.len() - allcap_words;
    0 < cap_differential && cap_differential < tokens.len()
}

/// `scalar_inc_dec`: the boost a preceding booster/dampener gives, signed like
/// the valence, plus the ALL-CAPS increment when the booster is shouted.
fn scalar_inc_dec(token: &Token, valence: f64, is_cap_diff: bool) -> f64 {
    let Some(mut scalar) = token.booster else {
        return 0.0;
    };
    if valence < 0.0 {
        scalar *= -1.0;
    }
    if token.upper && is_cap_diff {
        if valence > 0.0 {
            scalar += C_INCR;
        } else {
            scalar -= C_INCR;
        }
    }
    scalar
}

/// `SentimentIntensityAnalyzer.sentiment_valence` for token `i`.
fn sentiment_valence(w: &SentiText, i: usize) -> f64 {
    let Some(lexicon_valence) = w.tokens[i].valence else {
        return 0.0;
    };
    let n = w.len();
    let mut valence = lexicon_valence;

    // 3.3.2: "no" followed by a lexicon word is a negation, not the negative
    // lexicon word "no"; a word up to two after "no" (or three, through
    // "or"/"nor") is negated.
    if w.lower(i) == "no" && i != n - 1 && w.in_lexicon(i + 1) {
        valence = 0.0;
    }
    if (i > 0 && w.lower(i - 1) == "no")
        || (i > 1 && w.lower(i - 2) == "no")
        || (i > 2 && w.lower(i - 3) == "no" && matches!(w.lower(i - 1), "or" | "nor"))
    {
        valence = lexicon_valence * N_SCALAR;
    }

    // A shouted word among mixed case. Note `else` also catches valence 0
    // (a "no" zeroed above), as in the reference.
    if w.tokens[i].upper && w.is_cap_diff {
        if valence > 0.0 {
            valence += C_INCR;
        } else {
            valence -= C_INCR;
        }
    }

    for start_i in 0..3 {
        // Boosters up to three tokens back, dampened with distance; only
        // tokens that are not lexicon words themselves count.
        if i > start_i && !w.in_lexicon(i - (start_i + 1)) {
            let preceding = &w.tokens[i - (start_i + 1)];
            let mut s = scalar_inc_dec(preceding, valence, w.is_cap_diff);
            if start_i == 1 && s != 0.0 {
                s *= 0.95;
            }
            if start_i == 2 && s != 0.0 {
                s *= 0.9;
            }
            valence += s;
            valence = negation_check(valence, w, start_i, i);
            if start_i == 2 {
                valence = special_idioms_check(valence, w, i);
            }
        }
    }

    least_check(valence, w, i)
}

/// `_least_check`: "least" before a word negates it, except in "at least" and
/// "very least".
fn least_check(mut valence: f64, w: &SentiText, i: usize) -> f64 {
    if i > 1 && !w.in_lexicon(i - 1) && w.lower(i - 1) == "least" {
        if w.lower(i - 2) != "at" && w.lower(i - 2) != "very" {
            valence *= N_SCALAR;
        }
    } else if i > 0 && !w.in_lexicon(i - 1) && w.lower(i - 1) == "least" {
        valence *= N_SCALAR;
    }
    valence
}

/// `_negation_check` for the token `start_i + 1` places before `i`.
fn negation_check(mut valence: f64, w: &SentiText, start_i: usize, i: usize) -> f64 {
    match start_i {
        0 if negated(w.lower(i - 1)) => valence *= N_SCALAR,
        1 => {
            if w.lower(i - 2) == "never" && matches!(w.lower(i - 1), "so" | "this") {
                valence *= 1.25;
            } else if w.lower(i - 2) == "without" && w.lower(i - 1) == "doubt" {
                // "without doubt" is not a negation: unchanged.
            } else if negated(w.lower(i - 2)) {
                valence *= N_SCALAR;
            }
        }
        2 => {
            // The reference's precedence is `(A and (B or C)) or (D or E)`:
            // "so"/"this" right before the word boosts it even without "never".
            if (w.lower(i - 3) == "never" && matches!(w.lower(i - 2), "so" | "this"))
                || matches!(w.lower(i - 1), "so" | "this")
            {
                valence *= 1.25;
            } else if w.lower(i - 3) == "without"
                && (w.lower(i - 2) == "doubt" || w.lower(i - 1) == "doubt")
            {
                // unchanged
            } else if negated(w.lower(i - 3)) {
                valence *= N_SCALAR;
            }
        }
        _ => {}
    }
    valence
}

/// `_special_idioms_check` (only called with `i > 2`): a SPECIAL_CASES idiom
/// around the word replaces its valence (the first of the preceding sequences
/// that matches, then the following ones override), and a two-word dampener
/// ("kind of", "sort of", "just enough") before it adds its increment.
fn special_idioms_check(mut valence: f64, w: &SentiText, i: usize) -> f64 {
    let onezero = w.lower_range::<2>(i - 1);
    let twoonezero = w.lower_range::<3>(i - 2);
    let twoone = w.lower_range::<2>(i - 2);
    let threetwoone = w.lower_range::<3>(i - 3);
    let threetwo = w.lower_range::<2>(i - 3);
    let sequences: [&[&str]; 5] = [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo];
    if let Some(v) = sequences.iter().find_map(|seq| special_case(seq)) {
        valence = v;
    }

    let n = w.len();
    if n - 1 > i
        && let Some(v) = special_case(&w.lower_range::<2>(i))
    {
        valence = v;
    }
    if n - 1 > i + 1
        && let Some(v) = special_case(&w.lower_range::<3>(i))
    {
        valence = v;
    }

    let n_grams: [&[&str]; 3] = [&threetwoone, &threetwo, &twoone];
    for n_gram in n_grams {
        if let Some(v) = booster_phrase(n_gram) {
            valence += v;
        }
    }
    valence
}

/// `_but_check`: after the first "but", valences count 1.5 times, before it
/// half. The reference does this as
///
/// ```python
/// for sentiment in sentiments:
///     si = sentiments.index(sentiment)
///     ... sentiments[si] = sentiment * 0.5 (or * 1.5)
/// ```
///
/// so the element scaled is the *first* one equal to the current value, which
/// differs from the current one when values repeat (e.g. "good ... but ...
/// good" can scale the first "good" twice and the second not at all). That is
/// reproduced exactly, with an index of positions per value instead of the
/// quadratic `list.index` scan.
fn but_check(w: &SentiText, sentiments: &mut [f64]) {
    let Some(bi) = (0..w.len()).find(|&i| w.lower(i) == "but") else {
        return;
    };
    // Zeros (Python's 0, 0.0 and -0.0 are all equal) stay zero when scaled,
    // so they are left out; other values are keyed by their bits.
    let key = f64::to_bits;
    let mut positions: HashMap<u64, BTreeSet<usize>> = HashMap::new();
    for (i, &v) in sentiments.iter().enumerate() {
        if v != 0.0 {
            positions.entry(key(v)).or_default().insert(i);
        }
    }
    for k in 0..sentiments.len() {
        let sentiment = sentiments[k];
        if sentiment == 0.0 {
            continue;
        }
        let Some(&si) = positions.get(&key(sentiment)).and_then(|set| set.first()) else {
            continue;
        };
        let scaled = if si < bi {
            sentiment * 0.5
        } else if si > bi {
            sentiment * 1.5
        } else {
            continue;
        };
        if let Some(set) = positions.get_mut(&key(sentiment)) {
            set.remove(&si);
        }
        positions.entry(key(scaled)).or_default().insert(si);
        sentiments[si] = scaled;
    }
}

/// `_amplify_ep` + `_amplify_qm`: up to four "!" add 0.292 each; two or three
/// "?" add 0.18 each, more add 0.96. Counted over the whole (emoji-replaced,
/// stripped) text.
fn punctuation_emphasis(text: &str) -> f64 {
    let ep_count = text.bytes().filter(|&b| b == b'!').count().min(4);
    let ep_amplifier = ep_count as f64 * 0.292;
    let qm_count = text.bytes().filter(|&b| b == b'?').count();
    let qm_amplifier = match qm_count {
        0 | 1 => 0.0,
        2 | 3 => qm_count as f64 * 0.18,
        _ => 0.96,
    };
    ep_amplifier + qm_amplifier
}

/// `normalize` with alpha = 15: maps the valence sum into (-1, 1).
fn normalize(score: f64) -> f64 {
    let alpha = 15.0;
    let norm_score = score / (score * score + alpha).sqrt();
    norm_score.clamp(-1.0, 1.0)
}

/// `_sift_sentiment_scores`: positive and negative sums, each shifted by 1 per
/// word to offset the neutral count, and the count of neutral words.
fn sift_sentiment_scores(sentiments: &[f64]) -> (f64, f64, usize) {
    let mut pos_sum = 0.0;
    let mut neg_sum = 0.0;
    let mut neu_count = 0;
    for &s in sentiments {
        if s > 0.0 {
            pos_sum += s + 1.0;
        }
        if s < 0.0 {
            neg_sum += s - 1.0;
        }
        if s == 0.0 {
            neu_count += 1;
        }
    }
    (pos_sum, neg_sum, neu_count)
}

/// `score_valence`, with the reference's rounding: `round(x, 3)` for pos, neu
/// and neg, `round(compound, 4)`.
fn score_valence(sentiments: &[f64], text: &str) -> SentimentScores {
    if sentiments.is_empty() {
        return SentimentScores {
            compound: 0.0,
            pos: 0.0,
            neu: 0.0,
            neg: 0.0,
        };
    }
    // Left-to-right like Python 3.11's `sum` (3.12 compensates; the
    // difference is far below the rounding).
    let mut sum_s: f64 = sentiments.iter().fold(0.0, |acc, &s| acc + s);
    let punct_emph_amplifier = punctuation_emphasis(text);
    if sum_s > 0.0 {
        sum_s += punct_emph_amplifier;
    } else if sum_s < 0.0 {
        sum_s -= punct_emph_amplifier;
    }
    let compound = normalize(sum_s);

    let (mut pos_sum, mut neg_sum, neu_count) = sift_sentiment_scores(sentiments);
    if pos_sum > neg_sum.abs() {
        pos_sum += punct_emph_amplifier;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= punct_emph_amplifier;
    }
    let total = pos_sum + neg_sum.abs() + neu_count as f64;
    SentimentScores {
        compound: py_round(compound, 4),
        pos: py_round((pos_sum / total).abs(), 3),
        neu: py_round((neu_count as f64 / total).abs(), 3),
        neg: py_round((neg_sum / total).abs(), 3),
    }
}
