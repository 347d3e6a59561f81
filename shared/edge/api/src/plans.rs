//! The account's software plan (operator role; issue 15): set a plan (charged at once for its
//! first period, then at each renewal by the daily sweep), change it (from the next renewal:
//! the period already paid runs on its terms), or end it at the next renewal. Audited.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{NaiveDate, Utc};
use documents::plan::{Plan, PlanPeriod, PlanTerms};
use ledger::Amount;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::account::account_or_404;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::openapi::Usd;
use crate::operator::{path_account, AccountPath};
use crate::state::AppState;
use crate::{audit, body};

pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default().routes(routes!(set_plan, end_plan)).routes(routes!(show_plan))
}

/// `monthly` or `annual`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlanPeriodName {
    Monthly,
    Annual,
}

impl From<PlanPeriodName> for PlanPeriod {
    fn from(value: PlanPeriodName) -> Self {
        match value {
            PlanPeriodName::Monthly => PlanPeriod::Monthly,
            PlanPeriodName::Annual => PlanPeriod::Annual,
        }
    }
}

impl From<PlanPeriod> for PlanPeriodName {
    fn from(value: PlanPeriod) -> Self {
        match value {
            PlanPeriod::Monthly => PlanPeriodName::Monthly,
            PlanPeriod::Annual => PlanPeriodName::Annual,
        }
    }
}

/// A plan to set, or the terms a plan changes to at its next renewal.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PlanRequest)]
pub struct PlanBody {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(value_type = Usd)]
    pub price_usd: Amount,
    pub period: PlanPeriodName,
    /// A new plan's first day (UTC; today or later; default today). Ignored for a change.
    #[serde(default)]
    pub starts_on: Option<NaiveDate>,
}

/// A plan's terms as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanTermsView {
    pub name: String,
    #[schema(value_type = Usd)]
    pub price_usd: String,
    pub period: PlanPeriodName,
}

impl From<&PlanTerms> for PlanTermsView {
    fn from(terms: &PlanTerms) -> Self {
        PlanTermsView {
            name: terms.name.clone(),
            price_usd: terms.price_usd.value().normalize().to_string(),
            period: terms.period.into(),
        }
    }
}

/// The account's plan: its terms, its next renewal, and what changes then.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Plan)]
pub struct PlanView {
    pub terms: PlanTermsView,
    /// The next period starts, and is charged, on this UTC day.
    pub next_renewal: NaiveDate,
    /// Terms that take effect at the next renewal.
    pub change: Option<PlanTermsView>,
    /// The plan ends at the next renewal; nothing more is charged.
    pub cancel_at_renewal: bool,
    /// Periods this request charged (a new plan's first period, when it starts today).
    pub charged_now: usize,
}

impl PlanView {
    pub fn of(plan: &Plan, charged_now: usize) -> Self {
        PlanView {
            terms: (&plan.terms).into(),
            next_renewal: plan.next_renewal,
            change: plan.change.as_ref().map(Into::into),
            cancel_at_renewal: plan.cancel_at_renewal,
            charged_now,
        }
    }
}

#[utoipa::path(
    put, path = "/v1/operator/accounts/{account_id}/plan",
    summary = "Set the account's plan, or change it from the next renewal (operator)",
    description = "A new plan's first period is charged when it starts (a `plan_fee` debit from the balance, once per period: source id `plan:<first day>`), then each period at its renewal by the daily sweep. A change of an existing plan takes effect at its next renewal; the period already paid runs on its terms.",
    params(AccountPath),
    request_body = PlanBody,
    responses(
        (status = 200, description = "Saved: the plan as it stands", body = PlanView),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn set_plan(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
    raw: Bytes,
) -> Result<Json<PlanView>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    let request: PlanBody = body::json(&raw)?;
    let name = request.name.trim().to_string();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("invalid_field", "name must be 1 to 100 characters")
            .on_field("name"));
    }
    if request.price_usd.value().scale() > 2 {
        return Err(ApiError::bad_request("invalid_field", "price_usd must be whole cents")
            .on_field("price_usd"));
    }
    let today = Utc::now().date_naive();
    let starts_on = request.starts_on.unwrap_or(today);
    if starts_on < today {
        return Err(ApiError::bad_request(
            "invalid_field",
            "starts_on must be today or later (UTC): past periods are not charged",
        )
        .on_field("starts_on"));
    }
    account_or_404(&state, &id).await?;
    let terms = PlanTerms { name, price_usd: request.price_usd, period: request.period.into() };
    let change = move |p: &mut documents::profile::Profile| {
        match p.plan.as_mut() {
            None => p.plan = Some(Plan::starting(terms.clone(), starts_on)),
            Some(plan) => {
                plan.change = (plan.terms != terms).then(|| terms.clone());
                plan.cancel_at_renewal = false;
            }
        }
        Ok(())
    };
    audit::change_profile(&state, &id, &identity.user, "plan", change, |p| p.plan.clone()).await?;
    // A plan that starts today is charged now (the sweep would, later today).
    let charged = jobs::plans::renew(state.ledger(), state.docs(), &id, today)
        .await
        .map_err(|error| ApiError::internal(&error))?;
    let (profile, _) = documents::profile::load(state.docs(), &id).await?;
    let plan = profile.plan.ok_or_else(|| {
        ApiError::internal(&std::io::Error::other("the plan vanished while it was set"))
    })?;
    Ok(Json(PlanView::of(&plan, charged)))
}

#[utoipa::path(
    get, path = "/v1/plan", summary = "The account's plan, if it has one",
    responses(
        (status = 200, description = "The plan (null: none)", body = Option<PlanView>),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn show_plan(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<Option<PlanView>>, ApiError> {
    let id = identity.account()?.clone();
    account_or_404(&state, &id).await?;
    let (profile, _) = documents::profile::load(state.docs(), &id).await?;
    Ok(Json(profile.plan.as_ref().map(|plan| PlanView::of(plan, 0))))
}

#[utoipa::path(
    delete, path = "/v1/operator/accounts/{account_id}/plan",
    summary = "End the account's plan at its next renewal (operator)",
    params(AccountPath),
    responses(
        (status = 200, description = "Ends at the next renewal: nothing more is charged", body = PlanView),
        (status = 404, description = "No such account, or it has no plan", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn end_plan(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Path(account_id): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    identity.operator()?;
    let id = path_account(&account_id)?;
    account_or_404(&state, &id).await?;
    let (profile, _) = documents::profile::load(state.docs(), &id).await?;
    if profile.plan.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "the account has no plan"));
    }
    let change = |p: &mut documents::profile::Profile| {
        if let Some(plan) = p.plan.as_mut() {
            plan.cancel_at_renewal = true;
        }
        Ok(())
    };
    let after =
        audit::change_profile(&state, &id, &identity.user, "plan", change, |p| p.plan.clone())
            .await?;
    let plan = after.plan.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "the account has no plan")
    })?;
    Ok(Json(PlanView::of(&plan, 0)))
}
