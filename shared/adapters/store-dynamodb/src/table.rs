//! Table creation for tests and the ops tooling, and client construction.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;

use ledger::StoreError;

use crate::errors::classify;

/// A client for `endpoint` (DynamoDB Local) or, with `None`, for the AWS environment.
pub async fn client_for_endpoint(endpoint: Option<&str>) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}

/// Create the single table (on-demand, `pk`/`sk` strings) if it does not exist yet.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let result = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(error)
            if error.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(error) => Err(classify(error)),
    }
}

pub async fn delete_table(client: &Client, table: &str) -> Result<(), StoreError> {
    client.delete_table().table_name(table).send().await.map_err(classify)?;
    Ok(())
}
