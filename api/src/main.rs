//! `clawdspaced`: the Clawdspace REST daemon.

mod auth;
mod bandwidth;
mod body;
mod config;
mod drops;
mod error;
mod format;
mod history;
mod input;
mod metrics;
mod model;
mod nodes;
mod openapi;
mod routes;
mod server;
mod sleep;
mod stream;
mod template;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tower::Layer;

use clawdspace_runtime::audit::AuditLog;
use clawdspace_runtime::Runtime;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The runtime.
    pub rt: Runtime,
    /// Daemon configuration.
    pub config: Arc<config::Config>,
    /// The API key.
    pub key: Arc<str>,
    /// The other servers of the fleet.
    pub nodes: Arc<nodes::Nodes>,
    /// Preview links of ports.
    pub previews: Arc<clawdspace_runtime::previews::Previews>,
    /// Connection caps of the port proxy.
    pub port_limits: Arc<routes::ports::PortLimits>,
    /// Host-based preview routing (`CLAWDSPACE_PREVIEW_DOMAIN`), if set.
    pub preview_domain: Option<routes::preview_host::PreviewDomain>,
    /// Space templates.
    pub templates: Arc<clawdspace_runtime::templates::Templates>,
    /// No key asked for (`CLAWDSPACE_AUTH_DISABLED=true` on loopback).
    pub auth_disabled: bool,
    /// Cancelled at shutdown: ends the MCP sessions (their open streams).
    pub mcp_stop: tokio_util::sync::CancellationToken,
    /// The audit log: `st.audit.record(Some(space), AuditType::…, meta).await`
    /// after an action succeeded (see `clawdspace_runtime::audit`).
    pub audit: Arc<AuditLog>,
    /// Request figures for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

fn main() -> ExitCode {
    // Worker processes are this binary re-executed: serve and exit there.
    clawdspace_runtime::run_if_worker();
    clawdspace_runtime::host::limit_malloc_arenas();
    let config = config::Config::parse();
    if config.openapi {
        match serde_json::to_string_pretty(&openapi::document()) {
            Ok(s) => {
                println!("{s}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    use std::io::IsTerminal;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_ansi(colour)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("clawdspaced: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: config::Config) -> anyhow::Result<()> {
    // Reads or writes (fsynced) the key file: off the async threads.
    let (explicit, dir) = (config.api_key.clone(), config.state_dir.clone());
    let key = tokio::task::spawn_blocking(move || auth::resolve_key(explicit.as_deref(), &dir))
        .await?
        .with_context(|| format!("API key in {}", config.state_dir.display()))?;
    let (path, max) = (config.audit_path(), config.audit_max_bytes);
    let audit = tokio::task::spawn_blocking(move || AuditLog::open(&path, max))
        .await?
        .with_context(|| format!("audit log {}", config.audit_path().display()))?;
    let audit = Arc::new(audit);
    let runtime = Runtime::open(config.runtime())
        .await
        .context("opening the runtime")?;
    let addr = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    routes::dashboard::log_build();
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let interval = Duration::from_millis(config.sleep_interval_ms.max(10));
    tokio::spawn(sleep::run(runtime.clone(), audit.clone(), idle, interval));
    tokio::spawn(drops::run(
        runtime.clone(),
        audit.clone(),
        Duration::from_millis(config.drop_audit_ms),
    ));
    tokio::spawn(history::run(
        runtime.clone(),
        audit.clone(),
        Duration::from_millis(config.history_ingest_ms),
    ));
    tracing::info!(
        api = %format!("http://{addr}/api"),
        dashboard = %format!("http://{addr}/"),
        key_prefix = %key.chars().take(4).collect::<String>(),
        idle_timeout_min = config.idle_timeout_ms as f64 / 60_000.0,
        spaces = runtime.list().len(),
        "clawdspaced ready"
    );
    let key: Arc<str> = key.into();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let nodes = Arc::new(
        nodes::Nodes::new(config.nodes(&hostname), key.clone()).map_err(anyhow::Error::msg)?,
    );
    tokio::spawn(nodes.clone().run());
    let dir = config.state_dir.clone();
    let previews =
        tokio::task::spawn_blocking(move || clawdspace_runtime::previews::Previews::open(&dir))
            .await?
            .context("preview links")?;
    let (dir, gpu_image) = (config.state_dir.clone(), config.gpu_image.clone());
    let templates = tokio::task::spawn_blocking(move || {
        let t = clawdspace_runtime::templates::Templates::open(&dir)?;
        t.install_defaults(&gpu_image)?;
        Ok::<_, clawdspace_runtime::Error>(t)
    })
    .await?
    .context("templates")?;
    let auth_disabled = match config.auth_disabled() {
        None => false,
        Some(Ok(())) => {
            tracing::warn!(
                "authentication is disabled (CLAWDSPACE_AUTH_DISABLED=true, listening on loopback only)"
            );
            true
        }
        Some(Err(why)) => {
            tracing::error!("{why}");
            false
        }
    };
    let port_limits = Arc::new(routes::ports::PortLimits::new(
        usize::try_from(config.port_connections).unwrap_or(usize::MAX),
        config.port_bandwidth,
    ));
    port_limits.spawn_sweeper();
    let preview_domain = config
        .preview_domain
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(routes::preview_host::PreviewDomain::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("CLAWDSPACE_PREVIEW_DOMAIN: {e}"))?;
    let state = AppState {
        rt: runtime.clone(),
        config: Arc::new(config),
        key,
        nodes,
        previews: Arc::new(previews),
        port_limits,
        preview_domain,
        templates: Arc::new(templates),
        auth_disabled,
        mcp_stop: tokio_util::sync::CancellationToken::new(),
        audit: audit.clone(),
        metrics: Arc::new(metrics::Metrics::default()),
    };
    let mcp_stop = state.mcp_stop.clone();
    let limits = state.config.limits();
    // Preview hosts first: their paths belong to the space's server.
    let app = axum::middleware::from_fn_with_state(state.clone(), routes::preview_host::route)
        .layer(
            tower::util::MapRequestLayer::new(routes::trim_trailing_slash)
                .layer(routes::router(state)),
        );
    let stop = async move {
        shutdown().await;
        mcp_stop.cancel();
    };
    server::serve(listener, app, limits, stop).await;
    // Operations whose clients went away still run: let them finish.
    if runtime.wait_operations(Duration::from_secs(30)).await {
        // Init watchers stop, activity is saved, workers exit.
        runtime.close().await;
    } else {
        tracing::warn!(
            operations = runtime.operations_in_flight(),
            "shutting down with operations still running; the next start cleans up after them"
        );
        let rt = runtime.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || rt.flush()).await {
            tracing::error!("saving activity at shutdown: {e}");
        }
    }
    // Queued audit events are written and synced.
    let _ = tokio::task::spawn_blocking(move || audit.close()).await;
    tracing::info!("shutting down; spaces keep running");
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
