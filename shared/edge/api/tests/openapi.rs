//! The OpenAPI document and the routers agree: same routes both ways, each really routed, and
//! the same query parameters.

mod common;

use std::collections::BTreeSet;

use api::app::{query_parameters, OPENAPI, ROUTES};
use common::{Mode, TestApp};

fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[test]
fn the_document_lists_exactly_the_routes_the_routers_serve() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .chain([&api::authorization::ROUTE])
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let documented = documented();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "routes missing from openapi.json: {missing:?}");
    assert!(extra.is_empty(), "openapi.json documents routes nobody serves: {extra:?}");
}

#[test]
fn every_documented_operation_has_responses_and_every_body_schema_resolves() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let text = operation.to_string();
            for reference in text.split("#/components/schemas/").skip(1) {
                let name: String = reference.chars().take_while(|c| c.is_alphanumeric()).collect();
                assert!(schemas.contains_key(&name), "{method} {path} refers to missing {name}");
            }
        }
    }
}

#[test]
fn every_operation_documents_exactly_the_query_parameters_its_route_takes() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let documented: BTreeSet<&str> = parameters
                .iter()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str())
                .collect();
            let taken: BTreeSet<&str> = query_parameters(method, path).iter().copied().collect();
            assert_eq!(documented, taken, "{method} {path}");
        }
    }
}

#[test]
fn the_document_says_activity_ranges_are_from_included_to_excluded() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    for path in ["/v1/activity", "/v1/activity.csv"] {
        let operation = &doc["paths"][path]["get"];
        assert!(operation["description"].as_str().unwrap().contains("[from, to)"), "{path}");
        for parameter in operation["parameters"].as_array().unwrap() {
            let description = parameter["description"].as_str().unwrap_or_default();
            match parameter["name"].as_str() {
                Some("from") => assert!(description.contains("included"), "{path}"),
                Some("to") => assert!(description.contains("excluded"), "{path}"),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn every_route_in_the_table_is_routed_and_the_document_is_served() {
    let app = TestApp::new(Mode::InProcess).await;
    let admin = app.admin("acme");
    let operator = app.operator();
    for (method, path) in ROUTES {
        let concrete = path.replace("{card_id}", "pm_x").replace("{account_id}", "acme");
        let token = if path.starts_with("/v1/operator") { &operator } else { &admin };
        let reply = app.call(method, &concrete, Some(token), &[], Some("{}")).await;
        assert_ne!(reply.status.as_u16(), 405, "{method} {path}");
        assert_ne!(reply.json["code"], "no_route", "{method} {path} is not routed");
    }
    let unknown = app.call("GET", "/v1/nothing-here", Some(&admin), &[], None).await;
    assert_eq!(unknown.json["code"], "no_route");
    let served = app.call("GET", "/openapi.json", None, &[], None).await;
    assert_eq!(served.status.as_u16(), 200);
    assert_eq!(served.text, OPENAPI);
}
