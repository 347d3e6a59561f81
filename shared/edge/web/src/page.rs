//! The page's HTML and its actions. Everything it shows comes from the account API's answers,
//! and everything it changes goes through the account API's routes.

use std::collections::HashMap;
use std::fmt::Write;

use api::portal::{PortalRole, PortalSession};
use axum::http::{Method, StatusCode};
use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::{Answer, Web};

/// The terms of service version the page accepts.
pub const TERMS_VERSION: &str = "2026-01";

/// What an action did, shown at the top of its section.
#[derive(Debug, Clone)]
pub struct Flash {
    pub section: String,
    pub ok: bool,
    pub message: String,
    /// The field the API named, marked invalid and described by the message.
    pub field: Option<String>,
    pub status: StatusCode,
    /// What was submitted, to fill the form again after a refusal.
    pub form: HashMap<String, String>,
}

pub use notifications::templates::escape_html as escape;

fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn usd_text(value: &Value) -> String {
    let Some(text) = value.as_str() else { return String::new() };
    match text.parse::<Decimal>() {
        Ok(amount) => ledger::display_usd(amount),
        Err(_) => text.to_string(),
    }
}

fn random_key() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    format!("web-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1a1a1a;background:#f4f5f7}
header{background:#1f2937;color:#fff;padding:12px 16px}
header h1{margin:0;font-size:1.25rem}
header p{margin:2px 0 0;font-size:.875rem;color:#d1d5db}
nav{padding:8px 16px;background:#fff;border-bottom:1px solid #d1d5db;font-size:.875rem}
nav a{margin-right:12px;color:#1d4ed8;display:inline-block;padding:4px 0}
main{max-width:960px;margin:0 auto;padding:12px}
section{background:#fff;border:1px solid #d1d5db;border-radius:8px;padding:16px;margin:12px 0}
h2{margin:0 0 8px;font-size:1.125rem}
label{display:block;font-weight:600;margin:10px 0 4px}
input,select,textarea{font:inherit;padding:8px;border:1px solid #6b7280;border-radius:6px;width:100%;max-width:420px}
input[type=checkbox]{width:auto}
button{font:inherit;padding:8px 14px;border-radius:6px;border:1px solid #1d4ed8;background:#1d4ed8;color:#fff;cursor:pointer;margin-top:10px}
button.secondary{background:#fff;color:#1d4ed8}
button.danger{background:#fff;color:#b91c1c;border-color:#b91c1c}
.hint{font-size:.875rem;color:#4b5563;margin:2px 0 0}
.error{color:#b91c1c;font-weight:600}
[aria-invalid=true]{border-color:#b91c1c;border-width:2px}
.flash{padding:10px;border-radius:6px;margin-bottom:10px}
.flash.ok{background:#ecfdf5;border:1px solid #047857}
.flash.bad{background:#fef2f2;border:1px solid #b91c1c}
.big{font-size:1.75rem;font-weight:700}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}
td.num,th.num{text-align:right;white-space:nowrap}
.inline{display:inline}
.row{display:flex;flex-wrap:wrap;gap:12px}
.row>div{flex:1 1 200px}
@media print{nav,form,header p{display:none}section{border:0}}
";

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    )
}

/// A page with one message (a refused link, an ended session).
pub fn message_page(title: &str, message: &str) -> String {
    format!(
        "{}<header><h1>Billing</h1></header><main><section><h2>{}</h2><p>{}</p></section></main></body></html>",
        head(title),
        escape(title),
        escape(message)
    )
}

/// The query string of an activity view (`from`, `to`, `show`, and the cursor when paging).
pub fn activity_query(query: &HashMap<String, String>, with_cursor: bool) -> String {
    let mut parts = Vec::new();
    for name in ["from", "to", "show"] {
        if let Some(value) = query.get(name).filter(|v| !v.is_empty()) {
            let value = match name {
                // A date picker gives a day: the range is whole UTC days, `to` included.
                "from" if value.len() == 10 => format!("{value}T00:00:00Z"),
                "to" if value.len() == 10 => match value.parse::<chrono::NaiveDate>() {
                    Ok(day) => format!("{}T00:00:00Z", day + Duration::days(1)),
                    Err(_) => value.clone(),
                },
                _ => value.clone(),
            };
            parts.push(format!("{name}={}", query_escape(&value)));
        }
    }
    if with_cursor {
        if let Some(cursor) = query.get("cursor").filter(|v| !v.is_empty()) {
            parts.push(format!("cursor={}", query_escape(cursor)));
        }
        parts.push("limit=25".into());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

struct Form<'a> {
    session: &'a PortalSession,
    flash: Option<&'a Flash>,
}

impl Form<'_> {
    fn admin(&self) -> bool {
        self.session.role == PortalRole::Admin
    }

    fn open(&self, action: &str, label: &str) -> String {
        format!(
            "<form method=\"post\" action=\"/billing/actions/{action}\" aria-label=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(label),
            escape(&self.session.csrf)
        )
    }

    /// A labelled input; the API's message under it when it named this field.
    #[allow(clippy::too_many_arguments)]
    fn input(
        &self,
        section: &str,
        name: &str,
        api_field: &str,
        label: &str,
        kind: &str,
        value: &str,
        hint: &str,
    ) -> String {
        let flash = self.flash.filter(|f| f.section == section && !f.ok);
        let value = flash.and_then(|f| f.form.get(name)).map(String::as_str).unwrap_or(value);
        let id = format!("{section}-{name}");
        let invalid = flash.is_some_and(|f| f.field.as_deref() == Some(api_field));
        let mut described = Vec::new();
        let mut after = String::new();
        if !hint.is_empty() {
            described.push(format!("{id}-hint"));
            let _ = write!(after, "<p class=\"hint\" id=\"{id}-hint\">{}</p>", escape(hint));
        }
        if invalid {
            described.push(format!("{id}-error"));
            let message = flash.map(|f| f.message.as_str()).unwrap_or_default();
            let _ = write!(after, "<p class=\"error\" id=\"{id}-error\">{}</p>", escape(message));
        }
        let described = if described.is_empty() {
            String::new()
        } else {
            format!(" aria-describedby=\"{}\"", described.join(" "))
        };
        format!(
            "<label for=\"{id}\">{}</label><input id=\"{id}\" name=\"{name}\" type=\"{kind}\" value=\"{}\"{}{described}>{after}",
            escape(label),
            escape(value),
            if invalid { " aria-invalid=\"true\"" } else { "" }
        )
    }
}

fn flash_html(flash: Option<&Flash>, section: &str) -> String {
    match flash.filter(|f| f.section == section) {
        Some(f) => format!(
            "<div class=\"flash {}\" role=\"{}\">{}</div>",
            if f.ok { "ok" } else { "bad" },
            if f.ok { "status" } else { "alert" },
            escape(&f.message)
        ),
        None => String::new(),
    }
}

fn status_words(overview: &Value) -> String {
    match overview["status"].as_str() {
        Some("active") => "Active: calls, texts and number purchases work.".into(),
        Some("suspended") => "Suspended: outgoing calls, texts and number purchases are paused \
                              until a payment brings the balance above its floor."
            .into(),
        Some(other) => other.to_string(),
        None => "Unknown".into(),
    }
}

/// The whole page.
pub(crate) async fn render(
    web: &Web,
    session: &PortalSession,
    query: &HashMap<String, String>,
    flash: Option<Flash>,
) -> String {
    let flash = flash.as_ref();
    let form = Form { session, flash };
    let overview = web.get(session, "/v1/overview").await;
    let mut out = head(&format!("Billing · {}", session.account));
    let _ = write!(
        out,
        "<header><h1>Billing · {}</h1><p>{} · {} · session ends {} UTC</p></header>",
        escape(session.account.as_str()),
        escape(&session.user),
        if form.admin() { "can pay and change settings" } else { "view only" },
        session.expires_at.format("%H:%M")
    );
    if !overview.ok() {
        let (message, _) = overview.message();
        let _ = write!(out, "<main><section><h2>Billing is unavailable</h2><p>{}</p></section></main></body></html>", escape(&message));
        return out;
    }
    let o = &overview.json;
    // The terms first: nothing else until they are accepted.
    if o["terms"].is_null() {
        let _ = write!(
            out,
            "<main><section id=\"terms\" aria-labelledby=\"terms-h\"><h2 id=\"terms-h\">Terms of service</h2>{}\
             <p>Before using billing, the account's administrator accepts the terms of service \
             (version {TERMS_VERSION}): usage is charged to the prepaid balance, payments are \
             final once credited, and service stops when the balance reaches zero.</p>",
            flash_html(flash, "terms")
        );
        if form.admin() {
            let _ = write!(
                out,
                "{}<input type=\"hidden\" name=\"version\" value=\"{TERMS_VERSION}\"><button type=\"submit\">Accept the terms</button></form>",
                form.open("terms", "Accept the terms of service")
            );
        } else {
            out.push_str("<p>Ask the account's administrator to accept them.</p>");
        }
        out.push_str("</section></main></body></html>");
        return out;
    }
    let settings = web.get(session, "/v1/settings").await.json;
    let cards = web.get(session, "/v1/cards").await.json;
    let payments = web.get(session, "/v1/payments?limit=20").await.json;
    let activity = web.get(session, &format!("/v1/activity{}", activity_query(query, true))).await;
    out.push_str(
        "<nav aria-label=\"Sections\"><a href=\"#overview\">Balance</a><a href=\"#methods\">Payment methods</a>\
         <a href=\"#pay\">Pay now</a><a href=\"#auto\">Auto-recharge</a><a href=\"#contacts\">Contacts</a>\
         <a href=\"#history\">Payments</a><a href=\"#activity\">Activity</a><a href=\"#statements\">Statements</a>\
         <a href=\"#address\">Address and tax</a></nav><main>",
    );

    // Balance, status, rates.
    let _ = write!(
        out,
        "<section id=\"overview\" aria-labelledby=\"overview-h\"><h2 id=\"overview-h\">Balance</h2>\
         <p class=\"big\" id=\"balance\">{}</p><p>Available: <strong id=\"available\">{}</strong> \
         (the balance less what calls in progress hold)</p><p id=\"status\">{}</p>\
         <p>Rate card: {}.</p></section>",
        escape(o["balance_display"].as_str().unwrap_or_default()),
        escape(&usd_text(&o["available_usd"])),
        escape(&status_words(o)),
        escape(o["rate_card"].as_str().unwrap_or("standard"))
    );

    recommendation(web, session, &mut out).await;

    // Payment methods.
    let _ = write!(
        out,
        "<section id=\"methods\" aria-labelledby=\"methods-h\"><h2 id=\"methods-h\">Payment methods</h2>{}",
        flash_html(flash, "methods")
    );
    let list = cards["cards"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out.push_str("<p>No payment method yet.</p>");
    } else {
        out.push_str("<div class=\"table-wrap\"><table><caption class=\"hint\">Cards and bank accounts, charged in this order</caption><thead><tr><th scope=\"col\">Method</th><th scope=\"col\">Expires</th><th scope=\"col\">Role</th><th scope=\"col\">Manager</th>");
        if form.admin() {
            out.push_str("<th scope=\"col\">Change</th>");
        }
        out.push_str("</tr></thead><tbody>");
        for card in &list {
            let id = card["id"].as_str().unwrap_or_default();
            let role = card["role"].as_str().unwrap_or_default();
            let label = format!(
                "{} ending in {}",
                card["brand"].as_str().unwrap_or("card"),
                card["last4"].as_str().unwrap_or("")
            );
            let _ = write!(
                out,
                "<tr data-card=\"{}\"><td>{}{}</td><td>{:02}/{}</td><td>{}</td><td>{}</td>",
                escape(id),
                escape(&label),
                if card["expired"] == true { " <strong>(expired)</strong>" } else { "" },
                card["exp_month"].as_u64().unwrap_or(0),
                card["exp_year"].as_u64().unwrap_or(0),
                escape(role),
                escape(card["card_manager_email"].as_str().unwrap_or_default())
            );
            if form.admin() {
                out.push_str("<td>");
                let other = if role == "primary" { "backup" } else { "primary" };
                let _ = write!(
                    out,
                    "{}<input type=\"hidden\" name=\"card_id\" value=\"{}\"><input type=\"hidden\" name=\"role\" value=\"{other}\"><button class=\"secondary\" type=\"submit\">Make {other}</button></form> ",
                    form.open("card-role", &format!("Make {label} the {other}")),
                    escape(id)
                );
                let _ = write!(
                    out,
                    "{}<input type=\"hidden\" name=\"card_id\" value=\"{}\"><button class=\"danger\" type=\"submit\">Delete</button></form></td>",
                    form.open("card-delete", &format!("Delete {label}")),
                    escape(id)
                );
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table></div>");
    }
    let card_form = web.state.portal.as_ref().and_then(|p| p.card_form.clone());
    if let (true, Some(hosted)) = (form.admin(), card_form) {
        // The processor's own card field; our form carries only the token it makes.
        let _ = write!(
            out,
            "<h3>Add a card</h3><form method=\"post\" action=\"/billing/actions/card-add\" aria-label=\"Add a card\" data-card-form data-key=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"token\" value=\"\">\
             <p class=\"hint\" id=\"card-hint\">Your card is entered in our card processor's secure field: its number never reaches us.</p>\
             <div id=\"card-element\" aria-describedby=\"card-hint\"></div><p class=\"error\" id=\"card-error\" role=\"alert\"></p>\
             {}<label for=\"methods-role\">Role</label><select id=\"methods-role\" name=\"role\"><option value=\"primary\">Primary</option><option value=\"backup\">Backup</option></select><br>\
             <button type=\"submit\">Add the card</button></form>\
             <script src=\"{}\"></script><script src=\"/billing/static/card.js\"></script>",
            escape(&hosted.publishable_key),
            escape(&session.csrf),
            form.input("methods", "manager", "card_manager_email", "Card manager's email", "email", "", "Told when the card is about to expire."),
            escape(&hosted.script_url)
        );
    } else if form.admin() {
        let _ = write!(
            out,
            "<h3>Add a card</h3>{}{}{}<label for=\"methods-role\">Role</label><select id=\"methods-role\" name=\"role\"><option value=\"primary\">Primary</option><option value=\"backup\">Backup</option></select><br><button type=\"submit\">Add the card</button></form>",
            form.open("card-add", "Add a card"),
            form.input("methods", "token", "payment_method_token", "Card", "text", "", "The card form's token: the processor's hosted fields create it, so no card number reaches us. Locally, a test token such as pm_card_visa."),
            form.input("methods", "manager", "card_manager_email", "Card manager's email", "email", "", "Told when the card is about to expire.")
        );
    }
    out.push_str("</section>");

    // Pay now.
    let _ = write!(
        out,
        "<section id=\"pay\" aria-labelledby=\"pay-h\"><h2 id=\"pay-h\">Pay now</h2>{}",
        flash_html(flash, "pay")
    );
    if form.admin() {
        let _ = write!(
            out,
            "{}<input type=\"hidden\" name=\"key\" value=\"{}\">{}<button type=\"submit\">Pay now</button></form>",
            form.open("pay", "Pay now"),
            random_key(),
            form.input("pay", "amount", "amount_usd", "Amount (USD)", "text", "", "Charged to the primary card, then the backups. Pressing twice charges once.")
        );
    } else {
        out.push_str("<p>Only the account's administrators can pay.</p>");
    }
    out.push_str("</section>");

    // Auto-recharge.
    let auto = &settings["auto_recharge"];
    let _ = write!(
        out,
        "<section id=\"auto\" aria-labelledby=\"auto-h\"><h2 id=\"auto-h\">Auto-recharge</h2>{}<p id=\"auto-now\">{}</p>",
        flash_html(flash, "auto"),
        escape(&auto_words(auto))
    );
    if form.admin() {
        // After a refusal, the form as it was sent.
        let sent = flash.filter(|f| f.section == "auto" && !f.ok).map(|f| &f.form);
        let enabled = match sent {
            Some(form) => form.get("enabled").is_some_and(|v| v == "true"),
            None => auto["enabled"] == true,
        };
        let mode = match sent {
            Some(form) => form.get("mode").map(String::as_str).unwrap_or("add"),
            None => auto["mode"].as_str().unwrap_or("add"),
        };
        let _ = write!(
            out,
            "{}<label><input type=\"checkbox\" name=\"enabled\" value=\"true\"{}> Recharge automatically</label>\
             <label for=\"auto-mode\">When the balance falls below the threshold</label><select id=\"auto-mode\" name=\"mode\">\
             <option value=\"add\"{}>Add the amount</option><option value=\"top_up_to\"{}>Top up to the amount</option></select>\
             {}{}{}<button type=\"submit\">Update</button></form>",
            form.open("auto-recharge", "Auto-recharge settings"),
            if enabled { " checked" } else { "" },
            if mode == "add" { " selected" } else { "" },
            if mode == "top_up_to" { " selected" } else { "" },
            form.input("auto", "amount", "amount_usd", "Amount (USD)", "text", auto["amount_usd"].as_str().unwrap_or("50"), "At least $50: smaller charges cost more in card fees than they are worth."),
            form.input("auto", "threshold", "threshold_usd", "Threshold (USD)", "text", auto["threshold_usd"].as_str().unwrap_or("10"), "At least $10, so that calls in progress do not run the balance out before the charge lands."),
            form.input("auto", "monthly_cap", "monthly_cap_usd", "Monthly cap (USD, optional)", "text", auto["monthly_cap_usd"].as_str().unwrap_or(""), "No more than this is recharged in a calendar month.")
        );
    }
    out.push_str("</section>");

    // Contacts.
    let emails: Vec<String> = settings["billing_emails"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let _ = write!(
        out,
        "<section id=\"contacts\" aria-labelledby=\"contacts-h\"><h2 id=\"contacts-h\">Billing contacts</h2>{}",
        flash_html(flash, "contacts")
    );
    if form.admin() {
        let _ = write!(
            out,
            "{}{}{}{}<button type=\"submit\">Save the contacts</button></form>",
            form.open("contacts", "Billing contacts"),
            form.input(
                "contacts",
                "billing_emails",
                "billing_emails",
                "Billing emails (comma-separated)",
                "text",
                &emails.join(", "),
                "Statements, invoices, receipts and notices go here."
            ),
            form.input(
                "contacts",
                "recharge_failure_email",
                "recharge_failure_email",
                "Recharge failure email",
                "email",
                settings["recharge_failure_email"].as_str().unwrap_or(""),
                "Told first when an automatic charge fails."
            ),
            form.input(
                "contacts",
                "critical_phone",
                "critical_phone",
                "Critical billing phone",
                "tel",
                settings["critical_phone"].as_str().unwrap_or(""),
                "Texted when service is about to stop (E.164, e.g. +14155550123)."
            )
        );
    } else {
        let _ = write!(out, "<p>Billing emails: {}</p>", escape(&emails.join(", ")));
    }
    out.push_str("</section>");

    // Payment history.
    let _ = write!(
        out,
        "<section id=\"history\" aria-labelledby=\"history-h\"><h2 id=\"history-h\">Payment history</h2>"
    );
    let list = payments["payments"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        out.push_str("<p>No payment yet.</p>");
    } else {
        out.push_str("<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Date (UTC)</th><th scope=\"col\" class=\"num\">Amount</th><th scope=\"col\">Method</th><th scope=\"col\">Status</th><th scope=\"col\">Receipt</th></tr></thead><tbody>");
        for p in &list {
            let status = p["status"].as_str().unwrap_or_default();
            let why = p["failure_reason"].as_str().or(p["pending_reason"].as_str()).unwrap_or("");
            let _ = write!(
                out,
                "<tr class=\"payment\"><td>{}</td><td class=\"num\">{}</td><td>{} {}</td><td>{}{}</td><td>{}</td></tr>",
                escape(&p["created_at"].as_str().unwrap_or_default().replace('T', " ").chars().take(16).collect::<String>()),
                escape(&usd_text(&p["amount_usd"])),
                escape(p["card_brand"].as_str().unwrap_or_default()),
                escape(p["card_last4"].as_str().unwrap_or_default()),
                escape(status),
                if why.is_empty() { String::new() } else { format!(": {}", escape(why)) },
                if status == "succeeded" {
                    format!("<a href=\"/billing/receipts/{}\">Receipt</a>", escape(p["payment_id"].as_str().unwrap_or_default()))
                } else {
                    String::new()
                }
            );
        }
        out.push_str("</tbody></table></div>");
    }
    out.push_str("</section>");

    activity_section(&mut out, query, &activity);
    statements_section(&mut out, &form, &settings, flash);

    // Address and tax.
    let address = &settings["service_address"];
    let address_text = if address.is_null() {
        "No service address on file.".to_string()
    } else {
        ["line1", "line2", "city", "region", "postal_code", "country"]
            .iter()
            .filter_map(|k| address[*k].as_str())
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "<section id=\"address\" aria-labelledby=\"address-h\"><h2 id=\"address-h\">Service address and tax</h2>{}\
         <p id=\"address-now\">{}</p><p>Tax exemption: {}.</p><p class=\"hint\">Usage times are UTC. Sales tax is charged on \
         the 1st for the month before, from the service address.</p>",
        flash_html(flash, "address"),
        escape(&address_text),
        if settings["tax_exempt"] == true { "exempt" } else { "not exempt" }
    );
    if form.admin() {
        let value = |key: &str| address[key].as_str().unwrap_or("").to_string();
        let _ = write!(
            out,
            "{}<div class=\"row\"><div>{}</div><div>{}</div></div><div class=\"row\"><div>{}</div><div>{}</div></div>\
             <div class=\"row\"><div>{}</div><div>{}</div></div><button type=\"submit\">Save the address</button></form>",
            form.open("address", "Service address"),
            form.input("address", "line1", "line1", "Street address", "text", &value("line1"), ""),
            form.input("address", "line2", "line2", "Apartment, suite (optional)", "text", &value("line2"), ""),
            form.input("address", "city", "city", "City", "text", &value("city"), ""),
            form.input("address", "region", "region", "State or province", "text", &value("region"), "A code, such as NY."),
            form.input("address", "postal_code", "postal_code", "Postal code", "text", &value("postal_code"), ""),
            form.input("address", "country", "country", "Country", "text", &value("country"), "Two letters, such as US.")
        );
    }
    out.push_str("</section></main></body></html>");
    out
}

fn auto_words(auto: &Value) -> String {
    if auto.is_null() || auto["enabled"] != true {
        return "Auto-recharge is off.".into();
    }
    let amount = usd_text(&auto["amount_usd"]);
    let threshold = usd_text(&auto["threshold_usd"]);
    let how = if auto["mode"] == "top_up_to" {
        format!("the balance is topped up to {amount}")
    } else {
        format!("{amount} is added")
    };
    let mut words = format!("On: when the balance falls below {threshold}, {how}.");
    if let Some(cap) = auto["monthly_cap_usd"].as_str() {
        let _ = write!(words, " At most {} a month.", usd_text(&Value::from(cap)));
    }
    words
}

/// "You spend about $X a month": the last 30 days' usage debits, and the settings that would
/// charge about once a month.
async fn recommendation(web: &Web, session: &PortalSession, out: &mut String) {
    let since = Utc::now() - Duration::days(30);
    let from = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut spent = Decimal::ZERO;
    let mut cursor: Option<String> = None;
    // At most two pages (1,000 entries, oldest first): a busy account's month is estimated from
    // the days they cover rather than read whole on every page view.
    let mut covered_to: Option<chrono::DateTime<Utc>> = None;
    for _ in 0..2 {
        let mut uri = format!("/v1/activity?show=debits&limit=500&from={}", query_escape(&from));
        if let Some(c) = &cursor {
            let _ = write!(uri, "&cursor={}", query_escape(c));
        }
        let page = web.get(session, &uri).await;
        for entry in page.json["entries"].as_array().into_iter().flatten() {
            if entry["item"] != "card_refund" && entry["item"] != "dispute" {
                spent += entry["amount_usd"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(Decimal::ZERO);
            }
            covered_to = entry["posted_at"]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok())
                .or(covered_to);
        }
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                cursor = None;
                break;
            }
        }
    }
    // More than two pages: scaled from the days they covered to the 30.
    if let (Some(_), Some(to)) = (&cursor, covered_to) {
        let covered = (to - since).num_seconds().max(3_600);
        spent = spent * Decimal::from(30 * 86_400) / Decimal::from(covered);
    }
    out.push_str("<section id=\"advice\" aria-labelledby=\"advice-h\"><h2 id=\"advice-h\">Recommended auto-recharge</h2>");
    if spent <= Decimal::ZERO {
        out.push_str("<p>No usage in the last 30 days yet: we will suggest settings once there is some.</p></section>");
        return;
    }
    // A month's usage, rounded up to $10, at least the $50 minimum; the threshold about a
    // week of usage, at least $10.
    let ten = Decimal::from(10);
    let amount = ((spent / ten).ceil() * ten).max(Decimal::from(50));
    let threshold = ((spent / Decimal::from(4) / ten).ceil() * ten).max(ten);
    let _ = write!(
        out,
        "<p id=\"advice-text\">You spent about {} in the last 30 days. To be charged about once a month, \
         set auto-recharge to add {} when the balance falls below {}.</p></section>",
        ledger::display_usd(spent),
        ledger::display_usd(amount),
        ledger::display_usd(threshold)
    );
}

fn activity_section(out: &mut String, query: &HashMap<String, String>, activity: &Answer) {
    let value = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    let show = value("show");
    let search = value("q").to_lowercase();
    let _ = write!(
        out,
        "<section id=\"activity\" aria-labelledby=\"activity-h\"><h2 id=\"activity-h\">Activity</h2>\
         <form method=\"get\" action=\"/billing#activity\" aria-label=\"Filter the activity\"><div class=\"row\">\
         <div><label for=\"act-from\">From (UTC)</label><input id=\"act-from\" type=\"date\" name=\"from\" value=\"{}\"></div>\
         <div><label for=\"act-to\">To (UTC, included)</label><input id=\"act-to\" type=\"date\" name=\"to\" value=\"{}\"></div>\
         <div><label for=\"act-show\">Show</label><select id=\"act-show\" name=\"show\"><option value=\"\">All</option>\
         <option value=\"debits\"{}>Debits</option><option value=\"credits\"{}>Credits</option></select></div>\
         <div><label for=\"act-q\">Search</label><input id=\"act-q\" type=\"search\" name=\"q\" value=\"{}\"></div></div>\
         <button type=\"submit\">Show</button></form>\
         <p><a id=\"csv\" href=\"/billing/activity.csv{}\">Export these as CSV</a></p>",
        escape(value("from")),
        escape(value("to")),
        if show == "debits" { " selected" } else { "" },
        if show == "credits" { " selected" } else { "" },
        escape(value("q")),
        escape(&activity_query(query, false))
    );
    if !activity.ok() {
        let (message, _) = activity.message();
        let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p></section>", escape(&message));
        return;
    }
    let entries: Vec<&Value> = activity.json["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| search.is_empty() || e.to_string().to_lowercase().contains(&search))
        .collect();
    if entries.is_empty() {
        out.push_str("<p>Nothing in this range.</p>");
    } else {
        out.push_str("<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Posted (UTC)</th><th scope=\"col\">What</th><th scope=\"col\" class=\"num\">Amount</th><th scope=\"col\" class=\"num\">Balance</th></tr></thead><tbody>");
        for e in entries {
            let amount: Decimal =
                e["amount_usd"].as_str().and_then(|a| a.parse().ok()).unwrap_or_default();
            let sign = if e["kind"] == "debit" { "-" } else { "+" };
            let _ = write!(
                out,
                "<tr class=\"entry\"><td>{}</td><td>{}</td><td class=\"num\">{sign}{}</td><td class=\"num\">{}</td></tr>",
                escape(&e["posted_at"].as_str().unwrap_or_default().replace('T', " ").chars().take(16).collect::<String>()),
                escape(&e["item"].as_str().unwrap_or_default().replace('_', " ")),
                escape(&notifications::invoice::shown_usd(amount)),
                escape(&usd_text(&e["balance_after_usd"]))
            );
        }
        out.push_str("</tbody></table></div>");
    }
    if let Some(next) = activity.json["next_cursor"].as_str() {
        // The page's own query keeps the days as the user typed them.
        let link = link_with_days(query, next);
        let _ = write!(
            out,
            "<p><a id=\"next\" href=\"/billing{}#activity\">Older entries</a></p>",
            escape(&link)
        );
    }
    out.push_str("</section>");
}

/// The page's link to the next activity page: the filters as typed, and the cursor.
fn link_with_days(query: &HashMap<String, String>, cursor: &str) -> String {
    let mut parts = Vec::new();
    for name in ["from", "to", "show", "q"] {
        if let Some(value) = query.get(name).filter(|v| !v.is_empty()) {
            parts.push(format!("{name}={}", query_escape(value)));
        }
    }
    parts.push(format!("cursor={}", query_escape(cursor)));
    format!("?{}", parts.join("&"))
}

fn statements_section(out: &mut String, form: &Form<'_>, settings: &Value, flash: Option<&Flash>) {
    let schedule = settings["statement_schedule"].as_str().unwrap_or("none");
    let _ = write!(
        out,
        "<section id=\"statements\" aria-labelledby=\"statements-h\"><h2 id=\"statements-h\">Statements</h2>{}\
         <p>Recurring statements: <strong>{}</strong>.</p>",
        flash_html(flash, "statements"),
        escape(schedule)
    );
    if form.admin() {
        let today = Utc::now().date_naive();
        let first = today - Duration::days(30);
        let _ = write!(
            out,
            "{}<input type=\"hidden\" name=\"key\" value=\"{}\"><div class=\"row\"><div>{}</div><div>{}</div></div>{}<button type=\"submit\">Send now</button></form>",
            form.open("statement", "Send a statement now"),
            random_key(),
            form.input("statements", "from", "from", "From (UTC)", "date", &first.to_string(), ""),
            form.input("statements", "to", "to", "To (UTC, included)", "date", &today.to_string(), ""),
            form.input("statements", "recipients", "recipients", "Recipients (comma-separated, optional)", "text", "", "Left empty: the billing contacts.")
        );
        let _ = write!(
            out,
            "{}<label for=\"statements-schedule\">Send a statement every</label><select id=\"statements-schedule\" name=\"schedule\">\
             <option value=\"none\"{}>Never</option><option value=\"weekly\"{}>Week</option><option value=\"monthly\"{}>Month</option></select><br>\
             <button type=\"submit\" class=\"secondary\">Save the schedule</button></form>",
            form.open("schedule", "Statement schedule"),
            if schedule == "none" { " selected" } else { "" },
            if schedule == "weekly" { " selected" } else { "" },
            if schedule == "monthly" { " selected" } else { "" }
        );
    }
    out.push_str("</section>");
}

fn list_of(text: &str) -> Vec<String> {
    text.split([',', '\n', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn optional(text: Option<&String>) -> Value {
    match text.map(|t| t.trim()).filter(|t| !t.is_empty()) {
        Some(t) => Value::from(t),
        None => Value::Null,
    }
}

/// Carry out `action` through the API; what to say about it.
pub(crate) async fn perform(
    web: &Web,
    session: &PortalSession,
    action: &str,
    form: &HashMap<String, String>,
) -> Flash {
    let field = |name: &str| form.get(name).map(|v| v.trim().to_string()).unwrap_or_default();
    let (section, method, uri, body, key): (&str, Method, String, Option<Value>, Option<String>) =
        match action {
            "terms" => (
                "terms",
                Method::POST,
                "/v1/terms".into(),
                Some(json!({ "version": TERMS_VERSION })),
                None,
            ),
            "pay" => (
                "pay",
                Method::POST,
                "/v1/payments".into(),
                Some(json!({ "amount_usd": field("amount") })),
                Some(field("key")),
            ),
            "auto-recharge" => {
                let mut body = json!({
                    "enabled": form.get("enabled").is_some_and(|v| v == "true"),
                    "mode": field("mode"),
                    "amount_usd": field("amount"),
                    "threshold_usd": field("threshold"),
                });
                if !field("monthly_cap").is_empty() {
                    body["monthly_cap_usd"] = Value::from(field("monthly_cap"));
                }
                ("auto", Method::PUT, "/v1/settings/auto-recharge".into(), Some(body), None)
            }
            "contacts" => (
                "contacts",
                Method::PUT,
                "/v1/settings/contacts".into(),
                Some(json!({
                    "billing_emails": list_of(&field("billing_emails")),
                    "recharge_failure_email": optional(form.get("recharge_failure_email")),
                    "critical_phone": optional(form.get("critical_phone")),
                })),
                None,
            ),
            "card-add" => (
                "methods",
                Method::POST,
                "/v1/cards".into(),
                Some(json!({
                    "payment_method_token": field("token"),
                    "card_manager_email": field("manager"),
                    "role": field("role"),
                })),
                None,
            ),
            "card-role" => (
                "methods",
                Method::PUT,
                format!("/v1/cards/{}/role", query_escape(&field("card_id"))),
                Some(json!({ "role": field("role") })),
                None,
            ),
            "card-delete" => (
                "methods",
                Method::DELETE,
                format!("/v1/cards/{}", query_escape(&field("card_id"))),
                None,
                None,
            ),
            "statement" => {
                let mut body = json!({ "from": field("from"), "to": field("to") });
                let recipients = list_of(&field("recipients"));
                if !recipients.is_empty() {
                    body["recipients"] = json!(recipients);
                }
                (
                    "statements",
                    Method::POST,
                    "/v1/statements".into(),
                    Some(body),
                    Some(field("key")),
                )
            }
            "address" => (
                "address",
                Method::PUT,
                "/v1/settings/address".into(),
                Some(json!({
                    "line1": field("line1"),
                    "line2": optional(form.get("line2")),
                    "city": field("city"),
                    "region": optional(form.get("region")),
                    "postal_code": field("postal_code"),
                    "country": field("country"),
                })),
                None,
            ),
            "schedule" => (
                "statements",
                Method::PUT,
                "/v1/settings/statement-schedule".into(),
                Some(json!({ "schedule": field("schedule") })),
                None,
            ),
            _ => {
                return Flash {
                    section: String::new(),
                    ok: false,
                    message: "No such action.".into(),
                    field: None,
                    status: StatusCode::NOT_FOUND,
                    form: form.clone(),
                }
            }
        };
    let before =
        if section == "auto" { Some(web.get(session, "/v1/settings").await.json) } else { None };
    let answer = web.call(session, method, &uri, body, key.as_deref()).await;
    if !answer.ok() {
        let (message, field) = answer.message();
        return Flash {
            section: section.into(),
            ok: false,
            message,
            field,
            status: if answer.status.is_client_error() {
                answer.status
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            form: form.clone(),
        };
    }
    let message = match action {
        "terms" => "Terms accepted.".to_string(),
        "pay" => match answer.status {
            StatusCode::ACCEPTED => "The payment is being processed; it appears below once the card processor confirms it.".into(),
            _ => {
                let payment = &answer.json["payment"];
                match payment["status"].as_str() {
                    Some("succeeded") => format!(
                        "Paid {} with {} ending in {}.",
                        usd_text(&payment["amount_usd"]),
                        payment["card_brand"].as_str().unwrap_or("card"),
                        payment["card_last4"].as_str().unwrap_or("")
                    ),
                    _ => format!(
                        "The payment was not made: {}",
                        payment["failure_reason"].as_str().or(answer.json["message"].as_str()).unwrap_or("declined")
                    ),
                }
            }
        },
        "auto-recharge" => {
            let was = before.as_ref().map(|b| b["auto_recharge"].clone()).unwrap_or(Value::Null);
            let now = &answer.json["auto_recharge"];
            let mut changes = Vec::new();
            for (key, label) in [
                ("enabled", "auto-recharge"),
                ("mode", "mode"),
                ("amount_usd", "amount"),
                ("threshold_usd", "threshold"),
                ("monthly_cap_usd", "monthly cap"),
            ] {
                if was[key] != now[key] {
                    let show = |v: &Value| match v {
                        Value::Null => "none".to_string(),
                        Value::Bool(true) => "on".to_string(),
                        Value::Bool(false) => "off".to_string(),
                        Value::String(s) if key.ends_with("_usd") => usd_text(&Value::from(s.as_str())),
                        other => other.to_string().trim_matches('"').to_string(),
                    };
                    changes.push(format!("{label}: {} → {}", show(&was[key]), show(&now[key])));
                }
            }
            if changes.is_empty() {
                "Saved: nothing changed.".into()
            } else {
                format!("Saved. {}.", changes.join("; "))
            }
        }
        "contacts" => "Contacts saved.".into(),
        "card-add" => "Card added.".into(),
        "card-role" => "Card role changed.".into(),
        "card-delete" => "Card deleted.".into(),
        "statement" => "The statement is on its way.".into(),
        "schedule" => "Statement schedule saved.".into(),
        "address" => "Service address saved.".into(),
        _ => "Done.".into(),
    };
    let ok = !(action == "pay" && message.starts_with("The payment was not made"));
    Flash {
        section: section.into(),
        ok,
        message,
        field: None,
        status: if ok { StatusCode::OK } else { StatusCode::PAYMENT_REQUIRED },
        form: form.clone(),
    }
}

/// A payment's receipt, ready to print.
pub fn receipt_page(session: &PortalSession, payment: &Value) -> String {
    format!(
        "{}<header><h1>Receipt</h1></header><main><section aria-labelledby=\"receipt-h\"><h2 id=\"receipt-h\">Payment receipt</h2>\
         <div class=\"table-wrap\"><table><tbody>\
         <tr><th scope=\"row\">Account</th><td>{}</td></tr>\
         <tr><th scope=\"row\">Payment</th><td id=\"receipt-id\">{}</td></tr>\
         <tr><th scope=\"row\">Date (UTC)</th><td>{}</td></tr>\
         <tr><th scope=\"row\">Amount</th><td id=\"receipt-amount\">{}</td></tr>\
         <tr><th scope=\"row\">Paid with</th><td>{} ending in {}</td></tr>\
         <tr><th scope=\"row\">Status</th><td>{}</td></tr>\
         <tr><th scope=\"row\">Balance after</th><td>{}</td></tr>\
         </tbody></table></div><p><a href=\"/billing#history\">Back to billing</a></p></section></main></body></html>",
        head("Receipt"),
        escape(session.account.as_str()),
        escape(payment["payment_id"].as_str().unwrap_or_default()),
        escape(&payment["created_at"].as_str().unwrap_or_default().replace('T', " ").chars().take(19).collect::<String>()),
        escape(&usd_text(&payment["amount_usd"])),
        escape(payment["card_brand"].as_str().unwrap_or_default()),
        escape(payment["card_last4"].as_str().unwrap_or_default()),
        escape(payment["status"].as_str().unwrap_or_default()),
        escape(&usd_text(&payment["balance_after_usd"]))
    )
}
