//! The entity graph: people, brands and occasions as petgraph nodes, with
//! their kinds; follow and association edges, the two the scores read
//! (hosting, attendance and performing live in the fold's occasions, which
//! is where the rules read them). Edges carry their history (event time of
//! each change) so the graph can be read as it stood at any time.
//! `NodeIndex` never leaves this module: callers speak `EntityId`. No IO,
//! no clock.
//!
//! Iteration order of petgraph depends on insertion order, which depends on
//! arrival order; every query here returns results sorted by id so that
//! scores never depend on arrival order.

use rustc_hash::FxHashMap;

use chrono::{DateTime, Utc};
use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::domain::{EntityId, EntityKind};

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
#[derive(Debug, Clone, Default)]
struct History(Vec<(DateTime<Utc>, Option<f64>)>);

impl History {
    fn set(&mut self, at: DateTime<Utc>, weight: Option<f64>) {
        // Changes arrive in canonical order; equal times keep arrival order.
        let pos = self.0.partition_point(|(t, _)| *t <= at);
        self.0.insert(pos, (at, weight));
    }
    fn at(&self, at: DateTime<Utc>) -> Option<f64> {
        let pos = self.0.partition_point(|(t, _)| *t <= at);
        pos.checked_sub(1).and_then(|i| self.0[i].1)
    }
}

#[derive(Debug, Clone)]
struct Node {
    id: EntityId,
    kind: EntityKind,
}

/// The entity graph (module docs): every entity with its kind, and follow
/// and association edges with their history. Queries answer as of a time
/// and sorted by id.
#[derive(Debug, Clone, Default)]
pub struct RelationGraph {
    graph: DiGraph<Node, (EdgeKind, History)>,
    index: FxHashMap<EntityId, NodeIndex>,
    edges: FxHashMap<(NodeIndex, NodeIndex, EdgeKind), EdgeIndex>,
}

impl RelationGraph {
    /// The kind of an entity, if the graph has it.
    pub fn kind(&self, id: &EntityId) -> Option<EntityKind> {
        self.index.get(id).map(|&n| self.graph[n].kind)
    }

    /// Adds the entity if it is new; an existing entity keeps its kind unless
    /// a consumer is promoted to influencer.
    pub fn ensure(&mut self, id: &EntityId, kind: EntityKind) -> EntityKind {
        if let Some(&n) = self.index.get(id) {
            let node = &mut self.graph[n];
            if node.kind == EntityKind::Consumer && kind == EntityKind::Influencer {
                node.kind = kind;
            }
            return node.kind;
        }
        let n = self.graph.add_node(Node {
            id: id.clone(),
            kind,
        });
        self.index.insert(id.clone(), n);
        kind
    }

    /// Sets the kind outright (an explicit registration).
    pub fn set_kind(&mut self, id: &EntityId, kind: EntityKind) {
        let n = match self.index.get(id) {
            Some(&n) => n,
            None => {
                self.ensure(id, kind);
                return;
            }
        };
        self.graph[n].kind = kind;
    }

    /// Records that the edge `from -> to` of `kind` has `weight` from `at` on
    /// (`None`: ends). Both entities must exist.
    pub fn set_edge(
        &mut self,
        from: &EntityId,
        to: &EntityId,
        kind: EdgeKind,
        at: DateTime<Utc>,
        weight: Option<f64>,
    ) {
        let (Some(&a), Some(&b)) = (self.index.get(from), self.index.get(to)) else {
            return;
        };
        let e = *self
            .edges
            .entry((a, b, kind))
            .or_insert_with(|| self.graph.add_edge(a, b, (kind, History::default())));
        self.graph[e].1.set(at, weight);
    }

    fn neighbours(
        &self,
        id: &EntityId,
        kind: EdgeKind,
        dir: Direction,
        at: DateTime<Utc>,
    ) -> Vec<(EntityId, f64)> {
        let Some(&n) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<(EntityId, f64)> = self
            .graph
            .edges_directed(n, dir)
            .filter(|e| e.weight().0 == kind)
            .filter_map(|e| {
                let other = if dir == Direction::Outgoing {
                    e.target()
                } else {
                    e.source()
                };
                e.weight()
                    .1
                    .at(at)
                    .map(|w| (self.graph[other].id.clone(), w))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The people `person` follows at `at`, with follow strengths, sorted by id.
    pub fn followees(&self, person: &EntityId, at: DateTime<Utc>) -> Vec<(EntityId, f64)> {
        let mut v = self.neighbours(person, EdgeKind::Follow, Direction::Outgoing, at);
        v.retain(|(id, _)| self.kind(id).is_some_and(EntityKind::is_person));
        v
    }

    /// Brands `person` is associated with at `at`, with strengths, sorted by id.
    pub fn associations(&self, person: &EntityId, at: DateTime<Utc>) -> Vec<(EntityId, f64)> {
        self.neighbours(person, EdgeKind::Association, Direction::Outgoing, at)
    }

    /// Every person -> person follow edge alive at `at`: (follower, followee, strength).
    pub fn follow_edges(&self, at: DateTime<Utc>) -> Vec<(EntityId, EntityId, f64)> {
        let mut out: Vec<_> = self
            .graph
            .edge_references()
            .filter(|e| e.weight().0 == EdgeKind::Follow)
            .filter(|e| self.graph[e.target()].kind.is_person())
            .filter_map(|e| {
                e.weight().1.at(at).map(|w| {
                    (
                        self.graph[e.source()].id.clone(),
                        self.graph[e.target()].id.clone(),
                        w,
                    )
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Every entity with its kind, sorted by id.
    pub fn entities(&self) -> Vec<(EntityId, EntityKind)> {
        let mut v: Vec<_> = self
            .graph
            .node_weights()
            .map(|n| (n.id.clone(), n.kind))
            .collect();
        v.sort();
        v
    }
}

impl RelationGraph {
    /// The weight of one edge at `at`, if it is alive then.
    pub fn edge_weight(
        &self,
        from: &EntityId,
        to: &EntityId,
        kind: EdgeKind,
        at: DateTime<Utc>,
    ) -> Option<f64> {
        let (&a, &b) = (self.index.get(from)?, self.index.get(to)?);
        let e = self.edges.get(&(a, b, kind))?;
        self.graph[*e].1.at(at)
    }

    /// The strength with which `person` follows `target` at `at`.
    pub fn follow_weight(
        &self,
        person: &EntityId,
        target: &EntityId,
        at: DateTime<Utc>,
    ) -> Option<f64> {
        self.edge_weight(person, target, EdgeKind::Follow, at)
    }
}
