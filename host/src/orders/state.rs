//! The order state machine: an explicit table of allowed transitions, in
//! the manner of NautilusTrader's. Anything not in the table is refused and
//! reported, never applied — including the late events brokers really send
//! (a fill that arrives after a cancel request is allowed; a fill after the
//! order was cancelled or rejected is not).

use std::fmt;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Recorded in the journal, not yet sent.
    New,
    /// Sent to the broker.
    Submitted,
    /// Acknowledged by the broker, working.
    Accepted,
    /// Some units filled, the rest working.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// A cancel was requested; fills may still arrive.
    PendingCancel,
    /// Cancelled; any partial fill stands.
    Cancelled,
    /// Refused by the broker (or by the host's risk checks).
    Rejected,
    /// A stop or trigger price was reached (stop orders).
    Triggered,
    /// Ran out of its validity (e.g. a day order at the close).
    Expired,
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// Sent to the broker.
    Submit,
    /// The broker acknowledged it.
    Accept,
    /// The broker refused it.
    Reject,
    /// A stop price was reached.
    Trigger,
    /// Part of it filled.
    PartialFill,
    /// The rest of it filled.
    Fill,
    /// A cancel was requested.
    CancelRequest,
    /// The broker confirmed the cancel.
    Cancel,
    /// Its validity ran out.
    Expire,
}

impl OrderState {
    /// The journal's name for the state.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Submitted => "submitted",
            Self::Accepted => "accepted",
            Self::PartiallyFilled => "partially_filled",
            Self::Filled => "filled",
            Self::PendingCancel => "pending_cancel",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Triggered => "triggered",
            Self::Expired => "expired",
        }
    }

    /// Parse [`OrderState::as_str`].
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Every state.
    pub const ALL: [Self; 10] = [
        Self::New,
        Self::Submitted,
        Self::Accepted,
        Self::PartiallyFilled,
        Self::Filled,
        Self::PendingCancel,
        Self::Cancelled,
        Self::Rejected,
        Self::Triggered,
        Self::Expired,
    ];

    /// No further transition is possible.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Filled | Self::Cancelled | Self::Rejected | Self::Expired
        )
    }

    /// The order may still fill.
    #[must_use]
    pub fn is_open(self) -> bool {
        !self.is_final()
    }
}

impl OrderEvent {
    /// Every event.
    pub const ALL: [Self; 9] = [
        Self::Submit,
        Self::Accept,
        Self::Reject,
        Self::Trigger,
        Self::PartialFill,
        Self::Fill,
        Self::CancelRequest,
        Self::Cancel,
        Self::Expire,
    ];
}

/// A transition the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTransition {
    /// The state the order was in.
    pub from: OrderState,
    /// What was claimed to happen.
    pub event: OrderEvent,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not possible for an order that is {}",
            self.event,
            self.from.as_str()
        )
    }
}

impl std::error::Error for InvalidTransition {}

/// The state after `event`, if the table allows it.
///
/// # Errors
/// [`InvalidTransition`] for anything not in the table.
pub fn transition(from: OrderState, event: OrderEvent) -> Result<OrderState, InvalidTransition> {
    use OrderEvent as E;
    use OrderState as S;
    let to = match (from, event) {
        (S::New, E::Submit) => S::Submitted,
        (S::New, E::Reject) => S::Rejected, // refused before sending (risk)
        // Withdrawn before it was sent: a protective stop or a close made needless (the position is gone).
        (S::New, E::Cancel) => S::Cancelled,
        (S::Submitted, E::Accept) => S::Accepted,
        (S::Submitted, E::Reject) => S::Rejected,
        // Taken by the broker, then refused by its risk system or the exchange (margin, a price band).
        (S::Accepted | S::Triggered, E::Reject) => S::Rejected,
        // Brokers may report a fill before (or instead of) the acknowledgement.
        (S::Submitted | S::Accepted | S::Triggered, E::PartialFill) => S::PartiallyFilled,
        (S::Submitted | S::Accepted | S::Triggered, E::Fill) => S::Filled,
        (S::Accepted, E::Trigger) => S::Triggered,
        (S::PartiallyFilled, E::PartialFill) => S::PartiallyFilled,
        (S::PartiallyFilled, E::Fill) => S::Filled,
        (S::Submitted | S::Accepted | S::Triggered | S::PartiallyFilled, E::CancelRequest) => {
            S::PendingCancel
        }
        // The race every trader meets: the fill was on its way when the cancel went out.
        (S::PendingCancel, E::PartialFill) => S::PendingCancel,
        (S::PendingCancel, E::Fill) => S::Filled,
        (S::PendingCancel, E::Cancel) => S::Cancelled,
        // A cancel refused by the broker: the order works on (its fill will come).
        (S::PendingCancel, E::Accept) => S::Accepted,
        (S::Accepted | S::Triggered | S::PartiallyFilled, E::Cancel) => S::Cancelled,
        (S::Accepted | S::Triggered | S::PartiallyFilled | S::PendingCancel, E::Expire) => {
            S::Expired
        }
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderEvent as E;
    use OrderState as S;

    #[test]
    fn the_table() {
        let allowed = [
            (S::New, E::Submit, S::Submitted),
            (S::New, E::Reject, S::Rejected),
            (S::New, E::Cancel, S::Cancelled),
            (S::Submitted, E::Accept, S::Accepted),
            (S::Submitted, E::Reject, S::Rejected),
            (S::Submitted, E::Fill, S::Filled),
            (S::Submitted, E::PartialFill, S::PartiallyFilled),
            (S::Submitted, E::CancelRequest, S::PendingCancel),
            (S::Accepted, E::Fill, S::Filled),
            (S::Accepted, E::Reject, S::Rejected),
            (S::Triggered, E::Reject, S::Rejected),
            (S::Accepted, E::PartialFill, S::PartiallyFilled),
            (S::Accepted, E::Trigger, S::Triggered),
            (S::Accepted, E::CancelRequest, S::PendingCancel),
            (S::Accepted, E::Cancel, S::Cancelled),
            (S::Accepted, E::Expire, S::Expired),
            (S::Triggered, E::Fill, S::Filled),
            (S::Triggered, E::PartialFill, S::PartiallyFilled),
            (S::Triggered, E::CancelRequest, S::PendingCancel),
            (S::Triggered, E::Cancel, S::Cancelled),
            (S::Triggered, E::Expire, S::Expired),
            (S::PartiallyFilled, E::PartialFill, S::PartiallyFilled),
            (S::PartiallyFilled, E::Fill, S::Filled),
            (S::PartiallyFilled, E::CancelRequest, S::PendingCancel),
            (S::PartiallyFilled, E::Cancel, S::Cancelled),
            (S::PartiallyFilled, E::Expire, S::Expired),
            (S::PendingCancel, E::Fill, S::Filled),
            (S::PendingCancel, E::PartialFill, S::PendingCancel),
            (S::PendingCancel, E::Cancel, S::Cancelled),
            (S::PendingCancel, E::Accept, S::Accepted),
            (S::PendingCancel, E::Expire, S::Expired),
        ];
        // Every (state, event) pair: allowed ones go where the table says, all others are refused.
        for from in S::ALL {
            for event in E::ALL {
                let want = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (transition(from, event), want) {
                    (Ok(to), Some(w)) => assert_eq!(to, w, "{from:?} + {event:?}"),
                    (Err(e), None) => assert_eq!(e, InvalidTransition { from, event }),
                    (got, want) => panic!("{from:?} + {event:?}: got {got:?}, table says {want:?}"),
                }
            }
        }
    }

    #[test]
    fn final_states_accept_nothing_and_names_round_trip() {
        for s in S::ALL {
            assert_eq!(OrderState::parse(s.as_str()), Some(s));
            if s.is_final() {
                assert!(
                    E::ALL.iter().all(|e| transition(s, *e).is_err()),
                    "{s:?} is final"
                );
            }
        }
        let err = transition(S::Cancelled, E::Fill).unwrap_err().to_string();
        assert_eq!(err, "Fill is not possible for an order that is cancelled");
    }
}
