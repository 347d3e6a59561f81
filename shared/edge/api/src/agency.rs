//! Agency accounts (issue 15): an agency owns client accounts and pays for them.
//!
//! Funding model: **each client keeps its own balance**, topped up from the agency's cards
//! under the auto-recharge settings the agency's users set on it (and Pay Now by the agency's
//! users). So every client's ledger, activity, statements, tax and service status stay its
//! own, exactly as for any account; what the agency adds is the cards, the billing emails that
//! hear of every client, and a roll-up. The operator links clients to agencies; agency users
//! act on a client by naming it in the `Ringledger-Account` header (see [`crate::auth`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use documents::profile::MAX_AGENCY_CLIENTS;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::account_or_404;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::Usd;
use crate::operator::path_account;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default().routes(routes!(link_client, unlink_client)).routes(routes!(clients))
}

/// One client of the agency, as the roll-up shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub account_id: String,
    #[schema(value_type = crate::openapi::SignedUsd)]
    pub balance_usd: String,
    #[schema(value_type = crate::openapi::SignedUsd)]
    pub available_usd: String,
    pub status: crate::openapi::AccountStatus,
    /// Auto-recharge is on (charging the agency's cards).
    pub auto_recharge: bool,
    /// The current month (UTC), `YYYY-MM`.
    pub month: String,
    /// What the client's usage, numbers, plan fees and taxes came to this month so far.
    #[schema(value_type = Usd)]
    pub month_charges_usd: String,
}

/// The agency's clients and their totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgencyRollup {
    pub agency_id: String,
    pub clients: Vec<ClientView>,
    #[schema(value_type = crate::openapi::SignedUsd)]
    pub total_balance_usd: String,
    #[schema(value_type = Usd)]
    pub total_month_charges_usd: String,
}

/// A link between an agency and a client account.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientLink {
    pub agency_id: String,
    pub client_id: String,
    /// The agency's clients after the change.
    pub clients: Vec<String>,
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documents the path; handlers parse it with `path_account`.
struct LinkPath {
    /// The agency's account id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    agency_id: String,
    /// The client's account id.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    client_id: String,
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "agency_conflict", message)
}

#[utoipa::path(
    put, path = "/v1/operator/agencies/{agency_id}/clients/{client_id}",
    summary = "Make an account a client of an agency (operator)",
    description = "The client then pays with the agency's cards (auto-recharge and Pay Now by the agency's users), its notices and statements also go to the agency's billing emails, and only the agency's users change its billing; it keeps its own balance, activity and statements. Sent again: the same link, nothing changes. Audited on both accounts.",
    params(LinkPath),
    responses(
        (status = 200, description = "Linked", body = ClientLink),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account", body = ApiError),
        (status = 409, description = "The client belongs to another agency, is an agency itself, or the agency is a client; or the agency holds 500 clients", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn link_client(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((agency_id, client_id)): Path<(String, String)>,
) -> Result<Json<ClientLink>, ApiError> {
    identity.operator()?;
    let (agency, client) = (path_account(&agency_id)?, path_account(&client_id)?);
    if agency == client {
        return Err(ApiError::bad_request("invalid_field", "an agency cannot be its own client")
            .on_field("client_id"));
    }
    account_or_404(&state, &agency).await?;
    account_or_404(&state, &client).await?;
    let (agency_profile, _) = documents::profile::load(state.docs(), &agency).await?;
    if let Some(owner) = agency_profile.agency_id {
        return Err(conflict(format!("{agency} is a client of {owner}: it cannot be an agency")));
    }
    let (client_profile, _) = documents::profile::load(state.docs(), &client).await?;
    if !client_profile.agency_clients.is_empty() {
        return Err(conflict(format!("{client} is an agency: it cannot be a client")));
    }
    if let Some(owner) = client_profile.agency_id.filter(|owner| *owner != agency) {
        return Err(conflict(format!("{client} is a client of {owner}; unlink it there first")));
    }
    if !agency_profile.agency_clients.contains(&client)
        && agency_profile.agency_clients.len() >= MAX_AGENCY_CLIENTS
    {
        return Err(conflict(format!("{agency} holds {MAX_AGENCY_CLIENTS} clients already")));
    }
    // The client's link first (it is what the access checks read), then the agency's list (the
    // roll-up's): a failure between them is finished by sending the request again.
    write_link(&state, &identity.user, &agency, &client, true).await.map(Json)
}

/// Write (or remove) the link on both accounts, audited. The rules are checked again inside
/// each version-checked write, so two operators racing cannot build a chain of agencies:
/// linking writes the agency's list (it is no client), then the client's link (it is no agency
/// and belongs to no other), then checks the agency is still no client, undoing the link if it
/// became one. Access reads only the client's own link; the roll-up lists only clients whose
/// link names the agency, so a failure between the writes grants and shows nothing wrong, and
/// sending the request again finishes it. Unlinking removes the client's link first.
async fn write_link(
    state: &AppState,
    user: &str,
    agency: &ledger::AccountId,
    client: &ledger::AccountId,
    linked: bool,
) -> Result<ClientLink, ApiError> {
    let owner = agency.clone();
    let member = client.clone();
    let agency_side = |p: &mut documents::profile::Profile| {
        if !linked {
            p.agency_clients.retain(|c| *c != member);
            return Ok(());
        }
        if let Some(above) = &p.agency_id {
            return Err(conflict(format!(
                "{owner} is a client of {above}: it cannot be an agency"
            )));
        }
        if !p.agency_clients.contains(&member) {
            if p.agency_clients.len() >= MAX_AGENCY_CLIENTS {
                return Err(conflict(format!(
                    "the agency holds {MAX_AGENCY_CLIENTS} clients already"
                )));
            }
            p.agency_clients.push(member.clone());
        }
        Ok(())
    };
    let client_side = |p: &mut documents::profile::Profile| {
        if !linked {
            if p.agency_id.as_ref() == Some(&owner) {
                p.agency_id = None;
            }
            return Ok(());
        }
        if !p.agency_clients.is_empty() {
            return Err(conflict(format!("{member} is an agency: it cannot be a client")));
        }
        match &p.agency_id {
            Some(other) if *other != owner => {
                Err(conflict(format!("{member} is a client of {other}; unlink it there first")))
            }
            _ => {
                p.agency_id = Some(owner.clone());
                Ok(())
            }
        }
    };
    let list = |p: &documents::profile::Profile| p.agency_clients.clone();
    let link = |p: &documents::profile::Profile| p.agency_id.clone();
    let after = if linked {
        let after =
            crate::audit::change_profile(state, agency, user, "agency_clients", agency_side, list)
                .await?;
        let linked_client =
            crate::audit::change_profile(state, client, user, "agency", client_side, link).await;
        if let Err(refused) = linked_client {
            // Not this agency's client after all: off its list again (the roll-up would skip it).
            let unlist = |p: &mut documents::profile::Profile| {
                p.agency_clients.retain(|c| c != client);
                Ok(())
            };
            let _ =
                crate::audit::change_profile(state, agency, user, "agency_clients", unlist, list)
                    .await;
            return Err(refused);
        }
        // The agency became a client meanwhile: undo the link (its own check refuses it).
        let (now, _) = documents::profile::load(state.docs(), agency).await?;
        if let Some(owner) = now.agency_id {
            Box::pin(write_link(state, user, agency, client, false)).await?;
            return Err(conflict(format!("{agency} became a client of {owner} meanwhile")));
        }
        after
    } else {
        crate::audit::change_profile(state, client, user, "agency", client_side, link).await?;
        crate::audit::change_profile(state, agency, user, "agency_clients", agency_side, list)
            .await?
    };
    Ok(ClientLink {
        agency_id: agency.to_string(),
        client_id: client.to_string(),
        clients: after.agency_clients.iter().map(ToString::to_string).collect(),
    })
}

#[utoipa::path(
    delete, path = "/v1/operator/agencies/{agency_id}/clients/{client_id}",
    summary = "End an account's membership of an agency (operator)",
    description = "The account pays with its own cards again (it has none until some are added: auto-recharge fails and notifies until then) and the agency's users lose access to it. Its balance and history stay its own. Audited on both accounts.",
    params(LinkPath),
    responses(
        (status = 200, description = "Unlinked (or was not linked)", body = ClientLink),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn unlink_client(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path((agency_id, client_id)): Path<(String, String)>,
) -> Result<Json<ClientLink>, ApiError> {
    identity.operator()?;
    let (agency, client) = (path_account(&agency_id)?, path_account(&client_id)?);
    account_or_404(&state, &agency).await?;
    account_or_404(&state, &client).await?;
    write_link(&state, &identity.user, &agency, &client, false).await.map(Json)
}

#[utoipa::path(
    get, path = "/v1/agency/clients",
    summary = "The agency's clients: balance, status and this month's charges of each, and totals (agency users)",
    description = "For the agency's users on the agency's own account (no `Ringledger-Account`). To see or act on one client, name it in `Ringledger-Account` on any account route: its overview, activity, statements, settings and payments are its own.",
    responses(
        (status = 200, description = "The roll-up", body = AgencyRollup),
        (status = 403, description = "Not an agency user, or a client was named", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn clients(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<AgencyRollup>, ApiError> {
    let agency = identity.agency_home()?.clone();
    let (profile, _) = documents::profile::load(state.docs(), &agency).await?;
    let now = Utc::now();
    let month = ledger::Month::of(now);
    let mut views = Vec::new();
    let (mut balance, mut charges) = (rust_decimal::Decimal::ZERO, rust_decimal::Decimal::ZERO);
    for client in &profile.agency_clients {
        // Only clients whose own link names this agency (the link is what access reads).
        let (client_profile, _) = documents::profile::load(state.docs(), client).await?;
        if client_profile.agency_id.as_ref() != Some(&agency) {
            continue;
        }
        let Some(account) = state.ledger().account(client).await.map_err(ApiError::from_store)?
        else {
            continue;
        };
        let month_charges = month_charges(&account, month);
        balance += account.balance_usd;
        charges += month_charges;
        views.push(ClientView {
            account_id: client.to_string(),
            balance_usd: account.balance_usd.normalize().to_string(),
            available_usd: account.available_usd(now).normalize().to_string(),
            status: account.status.into(),
            auto_recharge: account.recharge.as_ref().is_some_and(|r| r.enabled()),
            month: month.to_string(),
            month_charges_usd: month_charges.normalize().to_string(),
        });
    }
    Ok(Json(AgencyRollup {
        agency_id: agency.to_string(),
        clients: views,
        total_balance_usd: balance.normalize().to_string(),
        total_month_charges_usd: charges.normalize().to_string(),
    }))
}

/// This month's charges: the month's totals by billing item, less what is money coming in or
/// going back out (payments, refunds, disputes, adjustments and grants are not charges).
fn month_charges(account: &ledger::Account, month: ledger::Month) -> rust_decimal::Decimal {
    use ledger::BillingItem;
    let Some(totals) = account.month_totals.as_ref().filter(|t| t.month == month) else {
        return rust_decimal::Decimal::ZERO;
    };
    totals
        .by_item
        .iter()
        .filter(|(item, _)| {
            !matches!(
                item,
                BillingItem::FundsAdded
                    | BillingItem::CardRefund
                    | BillingItem::Dispute
                    | BillingItem::Adjustment
                    | BillingItem::Refund
                    | BillingItem::CreditGrant
            )
        })
        .map(|(_, net)| *net)
        .sum()
}
