//! Request bodies: parsed strictly, with errors that name the field.

use axum::body::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parse a JSON body into `T` (whose types validate themselves); unknown fields, wrong types,
/// bad amounts and malformed JSON become a 400 naming the field.
pub fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => {
            deserializer.end().map_err(|e| {
                ApiError::bad_request("invalid_json", format!("trailing data after JSON: {e}"))
            })?;
            Ok(value)
        }
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let code =
                if inner.is_syntax() || inner.is_eof() { "invalid_json" } else { "invalid_field" };
            let mut api = ApiError::bad_request(code, inner.to_string());
            if path != "." && !path.is_empty() {
                api = api.on_field(path);
            }
            Err(api)
        }
    }
}
