//! Path parameters, decoded strictly. actix's router percent-decodes the
//! path lossily: `%FF` (not UTF-8) becomes U+FFFD, an id the client never
//! sent, and `%FE` then names the same entity. [`Path`] is the one
//! extractor of path parameters on every route: it reads the raw request
//! target, refuses a parameter whose percent-decoding is not UTF-8 with a
//! 400 `invalid-parameter` naming it, and only then lets actix deserialise
//! the (then exact) values. It does not check what a parameter means (the
//! handlers' `entity_id` and the like do).

use std::fmt;
use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use super::ApiError;

/// A route's path parameters (`T`: `String`, or a tuple for several), each
/// percent-decoded to exactly the characters the client sent.
#[derive(Debug)]
pub struct Path<T>(T);

impl<T> Path<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Path<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Display> fmt::Display for Path<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: DeserializeOwned> FromRequest for Path<T> {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Err(e) = check_utf8(req.match_pattern().as_deref(), req.uri().path()) {
            return ready(Err(e.into()));
        }
        ready(
            web::Path::<T>::from_request(req, payload)
                .into_inner()
                .map(|p| Path(p.into_inner())),
        )
    }
}

/// Refuses the first parameter of `pattern` (an actix resource pattern
/// such as `/v1/relationships/{person}/{brand}`) whose segment of the raw
/// `path` does not percent-decode to UTF-8. A parameter that spans the
/// rest of the path (`{file:.*}`) is checked as a whole. A pattern that
/// cannot be lined up with the path (none matched) names `path`.
fn check_utf8(pattern: Option<&str>, path: &str) -> Result<(), ApiError> {
    let refuse = |name: &str| {
        Err(ApiError::parameter(
            name,
            "must be UTF-8 once percent-decoded; an escape such as %FF is not a character",
        ))
    };
    let Some(pattern) = pattern else {
        return match decodes(path) {
            true => Ok(()),
            false => refuse("path"),
        };
    };
    let mut raw = path.split('/');
    for part in pattern.split('/') {
        let Some(segment) = raw.next() else {
            break;
        };
        let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
            continue;
        };
        let (name, regex) = name.split_once(':').unwrap_or((name, ""));
        // A tail parameter takes the rest of the path, slashes included.
        let value = if regex.contains(".*") || regex.contains(".+") {
            let rest: Vec<&str> = std::iter::once(segment).chain(raw.by_ref()).collect();
            rest.join("/")
        } else {
            segment.to_string()
        };
        if !decodes(&value) {
            return refuse(name);
        }
    }
    match decodes(path) {
        true => Ok(()),
        false => refuse("path"),
    }
}

fn decodes(raw: &str) -> bool {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<(), ApiError>) -> Option<String> {
        r.err().map(|e| match e {
            ApiError::InvalidParameter(item) => item.field,
            other => panic!("not a parameter error: {other:?}"),
        })
    }

    #[test]
    fn the_parameter_whose_segment_is_not_utf8_is_named() {
        let p = Some("/v1/relationships/{person}/{brand}");
        assert_eq!(field(check_utf8(p, "/v1/relationships/ann/%C3%A9")), None);
        assert_eq!(
            field(check_utf8(p, "/v1/relationships/%FF/b")).as_deref(),
            Some("person")
        );
        assert_eq!(
            field(check_utf8(p, "/v1/relationships/a/%C3")).as_deref(),
            Some("brand")
        );
        let tail = Some("/assets/{file:.*}");
        assert_eq!(
            field(check_utf8(tail, "/assets/x/%FE.js")).as_deref(),
            Some("file")
        );
        assert_eq!(field(check_utf8(None, "/x/%FF")).as_deref(), Some("path"));
    }
}
