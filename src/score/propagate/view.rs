//! `ScoreView`: what the adjoint walk (`adjoint.rs`) reads of a state, so
//! that one walk scores both the fold's state and a what-if overlay over it
//! (`score::simulate`), summing the same numbers in the same order.
//!
//! A view answers as of a time, in id order: the model, entity names,
//! consent, follow and association rows, and a person's impulses in
//! canonical event order, and as sums per (brand, component)
//! (`fold::sums`, what the walk sums; kept by the fold's state, built from
//! the impulses by a view that keeps none). It must not change what it
//! reads; no IO, no clock.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::domain::EntityId;
use crate::graph::Handle;
use crate::score::fold::FoldState;
use crate::score::model::ScoringModel;
use crate::score::shares::association_share;

pub use crate::score::fold::Impulse;
pub use crate::score::fold::sums::PersonSums;

/// A span of event time `from <= t < until` (`None`: unbounded on that
/// side) over which what a view says of a person stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first time in the span, if bounded.
    pub from: Option<DateTime<Utc>>,
    /// The first time after the span, if bounded.
    pub until: Option<DateTime<Utc>>,
}

impl Span {
    /// The span of `at` alone (what a view that cannot tell answers).
    pub fn point(at: DateTime<Utc>) -> Self {
        Self {
            from: Some(at),
            until: Some(at + Duration::nanoseconds(1)),
        }
    }

    /// Whether `t` lies in the span.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| f <= t) && self.until.is_none_or(|u| t < u)
    }

    /// Both spans at once.
    pub fn meet(self, other: Span) -> Span {
        let from = match (self.from, other.from) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let until = match (self.until, other.until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Span { from, until }
    }
}

/// What a scoring walk reads of a state (module docs).
pub trait ScoreView {
    /// The model scores are computed with.
    fn model(&self) -> &ScoringModel;
    /// The id of a handle.
    fn name(&self, h: Handle) -> &EntityId;
    /// The handle of an id, if the view knows it.
    fn handle(&self, id: &EntityId) -> Option<Handle>;
    /// Whether `person` may be scored at `at` (no consent withdrawn then).
    fn consents(&self, person: Handle, at: DateTime<Utc>) -> bool;
    /// The people `person` follows at `at`, with strengths, sorted by id.
    fn followees(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)>;
    /// The brands `person` is associated with at `at`, with strengths,
    /// sorted by id.
    fn associations(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)>;
    /// Calls `f` with each impulse of `person` at or before `at`, in
    /// canonical event order.
    fn for_each_impulse(&self, person: Handle, at: DateTime<Utc>, f: impl FnMut(Impulse));

    /// `person`'s impulses as sums per (brand, component), the form every
    /// score is summed from (`fold::sums`); `None` when they have none.
    /// The default builds them from [`Self::for_each_impulse`] at every
    /// call; a view that keeps them must give the same (they are a
    /// function of the impulse list and of [`Self::model`]'s half-lives:
    /// sums kept for another model are not these, `PersonSums::fits`).
    fn person_sums(&self, person: Handle) -> Option<Arc<PersonSums>> {
        sums_of(self, person)
    }

    /// The span around `at` over which `person`'s consent, follow row and
    /// association row stay as they are at `at` (what a walk that visited
    /// them may be reused over). The default, `at` alone, is always true.
    fn steady(&self, person: Handle, at: DateTime<Utc>) -> Span {
        let _ = person;
        Span::point(at)
    }

    /// The association shares `α_a · s / max(1, Σs)` of `person` at `at`
    /// (`shares.rs`), for each associated brand with a strength above 0,
    /// sorted by brand id.
    fn association_shares(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let raw = self.associations(person, at);
        let total: f64 = raw.iter().map(|(_, w)| w).sum();
        let alpha_a = self.model().propagation.association;
        raw.into_iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(b, w)| (b, association_share(alpha_a, w, total)))
            .collect()
    }
}

/// `person`'s sums built from `view`'s impulses ([`ScoreView::person_sums`]'s
/// default, for a view that keeps none).
pub fn sums_of<V: ScoreView + ?Sized>(view: &V, person: Handle) -> Option<Arc<PersonSums>> {
    let mut impulses = Vec::new();
    view.for_each_impulse(person, DateTime::<Utc>::MAX_UTC, |imp| impulses.push(imp));
    (!impulses.is_empty()).then(|| Arc::new(PersonSums::of(view.model(), impulses.into_iter())))
}

impl ScoreView for FoldState {
    fn model(&self) -> &ScoringModel {
        FoldState::model(self)
    }
    fn name(&self, h: Handle) -> &EntityId {
        self.table().name(h)
    }
    fn handle(&self, id: &EntityId) -> Option<Handle> {
        FoldState::handle(self, id)
    }
    fn consents(&self, person: Handle, at: DateTime<Utc>) -> bool {
        self.consents_h(person, at)
    }
    fn followees(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        self.graph.followees(person, at)
    }
    fn associations(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        self.graph.associations(person, at)
    }
    fn steady(&self, person: Handle, at: DateTime<Utc>) -> Span {
        let (from, until) = self.graph.out_steady(person, at);
        let rows = Span { from, until };
        let Some(series) = self.consent.get(&person) else {
            return rows;
        };
        let pos = series.partition_point(|(t, _)| *t <= at);
        rows.meet(Span {
            from: pos.checked_sub(1).map(|i| series[i].0),
            until: series.get(pos).map(|(t, _)| *t),
        })
    }
    fn for_each_impulse(&self, person: Handle, at: DateTime<Utc>, f: impl FnMut(Impulse)) {
        if let Some(list) = self.impulse_list(person) {
            list.up_to(at).for_each(f);
        }
    }
    fn person_sums(&self, person: Handle) -> Option<Arc<PersonSums>> {
        FoldState::person_sums(self, person)
    }
}
