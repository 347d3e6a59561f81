//! The one place the runner builds what its commands work on: the store (embedded SQLite by
//! default, DynamoDB on request), the simulated card processor kept beside it, the local JWT
//! secret, and the in-process workers behind the HTTP API.

use std::path::Path;
use std::sync::Arc;

use api::state::{AppState, Store};
use ledger::StoreError;
use store_dynamodb::{client_for_endpoint, create_table, DynamoStore};
use store_sqlite::{Durability, SqliteStore};

use crate::cli::{env_names, StoreArgs, StoreKind};
use crate::pipeline::Pipeline;

pub type BoxError = Box<dyn std::error::Error>;
pub type CliResult = Result<(), BoxError>;

/// The chosen store, with the ledger and the documents (profiles, payments) in one.
pub async fn open_store(args: &StoreArgs) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match args.kind {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(&args.db, Durability::Full)?),
        StoreKind::Dynamodb => {
            let client = client_for_endpoint(args.endpoint.as_deref()).await;
            // DynamoDB Local starts empty; a real table is made by the template.
            if args.endpoint.is_some() {
                create_table(&client, &args.table).await?;
            }
            Arc::new(DynamoStore::new(client, args.table.clone()))
        }
    })
}

/// The simulated card processor, kept beside the embedded store (`<db>.processor.json`) so
/// that customers, cards and payments survive a restart as the ledger does.
pub fn simulated_processor(args: &StoreArgs) -> std::io::Result<Arc<payments::SimulatedProcessor>> {
    match args.kind {
        StoreKind::Sqlite => {
            Ok(Arc::new(payments::SimulatedProcessor::open(format!("{}.processor.json", args.db))?))
        }
        StoreKind::Dynamodb => Ok(Arc::new(payments::SimulatedProcessor::new())),
    }
}

/// The local signing secret: `RINGLEDGER_JWT_SECRET`, else a random one kept beside the
/// database (`<db>.jwt-secret`, created on first use) so `token` and `serve` agree.
pub fn jwt_secret(args: &StoreArgs) -> Result<Vec<u8>, BoxError> {
    if let Ok(secret) = std::env::var(env_names::JWT_SECRET) {
        return Ok(secret.into_bytes());
    }
    let path = format!("{}.jwt-secret", args.db);
    if let Ok(secret) = std::fs::read(&path) {
        return Ok(secret);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut secret = String::new();
    for _ in 0..4 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos(),
        );
        secret.push_str(&format!("{:016x}", h.finish()));
    }
    std::fs::write(&path, &secret)?;
    Ok(secret.into_bytes())
}

/// What `serve` and `demo` run: the store, one processor for the API and the workers (the
/// cards registered through the API are the ones auto-recharge charges), and the workers.
pub struct Local {
    pub store: Arc<dyn Store>,
    pub processor: Arc<payments::SimulatedProcessor>,
    pub pipeline: Pipeline,
    pub jwt: api::auth::LocalJwt,
}

impl Local {
    /// Open everything; the notification worker writes its emails into `outbox_dir`.
    pub async fn open(args: &StoreArgs, outbox_dir: &Path) -> Result<Self, BoxError> {
        let store = open_store(args).await?;
        let processor = simulated_processor(args)?;
        std::fs::create_dir_all(outbox_dir)?;
        let pipeline = Pipeline::new(store.clone(), processor.clone(), outbox_dir.to_path_buf());
        let jwt = api::auth::LocalJwt::new(jwt_secret(args)?);
        Ok(Local { store, processor, pipeline, jwt })
    }

    /// The API's state on this store: receipts go to the in-process notification worker;
    /// `statements` is where `POST /v1/statements` sends its jobs (`None`: it answers 503).
    pub fn app_state(
        &self,
        cards: usage::worker::RateCards,
        statements: Option<Arc<dyn jobs::JobSink>>,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            store: self.store.clone(),
            cards,
            processor: self.processor.clone(),
            notices: Some(self.pipeline.notices.clone()),
            statements,
            portal: None,
        })
    }
}
