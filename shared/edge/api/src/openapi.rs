//! The OpenAPI document's parts, derived from the code: each handler's `#[utoipa::path]`
//! annotation routes it (`utoipa_axum::routes!`) and documents it, and the request and response
//! types derive their schemas. Nothing here is kept by hand in step with the routers; the
//! document is assembled from the route groups in `app::openapi_document` (so this
//! module depends on no router).
//!
//! Domain types never derive schemas: the API's own request and response types (and the small
//! mirrors below) stand between them and the document, converted with exhaustive matches and
//! destructuring, so a new domain field or variant fails to compile until the API says what it
//! shows of it.

use std::borrow::Cow;

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::error::ApiError;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "ringledger account API",
        version = "1.0.0",
        description = "The billing settings page's API. Every route needs a bearer JWT whose \
            claims carry the account id and a role (viewer, admin, operator); the account always \
            comes from the token. Errors are {code, message, field}. A query parameter a route \
            does not list is refused with a 400 naming it. POST /v1/authorizations is the \
            telephony platform's route: its own bearer token locally, IAM in AWS. This document \
            is generated from the API's request and response types (GET /openapi.json)."
    ),
    servers((url = "/")),
    security(("bearerAuth" = [])),
    components(schemas(ApiError)),
    modifiers(&SecuritySchemes)
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
        components.add_security_scheme(
            "platformToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The telephony platform's token (locally `RINGLEDGER_PLATFORM_TOKEN`); in \
                         AWS, API Gateway's IAM authorizer (SigV4) instead",
                    ))
                    .build(),
            ),
        );
    }
}

/// What every route may answer: a refused query parameter (every route checks), and for the
/// account API a missing or invalid token and a role that may not do this. Added here once
/// rather than on every annotation; an annotation that says more (another description) wins.
pub(crate) fn add_common_responses(operation: &mut Operation) {
    // Only the platform's route names its own security (its token, or IAM): it takes no JWT.
    let platform = operation.security.is_some();
    let mut common = vec![("400", "Bad request: the message says what is wrong; nothing changed")];
    if !platform {
        common.push(("401", "No valid bearer token"));
        common.push(("403", "Not allowed for this role, or terms not accepted"));
        common.push((
            "404",
            "No such account or resource (or, for an agency user, no such client account of \
             the agency as `Ringledger-Account` names)",
        ));
        // An agency user acts on one of its clients by naming it.
        let named = utoipa::openapi::path::ParameterBuilder::new()
            .name("Ringledger-Account")
            .parameter_in(utoipa::openapi::path::ParameterIn::Header)
            .required(utoipa::openapi::Required::False)
            .description(Some(
                "Agency users only: the client account to act on (default: the agency's own)",
            ))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::Type::String)
                    .pattern(Some("^[A-Za-z0-9_-]{1,64}$")),
            ))
            .build();
        let parameters = operation.parameters.get_or_insert_with(Vec::new);
        if !parameters.iter().any(|p| p.name == "Ringledger-Account") {
            parameters.push(named);
        }
    }
    for (status, description) in common {
        operation.responses.responses.entry(status.to_string()).or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(ApiError::schema_ref())).build(),
                    )
                    .build(),
            )
        });
    }
    // Request bodies are required wherever a route takes one.
    if let Some(body) = operation.request_body.as_mut() {
        body.required = Some(utoipa::openapi::Required::True);
    }
    let mut sorted: Vec<_> =
        std::mem::take(&mut operation.responses.responses).into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    operation.responses.responses.extend(sorted);
}

pub(crate) fn deny_unknown_variant_fields(doc: &mut OpenApi, name: &str) {
    use utoipa::openapi::schema::AdditionalProperties;
    let schemas = doc.components.as_mut().map(|c| &mut c.schemas);
    let Some(RefOr::T(Schema::OneOf(one_of))) = schemas.and_then(|s| s.get_mut(name)) else {
        panic!("{name} is a oneOf schema");
    };
    for variant in &mut one_of.items {
        if let RefOr::T(Schema::Object(object)) = variant {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
    }
}

impl ApiError {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(ApiError::name()))
    }
}

/// A JSON string schema with a pattern and a description: the document's scalar types.
fn string_schema(pattern: Option<&str>, format: Option<&str>, description: &str) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new().schema_type(Type::String).description(Some(description));
    if let Some(pattern) = pattern {
        object = object.pattern(Some(pattern));
    }
    if let Some(format) = format {
        object = object.format(Some(utoipa::openapi::SchemaFormat::Custom(format.to_string())));
    }
    RefOr::T(Schema::Object(object.build()))
}

/// A positive USD amount as the API takes and shows it: a decimal string, never a JSON number
/// (`ledger::Amount`: at most 4 decimals, at most 1,000,000).
pub struct Usd;

impl PartialSchema for Usd {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) = string_schema(
            Some(r"^[0-9]{1,7}(\.[0-9]{1,4})?$"),
            None,
            "USD as a decimal string (never a float)",
        ) else {
            unreachable!("a string schema is an object schema")
        };
        object.examples = vec![serde_json::json!("50.00")];
        RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for Usd {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Usd")
    }
}

/// An exact USD value the API reports (a balance, a floor, a total): a decimal string that
/// may be negative and is never rounded.
pub struct SignedUsd;

impl PartialSchema for SignedUsd {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(r"^-?[0-9]+(\.[0-9]+)?$"), None, "exact decimal USD, may be negative")
    }
}

impl ToSchema for SignedUsd {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SignedUsd")
    }
}

/// An email address (`documents::profile::Email`).
pub struct EmailAddress;

impl PartialSchema for EmailAddress {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) =
            string_schema(None, Some("email"), "An email address")
        else {
            unreachable!("a string schema is an object schema")
        };
        object.max_length = Some(254);
        RefOr::T(Schema::Object(object))
    }
}

impl ToSchema for EmailAddress {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EmailAddress")
    }
}

/// A phone number in E.164 form (`documents::profile::Phone`).
pub struct PhoneNumber;

impl PartialSchema for PhoneNumber {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(r"^\+[0-9]{8,15}$"), None, "A phone number in E.164 form")
    }
}

impl ToSchema for PhoneNumber {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PhoneNumber")
    }
}

/// The API's copy of a domain enum: the same variants and the same names on the wire, converted
/// both ways with exhaustive matches (a new domain variant does not compile until it is here).
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident = $domain:ty { $($(#[$variant_meta:meta])* $variant:ident),+ $(,)? }) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize, utoipa::ToSchema,
        )]
        $(#[$meta])*
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl From<$domain> for $name {
            fn from(value: $domain) -> Self {
                type Domain = $domain;
                match value {
                    $(Domain::$variant => $name::$variant),+
                }
            }
        }

        impl From<$name> for $domain {
            fn from(value: $name) -> Self {
                type Domain = $domain;
                match value {
                    $($name::$variant => Domain::$variant),+
                }
            }
        }
    };
}

pub(crate) use mirror_enum;

mirror_enum! {
    /// `active` while the balance is above the floor; `suspended` at or below it.
    AccountStatus = ledger::AccountStatus { Active, Suspended }
}

mirror_enum! {
    /// `add` charges the amount; `top_up_to` charges what brings the balance back up to it.
    RechargeMode = ledger::RechargeMode { Add, TopUpTo }
}

mirror_enum! {
    /// Which way money moved.
    EntryKind = ledger::EntryKind { Debit, Credit }
}

mirror_enum! {
    /// The billing items of the product's documentation.
    BillingItem = ledger::BillingItem {
        PhoneNumber, PhoneCall, OutgoingSms, IncomingSms, RingThroughAttempt, CarrierSurcharge,
        PremiumService, SalesTax, PlanFee, FundsAdded, Adjustment, Refund, IncludedMinutes,
        CardRefund, Dispute, CreditGrant,
    }
}

mirror_enum! {
    /// A card's role: auto-recharge and Pay Now charge the primary card, then the backup.
    #[schema(as = CardRoleName)]
    CardRole = documents::profile::CardRole { Primary, Backup }
}

mirror_enum! {
    /// How often statements are emailed.
    #[schema(as = ScheduleName)]
    StatementSchedule = documents::profile::StatementSchedule { None, Weekly, Monthly }
}

mirror_enum! {
    /// Where a charge attempt stands.
    PaymentStatus = documents::payment::PaymentStatus { Pending, Succeeded, Failed }
}

mirror_enum! {
    /// Who asked for a payment: the customer (Pay Now), auto-recharge, or a plan period charged
    /// to the card (opt-in direct charge).
    Trigger = documents::payment::Trigger { Manual, Auto, Plan }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each mirror names its variants on the wire exactly as the domain type does.
    fn same_names<M, D>(all: &[M])
    where
        M: Copy + serde::Serialize + Into<D>,
        D: serde::Serialize,
    {
        for mirror in all {
            let domain: D = (*mirror).into();
            assert_eq!(
                serde_json::to_value(mirror).unwrap(),
                serde_json::to_value(domain).unwrap()
            );
        }
    }

    #[test]
    fn mirrors_name_variants_as_the_domain_does() {
        same_names::<_, ledger::AccountStatus>(AccountStatus::ALL);
        same_names::<_, ledger::RechargeMode>(RechargeMode::ALL);
        same_names::<_, ledger::EntryKind>(EntryKind::ALL);
        same_names::<_, ledger::BillingItem>(BillingItem::ALL);
        same_names::<_, documents::profile::CardRole>(CardRole::ALL);
        same_names::<_, documents::profile::StatementSchedule>(StatementSchedule::ALL);
        same_names::<_, documents::payment::PaymentStatus>(PaymentStatus::ALL);
        same_names::<_, documents::payment::Trigger>(Trigger::ALL);
    }
}
