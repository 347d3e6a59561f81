//! Account routes: terms, overview, settings (audited), audit log and activity.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use ledger::docs::DocKind;
use ledger::{display_usd, Account, Amount, Entry, EntryQuery, RechargeSettings, Show};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{forbidden, Identity};
use crate::error::ApiError;
use crate::openapi::{self as doc, EmailAddress, PhoneNumber, SignedUsd, Usd};
use crate::state::AppState;
use crate::{audit, body, profile};

/// Terms, overview, settings and their audit log (the settings function).
pub fn settings_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default()
        .routes(routes!(accept_terms))
        .routes(routes!(overview))
        .routes(routes!(settings))
        .routes(routes!(put_auto_recharge))
        .routes(routes!(put_low_balance))
        .routes(routes!(put_contacts))
        .routes(routes!(put_address))
        .routes(routes!(put_statement_schedule))
        .routes(routes!(audit_log))
}

/// Activity and its CSV export (the activity function).
pub fn activity_router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::default().routes(routes!(activity)).routes(routes!(activity_csv))
}

pub use crate::state::account_or_404;

/// 403 until the account has accepted the terms of service.
pub fn require_terms(account: &Account) -> Result<(), ApiError> {
    if account.terms_accepted() {
        Ok(())
    } else {
        Err(forbidden("accept the terms of service (POST /v1/terms) before any billable action"))
    }
}

/// Who accepted which version of the terms of service, and when.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TermsAcceptance)]
pub struct TermsView {
    pub version: String,
    /// The token's subject.
    pub accepted_by: String,
    pub accepted_at: DateTime<Utc>,
}

impl From<&ledger::TermsAcceptance> for TermsView {
    fn from(terms: &ledger::TermsAcceptance) -> Self {
        let ledger::TermsAcceptance { version, accepted_by, accepted_at } = terms.clone();
        TermsView { version, accepted_by, accepted_at }
    }
}

/// Why auto-recharge stopped, and through which month.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = RechargeStop)]
pub struct RechargeStopView {
    /// `YYYY-MM` (UTC): the stop holds through this month.
    #[schema(pattern = r"^[0-9]{4}-[0-9]{2}$")]
    pub month: String,
    pub reason: String,
    /// Turned off until a card change, a payment, new auto-recharge settings or an operator's
    /// re-arm (after every card failed 3 attempts in a row); the month ending does not lift it.
    pub until_lifted: bool,
    /// A stop for one UTC day (the daily cap reached): it holds through this day only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<chrono::NaiveDate>,
}

impl From<&ledger::RechargeStop> for RechargeStopView {
    fn from(stop: &ledger::RechargeStop) -> Self {
        RechargeStopView {
            month: stop.month.to_string(),
            reason: stop.reason.clone(),
            until_lifted: stop.until_lifted,
            day: stop.day,
        }
    }
}

/// Auto-recharge as set, and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = AutoRechargeState)]
pub struct AutoRechargeView {
    pub enabled: bool,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    #[schema(value_type = Usd)]
    pub threshold_usd: Amount,
    pub mode: doc::RechargeMode,
    /// A recharge request is raised and not settled yet.
    pub in_flight: bool,
    /// Stopped for this month (out of attempts, cap reached): why, and until when.
    pub stopped: Option<RechargeStopView>,
    /// Pay Now payments whose outcome is not final yet.
    pub pending_payments: usize,
    /// The customer's cap on auto-recharge spend per calendar month, when one is set (the
    /// settings and their change show it; the overview does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usd>)]
    pub monthly_cap_usd: Option<Amount>,
    /// The customer's cap on auto-recharge spend per UTC day, when one is set: a bound on what
    /// toll fraud on a stolen account can cost in a day.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Usd>)]
    pub daily_cap_usd: Option<Amount>,
    /// Pay Now payments count toward the caps (the operator's choice; shown when they do).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub caps_count_manual_payments: bool,
}

impl AutoRechargeView {
    /// `None` until auto-recharge was ever set. The caps come from the profile (`None`: not
    /// shown, as in the overview).
    pub fn of(account: &Account, profile: Option<&profile::Profile>) -> Option<Self> {
        let settings = account.recharge.as_ref()?;
        Some(AutoRechargeView {
            enabled: settings.enabled(),
            amount_usd: settings.amount_usd(),
            threshold_usd: settings.threshold_usd(),
            mode: settings.mode().into(),
            in_flight: account.recharge_in_flight.is_some(),
            stopped: account.recharge_stopped.as_ref().map(RechargeStopView::from),
            pending_payments: account.pending_payments.len(),
            monthly_cap_usd: profile.and_then(|p| p.auto_recharge_monthly_cap_usd),
            daily_cap_usd: profile.and_then(|p| p.auto_recharge_daily_cap_usd),
            caps_count_manual_payments: profile.is_some_and(|p| p.caps_count_manual_payments),
        })
    }
}

/// The plan's included minutes this month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanUsage {
    /// `YYYY-MM` (UTC).
    pub month: String,
    pub included_seconds_used: u64,
}

/// Balance, status, floor, auto-recharge summary and rates.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Overview)]
pub struct OverviewView {
    pub account_id: String,
    #[schema(value_type = SignedUsd)]
    pub balance_usd: String,
    /// The balance to the cent (half-up), for people: `$12.35`.
    pub balance_display: String,
    /// Reserved by active holds for calls, messages and purchases in progress (not debited).
    #[schema(value_type = Usd)]
    pub held_usd: String,
    /// What new calls, messages and purchases may use: balance − held − floor (and less any
    /// credit grant that has expired and is not removed yet).
    #[schema(value_type = SignedUsd)]
    pub available_usd: String,
    /// The customer's own money: the balance less what is left of credit grants. Never expires.
    #[schema(value_type = SignedUsd)]
    pub paid_usd: String,
    /// What is left of credit grants (promotional or goodwill): drawn on before paid funds.
    #[schema(value_type = Usd)]
    pub granted_usd: String,
    /// The credit grants with something left, in the order debits draw on them.
    pub grants: Vec<GrantView>,
    /// The active holds, oldest first.
    pub holds: Vec<crate::authorization::HoldView>,
    pub status: doc::AccountStatus,
    /// The lowest balance service continues above: 0 for prepaid accounts, `-credit_limit`
    /// for postpaid ones.
    #[schema(value_type = SignedUsd)]
    pub floor_usd: String,
    /// Postpaid accounts only.
    #[schema(value_type = Option<Usd>)]
    pub credit_limit_usd: Option<Amount>,
    pub terms: Option<TermsView>,
    pub auto_recharge: Option<AutoRechargeView>,
    #[schema(value_type = Option<Usd>)]
    pub low_balance_usd: Option<Amount>,
    /// The rate card's id.
    pub rate_card: String,
    /// The rate card itself (rounding, calls, sms, numbers, ring-through attempts, premium
    /// services, included minutes), as the rating engine reads it.
    #[schema(value_type = Option<Object>)]
    pub rates: Option<Arc<rating::RateCard>>,
    pub plan: PlanUsage,
    /// The operator's view of an account only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_exempt: Option<bool>,
    /// Billing addresses the mail service could not deliver to (a permanent bounce or a
    /// complaint): no email goes to them until the contacts are saved again.
    pub undeliverable_emails: Vec<UndeliverableView>,
}

/// A billing address marked undeliverable, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UndeliverableView {
    pub address: String,
    /// `bounce` or `complaint`.
    pub kind: String,
    pub reason: String,
    pub at: chrono::DateTime<Utc>,
}

impl UndeliverableView {
    pub fn list(profile: &profile::Profile) -> Vec<UndeliverableView> {
        profile
            .undeliverable_emails
            .iter()
            .map(|u| UndeliverableView {
                address: u.address.clone(),
                kind: u.kind.clone(),
                reason: u.reason.clone(),
                at: u.at,
            })
            .collect()
    }
}

pub fn overview_view(state: &AppState, account: &Account) -> OverviewView {
    let now = Utc::now();
    let month = ledger::Month::of(now);
    OverviewView {
        account_id: account.id.to_string(),
        balance_usd: account.balance_usd.normalize().to_string(),
        balance_display: display_usd(account.balance_usd),
        held_usd: account.held_usd(now, None).normalize().to_string(),
        available_usd: account.available_usd(now).normalize().to_string(),
        paid_usd: account.paid_usd().normalize().to_string(),
        granted_usd: account.granted_usd().normalize().to_string(),
        grants: grant_views(account, now),
        holds: account
            .holds
            .iter()
            .filter(|hold| hold.is_active(now))
            .map(|hold| crate::authorization::HoldView::of(hold, now))
            .collect(),
        status: account.status.into(),
        floor_usd: account.floor_usd().normalize().to_string(),
        credit_limit_usd: account.credit_limit_usd,
        terms: account.terms.as_ref().map(TermsView::from),
        auto_recharge: AutoRechargeView::of(account, None),
        low_balance_usd: account.low_balance_usd,
        rate_card: account.rate_card.as_deref().unwrap_or("standard").to_string(),
        rates: state.cards.card(account.rate_card.as_deref()),
        plan: PlanUsage {
            included_seconds_used: account.plan_usage.used_in(month),
            month: month.to_string(),
        },
        tax_exempt: None,
        undeliverable_emails: Vec::new(),
    }
}

/// Accept a version of the terms of service.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Terms)]
pub struct TermsBody {
    #[schema(min_length = 1, max_length = 32)]
    pub version: String,
}

/// The terms as accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct TermsAccepted {
    pub terms: TermsView,
}

#[utoipa::path(
    post, path = "/v1/terms", summary = "Accept the terms of service (admin)",
    request_body = TermsBody,
    responses(
        (status = 200, description = "Accepted", body = TermsAccepted),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn accept_terms(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<TermsAccepted>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: TermsBody = body::json(&raw)?;
    if request.version.is_empty() || request.version.len() > 32 {
        return Err(ApiError::bad_request("invalid_field", "version must be 1 to 32 characters")
            .on_field("version"));
    }
    let acceptance = ledger::TermsAcceptance {
        version: request.version,
        accepted_by: identity.user.clone(),
        accepted_at: ledger::truncate_to_micros(Utc::now()),
    };
    let accepted = acceptance.clone();
    let change = move |a: &mut Account| a.terms = Some(accepted.clone());
    audit::change_account(&state, &id, &identity.user, "terms", change, |a| a.terms.clone())
        .await?;
    Ok(Json(TermsAccepted { terms: TermsView::from(&acceptance) }))
}

#[utoipa::path(
    get, path = "/v1/overview", summary = "Balance, status, floor, auto-recharge summary and rates",
    responses(
        (status = 200, description = "Overview", body = OverviewView),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn overview(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<OverviewView>, ApiError> {
    let account = account_or_404(&state, identity.account()?).await?;
    let (profile, _) = profile::load(state.docs(), &account.id).await?;
    let mut view = overview_view(&state, &account);
    view.undeliverable_emails = UndeliverableView::list(&profile);
    Ok(Json(view))
}

/// Every setting of the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    pub auto_recharge: Option<AutoRechargeView>,
    #[schema(value_type = Option<Usd>)]
    pub low_balance_usd: Option<Amount>,
    #[schema(value_type = Vec<EmailAddress>)]
    pub billing_emails: Vec<profile::Email>,
    #[schema(value_type = Option<EmailAddress>)]
    pub recharge_failure_email: Option<profile::Email>,
    #[schema(value_type = Option<PhoneNumber>)]
    pub critical_phone: Option<profile::Phone>,
    pub service_address: Option<Address>,
    pub statement_schedule: doc::StatementSchedule,
    pub tax_exempt: bool,
    /// The critical phone's holder answered STOP: no critical billing texts.
    pub critical_sms_opt_out: bool,
    /// Billing addresses the mail service could not deliver to.
    pub undeliverable_emails: Vec<UndeliverableView>,
}

#[utoipa::path(
    get, path = "/v1/settings", summary = "All settings",
    responses(
        (status = 200, description = "Settings", body = Settings),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn settings(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<Settings>, ApiError> {
    let id = identity.account()?;
    let account = account_or_404(&state, id).await?;
    let (profile, _) = profile::load(state.docs(), id).await?;
    let undeliverable_emails = UndeliverableView::list(&profile);
    Ok(Json(Settings {
        auto_recharge: AutoRechargeView::of(&account, Some(&profile)),
        low_balance_usd: account.low_balance_usd,
        billing_emails: profile.billing_emails,
        recharge_failure_email: profile.recharge_failure_email,
        critical_phone: profile.critical_phone,
        service_address: profile.service_address.map(Address::from),
        statement_schedule: profile.statement_schedule.into(),
        tax_exempt: profile.tax_exempt,
        critical_sms_opt_out: profile.critical_sms_opt_out,
        undeliverable_emails,
    }))
}

/// Auto-recharge settings: amount at least $50, threshold at least $10, amount above the
/// threshold, both whole cents.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AutoRecharge, example = json!({
    "enabled": true, "amount_usd": "50.00", "threshold_usd": "10.00", "mode": "add",
    "monthly_cap_usd": "200.00",
}))]
pub struct AutoRechargeBody {
    pub enabled: bool,
    #[schema(value_type = Usd)]
    pub amount_usd: Amount,
    #[schema(value_type = Usd)]
    pub threshold_usd: Amount,
    pub mode: doc::RechargeMode,
    /// Optional customer cap on auto-recharge spend per calendar month (at least the amount);
    /// left out or null: no cap.
    #[serde(default)]
    #[schema(value_type = Option<Usd>)]
    pub monthly_cap_usd: Option<Amount>,
    /// Optional cap on auto-recharge spend per UTC day (at least the amount, at most the
    /// monthly cap); left out or null: no daily cap.
    #[serde(default)]
    #[schema(value_type = Option<Usd>)]
    pub daily_cap_usd: Option<Amount>,
}

/// Auto-recharge as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutoRechargeSaved {
    pub auto_recharge: Option<AutoRechargeView>,
}

#[utoipa::path(
    put, path = "/v1/settings/auto-recharge",
    summary = "Auto-recharge settings (admin; amount >= $50, threshold >= $10, amount above threshold)",
    request_body = AutoRechargeBody,
    responses(
        (status = 200, description = "Saved", body = AutoRechargeSaved),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn put_auto_recharge(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<AutoRechargeSaved>, ApiError> {
    let id = crate::auth::billing_admin(&state, &identity).await?;
    let request: AutoRechargeBody = body::json(&raw)?;
    let settings = RechargeSettings::new(
        request.enabled,
        request.amount_usd,
        request.threshold_usd,
        request.mode.into(),
    )
    .map_err(|e| {
        let field = match e {
            ledger::RechargeSettingsError::ThresholdTooSmall => "threshold_usd",
            _ => "amount_usd",
        };
        ApiError::bad_request("invalid_field", e.to_string()).on_field(field)
    })?;
    if let Some(cap) = request.monthly_cap_usd {
        if cap < request.amount_usd {
            return Err(ApiError::bad_request(
                "invalid_field",
                "the monthly cap must allow at least one recharge",
            )
            .on_field("monthly_cap_usd"));
        }
    }
    if let Some(cap) = request.daily_cap_usd {
        if cap < request.amount_usd {
            return Err(ApiError::bad_request(
                "invalid_field",
                "the daily cap must allow at least one recharge",
            )
            .on_field("daily_cap_usd"));
        }
        if request.monthly_cap_usd.is_some_and(|monthly| cap > monthly) {
            return Err(ApiError::bad_request(
                "invalid_field",
                "the daily cap cannot be above the monthly cap",
            )
            .on_field("daily_cap_usd"));
        }
    }
    let before = account_or_404(&state, &id).await?;
    require_terms(&before)?;
    let (profile_before, profile_after) = profile::update_with(state.docs(), &id, |p| {
        p.auto_recharge_monthly_cap_usd = request.monthly_cap_usd;
        p.auto_recharge_daily_cap_usd = request.daily_cap_usd;
        Ok::<(), ApiError>(())
    })
    .await?;
    let after = state
        .ledger()
        .modify_account(
            &id,
            Arc::new(move |a| {
                a.recharge = Some(settings.clone());
                Ok(())
            }),
            Utc::now(),
        )
        .await
        .map_err(ApiError::from_store)?;
    let with_cap = |account: &Account, p: &profile::Profile| AutoRechargeView::of(account, Some(p));
    audit::record(
        state.docs(),
        &id,
        &identity.user,
        "auto_recharge",
        audit::json(&with_cap(&before, &profile_before))?,
        audit::json(&with_cap(&after, &profile_after))?,
    )
    .await?;
    Ok(Json(AutoRechargeSaved { auto_recharge: with_cap(&after, &profile_after) }))
}

/// The low-balance notice level; null turns the notice off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LowBalance)]
pub struct LowBalanceBody {
    // Required in the document (send null to turn the notice off), so that a client never
    // clears it by leaving it out; serde takes a missing one as null.
    #[schema(value_type = Option<Usd>, required = true)]
    pub level_usd: Option<Amount>,
}

/// The low-balance notice level as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct LowBalanceSaved {
    #[schema(value_type = Option<Usd>)]
    pub low_balance_usd: Option<Amount>,
}

#[utoipa::path(
    put, path = "/v1/settings/low-balance", summary = "Low-balance notice level (admin)",
    request_body = LowBalanceBody,
    responses(
        (status = 200, description = "Saved", body = LowBalanceSaved),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn put_low_balance(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<LowBalanceSaved>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: LowBalanceBody = body::json(&raw)?;
    let level = request.level_usd;
    let after = audit::change_account(
        &state,
        &id,
        &identity.user,
        "low_balance",
        move |a| a.low_balance_usd = level,
        |a| a.low_balance_usd,
    )
    .await?;
    Ok(Json(LowBalanceSaved { low_balance_usd: after.low_balance_usd }))
}

/// The billing contacts: who gets receipts and statements, who hears of a failed recharge,
/// and the number called about critical billing events. Taken and shown alike.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    #[schema(value_type = Vec<EmailAddress>, min_items = 1, max_items = 10)]
    pub billing_emails: Vec<profile::Email>,
    #[schema(value_type = Option<EmailAddress>, required = true)]
    pub recharge_failure_email: Option<profile::Email>,
    #[schema(value_type = Option<PhoneNumber>, required = true)]
    pub critical_phone: Option<profile::Phone>,
    /// The critical phone receives texts for critical billing events (a failed recharge or
    /// plan charge, service paused, numbers about to be released) unless this is `true` (its
    /// holder answered STOP). Left out: `false`.
    #[serde(default)]
    pub critical_sms_opt_out: bool,
}

impl Contacts {
    fn of(p: &profile::Profile) -> Self {
        Contacts {
            billing_emails: p.billing_emails.clone(),
            recharge_failure_email: p.recharge_failure_email.clone(),
            critical_phone: p.critical_phone.clone(),
            critical_sms_opt_out: p.critical_sms_opt_out,
        }
    }
}

#[utoipa::path(
    put, path = "/v1/settings/contacts", summary = "Billing contacts (admin)",
    request_body = Contacts,
    responses(
        (status = 200, description = "Saved", body = Contacts),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn put_contacts(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Contacts>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: Contacts = body::json(&raw)?;
    if request.billing_emails.is_empty()
        || request.billing_emails.len() > profile::MAX_BILLING_EMAILS
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("1 to {} billing emails", profile::MAX_BILLING_EMAILS),
        )
        .on_field("billing_emails"));
    }
    let change = |p: &mut profile::Profile| {
        p.billing_emails = request.billing_emails.clone();
        p.recharge_failure_email = request.recharge_failure_email.clone();
        p.critical_phone = request.critical_phone.clone();
        p.critical_sms_opt_out = request.critical_sms_opt_out;
        // The customer vouches for every address saved: their undeliverable marks go.
        let saved: Vec<&str> = request
            .billing_emails
            .iter()
            .chain(request.recharge_failure_email.as_ref())
            .map(|e| e.as_str())
            .collect();
        p.undeliverable_emails
            .retain(|u| !saved.iter().any(|a| a.eq_ignore_ascii_case(&u.address)));
        Ok(())
    };
    let after =
        audit::change_profile(&state, &id, &identity.user, "contacts", change, Contacts::of)
            .await?;
    Ok(Json(Contacts::of(&after)))
}

/// The service address (drives sales tax). Taken and shown alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[schema(min_length = 1, max_length = 200)]
    pub line1: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub city: String,
    /// State or province code, where the country has them.
    #[serde(default)]
    #[schema(pattern = "^[A-Z0-9]{1,3}$")]
    pub region: Option<String>,
    #[schema(min_length = 1, max_length = 20)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
}

impl From<profile::Address> for Address {
    fn from(address: profile::Address) -> Self {
        let profile::Address { line1, line2, city, region, postal_code, country } = address;
        Address { line1, line2, city, region, postal_code, country }
    }
}

impl From<Address> for profile::Address {
    fn from(address: Address) -> Self {
        let Address { line1, line2, city, region, postal_code, country } = address;
        profile::Address { line1, line2, city, region, postal_code, country }
    }
}

/// The service address as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceAddressSaved {
    pub service_address: Option<Address>,
}

#[utoipa::path(
    put, path = "/v1/settings/address", summary = "Service address (admin; drives sales tax)",
    request_body = Address,
    responses(
        (status = 200, description = "Saved", body = ServiceAddressSaved),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn put_address(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<ServiceAddressSaved>, ApiError> {
    let id = identity.admin_account()?.clone();
    let address: profile::Address = body::json::<Address>(&raw)?.into();
    address.validate()?;
    let change = |p: &mut profile::Profile| {
        p.service_address = Some(address.clone());
        Ok(())
    };
    let view = |p: &profile::Profile| p.service_address.clone().map(Address::from);
    let after =
        audit::change_profile(&state, &id, &identity.user, "service_address", change, view).await?;
    Ok(Json(ServiceAddressSaved { service_address: after.service_address.map(Address::from) }))
}

/// How often statements are emailed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StatementSchedule)]
pub struct ScheduleBody {
    pub schedule: doc::StatementSchedule,
}

/// The statement schedule as saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatementScheduleSaved {
    pub statement_schedule: doc::StatementSchedule,
}

#[utoipa::path(
    put, path = "/v1/settings/statement-schedule", summary = "Statement schedule (admin)",
    request_body = ScheduleBody,
    responses(
        (status = 200, description = "Saved", body = StatementScheduleSaved),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: nothing was applied, retry", body = ApiError),
    )
)]
async fn put_statement_schedule(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<StatementScheduleSaved>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: ScheduleBody = body::json(&raw)?;
    let schedule: profile::StatementSchedule = request.schedule.into();
    let change = |p: &mut profile::Profile| {
        p.statement_schedule = schedule;
        Ok(())
    };
    let view = |p: &profile::Profile| doc::StatementSchedule::from(p.statement_schedule);
    let after =
        audit::change_profile(&state, &id, &identity.user, "statement_schedule", change, view)
            .await?;
    Ok(Json(StatementScheduleSaved { statement_schedule: after.statement_schedule.into() }))
}

/// Query parameters, each parsed with an error naming it; unknown ones are refused.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(unknown) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
            let allowed = match allowed {
                [] => "this route takes none".to_string(),
                _ => format!("allowed: {}", allowed.join(", ")),
            };
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("unknown query parameter {unknown:?}; {allowed}"),
            )
            .on_field(unknown.clone()));
        }
        Ok(Params(raw))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_field",
                        format!("{name} must be an RFC 3339 time such as 2026-11-01T00:00:00Z"),
                    )
                    .on_field(name)
                })
            })
            .transpose()
    }

    pub fn limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => v.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                ApiError::bad_request("invalid_field", format!("limit must be 1 to {max}"))
                    .on_field("limit")
            }),
        }
    }
}

fn entry_query(params: &Params, max_limit: u32) -> Result<EntryQuery, ApiError> {
    let show = match params.get("show").unwrap_or("all") {
        "all" => Show::All,
        "debits" => Show::Debits,
        "credits" => Show::Credits,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "show must be all, debits or credits",
            )
            .on_field("show"))
        }
    };
    let from = params.time("from")?;
    let to = params.time("to")?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::bad_request("invalid_field", "from must not be after to")
                .on_field("from"));
        }
    }
    Ok(EntryQuery {
        from,
        to,
        show,
        cursor: params.get("cursor").map(str::to_string),
        limit: params.limit(100.min(max_limit), max_limit)?,
    })
}

/// Why the credit is granted.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GrantCategoryName {
    Promotional,
    Goodwill,
}

impl From<GrantCategoryName> for ledger::GrantCategory {
    fn from(value: GrantCategoryName) -> Self {
        match value {
            GrantCategoryName::Promotional => ledger::GrantCategory::Promotional,
            GrantCategoryName::Goodwill => ledger::GrantCategory::Goodwill,
        }
    }
}

impl From<ledger::GrantCategory> for GrantCategoryName {
    fn from(value: ledger::GrantCategory) -> Self {
        match value {
            ledger::GrantCategory::Promotional => GrantCategoryName::Promotional,
            ledger::GrantCategory::Goodwill => GrantCategoryName::Goodwill,
        }
    }
}

/// A credit grant with something left.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CreditGrant)]
pub struct GrantView {
    /// `cg:<Idempotency-Key>`; entries' `grants` name it.
    pub grant_id: String,
    pub category: GrantCategoryName,
    #[schema(value_type = Usd)]
    pub granted_usd: String,
    #[schema(value_type = Usd)]
    pub remaining_usd: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: u8,
    pub granted_at: DateTime<Utc>,
    /// Expired: it pays for nothing any more, and the next write of the account removes what
    /// is left.
    pub expired: bool,
}

impl GrantView {
    pub fn of(grant: &ledger::CreditGrant, now: DateTime<Utc>) -> Self {
        GrantView {
            grant_id: grant.id.clone(),
            category: grant.category.into(),
            granted_usd: grant.granted_usd.normalize().to_string(),
            remaining_usd: grant.remaining_usd.normalize().to_string(),
            expires_at: grant.expires_at,
            priority: grant.priority,
            granted_at: grant.granted_at,
            expired: grant.expired_at(now),
        }
    }
}

/// An account's grants with something left, in the order debits draw on them.
pub fn grant_views(account: &Account, now: DateTime<Utc>) -> Vec<GrantView> {
    let mut grants: Vec<&ledger::CreditGrant> = account.grants.iter().collect();
    grants.sort_by_key(|g| (g.expires_at.is_none(), g.expires_at, g.priority, g.granted_at));
    grants.into_iter().map(|g| GrantView::of(g, now)).collect()
}

/// One ledger entry as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Entry)]
pub struct EntryView {
    /// 1, 2, 3, ... per account, without gaps.
    pub seq: u64,
    /// When the ledger applied it (UTC).
    pub posted_at: DateTime<Utc>,
    /// When the billed thing happened (UTC), as its source reported it.
    pub occurred_at: DateTime<Utc>,
    pub kind: doc::EntryKind,
    pub item: doc::BillingItem,
    #[schema(value_type = Usd)]
    pub amount_usd: String,
    #[schema(value_type = SignedUsd)]
    pub balance_after_usd: String,
    /// The id that makes the entry apply once (event id, Idempotency-Key, request id, ...).
    pub source_id: String,
    /// What the source said about it (free-form).
    pub details: Value,
    /// Which credit grants bore part of the amount, and how much (drawn by a debit, given back
    /// by a credit); the rest is paid funds. Absent when no grant was involved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantShareView>,
}

/// The part of an entry one credit grant bore.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = GrantShare)]
pub struct GrantShareView {
    /// The grant's id.
    pub grant_id: String,
    #[schema(value_type = Usd)]
    pub amount_usd: String,
}

impl From<&Entry> for EntryView {
    fn from(entry: &Entry) -> Self {
        // Every field named: a new one does not compile until the API decides to show it.
        let Entry {
            account_id: _,
            seq,
            kind,
            item,
            amount_usd,
            balance_after_usd,
            posted_at,
            occurred_at,
            source_id,
            details,
            grants,
        } = entry;
        EntryView {
            seq: *seq,
            posted_at: *posted_at,
            occurred_at: *occurred_at,
            kind: (*kind).into(),
            item: (*item).into(),
            amount_usd: amount_usd.value().normalize().to_string(),
            balance_after_usd: balance_after_usd.normalize().to_string(),
            source_id: source_id.as_str().to_string(),
            details: details.clone(),
            grants: grants
                .iter()
                .map(|share| GrantShareView {
                    grant_id: share.grant.clone(),
                    amount_usd: share.amount_usd.normalize().to_string(),
                })
                .collect(),
        }
    }
}

/// A page of entries, oldest first; `next_cursor` continues.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPage {
    pub entries: Vec<EntryView>,
    pub next_cursor: Option<String>,
    /// Calls, messages and purchases in progress, as of now: money reserved, not yet moved
    /// (not entries; each becomes entries when its usage event is posted).
    pub active_holds: Vec<crate::authorization::HoldView>,
}

/// A page of the settings audit log, newest first; `next_cursor` continues.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<audit::AuditEntry>,
    pub next_cursor: Option<String>,
}

/// The query parameters of `/v1/activity` and `/v1/activity.csv`.
pub const ACTIVITY_PARAMS: &[&str] = &["from", "to", "show", "cursor", "limit"];

/// The query parameters of `/v1/settings/audit` (and every other paged list).
pub const PAGE_PARAMS: &[&str] = &["cursor", "limit"];

const ACTIVITY_RANGE: &str = "Entries whose posting time lies in [from, to): from included, to \
    excluded, both optional. Unknown query parameters are refused with a 400 naming them.";

#[utoipa::path(
    get, path = "/v1/activity", summary = "Ledger entries by UTC range and kind, oldest first",
    description = ACTIVITY_RANGE,
    params(
        ("from" = Option<DateTime<Utc>>, Query,
            description = "Entries posted at or after this UTC time (included): the range is [from, to)"),
        ("to" = Option<DateTime<Utc>>, Query,
            description = "Entries posted before this UTC time (excluded): the range is [from, to)"),
        ("show" = inline(Option<ShowParam>), Query, description = "Which entries: all (default), debits or credits"),
        ("cursor" = Option<String>, Query, max_length = 200, description = "The previous page's next_cursor"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Entries per page (default 100)"),
    ),
    responses(
        (status = 200, description = "Entries", body = EntryPage),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn activity(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<EntryPage>, ApiError> {
    let id = identity.account()?;
    let query = entry_query(&Params::new(raw, ACTIVITY_PARAMS)?, ledger::store::MAX_PAGE_SIZE)?;
    let page = state.ledger().entries(id, &query).await.map_err(ApiError::from_store)?;
    let entries = page.entries.iter().map(EntryView::from).collect();
    let account = state.ledger().account(id).await.map_err(ApiError::from_store)?;
    let now = Utc::now();
    let active_holds = account
        .iter()
        .flat_map(|account| account.holds.iter())
        .filter(|hold| hold.is_active(now))
        .map(|hold| crate::authorization::HoldView::of(hold, now))
        .collect();
    Ok(Json(EntryPage { entries, next_cursor: page.next_cursor, active_holds }))
}

/// Which entries the activity shows (the `show` query parameter).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Documents the parameter; `entry_query` parses it with an error naming it.
enum ShowParam {
    All,
    Debits,
    Credits,
}

/// The CSV columns, in order. Stable: add new columns at the end only.
pub const CSV_COLUMNS: [&str; 9] = [
    "seq",
    "posted_at",
    "occurred_at",
    "kind",
    "item",
    "amount_usd",
    "balance_after_usd",
    "source_id",
    "details",
];

/// One CSV cell: quoted when needed, and safe from spreadsheet formula injection (source ids
/// come from outside). The same rule as the statement's CSV.
pub fn csv_field(value: &str) -> String {
    notifications::statement::csv_field(value)
}

/// The CSV's header line (the API's `activity.csv` and the CLI's `activity` both write it).
pub fn csv_header() -> String {
    let mut header = CSV_COLUMNS.join(",");
    header.push_str("\r\n");
    header
}

/// One entry as a CSV line, in [`CSV_COLUMNS`] order.
pub fn csv_row(entry: &Entry) -> String {
    let fields = [
        entry.seq.to_string(),
        entry.posted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        entry.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        entry.kind.as_str().to_string(),
        entry.item.as_str().to_string(),
        entry.amount_usd.value().normalize().to_string(),
        entry.balance_after_usd.normalize().to_string(),
        entry.source_id.to_string(),
        if entry.details.is_null() { String::new() } else { entry.details.to_string() },
    ];
    let mut row = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
    row.push_str("\r\n");
    row
}

/// The most rows one CSV response carries; `x-next-cursor` continues.
pub const MAX_CSV_ROWS: u32 = 10_000;

#[utoipa::path(
    get, path = "/v1/activity.csv",
    summary = "The same as CSV with stable columns (x-next-cursor continues)",
    description = ACTIVITY_RANGE,
    params(
        ("from" = Option<DateTime<Utc>>, Query,
            description = "Entries posted at or after this UTC time (included): the range is [from, to)"),
        ("to" = Option<DateTime<Utc>>, Query,
            description = "Entries posted before this UTC time (excluded): the range is [from, to)"),
        ("show" = inline(Option<ShowParam>), Query, description = "Which entries: all (default), debits or credits"),
        ("cursor" = Option<String>, Query, max_length = 200, description = "The x-next-cursor of the previous download"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Rows (default 100)"),
    ),
    responses(
        (status = 200, description = "CSV", content_type = "text/csv", body = String,
            headers(("x-next-cursor" = String, description = "Present when more rows follow: pass it as cursor"))),
        (status = 404, description = "No such account or resource", body = ApiError),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn activity_csv(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = identity.account()?;
    let mut query = entry_query(&Params::new(raw, ACTIVITY_PARAMS)?, MAX_CSV_ROWS)?;
    let mut remaining = query.limit;
    let mut csv = csv_header();
    let mut next_cursor = None;
    while remaining > 0 {
        query.limit = remaining.min(ledger::store::MAX_PAGE_SIZE);
        let page = state.ledger().entries(id, &query).await.map_err(ApiError::from_store)?;
        remaining -= page.entries.len() as u32;
        for entry in &page.entries {
            csv.push_str(&csv_row(entry));
        }
        next_cursor = page.next_cursor.clone();
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"activity.csv\""),
    );
    if let Some(cursor) = next_cursor.filter(|_| remaining == 0) {
        if let Ok(value) = HeaderValue::from_str(&cursor) {
            headers.insert("x-next-cursor", value);
        }
    }
    Ok((headers, csv).into_response())
}

#[utoipa::path(
    get, path = "/v1/settings/audit", summary = "Settings changes, newest first",
    params(
        ("cursor" = Option<String>, Query, max_length = 200, description = "The previous page's next_cursor"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Entries per page (default 50)"),
    ),
    responses(
        (status = 200, description = "Audit log", body = AuditPage),
        (status = 503, description = "Busy: retry", body = ApiError),
    )
)]
async fn audit_log(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<AuditPage>, ApiError> {
    let id = identity.account()?;
    let params = Params::new(raw, PAGE_PARAMS)?;
    let limit = params.limit(50, 200)?;
    let (entries, next_cursor) = state
        .doc_page::<audit::AuditEntry>(id, DocKind::Audit, params.get("cursor"), limit)
        .await?;
    Ok(Json(AuditPage { entries, next_cursor }))
}

/// `Idempotency-Key`: required on every money-moving POST.
pub fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::bad_request("missing_idempotency_key", "an Idempotency-Key header is required")
            .on_field("Idempotency-Key")
    })?;
    let valid = (1..=100).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_field",
            "Idempotency-Key must be 1 to 100 printable characters without spaces",
        )
        .on_field("Idempotency-Key"));
    }
    for (prefix, what) in [
        (documents::plan::PLAN_KEY_PREFIX, "plan charges"),
        (documents::invoice::AUTOPAY_KEY_PREFIX, "invoice charges"),
    ] {
        if key.starts_with(prefix) {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("Idempotency-Key may not begin with {prefix:?} (reserved for {what})"),
            )
            .on_field("Idempotency-Key"));
        }
    }
    Ok(key.to_string())
}
