//! The demo's last part: an agency with two clients (issue 15). The agency's card pays for
//! both; each client keeps its own balance; one pays a plan from its balance, the other has it
//! charged to the agency's card; the agency's user sees the roll-up.

use axum::http::{Method, StatusCode};
use documents::profile::CardRole;
use serde::{Deserialize, Serialize};

use super::amount;
use super::client::{AcceptTerms, AddCard, Api, CreateAccount, DemoError, PayNow};
use crate::pipeline::Pipeline;

/// `PUT /v1/operator/accounts/{id}/plan`.
#[derive(Serialize)]
struct SetPlan<'a> {
    name: &'a str,
    price_usd: ledger::Amount,
    period: &'a str,
    direct_charge: bool,
}

#[derive(Deserialize)]
struct Rollup {
    clients: Vec<ClientLine>,
    total_balance_usd: String,
    total_month_charges_usd: String,
}

#[derive(Deserialize)]
struct ClientLine {
    account_id: String,
    balance_usd: String,
    status: String,
    month_charges_usd: String,
}

/// Set up the agency and its clients through the routes, and print the roll-up.
pub async fn agency_with_two_clients(
    api: &Api,
    jwt: &api::auth::LocalJwt,
    operator: &str,
    pipeline: &Pipeline,
    stamp: i64,
) -> Result<(), DemoError> {
    println!("\nan agency with two clients (each keeps its own balance; the agency's card pays):");
    let agency = format!("agency-{stamp}");
    let clients = [format!("{agency}-client-1"), format!("{agency}-client-2")];
    for id in std::iter::once(&agency).chain(&clients) {
        let body = CreateAccount { account_id: id };
        api.step(
            (Method::POST, "/v1/operator/accounts"),
            operator,
            &body,
            None,
            StatusCode::CREATED,
            |_| Ok(format!("the operator creates {id}")),
        )
        .await?;
        let admin =
            jwt.issue(&format!("admin@{id}.example"), Some(id), api::auth::Role::Admin, 3600);
        let terms = AcceptTerms { version: "2026-01" };
        api.step((Method::POST, "/v1/terms"), &admin, &terms, None, StatusCode::OK, |_| {
            Ok(format!("{id} accepts the terms"))
        })
        .await?;
    }
    let user = jwt.issue(
        &format!("billing@{agency}.example"),
        Some(&agency),
        api::auth::Role::AgencyAdmin,
        3600,
    );
    let card = AddCard {
        payment_method_token: "pm_card_visa",
        card_manager_email: "cards@agency.example",
        role: CardRole::Primary,
    };
    api.step((Method::POST, "/v1/cards"), &user, &card, None, StatusCode::CREATED, |_| {
        Ok(format!("the agency's user adds its card to {agency}"))
    })
    .await?;
    for client in &clients {
        let path = format!("/v1/operator/agencies/{agency}/clients/{client}");
        api.step((Method::PUT, path.as_str()), operator, &(), None, StatusCode::OK, |_| {
            Ok(format!("{client} becomes a client of {agency}"))
        })
        .await?;
        let key = format!("{client}-fund");
        let pay = PayNow { amount_usd: amount("40") };
        api.step_on(
            Some(client),
            (Method::POST, "/v1/payments"),
            &user,
            &pay,
            Some(&key),
            StatusCode::CREATED,
            |_| Ok(format!("the agency pays $40.00 into {client} (its card)")),
        )
        .await?;
    }
    for (client, direct) in clients.iter().zip([false, true]) {
        let path = format!("/v1/operator/accounts/{client}/plan");
        let plan = SetPlan {
            name: "Pro",
            price_usd: amount("29"),
            period: "monthly",
            direct_charge: direct,
        };
        let how = if direct { "charged to the agency's card" } else { "debited from its balance" };
        api.step((Method::PUT, path.as_str()), operator, &plan, None, StatusCode::OK, |_| {
            Ok(format!("{client}: plan Pro $29.00 a month, {how}"))
        })
        .await?;
    }
    // The payments worker charges the card-paid plan (its pending payment's event).
    for _ in 0..4 {
        pipeline.run_once().await?;
    }
    let answer = api.call(Method::GET, "/v1/agency/clients", &user, None::<&()>, None).await?;
    let rollup: Rollup = answer.json("/v1/agency/clients")?;
    println!("  GET  /v1/agency/clients (the agency's user):");
    for line in &rollup.clients {
        println!(
            "    {:<36} balance {:>8}  {:<9} this month's charges {}",
            line.account_id, line.balance_usd, line.status, line.month_charges_usd
        );
    }
    println!(
        "    {:<36} balance {:>8}            this month's charges {}",
        "total", rollup.total_balance_usd, rollup.total_month_charges_usd
    );
    Ok(())
}
