//! Deltas: what folding one event changed that a derived view must follow,
//! as plain data. The fold emits them (`FoldState::take_deltas`) and knows
//! nothing of who reads them; the live series (`score::live`) is the one
//! reader today. The model is differential dataflow's traces: changes flow
//! as data from the fold to whatever maintains views.
//!
//! A delta carries what its reader needs captured at fold time (a grant of
//! consent carries the person's follows, associations and impulses as the
//! state holds them then), so applying deltas never reads the state.
//! Entities are the fold's handles (`graph::Handle`); a reader that needs
//! ids resolves them with the fold's entity table.

use chrono::{DateTime, Utc};

use crate::domain::{EventId, LogPosition};
use crate::graph::Handle;
use crate::score::model::Component;

/// An impulse as a reader of deltas takes it: `(brand, component, amount,
/// event time)`, the person being the one the delta is about.
pub type ImpulseInput = (Handle, Component, f64, DateTime<Utc>);

/// One change of what the fold derives, in the order the fold made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// `amount` added to `component` of (person, brand) at the event's time
    /// (raw, unweighted; never 0).
    Impulse {
        /// The person whose relationship moves.
        person: Handle,
        /// The brand of the relationship.
        brand: Handle,
        /// Which component.
        component: Component,
        /// The impulse, raw units before the component's weight.
        amount: f64,
    },
    /// Follower's follow of another person set to a strength, or removed
    /// (`None`). Follows of brands are not deltas: they move no spill.
    Follow {
        /// Who follows.
        follower: Handle,
        /// The person followed.
        followee: Handle,
        /// The follow strength (> 0), or `None` for an unfollow.
        strength: Option<f64>,
    },
    /// A person's association with a brand set to a raw strength (an
    /// endorsement, a performance).
    Association {
        /// The associated person.
        person: Handle,
        /// The brand.
        brand: Handle,
        /// Raw strength (not normalised over the person's brands).
        strength: f64,
    },
    /// The person withdrew consent: every impulse the state holds for them
    /// leaves the sums, with their follow and association rows.
    ConsentWithdrawn {
        /// The person.
        person: Handle,
        /// Everything the state holds for them, in event order.
        impulses: Vec<ImpulseInput>,
    },
    /// The person granted consent again: what the state holds for them now
    /// comes back.
    ConsentGranted {
        /// The person.
        person: Handle,
        /// Their follows of people now, `(followee, strength)` by id.
        follows: Vec<(Handle, f64)>,
        /// Their associations now, `(brand, raw strength)` by id.
        associations: Vec<(Handle, f64)>,
        /// Every impulse the state holds for them, in event order.
        impulses: Vec<ImpulseInput>,
    },
}

/// The deltas of one folded event, with where it stands in the canonical
/// order. Every event folded while deltas are emitted gets one, even with
/// no deltas: its position and time still move the reader's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDeltas {
    /// The event's position in the canonical order (time, id) of the
    /// folded events, from 0.
    pub index: u32,
    /// The event's time.
    pub time: DateTime<Utc>,
    /// Its place in the store's log (what the change feed cites).
    pub position: LogPosition,
    /// Its id (the cause the change feed names).
    pub event: EventId,
    /// What it changed, in order.
    pub deltas: Vec<Delta>,
}
