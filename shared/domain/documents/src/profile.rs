//! An account's billing profile: contacts, address, tax exemption, statement schedule, the card
//! processor's customer id and the registered cards. One versioned document per account.

use ledger::docs::{DocError, DocKind, DocStore};
use ledger::AccountId;
use serde::{Deserialize, Serialize};

use crate::DocumentError;

pub const MAX_BILLING_EMAILS: usize = 10;
pub const MAX_CARDS: usize = 5;

/// An email address checked at the edge (shape only; delivery proves the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let value = value.trim().to_string();
        let valid = (3..=254).contains(&value.len())
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            });
        if valid {
            Ok(Email(value))
        } else {
            Err(format!("{value:?} is not an email address"))
        }
    }
}

impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An E.164 phone number: `+` and 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let valid = value
            .strip_prefix('+')
            .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
        if valid {
            Ok(Phone(value))
        } else {
            Err(format!("{value:?} is not an E.164 phone number (+ and 8-15 digits)"))
        }
    }
}

impl From<Phone> for String {
    fn from(value: Phone) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    /// ISO 3166-2 subdivision code without the country (`CA`, `NY`, `ON`), where there is one.
    #[serde(default)]
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (`US`, `CA`).
    pub country: String,
}

impl Address {
    /// "1 Main St, Suite 2, Springfield, IL 62701, US".
    pub fn one_line(&self) -> String {
        let region_and_code = match &self.region {
            Some(region) if !region.trim().is_empty() => {
                format!("{} {}", region.trim(), self.postal_code.trim())
            }
            _ => self.postal_code.trim().to_string(),
        };
        [
            Some(self.line1.trim()),
            self.line2.as_deref().map(str::trim),
            Some(self.city.trim()),
            Some(region_and_code.as_str()),
            Some(self.country.trim()),
        ]
        .into_iter()
        .flatten()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
    }

    pub fn validate(&self) -> Result<(), DocumentError> {
        let field = |name: &'static str, value: &str, max: usize| {
            if value.trim().is_empty() || value.len() > max {
                Err(DocumentError::invalid(name, format!("{name} must be 1 to {max} characters")))
            } else {
                Ok(())
            }
        };
        field("line1", &self.line1, 200)?;
        if let Some(line2) = &self.line2 {
            field("line2", line2, 200)?;
        }
        field("city", &self.city, 100)?;
        field("postal_code", &self.postal_code, 20)?;
        if self.country.len() != 2 || !self.country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(DocumentError::invalid(
                "country",
                "country must be an ISO 3166-1 alpha-2 code such as US",
            ));
        }
        if let Some(region) = &self.region {
            if region.is_empty()
                || region.len() > 3
                || !region.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(DocumentError::invalid(
                    "region",
                    "region must be an ISO 3166-2 subdivision code such as CA",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementSchedule {
    #[default]
    None,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardRole {
    Primary,
    Backup,
}

/// What is kept of a card: the processor's ids and what the card page shows. Never a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCard {
    /// The processor's payment-method id.
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub role: CardRole,
    pub card_manager_email: Email,
    pub added_at: chrono::DateTime<chrono::Utc>,
    /// A card, or a US bank account (ACH: its payments settle in days).
    #[serde(default, skip_serializing_if = "MethodKind::is_card")]
    pub kind: MethodKind,
    /// A bank account waiting for its microdeposit verification is never charged.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub verified: bool,
}

/// What a stored payment method is (the processor's `card` or `us_bank_account`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    #[default]
    Card,
    UsBankAccount,
}

impl MethodKind {
    pub fn is_card(&self) -> bool {
        *self == MethodKind::Card
    }
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl StoredCard {
    /// Chargeable now: a card that has not expired, or a verified bank account.
    pub fn chargeable(&self, today: chrono::NaiveDate) -> bool {
        self.verified && !self.expired(today)
    }

    /// The last day the card can be charged: the last day of its expiry month.
    pub fn last_valid_day(&self) -> Option<chrono::NaiveDate> {
        let (year, month) = match self.exp_month {
            12 => (i32::from(self.exp_year) + 1, 1),
            month => (i32::from(self.exp_year), u32::from(month) + 1),
        };
        chrono::NaiveDate::from_ymd_opt(year, month, 1)?.pred_opt()
    }

    /// Expires within `days` of `today` (and has not expired yet).
    pub fn expires_within(&self, today: chrono::NaiveDate, days: i64) -> bool {
        !self.expired(today)
            && self.last_valid_day().is_some_and(|last| (last - today).num_days() < days)
    }

    pub fn expired(&self, today: chrono::NaiveDate) -> bool {
        use chrono::Datelike;
        if self.kind == MethodKind::UsBankAccount {
            return false;
        }
        let (year, month) = (today.year(), today.month());
        i32::from(self.exp_year) < year
            || (i32::from(self.exp_year) == year && u32::from(self.exp_month) < month)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub billing_emails: Vec<Email>,
    #[serde(default)]
    pub recharge_failure_email: Option<Email>,
    #[serde(default)]
    pub critical_phone: Option<Phone>,
    #[serde(default)]
    pub service_address: Option<Address>,
    #[serde(default)]
    pub tax_exempt: bool,
    #[serde(default)]
    pub statement_schedule: StatementSchedule,
    #[serde(default)]
    pub processor_customer_id: Option<String>,
    #[serde(default)]
    pub cards: Vec<StoredCard>,
    /// The most auto-recharge may charge per calendar month (UTC); `None` is no cap.
    #[serde(default)]
    pub auto_recharge_monthly_cap_usd: Option<ledger::Amount>,
    /// The most auto-recharge may charge per UTC day (a bound on what toll fraud on a stolen
    /// account can cost in a day); `None` is no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_recharge_daily_cap_usd: Option<ledger::Amount>,
    /// The operator's choice: Pay Now payments count toward the auto-recharge caps (by default
    /// they do not: a customer paying by hand is not the runaway the caps bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caps_count_manual_payments: bool,
    /// The account's software plan, charged at each renewal (see [`crate::plan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::plan::Plan>,
    /// The holder answered STOP: no critical billing texts to `critical_phone`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical_sms_opt_out: bool,
    /// Billing addresses the mail service reported as undeliverable (a permanent bounce or a
    /// complaint): no email goes to them until the contacts are saved again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undeliverable_emails: Vec<Undeliverable>,
    /// A client account: the agency whose cards pay for it and whose billing emails hear of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency_id: Option<ledger::AccountId>,
    /// An agency account: its client accounts, in the order they were added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agency_clients: Vec<ledger::AccountId>,
    /// Prepaid (the default) or postpaid: invoiced monthly (see [`crate::invoice`]).
    #[serde(default, skip_serializing_if = "is_prepaid")]
    pub billing_mode: crate::invoice::BillingMode,
    /// A postpaid account's invoices are charged to its cards on the issue date (the customer's
    /// pre-authorization, recorded by an operator).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_authorized_payment: bool,
}

fn is_prepaid(mode: &crate::invoice::BillingMode) -> bool {
    *mode == crate::invoice::BillingMode::Prepaid
}

/// Client accounts one agency holds at most.
pub const MAX_AGENCY_CLIENTS: usize = 500;

/// Whose cards pay for an account: its own, or its agency's.
#[derive(Debug, Clone)]
pub struct Payer {
    /// The account whose profile holds the cards (the agency for a client).
    pub account: AccountId,
    /// That account's profile: its processor customer and cards.
    pub profile: Profile,
}

/// The payer of `account`: the agency's profile for a client account, its own otherwise.
pub async fn load_payer(docs: &dyn DocStore, account: &AccountId) -> Result<Payer, DocumentError> {
    let (profile, _) = load(docs, account).await?;
    match profile.agency_id.clone() {
        Some(agency) => Ok(Payer { profile: load(docs, &agency).await?.0, account: agency }),
        None => Ok(Payer { account: account.clone(), profile }),
    }
}

/// An address the mail service could not deliver to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undeliverable {
    pub address: String,
    /// `bounce` (permanent) or `complaint` (marked as spam).
    pub kind: String,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Undeliverable marks an account keeps at most (the newest are kept).
pub const MAX_UNDELIVERABLE: usize = 20;

impl Profile {
    /// The cards auto-recharge tries, in order: the primary, then the backups (a bank account
    /// waiting for verification is never tried).
    pub fn charge_order(&self) -> Vec<&StoredCard> {
        let mut cards: Vec<&StoredCard> = self.cards.iter().filter(|c| c.verified).collect();
        cards.sort_by_key(|c| (c.role != CardRole::Primary, c.added_at));
        cards
    }

    /// The card a payment made now charges: the primary, or, when it has expired, the first
    /// backup that has not (an expired card is never sent to the processor).
    pub fn payable_card(&self, today: chrono::NaiveDate) -> Option<&StoredCard> {
        self.charge_order().into_iter().find(|card| !card.expired(today))
    }

    /// Whether the mail service reported `address` undeliverable (compared without case).
    pub fn is_undeliverable(&self, address: &str) -> bool {
        self.undeliverable_emails.iter().any(|u| u.address.eq_ignore_ascii_case(address.trim()))
    }

    /// Mark `address` undeliverable (once; the newest [`MAX_UNDELIVERABLE`] are kept).
    pub fn mark_undeliverable(&mut self, mark: Undeliverable) -> bool {
        if self.is_undeliverable(&mark.address) {
            return false;
        }
        self.undeliverable_emails.push(mark);
        let excess = self.undeliverable_emails.len().saturating_sub(MAX_UNDELIVERABLE);
        self.undeliverable_emails.drain(..excess);
        true
    }

    pub fn primary_card(&self) -> Option<&StoredCard> {
        self.cards.iter().find(|c| c.role == CardRole::Primary)
    }

    pub fn backup_card(&self) -> Option<&StoredCard> {
        self.cards.iter().find(|c| c.role == CardRole::Backup)
    }
}

/// The profile's document id (one per account, [`DocKind::Profile`]).
pub const PROFILE_ID: &str = "profile";

/// The profile and its version (0 when none is stored yet).
pub async fn load(
    docs: &dyn DocStore,
    account: &AccountId,
) -> Result<(Profile, u64), DocumentError> {
    match docs.get_doc(account, DocKind::Profile, PROFILE_ID).await? {
        None => Ok((Profile::default(), 0)),
        Some(doc) => {
            let profile = serde_json::from_str(&doc.body)
                .map_err(|source| DocumentError::Unreadable { what: "profile", source })?;
            Ok((profile, doc.version))
        }
    }
}

/// Write a profile as it is, replacing whatever is stored (tests and operators' tools).
pub async fn store(
    docs: &dyn DocStore,
    account: &AccountId,
    profile: &Profile,
) -> Result<(), DocumentError> {
    let replacement = profile.clone();
    update(docs, account, move |p| {
        *p = replacement.clone();
        Ok(())
    })
    .await
    .map(|_| ())
}

/// Read-modify-write the profile with optimistic concurrency (bounded retries). `change` may
/// run more than once. Returns the profile before and after.
pub async fn update<F>(
    docs: &dyn DocStore,
    account: &AccountId,
    change: F,
) -> Result<(Profile, Profile), DocumentError>
where
    F: FnMut(&mut Profile) -> Result<(), DocumentError>,
{
    update_with(docs, account, change).await
}

/// [`update`] with the caller's own error type (a route refusing a change with its 4xx).
pub async fn update_with<F, E>(
    docs: &dyn DocStore,
    account: &AccountId,
    mut change: F,
) -> Result<(Profile, Profile), E>
where
    F: FnMut(&mut Profile) -> Result<(), E>,
    E: From<DocumentError>,
{
    for _ in 0..16 {
        let (before, version) = load(docs, account).await?;
        let mut after = before.clone();
        change(&mut after)?;
        let body = serde_json::to_string(&after)
            .map_err(|source| DocumentError::Unreadable { what: "profile", source })?;
        let expected = if version == 0 { None } else { Some(version) };
        match docs.put_doc(account, DocKind::Profile, PROFILE_ID, &body, expected).await {
            Ok(_) => return Ok((before, after)),
            Err(DocError::Conflict) => continue,
            Err(DocError::TooLarge(_)) => return Err(DocumentError::TooLarge("profile").into()),
            Err(DocError::Store(error)) => return Err(DocumentError::Store(error).into()),
        }
    }
    Err(DocumentError::Busy("profile").into())
}
