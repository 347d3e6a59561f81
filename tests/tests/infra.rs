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

#[test]
fn queues_outlast_their_consumers_and_dead_letter_after_five_tries() {
    let template = template();
    let timeout: u32 = template
        .lines()
        .find_map(|l| l.trim().strip_prefix("Timeout: "))
        .and_then(|t| t.parse().ok())
        .expect("a global function timeout");
    let visibilities: Vec<u32> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("VisibilityTimeout: "))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(visibilities.len(), 3, "usage, recharge and notifications queues");
    assert!(visibilities.iter().all(|v| *v >= 6 * timeout), "{visibilities:?} vs {timeout}");
    let receives: Vec<u32> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("maxReceiveCount: "))
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(receives.len(), 3);
    assert!(receives.iter().all(|r| *r >= 5), "{receives:?}");
    let sqs_events = template.matches("Type: SQS").count();
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
