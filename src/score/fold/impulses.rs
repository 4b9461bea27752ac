//! Impulses as the fold keeps them, and the one way to read them: each
//! person's impulses in columns, in canonical event order, where a brand
//! sales report's lift (the same brand, time, amount and event for every
//! person it credits) is kept once, as a [`Credit`] row of the state's
//! [`Credits`], and each credited person holds its `u32` index. Every
//! reader (the adjoint walk's view, the batch, the deltas, snapshots) goes
//! through [`ImpulseList`], so this file alone knows the representation.
//! It must not decide what an impulse is worth (the rules do) nor read a
//! clock or do IO.
//!
//! Why: at 1,000,000 generated events 80 % of the impulses were sales
//! credits, copied to every participant of the brand's recent occasions
//! (33 B each, 174 B per event of the 219 the impulses took;
//! ARCHITECTURE.md, "Memory"). A credited person now holds 4 B and one
//! bit.

use chrono::{DateTime, Utc};

use crate::domain::LogPosition;
use crate::graph::Handle;
use crate::score::model::Component;

/// One impulse as readers take it: `amount` on `component` of the
/// relationship with `brand`, at `time`, caused by the event `event` (a log
/// position, or an overlay's reference: `score::simulate::SIMULATED`).
#[derive(Debug, Clone, Copy)]
pub struct Impulse {
    /// The brand of the relationship it moves.
    pub brand: Handle,
    /// The component it moves.
    pub component: Component,
    /// Its event time.
    pub time: DateTime<Utc>,
    /// Its amount, before weight and decay.
    pub amount: f64,
    /// The event that caused it, by reference.
    pub event: u64,
    /// The sales credit it is, if it is one (`Credits`' index): the same
    /// impulse, held by every person it credits, so a reader may compute
    /// what depends only on the impulse once for all of them.
    pub credit: Option<u32>,
}

/// The component every sales credit moves.
pub(crate) const CREDIT_COMPONENT: Component = Component::Sales;

/// Sales credits in columns, in the order the fold made them: credit `i` is
/// `amount[i]` on [`CREDIT_COMPONENT`] of the relationship with `brand[i]`,
/// at `time[i]`, caused by the sales report at log position `event[i]`,
/// for every person whose [`Impulses`] name `i`. One row per report that
/// credited anyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Credits {
    pub(crate) brand: Vec<Handle>,
    pub(crate) time: Vec<DateTime<Utc>>,
    pub(crate) amount: Vec<f64>,
    pub(crate) event: Vec<LogPosition>,
}

impl Credits {
    /// Adds a credit; its index.
    ///
    /// # Panics
    /// Past `u32::MAX` credits (one per sales report: beyond any log this
    /// engine can hold in memory).
    pub(crate) fn push(
        &mut self,
        brand: Handle,
        time: DateTime<Utc>,
        amount: f64,
        event: LogPosition,
    ) -> u32 {
        let i = u32::try_from(self.amount.len()).expect("fewer than 2^32 sales credits");
        self.brand.push(brand);
        self.time.push(time);
        self.amount.push(amount);
        self.event.push(event);
        i
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.amount.len()
    }

    /// Credit `i` as an impulse.
    #[inline(always)]
    fn get(&self, i: u32) -> Impulse {
        let i = i as usize;
        Impulse {
            brand: self.brand[i],
            component: CREDIT_COMPONENT,
            time: self.time[i],
            amount: self.amount[i],
            event: self.event[i],
            credit: Some(i as u32),
        }
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.brand.shrink_to_fit();
        self.time.shrink_to_fit();
        self.amount.shrink_to_fit();
        self.event.shrink_to_fit();
    }
}

/// A person's own impulses (not credits), in columns: impulse `i` is
/// `amount[i]` on `component[i]` of the relationship with `brand[i]`, at
/// `time[i]`, caused by the event at log position `event[i]`. 33 bytes an
/// impulse.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Columns {
    pub(crate) brand: Vec<Handle>,
    pub(crate) component: Vec<Component>,
    pub(crate) time: Vec<DateTime<Utc>>,
    pub(crate) amount: Vec<f64>,
    pub(crate) event: Vec<LogPosition>,
}

/// One person's impulses, in the order they were folded (canonical event
/// order, so their times ascend): own impulses in [`Columns`], credits as
/// indices into the state's [`Credits`], and one bit per impulse saying
/// which of the two comes next (set: a credit). Read through
/// [`ImpulseList`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Impulses {
    pub(crate) own: Columns,
    pub(crate) credits: Vec<u32>,
    /// Bit `i % 64` of word `i / 64`: whether impulse `i` is a credit.
    pub(crate) order: Vec<u64>,
}

impl Impulses {
    /// Appends an impulse of the person's own.
    pub(crate) fn push(
        &mut self,
        brand: Handle,
        component: Component,
        time: DateTime<Utc>,
        amount: f64,
        event: LogPosition,
    ) {
        self.mark(false);
        let c = &mut self.own;
        c.brand.push(brand);
        c.component.push(component);
        c.time.push(time);
        c.amount.push(amount);
        c.event.push(event);
    }

    /// Appends a reference to credit `credit` of the state's [`Credits`].
    pub(crate) fn push_credit(&mut self, credit: u32) {
        self.mark(true);
        self.credits.push(credit);
    }

    /// Sets the bit of the impulse about to be appended.
    fn mark(&mut self, credit: bool) {
        let i = self.len();
        if i.is_multiple_of(64) {
            self.order.push(0);
        }
        if credit {
            self.order[i / 64] |= 1 << (i % 64);
        }
    }

    /// How many there are, own and credits.
    pub(crate) fn len(&self) -> usize {
        self.own.amount.len() + self.credits.len()
    }

    /// Whether the parts fit together and with `credits` (a snapshot's
    /// check before the state is used): the columns of equal length, one
    /// bit set per credit and none past the end, every index in range.
    pub(crate) fn fits(&self, credits: &Credits) -> bool {
        let c = &self.own;
        let len = c.amount.len();
        let n = self.len();
        let ones: u32 = self.order.iter().map(|w| w.count_ones()).sum();
        let tail_clear = match n % 64 {
            0 => true,
            r => self.order.last().is_none_or(|w| w >> r == 0),
        };
        [
            c.brand.len(),
            c.component.len(),
            c.time.len(),
            c.event.len(),
        ] == [len; 4]
            && self.order.len() == n.div_ceil(64)
            && tail_clear
            && ones as usize == self.credits.len()
            && self.credits.iter().all(|&i| (i as usize) < credits.len())
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        let c = &mut self.own;
        c.brand.shrink_to_fit();
        c.component.shrink_to_fit();
        c.time.shrink_to_fit();
        c.amount.shrink_to_fit();
        c.event.shrink_to_fit();
        self.credits.shrink_to_fit();
        self.order.shrink_to_fit();
    }
}

/// A person's impulses as every reader takes them: [`Impulses`] with the
/// [`Credits`] their references point into. Iterates in canonical event
/// order, the order the fold made them, so sums over it add in the same
/// order whatever the representation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImpulseList<'a> {
    list: &'a Impulses,
    credits: &'a Credits,
}

impl<'a> ImpulseList<'a> {
    pub(crate) fn new(list: &'a Impulses, credits: &'a Credits) -> Self {
        Self { list, credits }
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// How many are at or before `at` (they come first): those of the own
    /// impulses plus those of the credits, each in time order.
    pub(crate) fn until(&self, at: DateTime<Utc>) -> usize {
        let own = self.list.own.time.partition_point(|t| *t <= at);
        let credits = self
            .list
            .credits
            .partition_point(|&i| self.credits.time[i as usize] <= at);
        own + credits
    }

    /// Every impulse, in canonical event order.
    pub(crate) fn iter(&self) -> Iter<'a> {
        self.first(self.len())
    }

    /// The first `n` impulses (at most [`Self::len`]), in canonical event
    /// order.
    pub(crate) fn first(&self, n: usize) -> Iter<'a> {
        Iter {
            list: self.list,
            credits: self.credits,
            i: 0,
            own: 0,
            credit: 0,
            end: n.min(self.len()),
        }
    }

    /// The impulses at or before `at`, in canonical event order.
    pub(crate) fn up_to(&self, at: DateTime<Utc>) -> Iter<'a> {
        self.first(self.until(at))
    }

    /// The brand of every impulse (each credit's once per reference), in
    /// no particular order.
    pub(crate) fn brands(self) -> impl Iterator<Item = Handle> + 'a {
        let credits = self.credits;
        self.list.own.brand.iter().copied().chain(
            self.list
                .credits
                .iter()
                .map(move |&i| credits.brand[i as usize]),
        )
    }
}

/// The impulses of an [`ImpulseList`], in canonical event order.
#[derive(Debug, Clone)]
pub(crate) struct Iter<'a> {
    list: &'a Impulses,
    credits: &'a Credits,
    /// The next impulse.
    i: usize,
    /// The next own impulse and the next credit reference.
    own: usize,
    credit: usize,
    end: usize,
}

impl Iter<'_> {
    /// The impulse at the cursor, which it then passes (`i < end`).
    #[inline(always)]
    fn take_next(&mut self) -> Impulse {
        let is_credit = self.list.order[self.i / 64] >> (self.i % 64) & 1 == 1;
        self.i += 1;
        if is_credit {
            let k = self.list.credits[self.credit];
            self.credit += 1;
            self.credits.get(k)
        } else {
            let (c, j) = (&self.list.own, self.own);
            self.own += 1;
            Impulse {
                brand: c.brand[j],
                component: c.component[j],
                time: c.time[j],
                amount: c.amount[j],
                event: c.event[j],
                credit: None,
            }
        }
    }
}

impl Iterator for Iter<'_> {
    type Item = Impulse;

    #[inline]
    fn next(&mut self) -> Option<Impulse> {
        (self.i < self.end).then(|| self.take_next())
    }

    /// The loop every `for_each` and sum runs, generic over its closure so
    /// that it is compiled into its caller: the read path's pass over the
    /// impulses called a shared `next` per impulse, and a relationship
    /// read at four times on 1,000,000 events took 1.6 times as long
    /// (`examples/read_split.rs`, `read_warm_us`).
    #[inline]
    fn fold<B, F: FnMut(B, Impulse) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = init;
        while self.i < self.end {
            let imp = self.take_next();
            acc = f(acc, imp);
        }
        acc
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.i;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    /// Own impulses and credits interleave in the order they were pushed,
    /// across a word of order bits, and `until` counts both parts.
    #[test]
    fn own_impulses_and_credits_read_back_in_the_order_they_were_folded() {
        let mut credits = Credits::default();
        let mut list = Impulses::default();
        let b = Handle::from_index(3);
        let mut want = Vec::new();
        for k in 0..150_i64 {
            if k % 3 == 1 {
                let i = credits.push(b, t(k), k as f64, k as u64);
                list.push_credit(i);
                want.push((Component::Sales, k));
            } else {
                list.push(b, Component::Service, t(k), k as f64, k as u64);
                want.push((Component::Service, k));
            }
        }
        assert!(list.fits(&credits));
        let read = ImpulseList::new(&list, &credits);
        let got: Vec<(Component, i64)> = read
            .iter()
            .map(|i| {
                assert_eq!(i.amount, i.time.timestamp() as f64);
                assert_eq!(i.event, i.time.timestamp() as u64);
                (i.component, i.time.timestamp())
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(read.until(t(99)), 100);
        assert_eq!(read.up_to(t(64)).count(), 65);
        assert_eq!(read.until(t(-1)), 0);
        assert_eq!(read.brands().count(), 150);
    }

    /// A snapshot's parts that do not fit are found before they are read.
    #[test]
    fn impulses_that_do_not_fit_their_credits_are_found() {
        let mut credits = Credits::default();
        let mut list = Impulses::default();
        let i = credits.push(Handle::from_index(0), t(0), 1.0, 0);
        list.push_credit(i);
        assert!(list.fits(&credits));
        assert!(!list.fits(&Credits::default()));
        let mut extra_bit = list.clone();
        extra_bit.order[0] |= 2;
        assert!(!extra_bit.fits(&credits));
        let mut short = list.clone();
        short.own.time.push(t(0));
        assert!(!short.fits(&credits));
    }
}
