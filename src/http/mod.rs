//! The HTTP surface: routes by area, extractors, middleware, and the OpenAPI document.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod body;
pub mod bookings;
pub mod catalog;
pub mod client_address;
pub mod console;
pub mod console_actions;
pub mod dispatch_map;
pub mod extract;
pub mod health;
pub mod map;
pub mod messages;
pub mod money;
pub mod nearby;
pub mod notifications;
pub mod offers;
pub mod openapi;
pub mod operations;
pub mod page;
pub mod reschedules;
pub mod reviews;
pub mod schedule;
pub mod stores;
pub mod therapist;
pub mod webhooks;
pub mod ws;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

use crate::error::ApiError;

/// Header that carries the request id back to the client (the same id is in every log line).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Registers every route. Shared by the server and by in-process tests.
/// Headers on every answer. The dashboard and console load only their own scripts (vendored,
/// no inline script), so a script injected into a page would not run even if some text ever
/// reached the DOM as markup; no site may frame them (clickjacking an admin's actions); no
/// answer is sniffed into another type; and no URL (a booking's id) leaks in a `Referer`.
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ))
        .add(("X-Frame-Options", "DENY"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The router tries routes in this order, and each dynamic one before a match costs a
    // regex run: the hottest request, nearby, comes first (a static path shadows nothing).
    cfg.service(nearby::nearby)
        .service(health::live)
        .service(health::ready)
        .service(operations::metrics)
        .service(operations::openapi)
        .service(accounts::register)
        .service(accounts::login)
        .service(accounts::logout)
        .service(accounts::me)
        .service(accounts::create_address)
        .service(accounts::list_addresses)
        .service(accounts::delete_address)
        .service(catalog::list_services)
        .service(therapist::put_profile)
        .service(therapist::get_profile)
        .service(therapist::put_service)
        .service(therapist::list_services)
        .service(therapist::delete_service)
        .service(therapist::put_availability)
        .service(schedule::put_schedule)
        .service(schedule::get_schedule)
        .service(schedule::add_blocked_time)
        .service(schedule::list_blocked_times)
        .service(schedule::delete_blocked_time)
        .service(schedule::therapist_slots)
        .service(schedule::slots_near)
        .service(admin::list_providers)
        .service(admin::verify_provider)
        .service(admin::put_roles)
        .service(offers::booking_offers)
        .service(admin::put_user_active)
        .service(admin::put_provider_active)
        .service(admin::revoke_tokens)
        .service(ws::therapist_socket)
        .service(ws::customer_socket)
        .service(accounts::ws_ticket)
        .service(bookings::create)
        .service(bookings::list)
        .service(bookings::get_booking)
        .service(bookings::accept)
        .service(bookings::decline)
        .service(bookings::change_status)
        .service(bookings::cancel)
        .service(bookings::track)
        .service(reschedules::propose)
        .service(reschedules::list)
        .service(reschedules::approve)
        .service(reschedules::reject)
        .service(stores::put_profile)
        .service(stores::get_profile)
        .service(stores::put_service)
        .service(stores::delete_service)
        .service(stores::list_bookings)
        .service(stores::confirm)
        .service(stores::decline)
        .service(stores::change_status)
        .service(stores::check_in)
        .service(stores::nearby)
        .service(stores::get_store)
        .service(console::booking_trip)
        .service(console::booking_detail)
        .service(console::find)
        .service(console::list_alerts)
        .service(console::map_stores)
        .service(console_actions::offer_booking)
        .service(console_actions::reassign_booking)
        .service(console_actions::cancel_booking)
        .service(console_actions::message_parties)
        .service(console_actions::mark_offline)
        .service(map::base_map)
        .service(map::pmtiles)
        .service(money::wallet)
        .service(money::wallet_transactions)
        .service(money::topup)
        .service(money::pay_booking)
        .service(money::tip)
        .service(money::gateway_webhook)
        .service(money::run_payouts)
        .service(money::list_payouts)
        .service(money::payout_status)
        .service(money::ledger_check)
        .service(reviews::create)
        .service(reviews::of_booking)
        .service(reviews::of_therapist)
        .service(reviews::list_for_moderation)
        .service(reviews::moderate)
        .service(messages::list)
        .service(messages::send)
        .service(messages::mark_read)
        .service(notifications::list)
        .service(notifications::mark_read)
        .service(notifications::register_device)
        .service(webhooks::create)
        .service(webhooks::list)
        .service(webhooks::deactivate)
        .service(webhooks::deliveries)
        .service(webhooks::redeliver)
        .service(dispatch_map::dashboard_socket)
        .service(dispatch_map::live)
        .service(dispatch_map::stats)
        .service(dispatch_map::hexes)
        .service(page::index)
        .service(page::asset);
}

/// Requests no route took: a documented path called with another method answers problem+json
/// 405 with `Allow` (actix itself falls through to here, as each handler is its own resource
/// guarded by its method); anything else answers problem+json 404.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    if let Some(allow) = openapi::allowed_methods(req.path()) {
        let mut response = actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return Ok(response);
    }
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// The span every request runs in, and so what every log line of a request carries: the method,
/// the route *template* (`/v1/bookings/{booking_id}`), the request id and, once authenticated,
/// the user id. Never the target: query strings hold `?token=`, `?ticket=` and customers'
/// coordinates, and none of these may reach a log.
pub struct AccessSpan;

impl RootSpanBuilder for AccessSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
            user_id = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        _span: Span,
        _outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        // `observe` logs the outcome (status and latency) inside this span.
    }
}

/// When a request reached the server (set by [`observe`] before any handler or extractor runs).
/// A new booking's batching window counts from then: whatever the request then waited for
/// (authentication, a database connection, its transaction) is already part of the customer's
/// wait.
#[derive(Clone, Copy, Debug)]
pub struct ReceivedAt(pub chrono::DateTime<chrono::Utc>);

impl ReceivedAt {
    /// When `req` reached the server; now, for a request that did not pass [`observe`].
    pub fn of(req: &HttpRequest) -> chrono::DateTime<chrono::Utc> {
        req.extensions()
            .get::<ReceivedAt>()
            .map_or_else(chrono::Utc::now, |at| at.0)
    }
}

/// Sets `x-request-id` on every answer and records request metrics by route pattern.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    req.extensions_mut().insert(ReceivedAt(chrono::Utc::now()));
    let state = req.app_data::<web::Data<crate::state::AppState>>().cloned();
    let operations = req.path().starts_with("/health") || req.path() == "/metrics";
    let _admitted = match state.as_ref().filter(|_| !operations) {
        Some(state) => match state.requests.admit() {
            Some(admitted) => Some(admitted),
            None => {
                metrics::counter!("hilot_requests_shed_total", "reason" => "in_flight")
                    .increment(1);
                let refusal = ApiError::Unavailable("the server is busy; retry shortly".into());
                return Ok(req.error_response(refusal).map_into_right_body());
            }
        },
        None => None,
    };
    let request_id = req.extensions().get::<RequestId>().map(|id| id.to_string());
    let method = req.method().clone();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let mut response = next.call(req).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    let elapsed_ms = elapsed * 1000.0;
    if route.starts_with("/health") || route == "/metrics" {
        tracing::debug!(%method, %route, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %route, status, elapsed_ms, "request");
    }
    crate::telemetry::record_request(&method, &route, status, elapsed);
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), id);
    }
    Ok(response.map_into_left_body())
}

/// actix's built-in `Path` errors, rendered as our 404 (a malformed id names nothing).
pub fn path_error(error: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("no such resource ({error})")).into()
}
