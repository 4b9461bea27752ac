//! Role checks: an entity keeps one kind, so an event that names it in a
//! role its kind cannot play (a brand as the person of a purchase) is
//! refused before anything is stored. Also the kind a first reference
//! gives (`role_kind`).

use std::collections::HashMap;

use super::FoldState;
use crate::domain::{EntityId, EntityKind, Event, EventKind, Role};

/// Why an event cannot be applied: it names an entity in a role its kind
/// cannot play. Found before anything is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConflict {
    /// The event's field that names the entity (`person`, `brand`, ...).
    pub field: &'static str,
    /// What is wrong, for the answer's error.
    pub message: String,
}

/// The kind an entity gets when an event first names it in `role`.
pub(crate) fn role_kind(role: Role) -> EntityKind {
    match role {
        Role::Person | Role::FollowTarget => EntityKind::Consumer,
        Role::Influencer => EntityKind::Influencer,
        Role::Brand => EntityKind::Brand,
        Role::Occasion => EntityKind::Occasion,
    }
}

fn field_of(event: &Event, id: &EntityId, role: Role) -> &'static str {
    match (role, &event.kind) {
        (Role::FollowTarget, _) => "target",
        (Role::Brand, _) => "brand",
        (Role::Occasion, _) => "occasion",
        (Role::Influencer, EventKind::Occasion { performers, .. }) if performers.contains(id) => {
            "performers"
        }
        _ => "person",
    }
}

impl FoldState {
    /// Checks that every entity the event names can play its role there.
    /// `pending` holds kinds implied by events not folded yet (and gets
    /// this event's, only when it passes: a refused event implies nothing).
    /// Errors: the first conflicting reference.
    pub fn check_roles(
        &self,
        event: &Event,
        pending: &mut HashMap<EntityId, EntityKind>,
    ) -> Result<(), RoleConflict> {
        // Kinds this event gives: also seen by its own later references
        // (one id as person and brand of a purchase is refused).
        let mut implied: Vec<(&EntityId, EntityKind)> = Vec::new();
        for (id, role) in event.references() {
            let given = implied.iter().find(|(i, _)| *i == id).map(|(_, k)| *k);
            // A provisional person (only ever followed) may still turn out
            // to be a brand.
            let known = given.or_else(|| pending.get(id).copied()).or_else(|| {
                (!(self.is_provisional(id) && role != Role::Occasion))
                    .then(|| self.kind(id))
                    .flatten()
            });
            let field = field_of(event, id, role);
            let ok = match (role, known) {
                (_, None) => true,
                (Role::Person | Role::Influencer, Some(k)) => k.is_person(),
                (Role::Brand, Some(k)) => k == EntityKind::Brand,
                (Role::Occasion, Some(k)) => k == EntityKind::Occasion,
                (Role::FollowTarget, Some(k)) => k.is_person() || k == EntityKind::Brand,
            };
            if !ok {
                return Err(RoleConflict {
                    field,
                    message: format!(
                        "'{id}' is a {}, which cannot be the {field} of a {} event",
                        known.map(EntityKind::as_str).unwrap_or("?"),
                        event.kind.event_type().as_str()
                    ),
                });
            }
            if known.is_none() && role != Role::FollowTarget {
                implied.push((id, role_kind(role)));
            }
        }
        for (id, kind) in implied {
            pending.insert(id.clone(), kind);
        }
        Ok(())
    }
}
