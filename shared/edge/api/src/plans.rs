//! The account's software plan (operator role; issue 15): set a plan (charged at once for its
//! first period, then at each renewal by the daily sweep), change it (from the next renewal:
//! the period already paid runs on its terms), or end it at the next renewal. Audited. The
//! customer chooses whether each period is charged to the cards ("opt-in direct charge",
//! `payment_flow::plan`) or debited from the balance.

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
    OpenApiRouter::default()
        .routes(routes!(set_plan, end_plan))
        .routes(routes!(show_plan))
        .routes(routes!(set_direct_charge))
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
    /// Charge each period to the account's cards instead of the balance (the customer may
    /// also turn it on and off: `PUT /v1/plan/direct-charge`). Left out: unchanged (off for a
    /// new plan).
    #[serde(default)]
    pub direct_charge: Option<bool>,
}

/// The customer's choice of how the plan is paid.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectChargeBody {
    /// `true`: each period is charged to the cards (primary, then backups) and never touches
    /// the balance; `false`: each period is debited from the balance.
    pub enabled: bool,
}

/// Failed direct-charge attempts of the period due now.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectAttemptsView {
    /// Attempts in which every card declined (after 3 the fee is taken from the balance).
    pub failed: u32,
    pub next_attempt_at: chrono::DateTime<Utc>,
    pub last_failure: String,
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
    /// Each period is charged to the cards, not the balance ("opt-in direct charge").
    pub direct_charge: bool,
    /// A direct charge of the period due now is under way (the payments worker charges it).
    pub card_charge_pending: bool,
    /// The due period's failed direct-charge attempts, if any.
    pub direct_attempts: Option<DirectAttemptsView>,
}

impl PlanView {
    pub fn of(plan: &Plan, charged_now: usize) -> Self {
        PlanView {
            terms: (&plan.terms).into(),
            next_renewal: plan.next_renewal,
            change: plan.change.as_ref().map(Into::into),
            cancel_at_renewal: plan.cancel_at_renewal,
            charged_now,
            direct_charge: plan.direct_charge,
            card_charge_pending: false,
            direct_attempts: plan.direct_attempts.as_ref().map(|a| DirectAttemptsView {
                failed: a.failed,
                next_attempt_at: a.next_attempt_at,
                last_failure: a.last_failure.clone(),
            }),
        }
    }

    /// The view, with whether the account lists the due period's card charge as pending.
    async fn read(
        state: &AppState,
        id: &ledger::AccountId,
        plan: &Plan,
        charged_now: usize,
    ) -> Result<Self, ApiError> {
        let mut view = PlanView::of(plan, charged_now);
        let key = documents::plan::fee_source_id(plan.next_renewal);
        let account = account_or_404(state, id).await?;
        view.card_charge_pending = account.pending_payments.contains(&key);
        Ok(view)
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
    let direct_charge = request.direct_charge;
    let change = move |p: &mut documents::profile::Profile| {
        match p.plan.as_mut() {
            None => {
                let mut plan = Plan::starting(terms.clone(), starts_on);
                plan.direct_charge = direct_charge.unwrap_or(false);
                p.plan = Some(plan);
            }
            Some(plan) => {
                plan.change = (plan.terms != terms).then(|| terms.clone());
                plan.cancel_at_renewal = false;
                if let Some(direct) = direct_charge {
                    plan.direct_charge = direct;
                }
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
    Ok(Json(PlanView::read(&state, &id, &plan, charged).await?))
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
    match profile.plan {
        Some(plan) => Ok(Json(Some(PlanView::read(&state, &id, &plan, 0).await?))),
        None => Ok(Json(None)),
    }
}

#[utoipa::path(
    put, path = "/v1/plan/direct-charge",
    summary = "Opt in to (or out of) charging the plan to the cards",
    description = "With direct charge on, each plan period is charged to the account's cards (the primary, then the backups, off session) and never touches the prepaid balance; a receipt goes to the billing contacts. An attempt in which every card declines is emailed (to the recharge-failure address and the billing contacts) and retried after 1 hour and then 6 hours; after the third, the period's fee is taken from the balance, as without direct charge. Off: each period is debited from the balance. Takes effect from the period due next (one being charged now finishes as it started). Owner or admin; audited.",
    request_body = DirectChargeBody,
    responses(
        (status = 200, description = "Saved: the plan as it stands", body = PlanView),
        (status = 400, description = "Bad request: the message says what is wrong; nothing changed", body = ApiError),
        (status = 403, description = "A viewer may not change billing settings", body = ApiError),
        (status = 404, description = "No such account, or it has no plan", body = ApiError),
        (status = 409, description = "Direct charge needs a card on file", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn set_direct_charge(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<PlanView>, ApiError> {
    let id = crate::auth::billing_admin(&state, &identity).await?;
    let request: DirectChargeBody = body::json(&raw)?;
    account_or_404(&state, &id).await?;
    let (profile, _) = documents::profile::load(state.docs(), &id).await?;
    if profile.plan.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "the account has no plan"));
    }
    let payer = documents::profile::load_payer(state.docs(), &id).await?.profile;
    if request.enabled && payer.payable_card(Utc::now().date_naive()).is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_card",
            "direct charge needs a card on file that has not expired: add one first",
        ));
    }
    let enabled = request.enabled;
    change_existing_plan(&state, &id, &identity.user, move |plan| plan.direct_charge = enabled)
        .await
}

/// Change the account's plan (audited): the plan as it stands after; 404 when there is none.
async fn change_existing_plan(
    state: &AppState,
    id: &ledger::AccountId,
    user: &str,
    edit: impl Fn(&mut Plan) + Send + Sync + 'static,
) -> Result<Json<PlanView>, ApiError> {
    let change = move |p: &mut documents::profile::Profile| {
        if let Some(plan) = p.plan.as_mut() {
            edit(plan);
        }
        Ok(())
    };
    let after = audit::change_profile(state, id, user, "plan", change, |p| p.plan.clone()).await?;
    let plan = after.plan.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "the account has no plan")
    })?;
    Ok(Json(PlanView::read(state, id, &plan, 0).await?))
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
    change_existing_plan(&state, &id, &identity.user, |plan| plan.cancel_at_renewal = true).await
}
