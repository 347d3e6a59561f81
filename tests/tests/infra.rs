//! The SAM template and the workspace agree: every Lambda binary under `functions/` is deployed
//! by exactly one function resource, and nothing is deployed that the workspace doesn't build.
//! (`cfn-lint` validates the template itself in `./scripts/test.sh`.)

use std::collections::BTreeSet;
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository")
}

fn template() -> String {
    std::fs::read_to_string(repo().join("infra/template.yaml")).expect("infra/template.yaml")
}

/// Binaries of `functions/*` that are Lambdas: every bin except the local runner.
fn workspace_lambdas() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("functions")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let mut in_bin = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin {
                if let Some(name) = line.strip_prefix("name = ") {
                    let name = name.trim_matches('"').to_string();
                    if name != "ringledger" {
                        names.insert(name);
                    }
                }
            }
        }
    }
    names
}

fn template_binaries(template: &str) -> Vec<String> {
    template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Binary: "))
        .map(|b| b.trim().to_string())
        .collect()
}

#[test]
fn every_lambda_binary_is_deployed_once_and_nothing_else_is() {
    let template = template();
    let deployed = template_binaries(&template);
    let unique: BTreeSet<String> = deployed.iter().cloned().collect();
    assert_eq!(unique.len(), deployed.len(), "a binary is deployed twice: {deployed:?}");
    let built = workspace_lambdas();
    assert!(built.len() >= 8, "found the workspace's Lambdas: {built:?}");
    let missing: Vec<_> = built.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&built).collect();
    assert!(missing.is_empty(), "Lambdas the template does not deploy: {missing:?}");
    assert!(extra.is_empty(), "template functions the workspace does not build: {extra:?}");
    let functions = template.matches("Type: AWS::Serverless::Function").count();
    assert_eq!(functions, deployed.len(), "every function names its binary");
}

/// The template's resources in order, as (logical id, the lines of its body).
fn resources(template: &str) -> Vec<(String, Vec<String>)> {
    let mut resources: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_resources = false;
    for line in template.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_resources = line.trim_end() == "Resources:";
            continue;
        }
        if !in_resources || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 2 {
            let name = line.trim().trim_end_matches(':').to_string();
            resources.push((name, Vec::new()));
        } else if let Some((_, body)) = resources.last_mut() {
            body.push(line.trim().to_string());
        }
    }
    resources
}

/// The first value of `key: value` among `lines`, without a trailing comment.
fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .and_then(|v| v.split_whitespace().next())
}

fn of_type<'a>(
    resources: &'a [(String, Vec<String>)],
    kind: &str,
) -> Vec<&'a (String, Vec<String>)> {
    let line = format!("Type: {kind}");
    resources.iter().filter(|(_, body)| body.first() == Some(&line)).collect()
}

#[test]
fn queues_outlast_their_consumers_and_dead_letter_after_five_tries() {
    let template = template();
    let resources = resources(&template);
    let global_timeout: u32 = template
        .lines()
        .find_map(|l| l.trim().strip_prefix("Timeout: "))
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .expect("a global function timeout");
    let queues = of_type(&resources, "AWS::SQS::Queue");
    let work_queues: Vec<_> =
        queues.iter().filter(|(_, body)| body.iter().any(|l| l == "RedrivePolicy:")).collect();
    assert!(work_queues.len() >= 5, "usage, recharge, notifications, tax, statements");
    // Each consumer's timeout against its own queue's visibility timeout.
    let mut consumed = BTreeSet::new();
    for (function, body) in of_type(&resources, "AWS::Serverless::Function") {
        let timeout: u32 =
            value(body, "Timeout").map_or(global_timeout, |t| t.parse().expect("a timeout"));
        for queue in
            body.iter().filter_map(|l| l.strip_prefix("Queue: !GetAtt ")?.strip_suffix(".Arn"))
        {
            let (_, queue_body) = work_queues
                .iter()
                .find(|(name, _)| name == queue)
                .unwrap_or_else(|| panic!("{function} consumes {queue}, which has no DLQ"));
            let visibility: u32 = value(queue_body, "VisibilityTimeout")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{queue} sets its visibility timeout"));
            assert!(
                visibility >= 6 * timeout,
                "{queue}: visibility {visibility} s < 6 x {function}'s {timeout} s"
            );
            consumed.insert(queue.to_string());
        }
    }
    for (queue, body) in &work_queues {
        assert!(consumed.contains(queue.as_str()), "nothing consumes {queue}");
        let receives: u32 = value(body, "maxReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{queue} redrives after some receives"));
        assert!(receives >= 5, "{queue}: maxReceiveCount {receives}");
    }
    // Every dead-letter queue has a depth alarm.
    for (queue, _) in queues.iter().filter(|q| !work_queues.contains(q)) {
        let dimension = format!("Value: !GetAtt {queue}.QueueName");
        assert!(
            template.lines().any(|l| l.contains(&dimension)),
            "no alarm on messages in {queue}"
        );
    }
    // Every SQS event source reports partial batch failures.
    let sqs_events = template.lines().filter(|l| l.trim().starts_with("Queue: !GetAtt ")).count();
    assert_eq!(template.matches("ReportBatchItemFailures").count(), sqs_events);
    for setting in [
        "PointInTimeRecoveryEnabled: true",
        "DeletionProtectionEnabled: true",
        "BillingMode: PAY_PER_REQUEST",
        "Architectures: [arm64]",
        "Runtime: provided.al2023",
    ] {
        assert!(template.contains(setting), "{setting}");
    }
}

#[test]
fn every_function_has_its_log_group_and_alarms() {
    let template = template();
    let resources = resources(&template);
    let names: BTreeSet<&str> = resources.iter().map(|(name, _)| name.as_str()).collect();
    for (function, _) in of_type(&resources, "AWS::Serverless::Function") {
        for suffix in ["Logs", "ErrorsAlarm", "ThrottlesAlarm"] {
            assert!(names.contains(format!("{function}{suffix}").as_str()), "{function}{suffix}");
        }
    }
}

/// The HTTP API's routes are the account API's routes (plus the platform's IAM-authorized
/// authorization routes), each served by one function.
#[test]
fn the_http_api_routes_are_the_account_apis_routes() {
    let template = template();
    let mut deployed = Vec::new();
    let mut method: Option<String> = None;
    for line in template.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("Method: ") {
            method = Some(m.to_string());
        } else if let Some(path) = line.strip_prefix("Path: ") {
            let method = method.take().expect("a route's method comes before its path");
            deployed.push((method, path.to_string()));
        }
    }
    let unique: BTreeSet<(String, String)> = deployed.iter().cloned().collect();
    assert_eq!(unique.len(), deployed.len(), "a route is deployed twice: {deployed:?}");
    let mut expected: BTreeSet<(String, String)> =
        api::app::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.extend(api::authorization::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    expected.extend(api::webhooks::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    expected.extend(web::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    let missing: Vec<_> = expected.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&expected).collect();
    assert!(missing.is_empty(), "routes the template does not deploy: {missing:?}");
    assert!(extra.is_empty(), "template routes the API does not serve: {extra:?}");
}

/// The relay's unreadable-item metric (an embedded-metric-format line) has its alarm.
#[test]
fn the_outbox_relays_unreadable_item_metric_has_an_alarm() {
    let template = template();
    let resources = resources(&template);
    let (_, alarm) = resources
        .iter()
        .find(|(name, _)| name == "OutboxRelayUnreadableAlarm")
        .expect("an OutboxRelayUnreadableAlarm resource");
    assert_eq!(value(alarm, "Namespace"), Some(messaging::metrics::NAMESPACE));
    assert_eq!(value(alarm, "MetricName"), Some(messaging::metrics::OUTBOX_UNREADABLE));
    assert_eq!(value(alarm, "Threshold"), Some("1"));
}

/// Every `RINGLEDGER_*` variable the template sets is one the runtime reads (a constant in
/// `runtime::env`), and every variable the runtime requires is set somewhere.
#[test]
fn the_templates_environment_is_the_runtimes() {
    let template = template();
    let set: BTreeSet<&str> = template
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(key, _)| key))
        .filter(|key| key.starts_with("RINGLEDGER_"))
        .collect();
    let known: BTreeSet<&str> = runtime::env::ALL.iter().copied().collect();
    let unknown: Vec<_> = set.difference(&known).collect();
    assert!(unknown.is_empty(), "variables the runtime does not read: {unknown:?}");
    let optional =
        [runtime::env::STRIPE_URL, runtime::env::RATE_CARDS, runtime::env::STRIPE_JS_URL];
    let unset: Vec<_> = known.difference(&set).filter(|v| !optional.contains(v)).collect();
    assert!(unset.is_empty(), "variables the runtime requires that no function gets: {unset:?}");
}

/// Functions log JSON (the runtime switches on `AWS_LAMBDA_LOG_FORMAT`), and the dashboard
/// shows every business metric the code counts, and no metric it does not.
#[test]
fn logs_are_json_and_the_dashboard_shows_every_business_metric() {
    let template = template();
    let globals = template.split("\nResources:").next().unwrap();
    assert!(globals.contains("LogFormat: JSON"), "Globals.Function.LoggingConfig.LogFormat");
    let resources = resources(&template);
    let (_, dashboard) =
        resources.iter().find(|(name, _)| name == "Dashboard").expect("a Dashboard resource");
    let body = dashboard.join("\n");
    let shown: BTreeSet<String> = body
        .split("[\"ringledger\", \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect();
    let counted: BTreeSet<String> = messaging::metrics::ALL.iter().map(|m| m.to_string()).collect();
    assert_eq!(shown, counted, "dashboard metrics vs messaging::metrics::ALL");
    for dlq in of_type(&resources, "AWS::SQS::Queue")
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.contains("DeadLetter"))
    {
        assert!(body.contains(&format!("${{{dlq}.QueueName}}")), "{dlq} is not on the dashboard");
    }
}
