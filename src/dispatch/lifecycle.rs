//! The booking lifecycle: which status changes are legal, and who may make them. Pure.
//!
//! ```text
//! pending -> accepted -> en_route -> arrived -> in_progress -> completed
//!    |           |           |          |
//!    +-----------+-----------+----------+--> cancelled        arrived -> no_show
//! ```

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `booking_status` in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[sqlx(type_name = "booking_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Pending,
    Accepted,
    EnRoute,
    Arrived,
    InProgress,
    Completed,
    Cancelled,
    NoShow,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::EnRoute => "en_route",
            Self::Arrived => "arrived",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::NoShow => "no_show",
        }
    }

    /// A therapist on a booking in one of these states is busy (the database's unique index
    /// `uq_bookings_one_active_per_provider` lists the same states).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::EnRoute | Self::Arrived | Self::InProgress
        )
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::NoShow)
    }

    /// The customer sees the therapist's position only while they are on their way.
    pub fn shares_position(self) -> bool {
        matches!(self, Self::Accepted | Self::EnRoute)
    }
}

/// Who asks for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Customer,
    /// The therapist assigned to the booking (or, for `accepted`, the one accepting an offer).
    Therapist,
    /// Hilot itself: the arrival geofence, the pending timeout.
    System,
    Admin,
}

impl Actor {
    /// The same party on an in-store booking, where the provider is the store.
    pub fn at_a_store(self) -> VisitActor {
        match self {
            Self::Customer => VisitActor::Customer,
            Self::Therapist => VisitActor::Store,
            Self::System => VisitActor::System,
            Self::Admin => VisitActor::Admin,
        }
    }
}

/// Why a change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionError {
    /// No path from `from` to `to` (409, naming the current status).
    Illegal {
        from: BookingStatus,
        to: BookingStatus,
    },
    /// The path exists but not for this actor (403).
    NotAllowed { to: BookingStatus },
}

impl std::fmt::Display for TransitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Illegal { from, to } => write!(
                f,
                "the booking is {}; it cannot become {}",
                from.as_str(),
                to.as_str()
            ),
            Self::NotAllowed { to } => write!(f, "you may not mark this booking {}", to.as_str()),
        }
    }
}

/// The one place that decides whether `actor` may move a booking from `from` to `to`.
pub fn check_transition(
    from: BookingStatus,
    to: BookingStatus,
    actor: Actor,
) -> Result<(), TransitionError> {
    use Actor::*;
    use BookingStatus::*;
    let allowed_actors: &[Actor] = match (from, to) {
        (Pending, Accepted) => &[Therapist],
        (Accepted, EnRoute) => &[Therapist],
        (EnRoute, Arrived) => &[Therapist, System],
        (Arrived, InProgress) => &[Therapist],
        (InProgress, Completed) => &[Therapist, Admin],
        (Arrived, NoShow) => &[Therapist, Admin],
        // Nobody is assigned while pending, so only the customer or Hilot cancels then.
        (Pending, Cancelled) => &[Customer, System, Admin],
        (Accepted | EnRoute | Arrived, Cancelled) => &[Customer, Therapist, System, Admin],
        _ => return Err(TransitionError::Illegal { from, to }),
    };
    if allowed_actors.contains(&actor) {
        Ok(())
    } else {
        Err(TransitionError::NotAllowed { to })
    }
}

/// Who asks for a change to an in-store booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitActor {
    Customer,
    /// The store's owner.
    Store,
    /// Hilot itself: the no-show and confirmation sweep.
    System,
    Admin,
}

impl VisitActor {
    pub fn label(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Store => "store",
            Self::System => "system",
            Self::Admin => "dispatcher",
        }
    }
}

/// The in-store lifecycle: whether `actor` may move a visit from `from` to `to`. Pure.
pub fn check_visit_transition(
    from: BookingStatus,
    to: BookingStatus,
    actor: VisitActor,
) -> Result<(), ApiError> {
    use BookingStatus::*;
    use VisitActor::*;
    let allowed: &[VisitActor] = match (from, to) {
        (Pending, Accepted) => &[Store, Admin],
        (Accepted, Arrived) => &[Customer, Store, Admin],
        (Arrived, InProgress) => &[Store, Admin],
        (InProgress, Completed) => &[Store, Admin],
        (Accepted, NoShow) => &[Store, System, Admin],
        (Pending | Accepted, Cancelled) => &[Customer, Store, System, Admin],
        (Arrived, Cancelled) => &[Store, Admin],
        _ => {
            return Err(ApiError::Conflict(format!(
                "the booking is {}; it cannot become {}",
                from.as_str(),
                to.as_str()
            )))
        }
    };
    if allowed.contains(&actor) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the {} may not mark this booking {}",
            actor.label(),
            to.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Actor::*;
    use BookingStatus::*;

    const ALL: [BookingStatus; 8] = [
        Pending, Accepted, EnRoute, Arrived, InProgress, Completed, Cancelled, NoShow,
    ];

    #[test]
    fn the_happy_path_is_legal_for_the_therapist() {
        for (from, to) in [
            (Pending, Accepted),
            (Accepted, EnRoute),
            (EnRoute, Arrived),
            (Arrived, InProgress),
            (InProgress, Completed),
        ] {
            assert_eq!(
                check_transition(from, to, Therapist),
                Ok(()),
                "{from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn cancellation_is_possible_until_the_session_starts() {
        for from in [Pending, Accepted, EnRoute, Arrived] {
            assert_eq!(check_transition(from, Cancelled, Customer), Ok(()));
            assert_eq!(check_transition(from, Cancelled, System), Ok(()));
        }
        for from in [InProgress, Completed, Cancelled, NoShow] {
            assert!(matches!(
                check_transition(from, Cancelled, Customer),
                Err(TransitionError::Illegal { .. })
            ));
        }
        assert_eq!(
            check_transition(Pending, Cancelled, Therapist),
            Err(TransitionError::NotAllowed { to: Cancelled })
        );
    }

    #[test]
    fn only_the_therapist_or_the_geofence_marks_arrival_and_customers_drive_nothing_else() {
        assert_eq!(check_transition(EnRoute, Arrived, System), Ok(()));
        assert_eq!(
            check_transition(EnRoute, Arrived, Customer),
            Err(TransitionError::NotAllowed { to: Arrived })
        );
        assert_eq!(check_transition(Arrived, NoShow, Therapist), Ok(()));
        assert_eq!(
            check_transition(Pending, Accepted, Customer),
            Err(TransitionError::NotAllowed { to: Accepted })
        );
    }

    #[test]
    fn final_states_never_change_and_nothing_skips_a_step() {
        for from in [Completed, Cancelled, NoShow] {
            for to in ALL {
                for actor in [Customer, Therapist, System, Admin] {
                    assert!(
                        check_transition(from, to, actor).is_err(),
                        "{from:?} -> {to:?}"
                    );
                }
            }
        }
        assert!(matches!(
            check_transition(Accepted, Arrived, Therapist),
            Err(TransitionError::Illegal { .. })
        ));
        assert!(matches!(
            check_transition(Pending, EnRoute, Therapist),
            Err(TransitionError::Illegal { .. })
        ));
        assert!(matches!(
            check_transition(EnRoute, Accepted, Therapist),
            Err(TransitionError::Illegal { .. })
        ));
    }

    #[test]
    fn active_states_match_the_database_index() {
        let active: Vec<_> = ALL.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [Accepted, EnRoute, Arrived, InProgress]);
    }
}
