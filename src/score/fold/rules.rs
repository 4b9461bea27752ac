//! The impulse rules: what each event type does to the state
//! (`models/default.toml` documents each rule's coefficients). The
//! arithmetic of each rule is a pure function at the bottom of this file;
//! `fold_rules` reads the context it needs (follower counts, associations,
//! occasions, sales history), records impulses, graph edits and brand KPIs,
//! and emits the deltas a view must follow.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rustc_hash::FxHashSet;

pub(crate) use super::brands::Contact;
use super::impulses::CREDIT_COMPONENT;
use super::{Delta, FoldState, OccasionInfo};
use crate::domain::{EntityId, EntityKind, Event, EventKind, EventType, LogPosition};
use crate::graph::{EdgeKind, Handle};
use crate::score::model::{Component, Impulses};

impl FoldState {
    /// The handle of an entity the event being folded names (`fold` has
    /// added every one).
    fn h(&self, id: &EntityId) -> Handle {
        self.graph
            .handle(id)
            .expect("fold adds every entity an event names")
    }

    /// Applies the rules of `event`'s type; `pos` is its log position.
    pub(super) fn fold_rules(&mut self, event: &Event, pos: LogPosition) {
        let t = event.time;
        let imp = self.model.impulse;
        use EventKind::*;
        match &event.kind {
            Purchase {
                person,
                brand,
                amount,
                currency,
                ..
            } => {
                // In the base currency; a currency the table lacks (an event
                // stored before the table changed) is a purchase of unknown
                // value: it still makes the relationship, and adds nothing.
                let (person, brand) = (self.h(person), self.h(brand));
                let value = self.model.currency.to_base(*amount, *currency);
                let x = value.map_or(0.0, |v| purchase_impulse(&imp, v));
                self.push_direct(person, brand, pos, t, Component::Sales, x);
                self.stats(brand).purchase(value);
            }
            BrandSales {
                brand,
                amount,
                currency,
            } => {
                // A report in a currency the table lacks is left out.
                if let Some(value) = self.model.currency.to_base(*amount, *currency) {
                    self.fold_brand_sales(self.h(brand), value, pos, t);
                }
            }
            Post {
                person,
                brand,
                sentiment,
                ..
            }
            | Mention {
                person,
                brand,
                sentiment,
                ..
            } => {
                let w = if event.kind.event_type() == EventType::Post {
                    imp.post
                } else {
                    imp.mention
                };
                let (person, brand) = (self.h(person), self.h(brand));
                let reach = self.followers_h(person, t) as f64;
                let x = talk_impulse(&imp, w, sentiment.value, reach);
                self.push_direct(person, brand, pos, t, Component::Sentiment, x);
            }
            Review {
                person,
                brand,
                rating,
                sentiment,
                ..
            } => {
                let (person, brand) = (self.h(person), self.h(brand));
                let x = review_impulse(&imp, *rating, sentiment.map(|s| s.value));
                self.push_direct(person, brand, pos, t, Component::Sentiment, x);
                self.stats(brand).review(*rating);
            }
            Service {
                person,
                brand,
                csat,
                effort,
                resolved,
                wait_seconds,
                transfers,
                ..
            } => {
                let contact = Contact {
                    csat: *csat,
                    effort: *effort,
                    resolved: *resolved,
                    wait_seconds: *wait_seconds,
                    transfers: *transfers,
                };
                let (person, brand) = (self.h(person), self.h(brand));
                let x = service_impulse(&imp, &contact);
                self.push_direct(person, brand, pos, t, Component::Service, x);
                self.stats(brand).contact(&contact);
            }
            Endorsement {
                person,
                brand,
                strength,
            } => {
                let (person, brand) = (self.h(person), self.h(brand));
                let x = imp.endorsement * strength;
                self.push_impulse(person, brand, pos, t, Component::Engagement, x);
                self.set_association(person, brand, t, *strength);
            }
            Audience { person, followers } => {
                let person = self.h(person);
                let before = self.followers_h(person, t);
                Arc::make_mut(self.audience.entry(person).or_default()).push((t, *followers));
                if let Some(growth) = audience_growth(&imp, before, *followers) {
                    for (brand, share) in self.associations_at(person, t) {
                        let x = growth * share;
                        self.push_impulse(person, brand, pos, t, Component::Influence, x);
                    }
                }
            }
            Follow {
                person,
                target,
                strength,
            } => {
                let (person, target) = (self.h(person), self.h(target));
                self.graph
                    .set_edge(person, target, EdgeKind::Follow, t, Some(*strength));
                let kind = self.table().kind(target);
                if kind.is_person() {
                    self.emit(Delta::Follow {
                        follower: person,
                        followee: target,
                        strength: Some(*strength),
                    });
                }
                if kind == EntityKind::Brand {
                    let x = imp.follow_brand * strength;
                    self.push_impulse(person, target, pos, t, Component::Engagement, x);
                }
            }
            Unfollow { person, target } => {
                let (person, target) = (self.h(person), self.h(target));
                let was = self.graph.edge_weight(person, target, EdgeKind::Follow, t);
                self.graph
                    .set_edge(person, target, EdgeKind::Follow, t, None);
                let kind = self.table().kind(target);
                if kind.is_person() {
                    self.emit(Delta::Follow {
                        follower: person,
                        followee: target,
                        strength: None,
                    });
                }
                if let (Some(w), EntityKind::Brand) = (was, kind) {
                    let x = -imp.follow_brand * w;
                    self.push_impulse(person, target, pos, t, Component::Engagement, x);
                }
            }
            Occasion {
                occasion,
                brand,
                performers,
                ..
            } => {
                let performers: Vec<Handle> = performers.iter().map(|p| self.h(p)).collect();
                self.fold_occasion(self.h(occasion), self.h(brand), &performers, pos, t)
            }
            Attendance { person, occasion } => {
                let (person, occasion) = (self.h(person), self.h(occasion));
                let info = Arc::make_mut(
                    self.occasions
                        .entry(occasion)
                        .or_insert_with(|| Arc::new(OccasionInfo::new(t))),
                );
                if info.join(person, false)
                    && let Some(host) = info.host
                {
                    let x = imp.attendance;
                    self.push_impulse(person, host, pos, t, Component::Engagement, x);
                }
            }
            Cause {
                brand,
                tags,
                amount,
                currency,
            } => {
                let amount = self
                    .model
                    .currency
                    .to_base(*amount, *currency)
                    .unwrap_or(0.0);
                let brand = self.h(brand);
                let mut people: Vec<Handle> = Vec::new();
                for tag in tags {
                    if let Some(list) = self.interests.get(&tag.to_lowercase()) {
                        people.extend(list);
                    }
                }
                // In id order, whatever the order of registration.
                self.table().sort(&mut people);
                people.dedup();
                let x = cause_impulse(&imp, amount);
                for p in people {
                    self.push_impulse(p, brand, pos, t, Component::Values, x);
                }
            }
            Consent { person, granted } => {
                let person = self.h(person);
                Arc::make_mut(self.consent.entry(person).or_default()).push((t, *granted));
                if self.emitting() {
                    let impulses = self.impulses_of(person);
                    let delta = if *granted {
                        Delta::ConsentGranted {
                            person,
                            follows: self.graph.followees(person, t),
                            associations: self.graph.associations(person, t),
                            impulses,
                        }
                    } else {
                        Delta::ConsentWithdrawn { person, impulses }
                    };
                    self.emit(delta);
                }
            }
        }
    }

    fn stats(&mut self, brand: Handle) -> &mut super::BrandStats {
        self.brand_stats.entry(brand).or_default()
    }

    /// An occasion: the brand hosts it, its performers are associated with
    /// the brand (at least `performance_association`) and get an
    /// engagement impulse, and attendance reported before the occasion
    /// itself now meets its host.
    fn fold_occasion(
        &mut self,
        occasion: Handle,
        brand: Handle,
        performers: &[Handle],
        pos: u64,
        t: DateTime<Utc>,
    ) {
        let imp = self.model.impulse;
        let info = Arc::make_mut(
            self.occasions
                .entry(occasion)
                .or_insert_with(|| Arc::new(OccasionInfo::new(t))),
        );
        info.host = Some(brand);
        info.time = t;
        let earlier: Vec<Handle> = info
            .participants
            .iter()
            .filter(|(_, performer)| !performer)
            .map(|(p, _)| *p)
            .collect();
        for &p in performers {
            info.join(p, true);
        }
        let hosted = self.hosted.entry(brand).or_default();
        if !hosted.contains(&occasion) {
            Arc::make_mut(hosted).push(occasion);
        }
        for &p in performers {
            self.push_impulse(p, brand, pos, t, Component::Engagement, imp.performance);
            let current = self
                .graph
                .edge_weight(p, brand, EdgeKind::Association, t)
                .unwrap_or(0.0);
            if imp.performance_association > current {
                self.set_association(p, brand, t, imp.performance_association);
            }
        }
        for p in earlier {
            self.push_impulse(p, brand, pos, t, Component::Engagement, imp.attendance);
        }
    }

    /// A sales report: the lift over the brand's baseline is credited to the
    /// people who took part in its recent occasions (seed 004: "host an
    /// outdoor concert ... and, three days later, see an increase in sales").
    fn fold_brand_sales(&mut self, brand: Handle, amount: f64, pos: u64, t: DateTime<Utc>) {
        let imp = self.model.impulse;
        let history = self.sales.entry(brand).or_default();
        let baseline =
            (!history.is_empty()).then(|| history.iter().sum::<f64>() / history.len() as f64);
        history.push_back(amount);
        if history.len() > imp.sales_baseline_periods {
            history.pop_front();
        }
        self.stats(brand).reported(amount);
        let Some(baseline) = baseline.filter(|b| *b > 0.0) else {
            return;
        };
        let x = sales_lift_impulse(&imp, amount, baseline);
        let window = Duration::milliseconds((imp.sales_window_days * 86_400_000.0) as i64);
        // Occasions are hosted in time order: walk back from the latest and
        // stop at the first that ended before the window.
        let mut credited: Vec<Handle> = Vec::new();
        let mut seen: FxHashSet<Handle> = FxHashSet::default();
        for occ in self
            .hosted
            .get(&brand)
            .map_or(&[][..], |v| v.as_slice())
            .iter()
            .rev()
        {
            let info = &self.occasions[occ];
            if info.time > t {
                continue;
            }
            if t - info.time > window {
                break;
            }
            for (p, _) in &info.participants {
                if seen.insert(*p) {
                    credited.push(*p);
                }
            }
        }
        self.credit(&credited, brand, pos, t, x);
    }

    /// The sales lift `amount` credited to each of `people`, as
    /// `push_impulse` would push it to each, but kept once (`impulses.rs`:
    /// a credit, each person holding its index); the deltas are each
    /// person's, in the same order.
    fn credit(
        &mut self,
        people: &[Handle],
        brand: Handle,
        event: u64,
        time: DateTime<Utc>,
        amount: f64,
    ) {
        if people.is_empty() || amount == 0.0 || !amount.is_finite() {
            return;
        }
        let credit = Arc::make_mut(&mut self.credits).push(brand, time, amount, event);
        for &person in people {
            self.emit(Delta::Impulse {
                person,
                brand,
                component: CREDIT_COMPONENT,
                amount,
            });
            Arc::make_mut(self.impulses.entry(person).or_default())
                .push_credit(credit, &self.credits);
        }
    }

    /// Sets person `p`'s association with `brand`.
    fn set_association(&mut self, p: Handle, brand: Handle, t: DateTime<Utc>, v: f64) {
        self.graph
            .set_edge(p, brand, EdgeKind::Association, t, Some(v));
        self.emit(Delta::Association {
            person: p,
            brand,
            strength: v,
        });
    }

    /// The impulse of a person's own interaction with a brand (purchase,
    /// post, mention, review, service contact). It is kept even when it is
    /// 0 (a free item, a neutral post): the interaction makes the
    /// relationship, which then reads 50 with the event among its reasons.
    fn push_direct(
        &mut self,
        person: Handle,
        brand: Handle,
        event: u64,
        time: DateTime<Utc>,
        component: Component,
        amount: f64,
    ) {
        if amount == 0.0 {
            self.keep_impulse(person, brand, event, time, component, 0.0);
        } else {
            self.push_impulse(person, brand, event, time, component, amount);
        }
    }

    /// An impulse on (person, brand); one of 0 moves nothing and is dropped.
    fn push_impulse(
        &mut self,
        person: Handle,
        brand: Handle,
        event: u64,
        time: DateTime<Utc>,
        component: Component,
        amount: f64,
    ) {
        if amount == 0.0 || !amount.is_finite() {
            return;
        }
        self.emit(Delta::Impulse {
            person,
            brand,
            component,
            amount,
        });
        self.keep_impulse(person, brand, event, time, component, amount);
    }

    /// Records an impulse in the state (no delta: callers decide, and one
    /// of 0 changes no sum).
    fn keep_impulse(
        &mut self,
        person: Handle,
        brand: Handle,
        event: u64,
        time: DateTime<Utc>,
        component: Component,
        amount: f64,
    ) {
        Arc::make_mut(self.impulses.entry(person).or_default())
            .push(brand, component, time, amount, event);
    }
}

/// A purchase worth `value` in the base currency: `purchase · ln(1 + value
/// / purchase_unit)`.
pub(crate) fn purchase_impulse(imp: &Impulses, value: f64) -> f64 {
    imp.purchase * (1.0 + value / imp.purchase_unit).ln()
}

/// A post or mention (weight `w`) with a sentiment in [-1, 1] by a person
/// with `reach` followers: `w · s · (1 + reach_boost · log10(1 + reach))`.
pub(crate) fn talk_impulse(imp: &Impulses, w: f64, sentiment: f64, reach: f64) -> f64 {
    w * sentiment * (1.0 + imp.reach_boost * (1.0 + reach).log10())
}

/// A review: stars around 3, plus its text's sentiment when it has one.
pub(crate) fn review_impulse(imp: &Impulses, rating: u8, sentiment: Option<f64>) -> f64 {
    let mut x = (f64::from(rating) - 3.0) * imp.review_star;
    if let Some(s) = sentiment {
        x += s * imp.review_text;
    }
    x
}

/// A support contact: CSAT around 3, effort around 4, resolution, the log
/// of the wait in minutes and the transfers.
pub(crate) fn service_impulse(imp: &Impulses, c: &Contact) -> f64 {
    let mut x = 0.0;
    if let Some(v) = c.csat {
        x += (f64::from(v) - 3.0) * imp.service_csat;
    }
    if let Some(e) = c.effort {
        x += (4.0 - f64::from(e)) * imp.service_effort;
    }
    match c.resolved {
        Some(true) => x += imp.service_resolved,
        Some(false) => x -= imp.service_resolved,
        None => {}
    }
    if let Some(w) = c.wait_seconds {
        x -= imp.service_wait * (1.0 + w / 60.0).ln();
    }
    if let Some(n) = c.transfers {
        x -= imp.service_transfer * f64::from(n);
    }
    x
}

/// The influence impulse of an audience change from `before` to `after`
/// followers (`audience_growth · ln(after / before)`), spread over the
/// person's associations; none when either count is 0.
pub(crate) fn audience_growth(imp: &Impulses, before: u64, after: u64) -> Option<f64> {
    (before > 0 && after > 0).then(|| imp.audience_growth * (after as f64 / before as f64).ln())
}

/// A cause of `amount` (base currency) for each interested person.
pub(crate) fn cause_impulse(imp: &Impulses, amount: f64) -> f64 {
    imp.cause * (1.0 + 0.25 * (1.0 + amount).log10())
}

/// A sales report's lift over the baseline (clamped to [-1, 3]), credited.
fn sales_lift_impulse(imp: &Impulses, amount: f64, baseline: f64) -> f64 {
    imp.sales_lift * (amount / baseline - 1.0).clamp(-1.0, 3.0)
}
