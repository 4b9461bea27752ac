//! Query parameters, each parsed with its bounds into a typed value, or a
//! 400 `invalid-parameter` problem that names it. Every read route takes
//! its parameters through [`Params`], so no handler sees a raw string it
//! could panic on (a time out of chrono's range, a step that overflows, a
//! unit cut inside a character, a NaN).
//!
//! Unknown parameters are ignored (dashboards add cache busters); a known
//! one given twice is an error on it.

use std::collections::{HashMap, HashSet};
use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use chrono::{DateTime, Duration, Utc};

use super::error::ApiError;

/// The accepted range of event and read times, `[1900-01-01, 2200-01-01)`
/// (`domain::bounds`): every time a client may ask about is one an event
/// may have.
fn earliest() -> DateTime<Utc> {
    crate::domain::MIN_TIME
}

fn latest() -> DateTime<Utc> {
    crate::domain::MAX_TIME
}

/// Clamps a time into the accepted range (for defaults derived from one).
pub fn clamp_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.clamp(earliest(), latest())
}

/// Longest `step` of a history: the whole accepted range.
fn max_step() -> Duration {
    latest() - earliest()
}

/// The query string of a request, decoded (`application/x-www-form-urlencoded`
/// rules; an invalid percent escape is kept as it is), with the parsers of
/// every parameter the routes know. A value that is not UTF-8 once
/// percent-decoded is an error on its parameter when a route asks for it,
/// never replaced by U+FFFD (the same rule as path parameters, http::path).
pub struct Params {
    values: HashMap<String, Vec<String>>,
    /// Known names whose value is not UTF-8 once decoded.
    not_utf8: HashSet<String>,
}

impl FromRequest for Params {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Params::parse(req.query_string())))
    }
}

/// One name or value of a query string: `+` is a space, then percent
/// escapes are decoded (an invalid one is kept as it is); `Err` when the
/// bytes are not UTF-8.
fn decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let spaced = s.replace('+', " ");
    String::from_utf8(percent_encoding::percent_decode_str(&spaced).collect())
}

impl Params {
    pub fn parse(query: &str) -> Self {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut not_utf8 = HashSet::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (decode(k), decode(v)) {
                (Ok(k), Ok(v)) => values.entry(k).or_default().push(v),
                (Ok(k), Err(_)) => {
                    not_utf8.insert(k);
                }
                // A name that is not UTF-8 is none a route asks for.
                (Err(_), _) => {}
            }
        }
        Self { values, not_utf8 }
    }

    /// The parameter's one value, if given.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        if self.not_utf8.contains(name) {
            return Err(ApiError::parameter(
                name,
                "must be UTF-8 once percent-decoded; an escape such as %FF is not a character",
            ));
        }
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one)),
            Some(_) => Err(ApiError::parameter(name, "is given more than once")),
        }
    }

    /// An RFC 3339 time within the accepted range.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name)?.map(|s| parse_time(name, s)).transpose()
    }

    /// A history step: a whole number of seconds, minutes, hours or days
    /// (`60s`, `30m`, `6h`, `1d`), from one second to the accepted range.
    pub fn step(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        self.get(name)?
            .map(|s| {
                parse_step(s).ok_or_else(|| {
                    ApiError::parameter(
                        name,
                        format!(
                            "must look like 1d, 6h, 30m or 60s, between 1s and {}d",
                            max_step().num_days()
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A whole number in `[1, max]`.
    pub fn count(&self, name: &str, max: usize) -> Result<Option<usize>, ApiError> {
        self.get(name)?
            .map(|s| match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::parameter(
                    name,
                    format!("must be a whole number in [1, {max}]"),
                )),
            })
            .transpose()
    }

    /// A finite number in `[lo, hi]` (so never NaN or infinite).
    pub fn number(&self, name: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
        self.get(name)?
            .map(|s| match s.parse::<f64>() {
                Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
                _ => Err(ApiError::parameter(
                    name,
                    format!("must be a number in [{lo}, {hi}]"),
                )),
            })
            .transpose()
    }

    /// `true` or `false`; absent is false.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name)? {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::parameter(name, "must be true or false")),
        }
    }

    /// One of `choices`.
    pub fn choice<'c>(&self, name: &str, choices: &[&'c str]) -> Result<Option<&'c str>, ApiError> {
        self.get(name)?
            .map(|s| {
                choices.iter().find(|c| **c == s).copied().ok_or_else(|| {
                    ApiError::parameter(
                        name,
                        format!("unknown value {s:?}; use one of {}", choices.join(", ")),
                    )
                })
            })
            .transpose()
    }
}

/// An RFC 3339 time within the accepted range; `field` names it in the error.
pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::parameter(
                field,
                "must be an RFC 3339 time such as 2026-11-01T18:30:00Z",
            )
        })?;
    crate::domain::check_time(t).map_err(|e| ApiError::parameter(field, e.to_string()))
}

/// `1d`, `6h`, `30m`, `3600s`: a whole number and a unit, within bounds.
fn parse_step(s: &str) -> Option<Duration> {
    let unit_seconds = [("d", 86_400i64), ("h", 3_600), ("m", 60), ("s", 1)];
    let (num, unit) = unit_seconds
        .iter()
        .find_map(|(u, secs)| s.strip_suffix(u).map(|n| (n, *secs)))?;
    // Digits only: no sign, no spaces, nothing `i64::from_str` would forgive.
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = num.parse::<i64>().ok()?.checked_mul(unit)?;
    let step = Duration::try_seconds(seconds)?;
    (seconds >= 1 && step <= max_step()).then_some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: these steps panicked in the handler (chrono overflow, a
    /// split inside `é`) and the connection closed with no answer.
    #[test]
    fn steps_that_panicked_are_errors() {
        for s in [
            "99999999999999d",
            "9223372036854775807s",
            "é",
            "1é",
            "",
            "d",
            "-1d",
            "+1d",
            "0s",
            "1 d",
            "1w",
        ] {
            assert_eq!(parse_step(s), None, "{s:?}");
        }
        assert_eq!(parse_step("1d"), Some(Duration::days(1)));
        assert_eq!(parse_step("90m"), Some(Duration::minutes(90)));
    }

    #[test]
    fn numbers_are_finite_and_bounded() {
        let p = Params::parse("a=NaN&b=inf&c=50&d=101&e=-0");
        assert!(p.number("a", 0.0, 100.0).is_err());
        assert!(p.number("b", 0.0, 100.0).is_err());
        assert_eq!(p.number("c", 0.0, 100.0).unwrap(), Some(50.0));
        assert!(p.number("d", 0.0, 100.0).is_err());
        assert_eq!(p.number("e", 0.0, 100.0).unwrap(), Some(0.0));
        assert_eq!(p.number("z", 0.0, 100.0).unwrap(), None);
    }

    #[test]
    fn times_are_within_the_accepted_range() {
        assert!(parse_time("at", "2199-12-31T23:59:59Z").is_ok());
        assert!(parse_time("at", "1900-01-01T00:00:00Z").is_ok());
        assert!(parse_time("at", "2200-01-01T00:00:00Z").is_err());
        assert!(parse_time("at", "1899-12-31T23:59:59Z").is_err());
        assert!(parse_time("at", "9999-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn a_parameter_given_twice_is_an_error_on_it() {
        let p = Params::parse("at=1&at=2&limit=%zz");
        assert!(p.get("at").is_err());
        assert_eq!(p.get("limit").unwrap(), Some("%zz"));
    }

    /// Regression (red team): `cursor=%FF` was read as U+FFFD, a value the
    /// client never sent, as path ids once were.
    #[test]
    fn a_value_that_is_not_utf8_is_an_error_on_its_parameter() {
        let p = Params::parse("cursor=%FF&q=caf%C3%A9+cr%C3%A8me&%FF=1&flag");
        let e = p.get("cursor").unwrap_err();
        assert!(format!("{e:?}").contains("cursor"), "{e:?}");
        assert_eq!(p.get("q").unwrap(), Some("café crème"));
        assert_eq!(p.get("flag").unwrap(), Some(""));
        assert_eq!(p.get("limit").unwrap(), None);
    }
}
