//! Helpers for the end-to-end tests: they talk to the real local servers that
//! `./scripts/test.sh` installs and starts, and fail loudly when those are missing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ledger::LedgerStore;
use store_dynamodb::{client_for_endpoint, create_table, DynamoStore};

/// The DynamoDB Local endpoint; panics with instructions when the stack is not running.
pub mod browser;
pub mod mime;

pub fn dynamodb_endpoint() -> String {
    std::env::var("RINGLEDGER_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RINGLEDGER_DYNAMODB_ENDPOINT is not set. These tests need DynamoDB Local: run them \
             through ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
        )
    })
}

/// A table name no other test (or test run) uses.
pub fn unique_table(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A DynamoDB store on a new table of its own.
pub async fn fresh_dynamo_store() -> DynamoStore {
    let client = client_for_endpoint(Some(&dynamodb_endpoint())).await;
    let table = unique_table("ledger");
    create_table(&client, &table).await.unwrap_or_else(|e| {
        panic!("cannot create table {table} on DynamoDB Local at {}: {e:?}", dynamodb_endpoint())
    });
    DynamoStore::new(client, table)
}

pub async fn fresh_store() -> Arc<dyn LedgerStore> {
    Arc::new(fresh_dynamo_store().await)
}

/// Batch sizes the crash posters use (SQLite commits faster, so bigger batches).
pub const CRASH_BATCH_SQLITE: usize = 50;
pub const CRASH_BATCH_DYNAMODB: usize = 20;

/// Start `crash-poster` with `args`, let it reach `target_seq` on `store` (or 60 s), then
/// SIGKILL it wherever it is.
pub async fn run_and_kill(
    poster: &str,
    args: &[&str],
    store: &dyn LedgerStore,
    target_seq: u64,
    poll: std::time::Duration,
) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(poster)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start crash-poster");
    let mut ready = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    BufReader::new(stdout).read_line(&mut ready).expect("read crash-poster");
    assert_eq!(ready.trim(), "ready", "crash-poster did not start");
    let id = ledger::AccountId::parse(conformance::crash::CRASH_ACCOUNT).expect("valid id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seq = store.account(&id).await.expect("read").map_or(0, |a| a.last_seq);
        if seq >= target_seq || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap crash-poster");
}

/// moto's endpoint (SQS, SES); panics with instructions when the stack is not running.
pub fn moto_endpoint() -> String {
    std::env::var("RINGLEDGER_MOTO_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RINGLEDGER_MOTO_ENDPOINT is not set. These tests need moto: run them through \
             ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
        )
    })
}

/// An SES v2 client on moto (`RINGLEDGER_SES_ENDPOINT`); fails loudly without it.
/// An SNS client on moto (critical texts, the SES feedback topic).
pub async fn sns_client() -> aws_sdk_sns::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .load()
        .await;
    aws_sdk_sns::Client::new(&config)
}

pub async fn ses_client() -> aws_sdk_sesv2::Client {
    let endpoint = std::env::var("RINGLEDGER_SES_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "RINGLEDGER_SES_ENDPOINT is not set. These tests need moto: run them through \
             ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
        )
    });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_sesv2::Client::new(&config)
}

pub async fn sqs_client() -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_endpoint())
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// A queue of its own for one test; with `dead_letter` set, a redrive policy sends a message
/// there after `max_receive_count` receives. The visibility timeout is 1 s so failed messages
/// come back quickly.
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    dead_letter: Option<(&str, u32)>,
) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut request = client
        .create_queue()
        .queue_name(unique_table(prefix))
        .attributes(QueueAttributeName::VisibilityTimeout, "1");
    if let Some((dlq_url, max_receive_count)) = dead_letter {
        let arn = client
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("dlq attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("dlq arn");
        let policy =
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{max_receive_count}"}}"#);
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    request.send().await.expect("create queue").queue_url.expect("queue url")
}

/// Every message body currently in `queue_url` (received and deleted).
pub async fn drain(client: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..50 {
        let output = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            bodies.push(message.body.unwrap_or_default());
            if let Some(handle) = message.receipt_handle {
                client
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
    bodies
}

/// localstripe helpers: a Stripe processor pointed at it, and what Stripe.js does in a browser.
pub mod stripe {
    use payments::{SecretKey, StripeConfig, StripeProcessor};

    pub const SECRET_KEY: &str = "sk_test_ringledger";
    /// Stripe's public test numbers without their check digit (see [`luhn_complete`]), so no
    /// card number is written in the repository.
    pub const VISA_SUCCESS: &str = "424242424242424";
    pub const MASTERCARD_SUCCESS: &str = "555555555555444";
    /// Attaches, then every charge is declined.
    pub const CHARGES_DECLINED: &str = "400000000000034";

    /// The 16-digit number whose first 15 digits are `prefix_15_digits`: appends the Luhn
    /// check digit. Counting from the check digit (rightmost, index 0), every digit at an odd
    /// index is doubled (minus 9 when above 9) and the check digit makes the sum a multiple of
    /// 10; so within the prefix it is the digits at even indexes from its right end.
    pub fn luhn_complete(prefix_15_digits: &str) -> String {
        assert!(
            prefix_15_digits.len() == 15 && prefix_15_digits.bytes().all(|b| b.is_ascii_digit()),
            "a card prefix is 15 digits"
        );
        let sum: u32 = prefix_15_digits
            .bytes()
            .rev()
            .enumerate()
            .map(|(index, byte)| {
                let digit = u32::from(byte - b'0');
                match index % 2 {
                    0 if digit * 2 > 9 => digit * 2 - 9,
                    0 => digit * 2,
                    _ => digit,
                }
            })
            .sum();
        format!("{prefix_15_digits}{}", (10 - sum % 10) % 10)
    }

    pub fn endpoint() -> String {
        std::env::var("RINGLEDGER_STRIPE_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "RINGLEDGER_STRIPE_ENDPOINT is not set. These tests need localstripe: run them \
                 through ./scripts/test.sh, or `scripts/stack.sh up` and `source .stack/env` first."
            )
        })
    }

    pub fn processor() -> StripeProcessor {
        let key = SecretKey::parse(SECRET_KEY).expect("test key");
        StripeProcessor::new(StripeConfig::new(endpoint(), key))
            .expect("a processor for localstripe")
    }

    /// Turn a test card into a payment-method token, as Stripe.js would.
    pub async fn card_token(
        http: &reqwest::Client,
        prefix_15_digits: &str,
        exp_year: u16,
    ) -> String {
        let number = luhn_complete(prefix_15_digits);
        let exp_year = exp_year.to_string();
        let form = [
            ("type", "card"),
            ("card[number]", number.as_str()),
            ("card[exp_month]", "8"),
            ("card[exp_year]", exp_year.as_str()),
            ("card[cvc]", "123"),
        ];
        let response = http
            .post(format!("{}/v1/payment_methods", endpoint()))
            .bearer_auth(SECRET_KEY)
            .form(&form)
            .send()
            .await
            .expect("POST /v1/payment_methods");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("a JSON payment method");
        assert!(status.is_success(), "localstripe refused the card: {status} {body}");
        body["id"].as_str().expect("a payment method id").to_owned()
    }
}

/// Messages in `queue_url`: (visible, in flight).
pub async fn queue_depth(client: &aws_sdk_sqs::Client, queue_url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let attributes = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    let read = |name| attributes.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    (
        read(QueueAttributeName::ApproximateNumberOfMessages),
        read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// A card processor around a real one that tests steer: while `down`, every charge and lookup
/// answers [`payments::ProcessorError::Unavailable`] without reaching the processor (an outage);
/// `charge_delay` holds each charge that long before it is sent (a slow processor, so
/// concurrent requests overlap). Charges that reached the processor are counted.
pub struct ControlledProcessor<P> {
    pub inner: P,
    pub down: std::sync::atomic::AtomicBool,
    pub charge_delay: std::time::Duration,
    pub charges_sent: AtomicU64,
    pub refused_while_down: AtomicU64,
}

impl<P> ControlledProcessor<P> {
    pub fn new(inner: P) -> Self {
        ControlledProcessor {
            inner,
            down: std::sync::atomic::AtomicBool::new(false),
            charge_delay: std::time::Duration::ZERO,
            charges_sent: AtomicU64::new(0),
            refused_while_down: AtomicU64::new(0),
        }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn outage(&self) -> Result<(), payments::ProcessorError> {
        if !self.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.refused_while_down.fetch_add(1, Ordering::SeqCst);
        Err(payments::ProcessorError::Unavailable(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the test's processor outage",
        ))))
    }
}

#[async_trait::async_trait]
impl<P: payments::CardProcessor> payments::CardProcessor for ControlledProcessor<P> {
    async fn create_customer(
        &self,
        account_id: &str,
        email: Option<&str>,
    ) -> Result<payments::CustomerId, payments::ProcessorError> {
        self.inner.create_customer(account_id, email).await
    }

    async fn attach_card(
        &self,
        customer: &payments::CustomerId,
        payment_method_token: &str,
    ) -> Result<payments::CardDetails, payments::ProcessorError> {
        self.inner.attach_card(customer, payment_method_token).await
    }

    async fn detach_card(&self, payment_method_id: &str) -> Result<(), payments::ProcessorError> {
        self.inner.detach_card(payment_method_id).await
    }

    async fn charge(
        &self,
        request: &payments::ChargeRequest,
    ) -> Result<payments::ChargeOutcome, payments::ProcessorError> {
        self.outage()?;
        if !self.charge_delay.is_zero() {
            tokio::time::sleep(self.charge_delay).await;
        }
        self.charges_sent.fetch_add(1, Ordering::SeqCst);
        self.inner.charge(request).await
    }

    async fn find_charge(
        &self,
        customer: &payments::CustomerId,
        idempotency_key: &str,
    ) -> Result<Option<payments::ChargeOutcome>, payments::ProcessorError> {
        self.outage()?;
        self.inner.find_charge(customer, idempotency_key).await
    }

    async fn refund(
        &self,
        request: &payments::RefundRequest,
    ) -> Result<payments::RefundOutcome, payments::ProcessorError> {
        self.outage()?;
        self.inner.refund(request).await
    }

    async fn find_refund(
        &self,
        payment_intent_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<payments::RefundOutcome>, payments::ProcessorError> {
        self.outage()?;
        self.inner.find_refund(payment_intent_id, idempotency_key).await
    }
    async fn recent_disputes(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payments::DisputeState>, payments::ProcessorError> {
        self.inner.recent_disputes(since).await
    }

    async fn payment_account(
        &self,
        payment_intent_id: &str,
    ) -> Result<Option<String>, payments::ProcessorError> {
        self.inner.payment_account(payment_intent_id).await
    }

    async fn cancel_charge(
        &self,
        payment_intent_id: &str,
    ) -> Result<payments::ChargeOutcome, payments::ProcessorError> {
        self.inner.cancel_charge(payment_intent_id).await
    }

    async fn refunds_of(
        &self,
        payment_intent_id: &str,
    ) -> Result<Vec<payments::ProcessorRefund>, payments::ProcessorError> {
        self.inner.refunds_of(payment_intent_id).await
    }

    async fn recent_refunds(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payments::ProcessorRefund>, payments::ProcessorError> {
        self.inner.recent_refunds(since).await
    }

    async fn customer_account(
        &self,
        customer: &payments::CustomerId,
    ) -> Result<Option<String>, payments::ProcessorError> {
        self.inner.customer_account(customer).await
    }
}

/// Every payment intent localstripe holds for `customer` (its list filtered by customer, as
/// Stripe's is; the launcher in scripts/localstripe_launcher.py adds the filter), all pages.
pub async fn stripe_intents_of(http: &reqwest::Client, customer: &str) -> Vec<serde_json::Value> {
    const MAX_PAGES: usize = 100;
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        // Stripe's ids are ASCII letters, digits and `_`: nothing to escape.
        let mut url =
            format!("{}/v1/payment_intents?limit=100&customer={customer}", stripe::endpoint());
        if let Some(after) = &after {
            url.push_str(&format!("&starting_after={after}"));
        }
        let response = http
            .get(url)
            .bearer_auth(stripe::SECRET_KEY)
            .send()
            .await
            .expect("GET /v1/payment_intents on localstripe");
        let status = response.status();
        let page: serde_json::Value = response.json().await.expect("a JSON list");
        assert!(status.is_success(), "localstripe's payment-intent list: {status} {page}");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        assert!(
            data.iter().all(|pi| pi["customer"] == customer),
            "localstripe ignored the customer filter: run it through scripts/stack.sh's launcher"
        );
        found.extend(data.iter().cloned());
        match (page["has_more"].as_bool(), data.last()) {
            (Some(true), Some(last)) => after = last["id"].as_str().map(str::to_string),
            _ => return found,
        }
    }
    panic!("more than {MAX_PAGES} pages of payment intents for {customer}");
}
