#!/usr/bin/env python3
"""Golden VADER scores from the reference implementation.

Owns fixtures/sentiment/golden.tsv: for every line of
fixtures/sentiment/sentences.txt, the scores of the reference Python package
vaderSentiment 3.3.2 (installed with pip if missing), as TSV
`compound pos neu neg text` after a header line, numbers as Python prints them.
tests/it/sentiment.rs checks the Rust port (src/sentiment) against this file.

    python3 scripts/vader_golden.py                 # rewrite golden.tsv
    python3 scripts/vader_golden.py --generate 400  # first append 400 generated
                                                    # sentences to sentences.txt

--generate is deterministic (fixed seed) and skips sentences already present;
it combines the rule triggers (negations, "no", boosters, ALL CAPS, "but",
punctuation, idioms, emoji, emoticons, odd whitespace) more densely than
hand-written text does. The file is split on "\\n" only, so other line
separators (U+2028, U+0085, \\x1c...) stay inside a sentence, as they do for
the Rust test and `fusion sentiment`.
"""

import argparse
import importlib.metadata
import random
import subprocess
import sys
from pathlib import Path

VERSION = "3.3.2"
ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "fixtures" / "sentiment" / "sentences.txt"
GOLDEN = ROOT / "fixtures" / "sentiment" / "golden.tsv"


def analyzer():
    try:
        installed = importlib.metadata.version("vaderSentiment")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != VERSION:
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "--quiet", f"vaderSentiment=={VERSION}"]
        )
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def read_sentences():
    text = SENTENCES.read_bytes().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if "\t" in line or "\r" in line:
            sys.exit(f"{SENTENCES}:{number}: sentences must not contain tabs or carriage returns")
    return lines


# Pools for --generate. Each is a list of tokens that trigger one family of rules.
POSITIVE = ["good", "great", "love", "happy", "nice", "excellent", "fun", "best", "kind",
            "perfect", "amazing", "wonderful", "like", "ok", "cool", "win", "hope", "accept"]
NEGATIVE = ["bad", "terrible", "hate", "sad", "awful", "worst", "pain", "angry", "fail",
            "boring", "ugly", "stupid", "problem", "problems", "shit", "bomb", "ass", "die",
            "doubt", "no"]
NEGATIONS = ["not", "never", "no", "n't", "isn't", "don't", "cant", "without", "nor",
             "nothing", "nobody", "seldom", "rarely", "despite", "neither", "ain't", "uh-uh"]
BOOSTERS = ["very", "extremely", "really", "so", "totally", "kind of", "sort of", "kinda",
            "sorta", "barely", "hardly", "slightly", "somewhat", "just enough", "most",
            "least", "at least", "very least", "quite", "fucking", "hella", "this"]
FILLER = ["the", "it", "was", "is", "a", "food", "movie", "and", "or", "but", "I", "you",
          "service", "today", "of", "to", "at", "yeah", "right", "bus", "stop", "kiss",
          "death", "beating", "heart", "cut", "mustard", "hand", "mouth", "for"]
EMOJI = ["😀", "😂", "😍", "😭", "😡", "👍", "👎", "👍🏽", "❤️", "💔", "🔥", "💀", "🙏", "🎉",
         "👨‍👩‍👧", "🏳️‍🌈", "🇫🇷", "1️⃣", "☺️", "☹", "✨", "🤮", "🥳", "©", "®", "🙂🙃"]
EMOTICONS = [":)", ":(", ":-)", ":D", ";)", "<3", "</3", ":/", ":'(", "XD", ":P", "^_^",
             "-_-", "=)", ":-((", "(:"]
PUNCT = ["", "", "", ".", ",", "!", "!!", "!!!!!", "?", "??", "???", "?!?!", "...", ":", ";"]
WRAP = [("", ""), ("", ""), ("", ""), ('"', '"'), ("(", ")"), ("*", "*"), ("#", ""),
        ("@", ""), ("--", "--"), ("'", "'")]
SPACES = [" ", " ", " ", " ", "  ", "\u00a0", "\u3000", "\x1c", "\x0b", "\u2028", "\x85",
          "\u200b"]


def token(rng):
    pool = rng.choice([POSITIVE, POSITIVE, NEGATIVE, NEGATIVE, NEGATIONS, BOOSTERS,
                       FILLER, FILLER, FILLER, EMOJI, EMOTICONS])
    word = rng.choice(pool)
    case = rng.random()
    if case < 0.15:
        word = word.upper()
    elif case < 0.22:
        word = word.capitalize()
    if pool is not EMOTICONS and rng.random() < 0.2:
        before, after = rng.choice(WRAP)
        word = before + word + after
    if rng.random() < 0.25:
        word += rng.choice(PUNCT)
    return word


def generated(rng):
    words = [token(rng) for _ in range(rng.randint(1, 14))]
    if rng.random() < 0.2:
        # Glue an emoji onto a word, which the reference turns into one token.
        i = rng.randrange(len(words))
        words[i] += rng.choice(EMOJI)
    spaces = [rng.choice(SPACES) if rng.random() < 0.1 else " " for _ in words]
    text = "".join(w + s for w, s in zip(words, spaces)).strip(" ")
    return text + rng.choice(PUNCT)


def generate(count):
    existing = read_sentences()
    seen = set(existing)
    rng = random.Random(332)
    new = []
    while len(new) < count:
        sentence = generated(rng)
        if sentence and sentence not in seen and "\n" not in sentence:
            seen.add(sentence)
            new.append(sentence)
    with SENTENCES.open("a", encoding="utf-8", newline="\n") as f:
        for sentence in new:
            f.write(sentence + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generate", type=int, metavar="N", default=0,
                        help="append N generated sentences to sentences.txt first")
    args = parser.parse_args()
    if args.generate:
        generate(args.generate)
    sia = analyzer()
    with GOLDEN.open("w", encoding="utf-8", newline="\n") as out:
        out.write("compound\tpos\tneu\tneg\ttext\n")
        for sentence in read_sentences():
            s = sia.polarity_scores(sentence)
            out.write(f"{s['compound']!r}\t{s['pos']!r}\t{s['neu']!r}\t{s['neg']!r}\t{sentence}\n")


if __name__ == "__main__":
    main()
