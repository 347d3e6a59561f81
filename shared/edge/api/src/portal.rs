//! Portal sessions (issue 14): the platform (an operator) asks for a short-lived, one-time link
//! to the billing page for one user of one account; opening it (`ringledger-web`) sets a
//! session cookie scoped to that account and role.
//!
//! Both the link and the session are HS256 tokens signed with the portal secret
//! (`RINGLEDGER_PORTAL_SECRET`), separate from the API's JWT keys: what they carry (account,
//! user, role, expiry, a random id) cannot be changed without the secret. A link is used once:
//! opening it writes a document named by its id under the account, create-only
//! ([`DocKind::PortalLink`]), so a second opening finds it and is refused. The session carries
//! a random CSRF token that every form must echo.

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ledger::docs::{DocError, DocKind};
use ledger::AccountId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::auth::{Identity, Role};

/// The environment variables of the portal's secret and of the page's public address.
pub const SECRET_VAR: &str = "RINGLEDGER_PORTAL_SECRET";
pub const BASE_URL_VAR: &str = "RINGLEDGER_PORTAL_BASE_URL";

/// How long a portal link may wait to be opened, and how long the session it opens lasts.
pub const LINK_MINUTES: i64 = 10;
pub const SESSION_MINUTES: i64 = 60;

/// The portal's signing secret and the page's public address.
#[derive(Clone)]
pub struct PortalKeys {
    secret: Vec<u8>,
    /// Where the billing page is served, e.g. `http://127.0.0.1:8080` (no trailing slash).
    pub base_url: String,
    /// The processor's hosted card fields, when configured (production): the page then takes
    /// the card in the processor's own fields and sends us only the token they make.
    pub card_form: Option<CardForm>,
}

/// The processor's hosted card fields (Stripe.js Elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardForm {
    /// The script (`https://js.stripe.com/v3/`).
    pub script_url: String,
    /// The publishable key (`pk_live_…`): public by design.
    pub publishable_key: String,
}

/// The publishable key that turns the hosted card fields on, and where their script is.
pub const PUBLISHABLE_KEY_VAR: &str = "RINGLEDGER_STRIPE_PUBLISHABLE_KEY";
pub const CARD_SCRIPT_VAR: &str = "RINGLEDGER_STRIPE_JS_URL";

impl std::fmt::Debug for PortalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalKeys").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// What a portal user may do on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortalRole {
    /// Pays and changes settings.
    Admin,
    /// Sees everything, changes nothing.
    Viewer,
}

impl PortalRole {
    pub fn role(self) -> Role {
        match self {
            PortalRole::Admin => Role::Admin,
            PortalRole::Viewer => Role::Viewer,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Purpose {
    PortalLink,
    PortalSession,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PortalClaims {
    purpose: Purpose,
    /// The user.
    sub: String,
    account_id: String,
    role: PortalRole,
    exp: u64,
    /// The link's id (used once), or the session's CSRF token.
    jti: String,
}

/// An open portal session: who, on which account, until when, and the token its forms echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    pub user: String,
    pub account: AccountId,
    pub role: PortalRole,
    pub expires_at: DateTime<Utc>,
    pub csrf: String,
}

impl PortalSession {
    /// The identity the account API's routes see for this session.
    pub fn identity(&self) -> Identity {
        Identity {
            user: self.user.clone(),
            account: Some(self.account.clone()),
            role: self.role.role(),
            agency: None,
        }
    }
}

/// Why a link or a session is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalRefusal {
    /// Not signed by us, damaged, or of the wrong kind.
    Invalid,
    Expired,
    /// A link opened before.
    Used,
}

fn random_id() -> String {
    let bytes: [u8; 18] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PortalKeys {
    pub fn new(secret: impl Into<Vec<u8>>, base_url: impl Into<String>) -> Self {
        PortalKeys {
            secret: secret.into(),
            base_url: base_url.into().trim_end_matches('/').into(),
            card_form: None,
        }
    }

    /// With the processor's hosted card fields.
    pub fn with_card_form(mut self, card_form: CardForm) -> Self {
        self.card_form = Some(card_form);
        self
    }

    /// From `RINGLEDGER_PORTAL_SECRET` (at least 32 bytes) and `RINGLEDGER_PORTAL_BASE_URL`;
    /// `None` when the secret is not set (the portal is off).
    pub fn from_env() -> Result<Option<Self>, String> {
        let Ok(secret) = std::env::var(SECRET_VAR) else { return Ok(None) };
        if secret.len() < 32 {
            return Err("RINGLEDGER_PORTAL_SECRET must be at least 32 bytes".into());
        }
        let base = std::env::var(BASE_URL_VAR).unwrap_or_default();
        let mut keys = PortalKeys::new(secret.into_bytes(), base);
        if let Some(publishable_key) =
            std::env::var(PUBLISHABLE_KEY_VAR).ok().filter(|key| !key.trim().is_empty())
        {
            let script_url = std::env::var(CARD_SCRIPT_VAR)
                .unwrap_or_else(|_| "https://js.stripe.com/v3/".into());
            keys = keys.with_card_form(CardForm { script_url, publishable_key });
        }
        Ok(Some(keys))
    }

    fn sign(&self, claims: &PortalClaims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&self.secret))
            .expect("HS256 signing cannot fail")
    }

    fn read(
        &self,
        token: &str,
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<PortalClaims, PortalRefusal> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the caller's clock.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims =
            decode::<PortalClaims>(token, &DecodingKey::from_secret(&self.secret), &validation)
                .map_err(|_| PortalRefusal::Invalid)?
                .claims;
        if claims.purpose != purpose {
            return Err(PortalRefusal::Invalid);
        }
        if claims.exp <= now.timestamp().max(0) as u64 {
            return Err(PortalRefusal::Expired);
        }
        Ok(claims)
    }

    /// A one-time link for `user` of `account`: its path (`/billing/session/<token>`) and expiry.
    pub fn link(
        &self,
        account: &AccountId,
        user: &str,
        role: PortalRole,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let expires_at = now + chrono::Duration::minutes(LINK_MINUTES);
        let token = self.sign(&PortalClaims {
            purpose: Purpose::PortalLink,
            sub: user.into(),
            account_id: account.to_string(),
            role,
            exp: expires_at.timestamp().max(0) as u64,
            jti: random_id(),
        });
        (format!("/billing/session/{token}"), expires_at)
    }

    /// Open a link: checked, then used up (a second opening is refused), and a session token
    /// for the cookie.
    pub async fn open_link(
        &self,
        docs: &dyn ledger::docs::DocStore,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<(String, PortalSession), PortalRefusal>, ledger::StoreError> {
        let claims = match self.read(token, Purpose::PortalLink, now) {
            Ok(claims) => claims,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let Ok(account) = AccountId::parse(&claims.account_id) else {
            return Ok(Err(PortalRefusal::Invalid));
        };
        let used = serde_json::json!({ "user": claims.sub, "opened_at": now }).to_string();
        match docs.put_doc(&account, DocKind::PortalLink, &claims.jti, &used, None).await {
            Ok(_) => {}
            Err(DocError::Conflict) => return Ok(Err(PortalRefusal::Used)),
            Err(DocError::Store(error)) => return Err(error),
            Err(DocError::TooLarge(_)) => return Ok(Err(PortalRefusal::Invalid)),
        }
        let expires_at = now + chrono::Duration::minutes(SESSION_MINUTES);
        let session = PortalSession {
            user: claims.sub.clone(),
            account,
            role: claims.role,
            expires_at,
            csrf: random_id(),
        };
        let token = self.sign(&PortalClaims {
            purpose: Purpose::PortalSession,
            sub: session.user.clone(),
            account_id: session.account.to_string(),
            role: session.role,
            exp: expires_at.timestamp().max(0) as u64,
            jti: session.csrf.clone(),
        });
        Ok(Ok((token, session)))
    }

    /// The session a cookie carries.
    pub fn session(&self, token: &str, now: DateTime<Utc>) -> Result<PortalSession, PortalRefusal> {
        let claims = self.read(token, Purpose::PortalSession, now)?;
        Ok(PortalSession {
            user: claims.sub,
            account: AccountId::parse(&claims.account_id).map_err(|_| PortalRefusal::Invalid)?,
            role: claims.role,
            expires_at: DateTime::from_timestamp(claims.exp as i64, 0).unwrap_or(now),
            csrf: claims.jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_link_opens_once_before_it_expires_and_a_session_cannot_be_forged() {
        let docs = ledger::memory::MemoryStore::new();
        let keys = PortalKeys::new(b"0123456789abcdef0123456789abcdef".to_vec(), "http://x");
        let acme = AccountId::parse("acme").unwrap();
        let now = at("2026-12-03T10:00:00Z");
        let (path, expires) = keys.link(&acme, "ann@acme.example", PortalRole::Viewer, now);
        assert_eq!(expires, now + chrono::Duration::minutes(LINK_MINUTES));
        let token = path.strip_prefix("/billing/session/").unwrap();
        let late = keys.open_link(&docs, token, expires).await.unwrap();
        assert_eq!(late.unwrap_err(), PortalRefusal::Expired);
        let (cookie, session) = keys.open_link(&docs, token, now).await.unwrap().unwrap();
        assert_eq!(session.account, acme);
        assert_eq!(session.role, PortalRole::Viewer);
        assert_eq!(
            keys.open_link(&docs, token, now).await.unwrap().unwrap_err(),
            PortalRefusal::Used
        );
        assert_eq!(keys.session(&cookie, now).unwrap(), session);
        assert_eq!(keys.session(&cookie, session.expires_at).unwrap_err(), PortalRefusal::Expired);
        // A link is not a session, another secret's tokens are not ours, and a changed
        // payload breaks the signature.
        assert_eq!(keys.session(token, now).unwrap_err(), PortalRefusal::Invalid);
        let other = PortalKeys::new(b"another-secret-another-secret-xx".to_vec(), "http://x");
        assert_eq!(other.session(&cookie, now).unwrap_err(), PortalRefusal::Invalid);
        let mut parts: Vec<&str> = cookie.split('.').collect();
        let forged = parts[1].replace('A', "B");
        parts[1] = &forged;
        assert_eq!(keys.session(&parts.join("."), now).unwrap_err(), PortalRefusal::Invalid);
    }
}
