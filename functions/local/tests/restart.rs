//! Local mode is a product: what `serve` keeps survives a restart, the simulated card
//! processor's customers, cards and payments included. Before, a restart forgot them: Pay Now
//! on an existing card answered `400 processor_rejected: No such PaymentMethod`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SECRET: &str = "restart-test-secret";

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn runner(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringledger"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("RINGLEDGER_")) {
        command.env_remove(name);
    }
    command
        .env("RINGLEDGER_DB", dir.join("ringledger.db"))
        .env("RINGLEDGER_OUTBOX_DIR", dir.join("outbox"))
        .env("RINGLEDGER_JWT_SECRET", SECRET);
    command
}

fn token(dir: &Path, args: &[&str]) -> String {
    let output = runner(dir).arg("token").args(args).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn start(dir: &Path, port: u16) -> Server {
    let log = std::fs::File::create(dir.join(format!("serve-{port}.log"))).unwrap();
    let child = runner(dir)
        .arg("serve")
        .env("RINGLEDGER_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("serve exited ({status}) before listening");
        }
        assert!(Instant::now() < deadline, "serve did not listen within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

async fn call(
    http: &reqwest::Client,
    port: u16,
    token: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = http
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pay_now_and_auto_recharge_work_on_the_same_card_after_serve_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let operator = token(dir.path(), &["--role", "operator", "--user", "ops"]);
    let admin = token(dir.path(), &["--account", "acme", "--role", "admin", "--user", "owner"]);

    let port = free_port();
    let server = start(dir.path(), port).await;
    let (status, _) =
        call(&http, port, &operator, "/v1/operator/accounts", None, json!({"account_id": "acme"}))
            .await;
    assert_eq!(status, 201);
    let (status, _) =
        call(&http, port, &admin, "/v1/terms", None, json!({"version": "2026-01"})).await;
    assert!(status == 200 || status == 201, "terms: {status}");
    let (status, card) = call(
        &http,
        port,
        &admin,
        "/v1/cards",
        None,
        json!({"payment_method_token": "pm_card_visa", "card_manager_email": "cards@acme.example", "role": "primary"}),
    )
    .await;
    assert_eq!(status, 201, "{card}");
    let (status, paid) =
        call(&http, port, &admin, "/v1/payments", Some("first"), json!({"amount_usd": "25.00"}))
            .await;
    assert_eq!(status, 201, "{paid}");
    drop(server); // killed, as a crash or a redeploy would

    let port = free_port();
    let _server = start(dir.path(), port).await;
    let (status, again) =
        call(&http, port, &admin, "/v1/payments", Some("second"), json!({"amount_usd": "10.00"}))
            .await;
    assert_eq!(status, 201, "the processor still knows the card: {again}");
    let (status, replay) =
        call(&http, port, &admin, "/v1/payments", Some("first"), json!({"amount_usd": "25.00"}))
            .await;
    assert_eq!(status, 201, "a retried payment is still the same success: {replay}");
    assert_eq!(replay["payment"]["payment_id"], paid["payment"]["payment_id"]);
    let overview = http
        .get(format!("http://127.0.0.1:{port}/v1/overview"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(overview["balance_usd"], "35", "one credit each: {overview}");

    // Auto-recharge after the restart charges the card registered before it: $35 is below a
    // $40 threshold, so turning it on raises a request that the in-process worker charges.
    let put = http
        .put(format!("http://127.0.0.1:{port}/v1/settings/auto-recharge"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"enabled": true, "amount_usd": "50", "threshold_usd": "40", "mode": "add"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let overview = http
            .get(format!("http://127.0.0.1:{port}/v1/overview"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        if overview["balance_usd"] == "85" {
            break;
        }
        assert!(Instant::now() < deadline, "no auto-recharge within 30 s: {overview}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
