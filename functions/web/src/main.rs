//! Lambda: the billing settings page (issue 14) behind the HTTP API, without an authorizer: the
//! portal session cookie (and each form's CSRF token) is the credential, checked here.

#[tokio::main]
async fn main() -> Result<(), runtime::Error> {
    runtime::run_web().await
}
