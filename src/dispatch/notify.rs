//! Frames dispatch sends: booking status to customers, therapists and dashboards; offers and
//! their withdrawal to therapists.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::store::{self, BookingFacts};
use super::Dispatcher;
use crate::geo::Point;

pub(super) fn frame(value: serde_json::Value) -> Arc<str> {
    value.to_string().into()
}

impl Dispatcher {
    /// The user whose sockets hear a therapist.
    pub(super) async fn provider_user(&self, provider_id: i64) -> Option<i64> {
        if let Some((user_id, _)) = self.inner.index.identity(provider_id) {
            return Some(user_id);
        }
        sqlx::query_scalar("SELECT user_id FROM providers WHERE id = $1")
            .bind(provider_id)
            .fetch_optional(&self.inner.db)
            .await
            .ok()
            .flatten()
    }

    fn provider_uuid(&self, provider_id: Option<i64>) -> Option<Uuid> {
        provider_id
            .and_then(|p| self.inner.index.identity(p))
            .map(|(_, uuid)| uuid)
    }

    /// Tells therapists an offer they held is gone, and why.
    pub(super) async fn tell_withdrawn(&self, booking_uuid: Uuid, providers: &[i64], reason: &str) {
        for provider_id in providers {
            if let Some(user_id) = self.provider_user(*provider_id).await {
                self.inner
                    .bus
                    .to_user(
                        user_id,
                        frame(json!({"type": "offer.withdrawn", "booking_id": booking_uuid, "reason": reason})),
                    )
                    .await;
            }
        }
    }

    /// Pushes the booking's status to its customer, its therapist (or the therapist a request
    /// names, until one is assigned) and the dashboards.
    pub(super) async fn push_status(&self, booking_id: i64, reason: Option<&str>) {
        let Ok(Some(facts)) = store::facts_by_id(&self.inner.db, booking_id).await else {
            return;
        };
        self.push_status_of(&facts, reason).await;
    }

    /// [`Dispatcher::push_status`] for a booking whose facts are known (a transition just
    /// committed them), without reading them again.
    pub(super) async fn push_status_of(&self, facts: &BookingFacts, reason: Option<&str>) {
        let mut payload = json!({
            "type": "booking.status",
            "booking_id": facts.uuid,
            "status": facts.status,
            "at": chrono::Utc::now(),
        });
        if let Some(reason) = reason {
            payload["reason"] = json!(reason);
        }
        if let (Some(lat), Some(lng)) = (facts.lat, facts.lng) {
            let mut for_map = payload.clone();
            for_map["lat"] = json!(lat);
            for_map["lng"] = json!(lng);
            for_map["provider_id"] = json!(self.provider_uuid(facts.provider_id));
            for_map["booking_number"] = json!(facts.booking_number);
            self.inner
                .dashboards
                .booking_changed(Point::new(lat, lng), for_map);
        }
        let frame = frame(payload);
        self.inner
            .bus
            .to_user(facts.customer_id, frame.clone())
            .await;
        if let Some(therapist) = facts.provider_user_id {
            self.inner.bus.to_user(therapist, frame).await;
        } else if let Some(named) = facts.requested_provider_id {
            // A request to a named therapist that ends before they answered it (the customer
            // cancelled it, it lapsed): the request they were shown is gone.
            if let Some(user_id) = self.provider_user(named).await {
                self.inner.bus.to_user(user_id, frame).await;
            }
        }
    }
}
