//! `convo-local`: every convo function in one process, on embedded defaults.
//!
//! `convo-local serve` (the default) hosts the HTTP functions behind an API
//! Gateway stand-in, feeds the queue workers from durable embedded queues,
//! and runs the sweeper on a timer. `convo-local token --sub alice` mints a
//! token the server accepts.

mod auth;
mod aws_mode;
mod cli;
mod commands;
mod console;
mod cors;
#[cfg(test)]
mod event_props;
mod gateway;
mod oidc;
mod pollers;
mod runtime;
mod webhook_secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use cli::*;
use commands::*;
use convo_domain::titles::ExtractiveTitler;
use convo_domain::{Config, Deps, SystemClock, UlidSource};
use convo_embedded::{EmbeddedQueue, EmbeddedStore, QueueKind, open_database};
use pollers::{EmbeddedSource, Source};
use runtime::*;
use tokio::sync::watch;

fn duration(flag: &str, raw: &str) -> Result<chrono::Duration, String> {
    convo_schema::validate::duration(flag, raw).map_err(|e| format!("--{flag}: {}", e.message))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Token(t)) => token(t),
        Some(Command::Serve(s)) => serve(s),
        Some(Command::InitAws(a)) => init_aws(a),
        Some(Command::Manifest) => manifest(),
        Some(Command::Console(c)) => export_console(c),
        Some(Command::Openapi) => write_out(&convo_http::openapi::document_json()),
        None => serve(cli.serve),
    };
    if let Err(e) = result {
        eprintln!("convo-local: {e}");
        std::process::exit(1);
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    init_tracing(&args.log_format);
    let sweep_every = duration("sweep-interval", &args.sweep_interval)?
        .to_std()
        .map_err(|e| e.to_string())?;
    if args.dev_sign_in && !args.addr.ip().is_loopback() {
        return Err(format!(
            "--dev-sign-in lets anyone act as any owner: it is refused on {} (use a loopback address)",
            args.addr
        ));
    }
    let (secret, origin) = auth::load_or_create_secret(&args.data_dir)?;
    // The token command for this data directory: its JWT secret is there.
    let token_command = if args.data_dir == Path::new("./.convo") {
        "convo-local token --sub alice".to_string()
    } else {
        format!("convo-local token --sub alice --data-dir {}", args.data_dir.display())
    };
    let mut console_config = console::ConsoleConfig {
        api_url: String::new(),
        dev_sign_in: args.dev_sign_in,
        oidc: None,
        token_hint: Some(token_command.clone()),
    };
    let dev_secret = args.dev_sign_in.then(|| secret.clone());
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let data_dir = args.data_dir.clone();
    let on_disk = !args.in_memory && !args.aws;
    let served = tokio_rt.block_on(async move {
        let rt = if args.aws {
            on_aws(&args).await?
        } else {
            embedded(&args)?
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..args.write_workers.max(1) {
            tasks.push(tokio::spawn(pollers::poll(
                rt.writes.clone(),
                rt.plain.clone(),
                |deps, event| async move { persist_writes::handle(&deps, event).await },
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(pollers::poll(
            rt.titles.clone(),
            rt.deps.clone(),
            |deps, event| async move { generate_title::handle(&deps, event).await },
            stop_rx.clone(),
        )));
        let (events_to, destination) = publisher(&args).await?;
        // In AWS mode with no bus named, the events stay on the events queue
        // for the deployment's publish-events (this process must not take
        // them off it).
        if let Some(events_to) = events_to {
            tasks.push(tokio::spawn(pollers::poll(
                rt.events.clone(),
                rt.plain.clone(),
                move |deps, event| {
                    let to = events_to.clone();
                    async move { publish_events::handle(to.as_ref(), deps.metrics.as_ref(), event).await }
                },
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(pollers::sweep_on_timer(
            rt.plain.clone(),
            sweep_every,
            stop_rx.clone(),
        )));

        let mut verifier = auth::Verifier::new(&secret);
        if let Some(issuer) = &args.jwt_issuer {
            let (v, discovery) = oidc::IssuerVerifier::discover(issuer, args.jwt_audience.clone())
                .await
                .map_err(|e| format!("--jwt-issuer: {e}"))?;
            let v = Arc::new(v);
            verifier.issuer = Some(v.clone());
            let client_id = args
                .console_client_id
                .clone()
                .or_else(|| args.jwt_audience.first().cloned())
                .unwrap_or_default();
            console_config.oidc = Some(console::Oidc {
                authorize_url: discovery.authorization_endpoint.clone(),
                token_url: discovery.token_endpoint.clone(),
                client_id,
                scope: "openid email".into(),
                logout_url: None,
                token_field: args.console_token.clone(),
            });
            console_config.validate()?;
            tracing::info!(issuer = %discovery.issuer, "accepting tokens of the issuer too");
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(oidc::KEYS_REFRESH) => v.refresh().await,
                        _ = stop.changed() => break,
                    }
                }
            }));
        }
        let gw = Arc::new(gateway::Gateway {
            deps: rt.deps.clone(),
            verifier,
            cors: cors::Cors::new(&args.cors_origin)?,
        });
        let app = console::router(console_config, dev_secret)
            .fallback(move |req: axum::extract::Request| gateway::serve_request(gw.clone(), req));
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let storage = rt.storage.clone();
        tracing::info!(%addr, storage = %storage, jwt_secret = origin, "convo-local listening");
        println!("convo-local listening on http://{addr} (data: {storage}; JWT secret: {origin})");
        println!("console: http://{addr}/");
        println!("events: {destination}");
        if args.dev_sign_in {
            println!("development sign-in is on: the console signs in as any owner without a token");
        }
        println!("get a token: {token_command}");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    });
    // Every task, and with them every handle of the database, goes with the
    // runtime; then the file is compacted, so that nothing erased stays in
    // its freed pages (README, "Erasure").
    drop(tokio_rt);
    if served.is_ok() && on_disk {
        match convo_embedded::compact_database(&data_dir) {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not compact the database after the stop"),
        }
    }
    tracing::info!("convo-local stopped");
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
