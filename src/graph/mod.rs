//! The entity graph: every entity once, as a `u32` [`Handle`] into one
//! string table ([`EntityTable`]: ids are interned once; `EntityId` strings
//! appear only at the edges, in what the state is given and what it
//! answers), with its kind; and the follow and association edges (the two
//! the scores read; hosting, attendance and performing live in the fold's
//! occasions, which is where the rules read them), each with its history
//! (event time of each change), so the graph can be read as it stood at any
//! time. petgraph holds the adjacency; `NodeIndex` never leaves this module.
//!
//! Handles are numbered in the order entities are first seen, which depends
//! on arrival order; every query here returns results sorted by id (the
//! entity's name), so no sum anywhere depends on the numbering. No IO, no
//! clock.

use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use rustc_hash::FxHashMap;

use crate::domain::{EntityId, EntityKind};

/// An entity of the state: its number in the [`EntityTable`]. Handles are
/// not ordered by id (module docs): sort by [`EntityTable::name`] where
/// order matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(u32);

impl Handle {
    /// The handle numbered `i`: snapshots give back the table they saved
    /// (`RelationGraph::from_parts` checks the range); views number
    /// entities of their own after a table's (`score::simulate`'s overlay).
    pub(crate) fn from_index(i: u32) -> Handle {
        Handle(i)
    }

    /// The handle's number, `0..EntityTable::len()`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The string table: every entity id once, with its kind.
#[derive(Debug, Clone, Default)]
pub struct EntityTable {
    names: Vec<EntityId>,
    kinds: Vec<EntityKind>,
    index: FxHashMap<EntityId, Handle>,
}

impl EntityTable {
    /// The handle of an id, if the table has it.
    pub fn get(&self, id: &EntityId) -> Option<Handle> {
        self.index.get(id).copied()
    }

    /// The id of a handle.
    pub fn name(&self, h: Handle) -> &EntityId {
        &self.names[h.index()]
    }

    /// The kind of a handle.
    pub fn kind(&self, h: Handle) -> EntityKind {
        self.kinds[h.index()]
    }

    /// Entities in the table.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every handle, in handle order.
    pub fn handles(&self) -> impl Iterator<Item = Handle> + use<> {
        (0..self.names.len() as u32).map(Handle)
    }

    /// Compares two handles by id: the order every query answers in.
    pub fn cmp(&self, a: Handle, b: Handle) -> Ordering {
        self.name(a).cmp(self.name(b))
    }

    /// Sorts handles by id.
    pub fn sort(&self, handles: &mut [Handle]) {
        handles.sort_unstable_by(|a, b| self.cmp(*a, *b));
    }

    /// Every handle's position in id order, by handle number
    /// (`ranks[h.index()]`): ids are unique, so comparing two handles'
    /// ranks is [`Self::cmp`], without reading the names (a sort of many
    /// rows by id compares numbers, after one sort of the table).
    pub fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<Handle> = self.handles().collect();
        self.sort(&mut order);
        let mut ranks = vec![0; order.len()];
        for (rank, h) in order.iter().enumerate() {
            ranks[h.index()] = rank as u32;
        }
        ranks
    }

    /// The handle of `id`, added with `kind` if new (answers whether it
    /// was); an existing entity keeps its kind unless a consumer is
    /// promoted to influencer.
    fn ensure(&mut self, id: &EntityId, kind: EntityKind) -> (Handle, bool) {
        if let Some(&h) = self.index.get(id) {
            let k = &mut self.kinds[h.index()];
            if *k == EntityKind::Consumer && kind == EntityKind::Influencer {
                *k = kind;
            }
            return (h, false);
        }
        let h = Handle(u32::try_from(self.names.len()).expect("fewer than 2^32 entities"));
        self.names.push(id.clone());
        self.kinds.push(kind);
        self.index.insert(id.clone(), h);
        (h, true)
    }

    fn shrink_to_fit(&mut self) {
        self.names.shrink_to_fit();
        self.kinds.shrink_to_fit();
        self.index.shrink_to_fit();
    }
}

/// What an edge means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    /// person -> person or person -> brand, with a strength.
    Follow,
    /// person -> brand: the person is publicly tied to the brand (endorses it,
    /// performs at its occasions); what happens to the person spills onto it.
    Association,
}

/// One edge's history: `(time, weight)` changes in time order; a weight of
/// `None` means the edge ended (an unfollow).
///
/// Shared, copied on change: a copy of the graph (a checkpoint of the fold,
/// a refold of late events, `engine/refold.rs`) then allocates nothing per
/// edge. A `Vec` per edge made the graph's copy two thirds of a refold's
/// time (`perf` under `benches/stream.sh`'s single events), and an edge's
/// history changes seldom (a follow, an unfollow).
#[derive(Debug, Clone, Default)]
struct History(Arc<[(DateTime<Utc>, Option<f64>)]>);

impl History {
    fn set(&mut self, at: DateTime<Utc>, weight: Option<f64>) {
        // Changes arrive in canonical order; equal times keep arrival order.
        let pos = self.0.partition_point(|(t, _)| *t <= at);
        let mut changes = Vec::with_capacity(self.0.len() + 1);
        changes.extend_from_slice(&self.0[..pos]);
        changes.push((at, weight));
        changes.extend_from_slice(&self.0[pos..]);
        self.0 = changes.into();
    }
    fn at(&self, at: DateTime<Utc>) -> Option<f64> {
        let pos = self.0.partition_point(|(t, _)| *t <= at);
        pos.checked_sub(1).and_then(|i| self.0[i].1)
    }
}

/// The entity graph (module docs): the entity table, and follow and
/// association edges with their history. Queries answer as of a time and
/// sorted by id.
#[derive(Debug, Clone, Default)]
pub struct RelationGraph {
    entities: EntityTable,
    /// Node `i` is handle `i`.
    graph: DiGraph<(), (EdgeKind, History)>,
}

fn node(h: Handle) -> NodeIndex {
    NodeIndex::new(h.index())
}

fn handle(n: NodeIndex) -> Handle {
    Handle(n.index() as u32)
}

impl RelationGraph {
    /// The entity table.
    pub fn entities(&self) -> &EntityTable {
        &self.entities
    }

    /// The handle of an id, if the graph has it.
    pub fn handle(&self, id: &EntityId) -> Option<Handle> {
        self.entities.get(id)
    }

    /// The kind of an entity, if the graph has it.
    pub fn kind(&self, id: &EntityId) -> Option<EntityKind> {
        self.entities.get(id).map(|h| self.entities.kind(h))
    }

    /// Adds the entity if it is new; an existing entity keeps its kind unless
    /// a consumer is promoted to influencer. Answers its handle.
    pub fn ensure(&mut self, id: &EntityId, kind: EntityKind) -> Handle {
        let (h, new) = self.entities.ensure(id, kind);
        if new {
            let n = self.graph.add_node(());
            debug_assert_eq!(handle(n), h);
        }
        h
    }

    /// Sets the kind outright (an explicit registration).
    pub fn set_kind(&mut self, id: &EntityId, kind: EntityKind) {
        let h = self.ensure(id, kind);
        self.entities.kinds[h.index()] = kind;
    }

    /// Records that the edge `from -> to` of `kind` has `weight` from `at` on
    /// (`None`: ends).
    pub fn set_edge(
        &mut self,
        from: Handle,
        to: Handle,
        kind: EdgeKind,
        at: DateTime<Utc>,
        weight: Option<f64>,
    ) {
        let existing = self
            .graph
            .edges_directed(node(from), Direction::Outgoing)
            .find(|e| e.target() == node(to) && e.weight().0 == kind)
            .map(|e| e.id());
        let e = existing.unwrap_or_else(|| {
            self.graph
                .add_edge(node(from), node(to), (kind, History::default()))
        });
        self.graph[e].1.set(at, weight);
    }

    /// `h`'s out-edges of `kind` alive at `at`, with weights, sorted by id.
    fn out(&self, h: Handle, kind: EdgeKind, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let mut out: Vec<(Handle, f64)> = self
            .graph
            .edges_directed(node(h), Direction::Outgoing)
            .filter(|e| e.weight().0 == kind)
            .filter_map(|e| e.weight().1.at(at).map(|w| (handle(e.target()), w)))
            .collect();
        out.sort_unstable_by(|a, b| self.entities.cmp(a.0, b.0));
        out
    }

    /// The span of time around `at` over which every out-edge of `h`
    /// (follows and associations) keeps the weight it has at `at`:
    /// `(from, until)`, the latest change at or before `at` and the earliest
    /// after it (`None`: no change on that side). What a cached adjoint walk
    /// may be reused over (`score::propagate::adjoint::Walk`).
    pub fn out_steady(
        &self,
        h: Handle,
        at: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let (mut from, mut until) = (None, None::<DateTime<Utc>>);
        for e in self.graph.edges_directed(node(h), Direction::Outgoing) {
            let changes = &e.weight().1.0;
            let pos = changes.partition_point(|(t, _)| *t <= at);
            if let Some(i) = pos.checked_sub(1) {
                from = from.max(Some(changes[i].0));
            }
            if let Some((t, _)) = changes.get(pos) {
                until = Some(until.map_or(*t, |u| u.min(*t)));
            }
        }
        (from, until)
    }

    /// The people `person` follows at `at`, with follow strengths, sorted by id.
    pub fn followees(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let mut v = self.out(person, EdgeKind::Follow, at);
        v.retain(|(p, _)| self.entities.kind(*p).is_person());
        v
    }

    /// The people following `person` at `at`, with follow strengths, sorted
    /// by id (the dashboard's Person 360°; scoring reads out-edges only).
    pub fn followers(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        let mut v: Vec<(Handle, f64)> = self
            .graph
            .edges_directed(node(person), Direction::Incoming)
            .filter(|e| e.weight().0 == EdgeKind::Follow)
            .filter(|e| self.entities.kind(handle(e.source())).is_person())
            .filter_map(|e| e.weight().1.at(at).map(|w| (handle(e.source()), w)))
            .collect();
        v.sort_unstable_by(|a, b| self.entities.cmp(a.0, b.0));
        v
    }

    /// Brands `person` is associated with at `at`, with strengths, sorted by id.
    pub fn associations(&self, person: Handle, at: DateTime<Utc>) -> Vec<(Handle, f64)> {
        self.out(person, EdgeKind::Association, at)
    }

    /// Every person -> person follow edge alive at `at`: (follower, followee,
    /// strength), sorted by (follower id, followee id).
    pub fn follow_edges(&self, at: DateTime<Utc>) -> Vec<(Handle, Handle, f64)> {
        let mut out: Vec<_> = self
            .graph
            .edge_references()
            .filter(|e| e.weight().0 == EdgeKind::Follow)
            .filter(|e| self.entities.kind(handle(e.target())).is_person())
            .filter_map(|e| {
                e.weight()
                    .1
                    .at(at)
                    .map(|w| (handle(e.source()), handle(e.target()), w))
            })
            .collect();
        out.sort_unstable_by(|a, b| {
            self.entities
                .cmp(a.0, b.0)
                .then_with(|| self.entities.cmp(a.1, b.1))
        });
        out
    }

    /// Whether one edge changed (weight or end) at a time in `(after, until]`.
    pub fn edge_changed_between(
        &self,
        from: Handle,
        to: Handle,
        kind: EdgeKind,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> bool {
        self.graph
            .edges_directed(node(from), Direction::Outgoing)
            .find(|e| e.target() == node(to) && e.weight().0 == kind)
            .is_some_and(|e| {
                let changes = &e.weight().1.0;
                let first_after = changes.partition_point(|(t, _)| *t <= after);
                changes.get(first_after).is_some_and(|(t, _)| *t <= until)
            })
    }

    /// The weight of one edge at `at`, if it is alive then.
    pub fn edge_weight(
        &self,
        from: Handle,
        to: Handle,
        kind: EdgeKind,
        at: DateTime<Utc>,
    ) -> Option<f64> {
        self.graph
            .edges_directed(node(from), Direction::Outgoing)
            .find(|e| e.target() == node(to) && e.weight().0 == kind)
            .and_then(|e| e.weight().1.at(at))
    }

    /// Gives back memory grown for appends (after a build).
    pub fn shrink_to_fit(&mut self) {
        self.entities.shrink_to_fit();
        self.graph.shrink_to_fit();
    }

    /// The graph as plain parts, for a snapshot (`score::snapshot`): the
    /// table's ids and kinds in handle order, and every edge in petgraph's
    /// edge order (source, target, kind, history of (time, weight)).
    /// `from_parts` gives back a graph that answers every query alike.
    #[allow(clippy::type_complexity)]
    pub(crate) fn to_parts(
        &self,
    ) -> (
        &[EntityId],
        &[EntityKind],
        Vec<(Handle, Handle, EdgeKind, &[(DateTime<Utc>, Option<f64>)])>,
    ) {
        let edges = self
            .graph
            .edge_references()
            .map(|e| {
                let (kind, history) = e.weight();
                (
                    handle(e.source()),
                    handle(e.target()),
                    *kind,
                    &history.0[..],
                )
            })
            .collect();
        (&self.entities.names, &self.entities.kinds, edges)
    }

    /// The graph of `to_parts`' parts. Edges are added in the order given,
    /// so petgraph's adjacency lists come back as they were. `None` when
    /// the parts do not fit together (lengths, a handle out of range).
    #[allow(clippy::type_complexity)]
    pub(crate) fn from_parts(
        names: Vec<EntityId>,
        kinds: Vec<EntityKind>,
        edges: Vec<(u32, u32, EdgeKind, Vec<(DateTime<Utc>, Option<f64>)>)>,
    ) -> Option<RelationGraph> {
        if names.len() != kinds.len() || u32::try_from(names.len()).is_err() {
            return None;
        }
        let mut graph = DiGraph::with_capacity(names.len(), edges.len());
        for _ in 0..names.len() {
            graph.add_node(());
        }
        for (from, to, kind, history) in edges {
            if from as usize >= names.len() || to as usize >= names.len() {
                return None;
            }
            graph.add_edge(
                NodeIndex::new(from as usize),
                NodeIndex::new(to as usize),
                (kind, History(history.into())),
            );
        }
        let mut index = FxHashMap::default();
        index.reserve(names.len());
        for (i, id) in names.iter().enumerate() {
            if index.insert(id.clone(), Handle(i as u32)).is_some() {
                return None;
            }
        }
        Some(RelationGraph {
            entities: EntityTable {
                names,
                kinds,
                index,
            },
            graph,
        })
    }
}
