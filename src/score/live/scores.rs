//! `LiveScores`: every relationship's components at the latest event time
//! (and any later time), kept up to date operation by operation with the
//! push driver (`propagate::push`, all six components as lanes of one
//! driver over one graph), in forward-decay units (module docs of
//! `live`). It owns the id numbering of the live state, forward decay and
//! its moving landmark, consent and the drift bound; `LiveSeries` (mod.rs)
//! feeds it. No IO, no clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::graph::{EntityTable, Handle};
use crate::score::model::{Component, Components, ScoringModel};
use crate::score::propagate::push::{
    IncrementalRelspace, MovedSoFar, PushStats, RowFootprint, UndoFootprint, Value,
};
use crate::score::shares::{forward, half_life_factor, half_life_seconds, seconds_between};

/// The drift bound in units of the model's tolerance (0.1 raw units, about
/// 1 point, with the default model's 1e-4).
const MAX_ERROR_TOLERANCES: f64 = 1000.0;

/// Events between two drift checks (positions in canonical order).
pub(crate) const CHECK_EVERY: u32 = 16;

/// How far (in half-lives of the shortest component) the latest event may
/// be from the forward-decay origin before the origin moves to it (module
/// docs, "A moving landmark"). Forward factors stay below 2^64 ≈ 1.8e19,
/// so sums of impulses of any accepted size stay far from f64's 2^1024;
/// with the default model (30 days) the origin moves every 5.3 years of
/// event time, which no checkpoint interval of ordinary traffic spans.
pub const RENORMALISE_AFTER_HALF_LIVES: f64 = 64.0;

/// Followers from which a person's audience is wide: pushes at such a
/// person leave the audience spill to the followers who spread nothing
/// further pending (lazy audience spill, `propagate::push`), readers add
/// it as their first hop.
/// Measured (`benches/live.sh`, ARCHITECTURE.md "Live series"): people
/// with 256 followers or more made 89 % of the visits, and the pushes at
/// their followers most of the pushes.
pub const WIDE_AUDIENCE: usize = 256;

/// Work the live state has done, for `rescore` and the benches.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LiveStats {
    /// Driver operations (impulses, follow and association changes).
    pub operations: u64,
    /// Entries pushed.
    pub pushes: u64,
    /// Neighbour entries pushes touched.
    pub visits: u64,
    /// Of `visits`, followers reached at once by pushes at people with a
    /// wide audience (at least [`WIDE_AUDIENCE`] followers): those who
    /// spread further.
    pub fanout_visits: u64,
    /// Pushes at people with a wide audience whose audience spill was left
    /// pending (lazy audience spill, `propagate::push`).
    pub deferred: u64,
    /// Checkpoints built (every `CHECKPOINT_EVENTS` events, plus drift rebuilds).
    pub builds: u64,
    /// Rebuilds because the residual passed the bound.
    pub recomputes: u64,
    /// Moves of the forward-decay origin (module docs, "A moving landmark").
    pub renormalisations: u64,
}

/// One relationship a change of the series moved: its components (weighted,
/// current units) before and after, both at the same time, so decay plays
/// no part in the difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// The person of the relationship.
    pub person: Handle,
    /// The brand.
    pub brand: Handle,
    /// The components before the change.
    pub before: Components,
    /// The components after it.
    pub after: Components,
}

/// The live series (module docs): every relationship's components, in
/// forward-decay units, with its own id numbering.
#[derive(Debug, Clone)]
pub struct LiveScores {
    model: Arc<ScoringModel>,
    people: Vec<Handle>,
    person_ix: FxHashMap<Handle, u32>,
    brands: Vec<Handle>,
    brand_ix: FxHashMap<Handle, u32>,
    driver: IncrementalRelspace<Components>,
    /// Forward-decay origin `o`: the checkpoint's time, or the event it last
    /// moved to (module docs, "A moving landmark").
    origin: Option<DateTime<Utc>>,
    /// The checkpoint this series was built at (`Checkpoint::at`).
    checkpoint: Option<(DateTime<Utc>, DateTime<Utc>)>,
    latest: Option<DateTime<Utc>>,
    withdrawn: FxHashSet<u32>,
    stats: LiveStats,
    /// What [`Self::roll_back`] restores besides the driver's rows, set
    /// by [`Self::mark`].
    mark: Option<Box<Mark>>,
}

/// A [`LiveScores`] at its mark: the driver marks its own rows; the ids
/// numbered after the mark are dropped by a roll-back.
#[derive(Debug, Clone)]
struct Mark {
    people: usize,
    brands: usize,
    origin: Option<DateTime<Utc>>,
    checkpoint: Option<(DateTime<Utc>, DateTime<Utc>)>,
    latest: Option<DateTime<Utc>>,
    /// People without consent are few (a copy, not a log).
    withdrawn: FxHashSet<u32>,
    stats: LiveStats,
}

impl LiveScores {
    /// An empty series for `model`.
    pub fn new(model: Arc<ScoringModel>) -> Self {
        let p = model.propagation;
        let tol = [model.live_tolerance; 6];
        let mut driver = IncrementalRelspace::new(0, 0, p.audience, p.association, tol)
            .expect("the model validates its spill factors and tolerance");
        driver.set_wide(WIDE_AUDIENCE);
        Self {
            model,
            people: Vec::new(),
            person_ix: FxHashMap::default(),
            brands: Vec::new(),
            brand_ix: FxHashMap::default(),
            driver,
            origin: None,
            checkpoint: None,
            latest: None,
            withdrawn: FxHashSet::default(),
            stats: LiveStats::default(),
            mark: None,
        }
    }

    /// From now on, the series can go back to how it is now
    /// ([`Self::roll_back`]), keeping for that only what changes after
    /// (the driver's rows as they were before their first change,
    /// `propagate::undo`), not a copy of itself: the live series marks
    /// each checkpoint build, so a refold starts again from that build
    /// (`LiveSeries::continue_from`). Between events only.
    pub(crate) fn mark(&mut self) {
        self.driver.mark();
        self.mark = Some(Box::new(Mark {
            people: self.people.len(),
            brands: self.brands.len(),
            origin: self.origin,
            checkpoint: self.checkpoint,
            latest: self.latest,
            withdrawn: self.withdrawn.clone(),
            stats: self.stats,
        }));
    }

    /// Whether [`Self::roll_back`] can go back to a mark.
    pub(crate) fn marked(&self) -> bool {
        self.mark.is_some()
    }

    /// Goes back to the series as it was at [`Self::mark`], bit for bit:
    /// what a copy made then would be. The mark stays (nothing changed
    /// since). `false`, changing nothing, when not marked.
    pub(crate) fn roll_back(&mut self) -> bool {
        let Some(mark) = self.mark.as_deref() else {
            return false;
        };
        let rolled = self.driver.roll_back();
        debug_assert!(rolled, "the driver is marked with the series");
        for id in self.people.drain(mark.people..) {
            self.person_ix.remove(&id);
        }
        for id in self.brands.drain(mark.brands..) {
            self.brand_ix.remove(&id);
        }
        self.origin = mark.origin;
        self.checkpoint = mark.checkpoint;
        self.latest = mark.latest;
        self.withdrawn.clone_from(&mark.withdrawn);
        self.stats = mark.stats;
        true
    }

    /// What the series keeps to go back to its mark (`Self::mark`): the
    /// driver's per-person rows changed since, each saved once.
    pub fn undo_footprint(&self) -> UndoFootprint {
        self.driver.undo_footprint()
    }

    /// `person`'s follower count in the series (0 when unknown).
    pub fn audience(&self, person: &Handle) -> usize {
        self.person_ix
            .get(person)
            .map_or(0, |&p| self.driver.audience(p))
    }

    /// The driver's rows of `s` and `r`: entries and bytes held.
    pub fn row_footprint(&self) -> RowFootprint {
        self.driver.row_footprint()
    }

    /// The work done so far.
    pub fn stats(&self) -> LiveStats {
        self.stats
    }

    /// Carries on counting from `stats` (a series rebuilt beside another).
    pub(crate) fn set_stats(&mut self, stats: LiveStats) {
        self.stats = stats;
    }

    fn half_life_seconds(&self, c: usize) -> f64 {
        half_life_seconds(&self.model, Component::ALL[c])
    }

    /// `2^(sign · seconds / h_c)` per component.
    fn factors(&self, seconds: f64, sign: f64) -> Components {
        std::array::from_fn(|c| half_life_factor(sign * seconds, self.half_life_seconds(c)))
    }

    fn person(&mut self, id: &Handle) -> u32 {
        if let Some(&i) = self.person_ix.get(id) {
            return i;
        }
        let i = self.people.len() as u32;
        self.people.push(*id);
        self.person_ix.insert(*id, i);
        self.driver.grow(self.people.len(), self.brands.len());
        i
    }

    fn brand(&mut self, id: &Handle) -> u32 {
        if let Some(&i) = self.brand_ix.get(id) {
            return i;
        }
        let i = self.brands.len() as u32;
        self.brands.push(*id);
        self.brand_ix.insert(*id, i);
        self.driver.grow(self.people.len(), self.brands.len());
        i
    }

    fn count(&mut self, stats: PushStats) {
        self.stats.operations += 1;
        self.stats.pushes += stats.pushes as u64;
        self.stats.visits += stats.visits as u64;
        self.stats.fanout_visits += stats.fanout_visits as u64;
        self.stats.deferred += stats.deferred as u64;
    }

    /// Starts one event: its operations are applied to the residual and
    /// settled together by [`Self::end_event`] (fewer pushes than one settle
    /// per operation when an event has many, like a cause reaching every
    /// interested person; still one canonical sequence).
    /// With `record`, [`Self::end_event`] answers what the event moved.
    pub fn begin_event(&mut self, record: bool) {
        self.driver.hold();
        if record {
            self.driver.track_moves();
        }
    }

    /// Settles the operations of the event begun by [`Self::begin_event`];
    /// answers the relationships the settle moved, before and after the
    /// event at its time (people without consent left out), when asked to
    /// record them.
    pub fn end_event(&mut self) -> Vec<Moved> {
        self.end_event_until(|| false)
            .expect("settled: nothing stops it")
    }

    /// [`Self::end_event`] in parts (`IncrementalRelspace::release_until`):
    /// `stop` is asked every `WORK_PER_ASK` entries touched; `None` when it
    /// stopped the settle (call again: nothing else may change the series
    /// before it is settled), else what the event moved. The same pushes in
    /// the same order, however cut; the moves valued in parts too
    /// (`IncrementalRelspace::take_moves_until`).
    pub fn end_event_until(&mut self, mut stop: impl FnMut() -> bool) -> Option<Vec<Moved>> {
        let (stats, settled) = self.driver.release_until(&mut stop);
        self.stats.pushes += stats.pushes as u64;
        self.stats.visits += stats.visits as u64;
        self.stats.fanout_visits += stats.fanout_visits as u64;
        self.stats.deferred += stats.deferred as u64;
        if !settled {
            return None;
        }
        let moves = self.driver.take_moves_until(stop)?;
        let (Some(origin), Some(latest)) = (self.origin, self.latest) else {
            return Some(Vec::new());
        };
        let now = self.factors(seconds_between(origin, latest), -1.0);
        let moved = moves
            .into_iter()
            .filter(|(p, ..)| !self.withdrawn.contains(p))
            .map(|(p, b, before, after)| Moved {
                person: self.people[p as usize],
                brand: self.brands[b as usize],
                before: before.times(&now),
                after: after.times(&now),
            })
            .collect();
        Some(moved)
    }

    /// Moves the clock to event time `t` (never backwards) and sets each
    /// lane's threshold to the tolerance in current units; moves the
    /// forward-decay origin to `t` first when `t` is too far from it
    /// (module docs, "A moving landmark").
    pub fn advance(&mut self, t: DateTime<Utc>) {
        if self.latest.is_some_and(|l| l >= t) {
            return;
        }
        self.latest = Some(t);
        let mut origin = *self.origin.get_or_insert(t);
        if seconds_between(origin, t) / self.shortest_half_life() > RENORMALISE_AFTER_HALF_LIVES {
            self.move_origin(t);
            origin = t;
        }
        // Raising only (time moves on), unless the origin moved: then the
        // scaled residuals are below the new thresholds but for rounding.
        let tol = self.tolerance_at(origin, t);
        self.driver.set_tolerance(tol).expect("finite tolerance");
    }

    fn shortest_half_life(&self) -> f64 {
        (0..Component::ALL.len())
            .map(|c| self.half_life_seconds(c))
            .fold(f64::INFINITY, f64::min)
    }

    /// Re-expresses the series in forward units of origin `to`: the series
    /// is linear in the impulses, so multiplying `s` and `r` by
    /// `2^(-(to - o)/h_c)` per component is the same series summed from
    /// `x_i 2^((t_i - to)/h_c)`.
    fn move_origin(&mut self, to: DateTime<Utc>) {
        let Some(origin) = self.origin else {
            self.origin = Some(to);
            return;
        };
        let factor = self.factors(seconds_between(origin, to), -1.0);
        self.driver.scale(&factor);
        self.origin = Some(to);
        self.stats.renormalisations += 1;
    }

    fn tolerance_at(&self, origin: DateTime<Utc>, t: DateTime<Utc>) -> Components {
        self.factors(seconds_between(origin, t), 1.0)
            .map(|f| self.model.live_tolerance * f)
    }

    pub(crate) fn checkpoint(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.checkpoint
    }

    pub(crate) fn set_checkpoint(&mut self, at: Option<(DateTime<Utc>, DateTime<Utc>)>) {
        self.checkpoint = at;
    }

    /// The series at a checkpoint, from the batch driver: the graph as it
    /// stood at `origin` (raw follows and associations, consent), the batch
    /// series `scores` and its exact `residual` (`RelSnapshot::seed`), in
    /// current units at `origin`, which is the forward-decay origin. People
    /// and brands are numbered in sorted id order; whatever of the residual
    /// is above the tolerance is settled (the batch stops at a finer
    /// tolerance, so usually nothing). `withdrawn` people are left out.
    /// `scores` and `residual` are renumbered in place and dropped once the
    /// driver holds them (the build's peak, docs/scale.md).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: Arc<ScoringModel>,
        origin: DateTime<Utc>,
        follows: &[(Handle, Handle, f64)],
        associations: &[(Handle, Handle, f64)],
        scores: Vec<(Handle, Handle, Components)>,
        residual: Vec<(Handle, Handle, Components)>,
        withdrawn: &[Handle],
        table: &EntityTable,
        previous: LiveStats,
    ) -> Self {
        let mut this = Self::new(model);
        this.origin = Some(origin);
        this.latest = Some(origin);
        let mut people: Vec<Handle> = Vec::new();
        let mut brands: Vec<Handle> = Vec::new();
        for (q, p, _) in follows {
            people.extend([*q, *p]);
        }
        for (p, b, _) in associations {
            people.push(*p);
            brands.push(*b);
        }
        for (p, b, _) in scores.iter().chain(&residual) {
            people.push(*p);
            brands.push(*b);
        }
        people.extend(withdrawn);
        for list in [&mut people, &mut brands] {
            list.sort_unstable();
            list.dedup();
            table.sort(list);
        }
        for p in &people {
            this.person(p);
        }
        for b in &brands {
            this.brand(b);
        }
        let out: FxHashSet<u32> = withdrawn.iter().map(|p| this.person_ix[p]).collect();
        let f: Vec<(u32, u32, f64)> = follows
            .iter()
            .map(|(q, p, w)| (this.person_ix[q], this.person_ix[p], *w))
            .filter(|(q, ..)| !out.contains(q))
            .collect();
        let a: Vec<(u32, u32, f64)> = associations
            .iter()
            .map(|(p, b, s)| (this.person_ix[p], this.brand_ix[b], *s))
            .filter(|(p, ..)| !out.contains(p))
            .collect();
        let numbered = |list: Vec<(Handle, Handle, Components)>| -> Vec<(u32, u32, Components)> {
            list.into_iter()
                .map(|(p, b, v)| (this.person_ix[&p], this.brand_ix[&b], v))
                .collect()
        };
        let (s, r) = (numbered(scores), numbered(residual));
        let prop = this.model.propagation;
        let (driver, stats) = IncrementalRelspace::from_parts(
            this.people.len(),
            this.brands.len(),
            prop.audience,
            prop.association,
            [this.model.live_tolerance; 6],
            &f,
            &a,
            &s,
            &r,
        )
        .expect("valid inputs");
        this.driver = driver;
        this.driver.set_wide(WIDE_AUDIENCE);
        this.withdrawn = out;
        this.stats = previous;
        this.stats.builds += 1;
        this.stats.pushes += stats.pushes as u64;
        this.stats.visits += stats.visits as u64;
        this.stats.fanout_visits += stats.fanout_visits as u64;
        this.stats.deferred += stats.deferred as u64;
        this
    }

    /// `x(person, brand) += amount` of `component` at event time `t`
    /// (weighted here, as the batch driver does).
    pub fn impulse(
        &mut self,
        person: &Handle,
        brand: &Handle,
        component: Component,
        amount: f64,
        t: DateTime<Utc>,
    ) {
        let (p, b) = (self.person(person), self.brand(brand));
        if self.withdrawn.contains(&p) {
            return;
        }
        let x = self.forward(component, amount, t);
        let stats = self.driver.add_impulse(p, b, x).expect("finite impulse");
        self.count(stats);
    }

    fn forward(&self, component: Component, amount: f64, t: DateTime<Utc>) -> Components {
        let origin = self.origin.unwrap_or(t);
        let mut x = [0.0; 6];
        x[component.index()] = forward(&self.model, component, amount, t, origin);
        x
    }

    /// Follower `q`'s follow of person `p` set (`Some(weight)`) or removed.
    pub fn set_follow(&mut self, q: &Handle, p: &Handle, weight: Option<f64>) {
        let (qi, pi) = (self.person(q), self.person(p));
        if self.withdrawn.contains(&qi) {
            return;
        }
        let stats = self
            .driver
            .set_follow(qi, pi, weight)
            .expect("valid weight");
        self.count(stats);
    }

    /// Person `p`'s association with `brand` set or removed (raw strength;
    /// the driver normalises the row).
    pub fn set_association(&mut self, p: &Handle, brand: &Handle, strength: Option<f64>) {
        let (pi, b) = (self.person(p), self.brand(brand));
        if self.withdrawn.contains(&pi) {
            return;
        }
        let stats = self
            .driver
            .set_association(pi, b, strength)
            .expect("valid strength");
        self.count(stats);
    }

    /// Consent withdrawn: takes the person's impulses (`(brand, component,
    /// amount, time)`, everything the state holds for them), follow row and
    /// association row out of the series.
    pub fn withdraw(
        &mut self,
        person: &Handle,
        impulses: &[(Handle, Component, f64, DateTime<Utc>)],
    ) {
        let p = self.person(person);
        if self.withdrawn.contains(&p) {
            return;
        }
        let follows: Vec<u32> = self.driver.follows_of(p).iter().map(|e| e.0).collect();
        for f in follows {
            let stats = self.driver.set_follow(p, f, None).expect("known ids");
            self.count(stats);
        }
        let assoc: Vec<u32> = self.driver.associations_of(p).iter().map(|e| e.0).collect();
        for b in assoc {
            let stats = self.driver.set_association(p, b, None).expect("known ids");
            self.count(stats);
        }
        for (brand, c, amount, t) in impulses {
            self.impulse(person, brand, *c, -amount, *t);
        }
        self.withdrawn.insert(p);
    }

    /// Consent granted again: puts back the person's follows of people,
    /// associations and impulses as the state holds them now.
    pub fn grant(
        &mut self,
        person: &Handle,
        follows: &[(Handle, f64)],
        associations: &[(Handle, f64)],
        impulses: &[(Handle, Component, f64, DateTime<Utc>)],
    ) {
        let Some(&p) = self.person_ix.get(person) else {
            return;
        };
        if !self.withdrawn.remove(&p) {
            return;
        }
        for (f, w) in follows {
            self.set_follow(person, f, Some(*w));
        }
        for (b, a) in associations {
            self.set_association(person, b, Some(*a));
        }
        for (brand, c, amount, t) in impulses {
            self.impulse(person, brand, *c, *amount, *t);
        }
    }

    /// Bound on `|exact − s|` per relationship, in raw score units at the
    /// latest event time: the driver's bound per component
    /// (`IncrementalRelspace::error_bound`, the smaller of the row sums'
    /// `max_p Σ_b |r_c(p,b)| / (1 − ρ)` and one entry's bound, which an
    /// endorser of many brands does not widen) summed over the components,
    /// in current units.
    pub fn error_bound(&self) -> f64 {
        self.current(self.driver.error_bound())
    }

    /// The row sums' bound alone, `Σ_c max_p Σ_b |r_c(p,b)| / (1 − ρ)` in
    /// raw units at the latest event time: what [`Self::error_bound`] was
    /// before it bounded one entry (it grows with the widest residual row;
    /// `examples/live_events` prints both).
    pub fn row_sum_bound(&self) -> f64 {
        self.current(self.driver.row_sum_bound())
    }

    /// Per-component amounts in forward units, in current units at the
    /// latest event time, summed over the components.
    fn current(&self, forward: Components) -> f64 {
        let Some(latest) = self.latest else {
            return 0.0;
        };
        let now = self.factors(seconds_between(self.origin.expect("set"), latest), -1.0);
        forward.iter().zip(now).map(|(b, f)| b * f).sum()
    }

    /// Every relationship's components at `at`, `None` if `at` is before
    /// the latest event (the live state only knows the graph as it stands
    /// now: past times go to the batch driver). Sorted by (person, brand)
    /// ids; people without consent are left out; all-zero entries too.
    pub fn components_at(
        &self,
        at: DateTime<Utc>,
        table: &EntityTable,
    ) -> Option<Vec<((Handle, Handle), Components)>> {
        let mut out = self.components_unsorted_at(at)?;
        sort_components(&mut out, table);
        Some(out)
    }

    /// [`Self::components_at`] in the series' own order, not sorted: the
    /// part that reads the series (one pass over its rows). Sorted by
    /// [`sort_components`] with the table, it is `components_at`'s answer
    /// bit for bit (the keys are distinct, so the order is the same
    /// whatever the sort). The live thread takes this under the state's
    /// lock and sorts off it (`LiveSeries::draft`).
    pub(crate) fn components_unsorted_at(
        &self,
        at: DateTime<Utc>,
    ) -> Option<Vec<((Handle, Handle), Components)>> {
        self.rows_unsorted_at(at, None)
    }

    /// [`Self::components_unsorted_at`] with the entries that the event
    /// begun ([`Self::begin_event`], recording) and not settled yet
    /// changed so far at their values before it: the rows as the settled
    /// events left them. `None` also when the event's changes are not
    /// recorded. Red team h70: a checkpoint build that takes an event the
    /// live thread cut part way through its pushes
    /// (`LiveSeries::movement_basis`) compared the build with rows that
    /// held the event's first pushes, never published: the relationships
    /// they had reached moved by less than the tolerance, so a change feed
    /// never saw them move.
    pub(crate) fn settled_components_unsorted_at(
        &self,
        at: DateTime<Utc>,
    ) -> Option<Vec<((Handle, Handle), Components)>> {
        self.rows_unsorted_at(at, Some(self.driver.moved_so_far()?))
    }

    /// The rows at `at`, the entries of `before` at those values instead.
    fn rows_unsorted_at(
        &self,
        at: DateTime<Utc>,
        before: Option<MovedSoFar<'_, Components>>,
    ) -> Option<Vec<((Handle, Handle), Components)>> {
        let factor = match (self.origin, self.latest) {
            (Some(o), Some(l)) if at >= l => self.factors(seconds_between(o, at), -1.0),
            (None, _) => return Some(Vec::new()),
            _ => return None,
        };
        let mut out = Vec::new();
        let mut seen = FxHashSet::default();
        for (p, id) in self.people.iter().enumerate() {
            if self.withdrawn.contains(&(p as u32)) {
                continue;
            }
            for (b, mut v) in self.driver.row(p as u32) {
                if let Some(was) = before.and_then(|m| m.get((p as u32, b))) {
                    seen.insert((p as u32, b));
                    v = *was;
                }
                if !v.is_zero() {
                    out.push(((*id, self.brands[b as usize]), v.times(&factor)));
                }
            }
        }
        // Entries the event changed that are zero now (not in the rows).
        for &((p, b), was) in before.iter().flat_map(|m| m.iter()) {
            if !seen.contains(&(p, b)) && !was.is_zero() && !self.withdrawn.contains(&p) {
                out.push((
                    (self.people[p as usize], self.brands[b as usize]),
                    was.times(&factor),
                ));
            }
        }
        Some(out)
    }

    /// The series read at `at` one person at a time (what-if's scores
    /// before, `score::simulate`); `None` if `at` is before the latest
    /// event, as [`Self::components_at`].
    pub fn at(&self, at: DateTime<Utc>) -> Option<LiveAt<'_>> {
        let factor = match (self.origin, self.latest) {
            (Some(o), Some(l)) if at >= l => self.factors(seconds_between(o, at), -1.0),
            (None, _) => [1.0; 6],
            _ => return None,
        };
        Some(LiveAt {
            scores: self,
            factor,
        })
    }

    /// The largest error the live series may carry before a rebuild, in raw
    /// units: `MAX_ERROR_TOLERANCES` times the model's tolerance.
    pub fn max_error(&self) -> f64 {
        MAX_ERROR_TOLERANCES * self.model.live_tolerance
    }

    /// The drift check: measures the bound and says whether it is past
    /// [`Self::max_error`] (then the state rebuilds the series).
    pub(crate) fn check_drift(&self) -> bool {
        self.error_bound() > self.max_error()
    }

    /// Counts a rebuild forced by the drift check.
    pub(crate) fn note_recompute(&mut self) {
        self.stats.recomputes += 1;
    }
}

/// Sorts rows of distinct (person, brand) keys by (person id, brand id),
/// as [`LiveScores::components_at`] answers them.
pub(crate) fn sort_components(rows: &mut [((Handle, Handle), Components)], table: &EntityTable) {
    sort_components_ranked(rows, &table.ranks());
}

/// [`sort_components`] with the table's ranks (`EntityTable::ranks`):
/// the keys compared are numbers, not names (task h72: a checkpoint
/// build sorts every relationship twice, before and after). Stable, so the runs a series' own order leaves
/// (people and brands numbered in id order at its build) cost one pass;
/// the keys are distinct, so any sort gives this order.
pub(crate) fn sort_components_ranked(rows: &mut [((Handle, Handle), Components)], ranks: &[u32]) {
    rows.sort_by_key(|((p, b), _)| rank_key(ranks, *p, *b));
}

/// A (person, brand) key as one number in (person id, brand id) order.
pub(crate) fn rank_key(ranks: &[u32], person: Handle, brand: Handle) -> u64 {
    (u64::from(ranks[person.index()]) << 32) | u64::from(ranks[brand.index()])
}

/// The live series at one time ([`LiveScores::at`]).
#[derive(Debug, Clone, Copy)]
pub struct LiveAt<'a> {
    scores: &'a LiveScores,
    /// Forward units to current units at the time read.
    factor: Components,
}

impl LiveAt<'_> {
    /// `person`'s relationships as `(brand, raw)`, raw the weighted
    /// components summed in component order (as `RelationScore` sums them),
    /// in the series' brand numbering; empty for a person the series does
    /// not hold or who has withdrawn consent, as [`LiveScores::components_at`].
    pub fn row(&self, person: Handle) -> Vec<(Handle, f64)> {
        let live = self.scores;
        let Some(&p) = live.person_ix.get(&person) else {
            return Vec::new();
        };
        if live.withdrawn.contains(&p) {
            return Vec::new();
        }
        live.driver
            .row(p)
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|&(b, v)| (live.brands[b as usize], v.times(&self.factor).iter().sum()))
            .collect()
    }

    /// [`LiveScores::error_bound`]: raw units at the latest event, an upper
    /// bound at any later time (decay only shrinks it).
    pub fn error_bound(&self) -> f64 {
        self.scores.error_bound()
    }
}
