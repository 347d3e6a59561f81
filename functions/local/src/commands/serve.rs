//! `serve` (the HTTP API with the workers and the schedules in the background) and `token`
//! (development tokens for it).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::cli::{ServeArgs, StoreArgs, TokenArgs};
use crate::jobs_local;
use crate::wiring::{jwt_secret, CliResult, Local};

/// How often the workers relay the outbox, and how often the schedules catch up.
const WORKER_ROUND: Duration = Duration::from_secs(1);
const SCHEDULE_ROUND: Duration = Duration::from_secs(3600);

pub async fn serve(args: &StoreArgs, serve: ServeArgs) -> CliResult {
    let ServeArgs { addr, platform_token, rate_cards, outbox_dir, tax, stripe_webhook_secret } =
        serve;
    let local = Local::open(args, &outbox_dir).await?;
    let cards = rate_cards.load()?;
    let jobs = Arc::new(
        jobs_local::workers(local.store.clone(), &outbox_dir, Some(&tax))
            .map_err(|e| e.to_string())?,
    );
    let statements = Arc::new(jobs_local::DirectJobs((*jobs).clone()));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    // The billing page's portal links are signed with a secret derived from the local JWT
    // secret, so they survive a restart of `serve` (until they expire).
    let mut portal_secret = b"ringledger-portal:".to_vec();
    portal_secret.extend(jwt_secret(args)?);
    let portal = Arc::new(api::portal::PortalKeys::new(portal_secret, base_url.clone()));
    let mut state = (*local.app_state(cards.clone(), Some(statements))).clone();
    state.portal = Some(portal.clone());
    let state = Arc::new(state);
    let authorization =
        api::authorization::router(Arc::new(api::authorization::AuthorizationState {
            store: local.store.clone(),
            cards,
            platform: api::authorization::PlatformAuth::Token(platform_token),
            max_call_seconds: usage::authorize::DEFAULT_MAX_CALL_SECONDS,
        }));
    let webhooks = api::webhooks::router(Arc::new(api::webhooks::WebhookState {
        store: local.store.clone(),
        secret: Some(stripe_webhook_secret),
        sink: Arc::new(jobs_local::DirectProcessorEvents {
            store: local.store.clone(),
            processor: local.processor.clone(),
            notices: local.pipeline.notices.clone(),
        }),
    }));
    let app = authorization
        .merge(webhooks)
        .merge(web::router(state.clone()))
        .merge(api::app::local(state, local.jwt.clone()));
    eprintln!("ringledger API on {base_url} (OpenAPI at /openapi.json)");
    eprintln!("issue a token: ringledger token --account <id> --role admin");
    // A one-time link to the billing page of the first few accounts, for their admin.
    let now = Utc::now();
    let accounts = local.store.account_ids(None, 3).await.unwrap_or_default();
    if accounts.is_empty() {
        eprintln!(
            "billing page: create an account (or run `ringledger demo`), then restart serve for \
             a link, or POST /v1/operator/portal-sessions"
        );
    }
    for id in accounts {
        let user = format!("admin@{id}.example");
        let (path, _) = portal.link(&id, &user, api::portal::PortalRole::Admin, now);
        eprintln!(
            "billing page of {id} (opens once, within {} minutes): {base_url}{path}",
            api::portal::LINK_MINUTES
        );
    }
    eprintln!(
        "workers (auto-recharge, notifications) relay the outbox every second; emails are \
         written to {} as .eml files",
        outbox_dir.display()
    );
    let Local { store, pipeline, processor, .. } = local;
    let notices = pipeline.notices.clone();
    tokio::spawn(Arc::new(pipeline).run(WORKER_ROUND));
    // The schedules: last month's tax, the scheduled statements, the number-release sweep and
    // the dispute reconciliation, at start and every hour (each idempotent, so catching up
    // after downtime is just running them again).
    tokio::spawn(async move {
        loop {
            jobs_local::catch_up(&*store, &jobs, Utc::now()).await;
            jobs_local::reconcile_disputes(&*store, &*processor, &*notices, Utc::now()).await;
            tokio::time::sleep(SCHEDULE_ROUND).await;
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}

pub fn token(args: &StoreArgs, token: TokenArgs) -> CliResult {
    let TokenArgs { account, role, user, ttl_seconds } = token;
    let jwt = api::auth::LocalJwt::new(jwt_secret(args)?);
    let account = account.as_ref().map(|id| id.as_str());
    println!("{}", jwt.issue(&user, account, role.into(), ttl_seconds));
    Ok(())
}
