//! Account routes: terms, overview, settings (audited), audit log and activity.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ledger::docs::DocKind;
use ledger::{
    display_usd, Account, Amount, Entry, EntryQuery, RechargeMode, RechargeSettings, Show,
    TermsAcceptance,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{forbidden, Identity};
use crate::error::ApiError;
use crate::state::AppState;
use crate::{audit, body, profile};

/// Terms, overview, settings and their audit log (the settings function).
pub fn settings_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/terms", post(accept_terms))
        .route("/v1/overview", get(overview))
        .route("/v1/settings", get(settings))
        .route("/v1/settings/auto-recharge", put(put_auto_recharge))
        .route("/v1/settings/low-balance", put(put_low_balance))
        .route("/v1/settings/contacts", put(put_contacts))
        .route("/v1/settings/address", put(put_address))
        .route("/v1/settings/statement-schedule", put(put_statement_schedule))
        .route("/v1/settings/audit", get(audit_log))
}

/// Activity and its CSV export (the activity function).
pub fn activity_router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/activity", get(activity)).route("/v1/activity.csv", get(activity_csv))
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

fn recharge_json(account: &Account) -> Value {
    match &account.recharge {
        None => Value::Null,
        Some(r) => json!({
            "enabled": r.enabled(),
            "amount_usd": r.amount_usd(),
            "threshold_usd": r.threshold_usd(),
            "mode": r.mode(),
            "in_flight": account.recharge_in_flight.is_some(),
            // Stopped for this month (out of attempts, cap reached): why, and until when.
            "stopped": account.recharge_stopped,
            "pending_payments": account.pending_payments.len(),
        }),
    }
}

pub async fn overview_json(state: &AppState, account: &Account) -> Result<Value, ApiError> {
    let card = state.cards.card(account.rate_card.as_deref()).map(|c| (*c).clone());
    let month = ledger::Month::of(Utc::now());
    Ok(json!({
        "account_id": account.id,
        "balance_usd": account.balance_usd.normalize().to_string(),
        "balance_display": display_usd(account.balance_usd),
        "status": account.status,
        "floor_usd": account.floor_usd().normalize().to_string(),
        "credit_limit_usd": account.credit_limit_usd,
        "terms": account.terms,
        "auto_recharge": recharge_json(account),
        "low_balance_usd": account.low_balance_usd,
        "rate_card": account.rate_card.as_deref().unwrap_or("standard"),
        "rates": card,
        "plan": {
            "month": month,
            "included_seconds_used": account.plan_usage.used_in(month),
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsBody {
    version: String,
}

async fn accept_terms(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: TermsBody = body::json(&raw)?;
    if request.version.is_empty() || request.version.len() > 32 {
        return Err(ApiError::bad_request("invalid_field", "version must be 1 to 32 characters")
            .on_field("version"));
    }
    let acceptance = TermsAcceptance {
        version: request.version,
        accepted_by: identity.user.clone(),
        accepted_at: ledger::truncate_to_micros(Utc::now()),
    };
    let accepted = acceptance.clone();
    let change = move |a: &mut Account| a.terms = Some(accepted.clone());
    audit::change_account(&state, &id, &identity.user, "terms", change, |a| a.terms.clone())
        .await?;
    Ok(Json(json!({ "terms": acceptance })))
}

async fn overview(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<Value>, ApiError> {
    let account = account_or_404(&state, identity.account()?).await?;
    Ok(Json(overview_json(&state, &account).await?))
}

async fn settings(
    State(state): State<Arc<AppState>>,
    identity: Identity,
) -> Result<Json<Value>, ApiError> {
    let id = identity.account()?;
    let account = account_or_404(&state, id).await?;
    let (profile, _) = profile::load(state.docs(), id).await?;
    Ok(Json(json!({
        "auto_recharge": recharge_json(&account),
        "low_balance_usd": account.low_balance_usd,
        "billing_emails": profile.billing_emails,
        "recharge_failure_email": profile.recharge_failure_email,
        "critical_phone": profile.critical_phone,
        "service_address": profile.service_address,
        "statement_schedule": profile.statement_schedule,
        "tax_exempt": profile.tax_exempt,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoRechargeBody {
    enabled: bool,
    amount_usd: Amount,
    threshold_usd: Amount,
    mode: RechargeMode,
    /// Optional customer cap on auto-recharge spend per calendar month.
    #[serde(default)]
    monthly_cap_usd: Option<Amount>,
}

async fn put_auto_recharge(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: AutoRechargeBody = body::json(&raw)?;
    let settings = RechargeSettings::new(
        request.enabled,
        request.amount_usd,
        request.threshold_usd,
        request.mode,
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
    let before = account_or_404(&state, &id).await?;
    require_terms(&before)?;
    let (profile_before, profile_after) = profile::update_with(state.docs(), &id, |p| {
        p.auto_recharge_monthly_cap_usd = request.monthly_cap_usd;
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
    let with_cap = |account: &Account, p: &profile::Profile| {
        let mut view = recharge_json(account);
        if let Some(object) = view.as_object_mut() {
            object.insert("monthly_cap_usd".into(), json!(p.auto_recharge_monthly_cap_usd));
        }
        view
    };
    audit::record(
        state.docs(),
        &id,
        &identity.user,
        "auto_recharge",
        with_cap(&before, &profile_before),
        with_cap(&after, &profile_after),
    )
    .await?;
    Ok(Json(json!({ "auto_recharge": with_cap(&after, &profile_after) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LowBalanceBody {
    level_usd: Option<Amount>,
}

async fn put_low_balance(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "low_balance_usd": after.low_balance_usd })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsBody {
    billing_emails: Vec<profile::Email>,
    recharge_failure_email: Option<profile::Email>,
    critical_phone: Option<profile::Phone>,
}

async fn put_contacts(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: ContactsBody = body::json(&raw)?;
    if request.billing_emails.is_empty()
        || request.billing_emails.len() > profile::MAX_BILLING_EMAILS
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("1 to {} billing emails", profile::MAX_BILLING_EMAILS),
        )
        .on_field("billing_emails"));
    }
    let view = |p: &profile::Profile| {
        json!({
            "billing_emails": p.billing_emails,
            "recharge_failure_email": p.recharge_failure_email,
            "critical_phone": p.critical_phone,
        })
    };
    let change = |p: &mut profile::Profile| {
        p.billing_emails = request.billing_emails.clone();
        p.recharge_failure_email = request.recharge_failure_email.clone();
        p.critical_phone = request.critical_phone.clone();
        Ok(())
    };
    let after =
        audit::change_profile(&state, &id, &identity.user, "contacts", change, view).await?;
    Ok(Json(view(&after)))
}

async fn put_address(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = identity.admin_account()?.clone();
    let address: profile::Address = body::json(&raw)?;
    address.validate()?;
    let change = |p: &mut profile::Profile| {
        p.service_address = Some(address.clone());
        Ok(())
    };
    let view = |p: &profile::Profile| p.service_address.clone();
    let after =
        audit::change_profile(&state, &id, &identity.user, "service_address", change, view).await?;
    Ok(Json(json!({ "service_address": after.service_address })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    schedule: profile::StatementSchedule,
}

async fn put_statement_schedule(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = identity.admin_account()?.clone();
    let request: ScheduleBody = body::json(&raw)?;
    let change = |p: &mut profile::Profile| {
        p.statement_schedule = request.schedule;
        Ok(())
    };
    let view = |p: &profile::Profile| p.statement_schedule;
    let after =
        audit::change_profile(&state, &id, &identity.user, "statement_schedule", change, view)
            .await?;
    Ok(Json(json!({ "statement_schedule": after.statement_schedule })))
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

#[derive(Serialize)]
struct EntryView<'a> {
    seq: u64,
    posted_at: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
    kind: &'static str,
    item: &'static str,
    amount_usd: String,
    balance_after_usd: String,
    source_id: &'a str,
    details: &'a Value,
}

fn view(entry: &Entry) -> EntryView<'_> {
    EntryView {
        seq: entry.seq,
        posted_at: entry.posted_at,
        occurred_at: entry.occurred_at,
        kind: entry.kind.as_str(),
        item: entry.item.as_str(),
        amount_usd: entry.amount_usd.value().normalize().to_string(),
        balance_after_usd: entry.balance_after_usd.normalize().to_string(),
        source_id: entry.source_id.as_str(),
        details: &entry.details,
    }
}

/// The query parameters of `/v1/activity` and `/v1/activity.csv`.
pub const ACTIVITY_PARAMS: &[&str] = &["from", "to", "show", "cursor", "limit"];

/// The query parameters of `/v1/settings/audit` (and every other paged list).
pub const PAGE_PARAMS: &[&str] = &["cursor", "limit"];

async fn activity(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = identity.account()?;
    let query = entry_query(&Params::new(raw, ACTIVITY_PARAMS)?, ledger::store::MAX_PAGE_SIZE)?;
    let page = state.ledger().entries(id, &query).await.map_err(ApiError::from_store)?;
    let entries: Vec<EntryView<'_>> = page.entries.iter().map(view).collect();
    Ok(Json(json!({ "entries": entries, "next_cursor": page.next_cursor })))
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

async fn audit_log(
    State(state): State<Arc<AppState>>,
    identity: Identity,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = identity.account()?;
    let params = Params::new(raw, PAGE_PARAMS)?;
    let limit = params.limit(50, 200)?;
    let (entries, next_cursor) = state
        .doc_page::<audit::AuditEntry>(id, DocKind::Audit, params.get("cursor"), limit)
        .await?;
    Ok(Json(json!({ "entries": entries, "next_cursor": next_cursor })))
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
    Ok(key.to_string())
}
