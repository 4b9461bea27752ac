//! How many relationships a log's state can hold at most, counted in the
//! first pass of a build, before the fold allocates anything
//! (`KindsPass`), for the memory check at open (`engine::Footprint`). It
//! owns that count only; it must not score, do IO or read the clock.
//!
//! A relationship (person, brand) is scored when the person's own events
//! name the brand (purchase, post, mention, review, service, endorsement, a
//! follow of the brand, an occasion performed or attended, a cause the
//! person's registered interests match), or when propagation carries a
//! relationship there: the audience spill from a person to their followers
//! (`propagate::batch`), the association spill from one brand of a person
//! to the brands the person endorses. The count is, per brand, the people
//! whose events name it plus everyone who follows them, directly or
//! through others (every hop of the spill, before the model's tolerance
//! cuts it), capped by the people: an upper bound. It replaces a calibrated 12 relationships per event (issue
//! #10's 10M shape), which a shape never measured could exceed.

use rustc_hash::{FxHashMap, FxHashSet};

use super::fold::FoldState;
use crate::domain::{EntityId, Event, EventKind};
use crate::graph::Handle;

/// The first pass's count of who names which brand and who follows whom.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    /// `brand << 32 | person` of every (person, brand) the events name.
    named: FxHashSet<u64>,
    /// `followee << 32 | follower`.
    follows: FxHashSet<u64>,
    /// Follows of an entity the table did not have yet (it gets a handle
    /// from a later event, or is never scored).
    follows_later: Vec<(u32, EntityId)>,
    /// Occasion to its brand, and (occasion, person) of performers and
    /// attendees: resolved at the end (an attendance may come first).
    occasion_brand: FxHashMap<u32, u32>,
    attended: FxHashSet<u64>,
    /// Causes: (brand, tags), their people found by interest at the end.
    causes: FxHashMap<u32, FxHashSet<String>>,
}

fn key(high: u32, low: u32) -> u64 {
    (u64::from(high) << 32) | u64::from(low)
}

impl Reach {
    /// Counts an event (after `FoldState::fix_kinds` gave its entities
    /// handles).
    pub(crate) fn see(&mut self, fold: &FoldState, event: &Event) {
        let table = fold.table();
        let h = |id: &EntityId| table.get(id).map(|x| x.index() as u32);
        let mut name = |person: &EntityId, brand: &EntityId| {
            if let (Some(p), Some(b)) = (h(person), h(brand)) {
                self.named.insert(key(b, p));
            }
        };
        match &event.kind {
            EventKind::Purchase { person, brand, .. }
            | EventKind::Post { person, brand, .. }
            | EventKind::Mention { person, brand, .. }
            | EventKind::Review { person, brand, .. }
            | EventKind::Service { person, brand, .. }
            | EventKind::Endorsement { person, brand, .. } => name(person, brand),
            EventKind::Follow { person, target, .. } => {
                // A brand followed is named; a person followed spills.
                let Some(q) = h(person) else { return };
                match h(target) {
                    Some(p) => {
                        self.follows.insert(key(p, q));
                    }
                    None => self.follows_later.push((q, target.clone())),
                }
            }
            EventKind::Occasion {
                occasion,
                brand,
                performers,
                ..
            } => {
                let (Some(o), Some(b)) = (h(occasion), h(brand)) else {
                    return;
                };
                self.occasion_brand.insert(o, b);
                for p in performers.iter().filter_map(h) {
                    self.attended.insert(key(o, p));
                }
            }
            EventKind::Attendance { person, occasion } => {
                if let (Some(p), Some(o)) = (h(person), h(occasion)) {
                    self.attended.insert(key(o, p));
                }
            }
            EventKind::Cause { brand, tags, .. } => {
                if let Some(b) = h(brand) {
                    let known = self.causes.entry(b).or_default();
                    known.extend(tags.iter().map(|t| t.to_lowercase()));
                }
            }
            EventKind::BrandSales { .. }
            | EventKind::Audience { .. }
            | EventKind::Unfollow { .. }
            | EventKind::Consent { .. } => {}
        }
    }

    /// The most relationships the state can hold (module docs): per brand,
    /// the people naming it and those who follow them, directly or through
    /// others, at most every person; at most `people × brands` in all.
    pub(crate) fn bound(mut self, fold: &FoldState, people: u64, brands: u64) -> u64 {
        let table = fold.table();
        for (q, target) in std::mem::take(&mut self.follows_later) {
            if let Some(p) = table.get(&target) {
                self.follows.insert(key(p.index() as u32, q));
            }
        }
        // A follow of a brand names it.
        let is_brand =
            |x: u32| table.kind(Handle::from_index(x)) == crate::domain::EntityKind::Brand;
        let mut followers: Vec<u64> = Vec::with_capacity(self.follows.len());
        for k in std::mem::take(&mut self.follows) {
            let (p, q) = ((k >> 32) as u32, k as u32);
            if is_brand(p) {
                self.named.insert(key(p, q));
            } else {
                followers.push(k);
            }
        }
        followers.sort_unstable();
        // CSR: the followers of handle `p` are `follower[start[p]..start[p + 1]]`.
        let mut start = vec![0u32; table.len() + 1];
        for k in &followers {
            start[(k >> 32) as usize + 1] += 1;
        }
        let mut sum = 0;
        for s in &mut start {
            sum += *s;
            *s = sum;
        }
        let follower: Vec<u32> = followers.iter().map(|k| *k as u32).collect();
        drop(followers);
        for k in std::mem::take(&mut self.attended) {
            if let Some(&b) = self.occasion_brand.get(&((k >> 32) as u32)) {
                self.named.insert(key(b, k as u32));
            }
        }
        for (b, tags) in std::mem::take(&mut self.causes) {
            for tag in tags {
                for p in fold.interested(&tag) {
                    self.named.insert(key(b, p.index() as u32));
                }
            }
        }
        let mut named: Vec<u64> = self.named.into_iter().collect();
        named.sort_unstable();
        // Per brand, mark the people named and everyone who follows them,
        // directly or through others (the audience spill, hop by hop).
        let mut mark = vec![u32::MAX; table.len()];
        let mut queue: Vec<u32> = Vec::new();
        let mut total = 0u64;
        let mut at = 0;
        while at < named.len() {
            let b = (named[at] >> 32) as u32;
            let end = at + named[at..].partition_point(|k| (k >> 32) as u32 == b);
            let mut reached = 0u64;
            queue.clear();
            for &k in &named[at..end] {
                let p = k as u32;
                if mark[p as usize] != b {
                    mark[p as usize] = b;
                    reached += 1;
                    queue.push(p);
                }
            }
            while let Some(p) = queue.pop() {
                let span = start[p as usize] as usize..start[p as usize + 1] as usize;
                for &q in &follower[span] {
                    if mark[q as usize] != b {
                        mark[q as usize] = b;
                        reached += 1;
                        queue.push(q);
                    }
                }
            }
            total += reached.min(people);
            at = end;
        }
        total.min(people.saturating_mul(brands))
    }
}
