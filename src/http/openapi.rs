//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations of every handler.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, admin, catalog, health, operations, therapist};
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
        admin::list_providers, admin::verify_provider, admin::put_roles,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, metrics and this document"),
        (name = "accounts", description = "Registration, login, the caller and their addresses"),
        (name = "catalog", description = "Services on offer"),
        (name = "therapist", description = "A therapist's profile, services and availability"),
        (name = "admin", description = "Verification and roles (admins only)"),
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
