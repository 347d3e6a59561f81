//! A scripted HTTP connector in front of DynamoDB Local.
//!
//! Every request goes through [`Wire`]: a test's script decides per call whether to forward it to
//! DynamoDB Local unchanged, forward it and rewrite the answer, or answer itself without
//! forwarding. That plays the responses DynamoDB Local never gives (unprocessed keys and items,
//! throttling, transaction conflicts) at the wire level, through the SDK's own deserializers and
//! retry classifiers, against a real table. Every exchange is logged, so tests can also count
//! what DynamoDB actually answered (version conflicts in the concurrency test).
//!
//! Why not `aws-smithy-mocks` or `StaticReplayClient`: both need `test-util` features of crates the
//! SDK already builds, which changes their feature set and makes every workspace test build
//! compile the AWS SDK crates a second time. This connector uses only the traits and features
//! the SDK already compiles.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use serde_json::{json, Value};

/// The SDK's default number of attempts per call (one try and two retries).
pub const SDK_ATTEMPTS: u32 = 3;

/// One request as the script sees it.
pub struct Call<'a> {
    /// `GetItem`, `BatchGetItem`, `TransactWriteItems`, ...
    pub operation: &'a str,
    /// How many earlier calls of this operation the wire has seen (0 for the first).
    pub nth: usize,
    pub request: &'a Value,
}

pub enum Action {
    /// Send the request to DynamoDB Local and pass its answer back unchanged.
    Forward,
    /// Do not send the request; answer with this status and JSON body.
    Reply(u16, Value),
    /// Send the request, then hand the caller this rewrite of DynamoDB Local's status and JSON
    /// answer.
    Rewrite(Box<dyn FnOnce(u16, Value) -> (u16, Value) + Send>),
}

/// One request and the answer the SDK received.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub operation: String,
    pub request: Value,
    pub status: u16,
    pub response: Value,
    /// Whether DynamoDB Local saw the request (false for [`Action::Reply`]).
    pub forwarded: bool,
}

impl Exchange {
    /// The error type without its namespace (`ThrottlingException`), if the answer is an error.
    pub fn error_type(&self) -> Option<&str> {
        self.response.get("__type")?.as_str()?.rsplit('#').next()
    }

    /// The cancellation reason codes of a cancelled transaction, in item order.
    pub fn cancellation_codes(&self) -> Vec<String> {
        self.response
            .get("CancellationReasons")
            .and_then(Value::as_array)
            .map(|reasons| {
                reasons
                    .iter()
                    .map(|r| r.get("Code").and_then(Value::as_str).unwrap_or("None").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A transaction DynamoDB cancelled because item 0, the account, failed its version check.
    pub fn is_version_conflict(&self) -> bool {
        self.operation == "TransactWriteItems"
            && self.error_type() == Some("TransactionCanceledException")
            && self.cancellation_codes().first().map(String::as_str)
                == Some("ConditionalCheckFailed")
    }
}

type Script = Box<dyn FnMut(&Call<'_>) -> Action + Send>;

pub struct Wire {
    script: Mutex<Script>,
    log: Mutex<Vec<Exchange>>,
    /// Keep request and response bodies in the log (off for high-volume tests).
    keep_bodies: bool,
}

impl Wire {
    fn new(script: Script, keep_bodies: bool) -> Arc<Self> {
        Arc::new(Wire { script: Mutex::new(script), log: Mutex::new(Vec::new()), keep_bodies })
    }

    /// Replace the script (the log is kept).
    pub fn script(&self, script: impl FnMut(&Call<'_>) -> Action + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().unwrap().clone()
    }

    pub fn of(&self, operation: &str) -> Vec<Exchange> {
        self.exchanges().into_iter().filter(|e| e.operation == operation).collect()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    fn decide(&self, operation: &str, request: &Value) -> Action {
        let nth = self.log.lock().unwrap().iter().filter(|e| e.operation == operation).count();
        // Calls racing on the same operation may see the same `nth`; scripts that care about
        // exact positions are only used by sequential tests.
        let mut script = self.script.lock().unwrap();
        script(&Call { operation, nth, request })
    }

    fn record(&self, mut exchange: Exchange) {
        if !self.keep_bodies {
            let keep = exchange.is_version_conflict() || exchange.error_type().is_some();
            exchange.request = Value::Null;
            if !keep {
                exchange.response = Value::Null;
            } else if let Some(codes) = exchange.response.get("CancellationReasons").cloned() {
                exchange.response = json!({
                    "__type": exchange.response.get("__type").cloned().unwrap_or(Value::Null),
                    "CancellationReasons": codes,
                });
            }
        }
        self.log.lock().unwrap().push(exchange);
    }
}

/// A client for DynamoDB Local whose every request passes through the returned [`Wire`],
/// forwarding everything until a test scripts otherwise. The SDK retries as configured by
/// default (three attempts, standard mode) with millisecond backoff, in a retry partition of
/// its own so one test's throttling never drains another's retry tokens.
pub async fn wired_client(endpoint: &str, keep_bodies: bool) -> (Client, Arc<Wire>) {
    static PARTITION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let shared =
        aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint).load().await;
    // DynamoDB Local speaks plain HTTP: the SDK's own hyper client, without TLS.
    let inner = aws_smithy_http_client::Builder::new().build_http();
    let wire = Wire::new(Box::new(|_| Action::Forward), keep_bodies);
    let partition =
        format!("wired-{}", PARTITION.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let config = aws_sdk_dynamodb::config::Builder::from(&shared)
        .http_client(WiredClient { inner, wire: wire.clone() })
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(SDK_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
        .retry_partition(RetryPartition::new(partition))
        .build();
    (Client::from_conf(config), wire)
}

/// The JSON body of a DynamoDB error answer.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{error_type}"), "message": message })
}

/// A `TransactionCanceledException` with one reason per item of `request` (a
/// `TransactWriteItems` body): `codes[i]` for item `i`, `None` past the end of `codes`.
pub fn cancelled(request: &Value, codes: &[&str]) -> Value {
    let items = request.get("TransactItems").and_then(Value::as_array).map_or(0, Vec::len);
    let reasons: Vec<Value> = (0..items)
        .map(|i| match codes.get(i) {
            Some(&"None") | None => json!({ "Code": "None" }),
            Some(code) => json!({ "Code": code, "Message": format!("{code} (scripted)") }),
        })
        .collect();
    let mut body = error_body(
        "TransactionCanceledException",
        &format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ),
    );
    body["CancellationReasons"] = Value::Array(reasons);
    body
}

#[derive(Debug, Clone)]
struct WiredClient {
    inner: SharedHttpClient,
    wire: Arc<Wire>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").finish_non_exhaustive()
    }
}

impl HttpClient for WiredClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(WiredConnector {
            inner: self.inner.http_connector(settings, components),
            wire: self.wire.clone(),
        })
    }
}

#[derive(Debug)]
struct WiredConnector {
    inner: SharedHttpConnector,
    wire: Arc<Wire>,
}

fn json_response(status: u16, body: &Value) -> Result<HttpResponse, ConnectorError> {
    let status = StatusCode::try_from(status).map_err(|e| ConnectorError::other(e.into(), None))?;
    let mut response = HttpResponse::new(status, SdkBody::from(body.to_string()));
    response.headers_mut().insert("content-type", "application/x-amz-json-1.0");
    Ok(response)
}

impl HttpConnector for WiredConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let wire = self.wire.clone();
        HttpConnectorFuture::new(async move {
            let operation = request
                .headers()
                .get("x-amz-target")
                .and_then(|target| target.rsplit('.').next())
                .unwrap_or("?")
                .to_string();
            let body: Value = request
                .body()
                .bytes()
                .and_then(|bytes| serde_json::from_slice(bytes).ok())
                .unwrap_or(Value::Null);
            let action = wire.decide(&operation, &body);
            let (status, answer, forwarded, response) = match action {
                Action::Reply(status, answer) => {
                    let response = json_response(status, &answer)?;
                    (status, answer, false, response)
                }
                Action::Forward | Action::Rewrite(_) => {
                    let mut response = inner.call(request).await?;
                    let status = response.status().as_u16();
                    let bytes = ByteStream::new(response.take_body())
                        .collect()
                        .await
                        .map_err(|e| ConnectorError::io(e.into()))?
                        .into_bytes();
                    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    match action {
                        Action::Rewrite(rewrite) => {
                            let (status, answer) = rewrite(status, answer);
                            let response = json_response(status, &answer)?;
                            (status, answer, true, response)
                        }
                        _ => {
                            *response.body_mut() = SdkBody::from(bytes);
                            (status, answer, true, response)
                        }
                    }
                }
            };
            wire.record(Exchange { operation, request: body, status, response: answer, forwarded });
            Ok(response)
        })
    }
}
