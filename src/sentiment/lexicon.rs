//! VADER's word lists: the two lexicon files of vaderSentiment 3.3.2 (embedded
//! from `data/`, parsed once) and the constants of its module header (`NEGATE`,
//! `BOOSTER_DICT`, `SPECIAL_CASES`, the empirically derived increments). Pure
//! data and lookups; the rules that use them live in `vader.rs`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::LazyLock;

use super::python::py_strip;

/// Mean rating increase of a booster word (`B_INCR` in the reference).
pub(super) const B_INCR: f64 = 0.293;
/// Mean rating decrease of a dampener word (`B_DECR` in the reference).
pub(super) const B_DECR: f64 = -0.293;
/// Mean rating increase of an ALL-CAPS word among mixed case (`C_INCR`).
pub(super) const C_INCR: f64 = 0.733;
/// Factor a negation applies to a valence (`N_SCALAR`).
pub(super) const N_SCALAR: f64 = -0.74;

/// The lookup tables hash every token several times, so they use the Fx hash
/// (rustc's) instead of SipHash: their keys are fixed, so hash flooding by the
/// text cannot lengthen probes. Cuts the CLI's time by about a fifth.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(SEED);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;
type Map<K, V> = HashMap<K, V, FxBuild>;

static VADER_LEXICON: &str = include_str!("data/vader_lexicon.txt");
static EMOJI_LEXICON: &str = include_str!("data/emoji_utf8_lexicon.txt");

/// `SentimentIntensityAnalyzer.make_lex_dict`: word -> mean valence. The file has
/// CRLF line ends; the reference splits on `\n` and `str.strip()`s each line,
/// which removes the `\r`, and a later duplicate line wins (dict assignment).
static LEXICON: LazyLock<Map<&'static str, f64>> = LazyLock::new(|| {
    let mut map = Map::with_capacity_and_hasher(8192, FxBuild::default());
    for line in VADER_LEXICON.trim_end_matches('\n').split('\n') {
        if line.is_empty() {
            continue;
        }
        let mut fields = py_strip(line).split('\t');
        if let (Some(word), Some(measure)) = (fields.next(), fields.next())
            && let Ok(measure) = py_strip(measure).parse::<f64>()
        {
            map.insert(word, measure);
        }
    }
    map
});

/// `SentimentIntensityAnalyzer.make_emoji_dict`, keeping only single code point
/// keys: `polarity_scores` looks emoji up one code point at a time (`for chr in
/// text`), so keys such as "👍🏽" or "☺️" (with U+FE0F) can never match and
/// only their first code point, if it has its own entry, is replaced.
static EMOJIS: LazyLock<Map<char, &'static str>> = LazyLock::new(|| {
    let mut map = Map::with_capacity_and_hasher(2048, FxBuild::default());
    for line in EMOJI_LEXICON.trim_end_matches('\n').split('\n') {
        let mut fields = py_strip(line).split('\t');
        if let (Some(emoji), Some(description)) = (fields.next(), fields.next()) {
            let mut chars = emoji.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                map.insert(c, description);
            }
        }
    }
    map
});

/// `NEGATE`: words that negate a following lexicon word (with the "n't" test in
/// `negated`).
const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

/// `BOOSTER_DICT`: degree adverbs. The three two-word keys only ever match
/// through the bigram test at the end of `_special_idioms_check`.
const BOOSTER_DICT: &[(&str, f64)] = &[
    ("absolutely", B_INCR),
    ("amazingly", B_INCR),
    ("awfully", B_INCR),
    ("completely", B_INCR),
    ("considerable", B_INCR),
    ("considerably", B_INCR),
    ("decidedly", B_INCR),
    ("deeply", B_INCR),
    ("effing", B_INCR),
    ("enormous", B_INCR),
    ("enormously", B_INCR),
    ("entirely", B_INCR),
    ("especially", B_INCR),
    ("exceptional", B_INCR),
    ("exceptionally", B_INCR),
    ("extreme", B_INCR),
    ("extremely", B_INCR),
    ("fabulously", B_INCR),
    ("flipping", B_INCR),
    ("flippin", B_INCR),
    ("frackin", B_INCR),
    ("fracking", B_INCR),
    ("fricking", B_INCR),
    ("frickin", B_INCR),
    ("frigging", B_INCR),
    ("friggin", B_INCR),
    ("fully", B_INCR),
    ("fuckin", B_INCR),
    ("fucking", B_INCR),
    ("fuggin", B_INCR),
    ("fugging", B_INCR),
    ("greatly", B_INCR),
    ("hella", B_INCR),
    ("highly", B_INCR),
    ("hugely", B_INCR),
    ("incredible", B_INCR),
    ("incredibly", B_INCR),
    ("intensely", B_INCR),
    ("major", B_INCR),
    ("majorly", B_INCR),
    ("more", B_INCR),
    ("most", B_INCR),
    ("particularly", B_INCR),
    ("purely", B_INCR),
    ("quite", B_INCR),
    ("really", B_INCR),
    ("remarkably", B_INCR),
    ("so", B_INCR),
    ("substantially", B_INCR),
    ("thoroughly", B_INCR),
    ("total", B_INCR),
    ("totally", B_INCR),
    ("tremendous", B_INCR),
    ("tremendously", B_INCR),
    ("uber", B_INCR),
    ("unbelievably", B_INCR),
    ("unusually", B_INCR),
    ("utter", B_INCR),
    ("utterly", B_INCR),
    ("very", B_INCR),
    ("almost", B_DECR),
    ("barely", B_DECR),
    ("hardly", B_DECR),
    ("just enough", B_DECR),
    ("kind of", B_DECR),
    ("kinda", B_DECR),
    ("kindof", B_DECR),
    ("kind-of", B_DECR),
    ("less", B_DECR),
    ("little", B_DECR),
    ("marginal", B_DECR),
    ("marginally", B_DECR),
    ("occasional", B_DECR),
    ("occasionally", B_DECR),
    ("partly", B_DECR),
    ("scarce", B_DECR),
    ("scarcely", B_DECR),
    ("slight", B_DECR),
    ("slightly", B_DECR),
    ("somewhat", B_DECR),
    ("sort of", B_DECR),
    ("sorta", B_DECR),
    ("sortof", B_DECR),
    ("sort-of", B_DECR),
];

/// `SPECIAL_CASES`: idioms containing lexicon words, with the valence that
/// replaces the word's own. "badass" is one word and so can never match: the
/// reference only ever looks these up as sequences of two or three tokens.
const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0),
    ("the bomb", 3.0),
    ("bad ass", 1.5),
    ("badass", 1.5),
    ("bus stop", 0.0),
    ("yeah right", -2.0),
    ("kiss of death", -1.5),
    ("to die for", 3.0),
    ("beating heart", 3.5),
];

static NEGATE_SET: LazyLock<HashSet<&'static str, FxBuild>> =
    LazyLock::new(|| NEGATE.iter().copied().collect());

static SINGLE_WORD_BOOSTERS: LazyLock<Map<&'static str, f64>> = LazyLock::new(|| {
    BOOSTER_DICT
        .iter()
        .filter(|(key, _)| !key.contains(' '))
        .copied()
        .collect()
});

/// A table's keys split into words, so a lookup compares token slices instead
/// of joining tokens into a string. Equivalent because tokens never contain
/// whitespace (they come from `str.split()`).
type Phrases = Vec<(Vec<&'static str>, f64)>;

fn split_keys(table: &'static [(&'static str, f64)], min_words: usize) -> Phrases {
    table
        .iter()
        .map(|&(key, value)| (key.split(' ').collect::<Vec<_>>(), value))
        .filter(|(words, _)| words.len() >= min_words)
        .collect()
}

static BOOSTER_PHRASES: LazyLock<Phrases> = LazyLock::new(|| split_keys(BOOSTER_DICT, 2));
static SPECIAL_CASE_PHRASES: LazyLock<Phrases> = LazyLock::new(|| split_keys(SPECIAL_CASES, 1));

/// `self.lexicon[word]` for a lowercased token.
pub(super) fn valence(lower: &str) -> Option<f64> {
    LEXICON.get(lower).copied()
}

/// `self.emojis[chr]`: the textual description an emoji is replaced by.
pub(super) fn emoji_description(c: char) -> Option<&'static str> {
    if c.is_ascii() {
        // No ASCII character has an entry (checked by a test); skip the hash.
        return None;
    }
    EMOJIS.get(&c).copied()
}

/// `BOOSTER_DICT[word]` for one lowercased token.
pub(super) fn booster(lower: &str) -> Option<f64> {
    SINGLE_WORD_BOOSTERS.get(lower).copied()
}

/// `BOOSTER_DICT[" ".join(words)]` for two or more tokens.
pub(super) fn booster_phrase(words: &[&str]) -> Option<f64> {
    phrase_lookup(&BOOSTER_PHRASES, words)
}

/// `SPECIAL_CASES[" ".join(words)]`.
pub(super) fn special_case(words: &[&str]) -> Option<f64> {
    phrase_lookup(&SPECIAL_CASE_PHRASES, words)
}

/// `word in NEGATE or "n't" in word`: `negated([word])` as `_negation_check`
/// calls it, on one lowercased token.
pub(super) fn negated(lower: &str) -> bool {
    NEGATE_SET.contains(lower) || lower.contains("n't")
}

fn phrase_lookup(phrases: &Phrases, words: &[&str]) -> Option<f64> {
    phrases
        .iter()
        .find(|(key, _)| key.as_slice() == words)
        .map(|&(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicons_parse_like_the_reference() {
        // Sizes of the reference's dicts: len(lexicon) == 7506, and 1212 of the
        // 3570 emoji keys are a single code point.
        assert_eq!(LEXICON.len(), 7506);
        assert_eq!(EMOJIS.len(), 1212);
        assert_eq!(valence("no"), Some(-1.2));
        assert_eq!(valence("kind"), Some(2.4));
        assert_eq!(valence(":-Þ"), LEXICON.get(":-Þ").copied());
        assert_eq!(emoji_description('😀'), Some("grinning face"));
    }

    #[test]
    fn no_emoji_key_is_ascii() {
        // emoji_description relies on this to skip the lookup for ASCII.
        assert!(EMOJIS.keys().all(|c| !c.is_ascii()));
    }

    #[test]
    fn phrases_match_word_by_word() {
        assert_eq!(special_case(&["kiss", "of", "death"]), Some(-1.5));
        assert_eq!(special_case(&["badass"]), Some(1.5));
        assert_eq!(special_case(&["kiss", "of"]), None);
        assert_eq!(booster_phrase(&["sort", "of"]), Some(B_DECR));
        assert_eq!(booster("kind of"), None);
        assert_eq!(booster("very"), Some(B_INCR));
    }
}
