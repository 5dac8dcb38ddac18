//! The subcommands other than `serve`: a token, the console's export, the
//! AWS resources' initialisation, the Lambda manifest.

use super::*;

pub(crate) fn token(args: TokenArgs) -> Result<(), String> {
    validate_owner(&args.sub)?;
    let ttl = duration("ttl", &args.ttl)?;
    let (secret, _) = auth::load_or_create_secret(&args.data_dir)?;
    write_out(&format!("{}\n", auth::mint(&secret, &args.sub, ttl.num_seconds())?))
}

/// Writes a command's output. A reader that closed the pipe early
/// (`convo-local manifest | head`) ends the output quietly: `println!`
/// would panic on the broken pipe.
pub(crate) fn write_out(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write the output: {e}")),
        _ => Ok(()),
    }
}

pub(crate) fn export_console(args: ConsoleArgs) -> Result<(), String> {
    let oidc = match (
        &args.cognito_domain,
        &args.oidc_authorize_url,
        &args.oidc_token_url,
        &args.client_id,
    ) {
        (Some(domain), _, _, Some(client)) => Some(console::Oidc {
            scope: args.scope.clone(),
            ..console::Oidc::cognito(domain, client)
        }),
        (None, Some(authorize), Some(token), Some(client)) => Some(console::Oidc {
            authorize_url: authorize.clone(),
            token_url: token.clone(),
            client_id: client.clone(),
            scope: args.scope.clone(),
            logout_url: None,
            token_field: args.token_field.clone(),
        }),
        _ => None,
    };
    let config = console::ConsoleConfig {
        api_url: args.api_url.trim_end_matches('/').to_string(),
        dev_sign_in: false,
        oidc,
        token_hint: None,
    };
    let csp = console::export(&args.out, &config)?;
    println!("{csp}");
    Ok(())
}

pub(crate) fn init_aws(args: InitArgs) -> Result<(), String> {
    convo_schema::validate::id("prefix", &args.prefix).map_err(|e| e.message)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let visibility = duration("visibility-timeout", &args.visibility_timeout)?.num_seconds() as u32;
    rt.block_on(aws_mode::init(&args.prefix, visibility))
}

pub(crate) fn manifest() -> Result<(), String> {
    use convo_aws::{AwsSettings, resources};
    // Names for the stack/prefix "{prefix}": the template names its
    // resources after the stack the same way.
    let prefix = "{prefix}";
    let routes: Vec<_> = gateway::ROUTES
        .iter()
        .map(|(method, path, function, auth)| {
            serde_json::json!({"method": method, "path": path, "function": function.package(), "auth": auth})
        })
        .collect();
    let manifest = serde_json::json!({
        "table": {"name": aws_mode::names(prefix).table, "properties": resources::table_cloudformation()},
        "keyTable": {"name": resources::keys_table_name(prefix), "properties": resources::keys_table_cloudformation()},
        "queues": {
            "writes": resources::writes_queue(prefix).cloudformation(),
            "titles": resources::titles_queue(prefix).cloudformation(),
            "events": resources::events_queue(prefix).cloudformation(),
        },
        "routes": routes,
        "environment": {"required": AwsSettings::REQUIRED_ENV, "optional": AwsSettings::OPTIONAL_ENV},
        "eventSourceBatchSize": pollers::BATCH_SIZE,
    });
    write_out(&format!(
        "{}\n",
        serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?
    ))
}

pub(crate) fn validate_owner(sub: &str) -> Result<(), String> {
    convo_schema::validate::id("sub", sub).map_err(|e| e.message)
}
