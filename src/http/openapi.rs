//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations of every handler.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    accounts, admin, bookings, catalog, console, console_actions, dispatch_map, health, map,
    messages, money, nearby, notifications, offers, operations, page, reschedules, reviews,
    schedule, stores, therapist, webhooks, ws,
};
use crate::error::{FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hilot",
        description = "Geospatial on-demand dispatch for home-service therapists. \
                       Errors are application/problem+json (RFC 9457)."
    ),
    paths(
        health::live, health::ready, operations::metrics, operations::openapi,
        accounts::register, accounts::login, accounts::logout, accounts::me,
        accounts::create_address, accounts::list_addresses, accounts::delete_address,
        catalog::list_services,
        therapist::put_profile, therapist::get_profile, therapist::put_service,
        therapist::list_services, therapist::delete_service, therapist::put_availability,
        schedule::put_schedule, schedule::get_schedule, schedule::add_blocked_time,
        schedule::list_blocked_times, schedule::delete_blocked_time, schedule::therapist_slots,
        schedule::slots_near,
        admin::list_providers, admin::verify_provider, admin::put_roles, offers::booking_offers,
        admin::put_user_active, admin::put_provider_active, admin::revoke_tokens,
        nearby::nearby, ws::therapist_socket, ws::customer_socket, accounts::ws_ticket,
        bookings::create, bookings::list, bookings::get_booking, bookings::accept, bookings::decline,
        bookings::change_status, bookings::cancel, bookings::track,
        reschedules::propose, reschedules::list, reschedules::approve, reschedules::reject,
        dispatch_map::dashboard_socket, dispatch_map::live, dispatch_map::stats, dispatch_map::hexes,
        page::index, page::asset,
        stores::put_profile, stores::get_profile, stores::put_service, stores::delete_service,
        stores::list_bookings, stores::confirm, stores::decline, stores::change_status,
        stores::check_in, stores::nearby, stores::get_store,
        console::booking_trip, console::booking_detail, console::find, console::list_alerts,
        console::map_stores, map::base_map, map::pmtiles,
        console_actions::offer_booking, console_actions::reassign_booking,
        console_actions::cancel_booking, console_actions::message_parties,
        console_actions::mark_offline,
        money::wallet, money::wallet_transactions, money::topup, money::pay_booking, money::tip,
        money::gateway_webhook, money::run_payouts, money::list_payouts, money::payout_status,
        money::ledger_check,
        reviews::create, reviews::of_booking, reviews::of_therapist, reviews::list_for_moderation,
        reviews::moderate,
        messages::list, messages::send, messages::mark_read,
        notifications::list, notifications::mark_read, notifications::register_device,
        webhooks::create, webhooks::list, webhooks::deactivate, webhooks::deliveries,
        webhooks::redeliver,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, metrics and this document"),
        (name = "accounts", description = "Registration, login, the caller and their addresses"),
        (name = "catalog", description = "Services on offer"),
        (name = "therapist", description = "A therapist's profile, services and availability"),
        (name = "admin", description = "Verification, roles, suspension, deactivation and revocation (admins only)"),
        (name = "scheduling", description = "Weekly schedules, blocked times and slots"),
        (name = "matching", description = "Nearest therapists, from the live index"),
        (name = "bookings", description = "Book now, offers, the lifecycle and live tracking"),
        (name = "stores", description = "Wellness centres: set-up, opening hours and rooms, nearby stores, in-store bookings"),
        (name = "dispatch", description = "The live dispatch map and its data (admins)"),
        (name = "money", description = "Wallets, paying through the gateway, tips, the gateway's webhook"),
        (name = "reviews", description = "Reviews of both parties of a completed booking"),
        (name = "messages", description = "The in-booking chat between customer and therapist"),
        (name = "notifications", description = "The caller's notifications and push devices"),
        (name = "webhooks", description = "Operator webhooks, signed per Standard Webhooks (admins)"),
        (name = "realtime", description = "WebSocket endpoints; frames are described in the API contract"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The documented methods of the path that `path` names (`/v1/me/addresses/abc` matches
/// `/v1/me/addresses/{address_id}`), as an `Allow` header value; `None` when no documented path
/// matches. Lets a known path called with another method answer 405 rather than 404.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    static ROUTES: OnceLock<Vec<(Vec<String>, String)>> = OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        ApiDoc::openapi()
            .paths
            .paths
            .into_iter()
            .map(|(template, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("OPTIONS", item.options.is_some()),
                    ("TRACE", item.trace.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, present)| present.then_some(name))
                .collect::<Vec<_>>()
                .join(", ");
                (template.split('/').map(str::to_owned).collect(), methods)
            })
            .collect()
    });
    let segments: Vec<&str> = path.split('/').collect();
    routes
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template.iter().zip(&segments).all(|(t, s)| {
                    t == s || (t.starts_with('{') && t.ends_with('}') && !s.is_empty())
                })
        })
        .map(|(_, methods)| methods.as_str())
}

#[cfg(test)]
mod tests {
    use super::allowed_methods;

    #[test]
    fn allowed_methods_match_documented_paths() {
        assert_eq!(allowed_methods("/v1/me"), Some("GET"));
        assert_eq!(allowed_methods("/v1/me/addresses"), Some("GET, POST"));
        assert_eq!(allowed_methods("/v1/me/addresses/x"), Some("DELETE"));
        assert_eq!(allowed_methods("/v1/me/addresses/"), None);
        assert_eq!(allowed_methods("/v1/nothing"), None);
    }
}
