//! `ioplex serve`: builds the gateway from its options (tenants, plugins, Redis, listeners) and serves
//! until SIGTERM or Ctrl-C, then drains.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ioplex::plugin::{FleetKey, PluginDir, PluginFleet, PluginRuntime};
use ioplex::serve::{Admission, Health, Readiness, Router, bind, serve};
use ioplex::tenant::{ConfigWatch, GatewayDefaults, Tenants, TenantsConfig};

use super::ServeArgs;
use super::plugin_check::plugin_engine_options;

/// Serves the gateway until a shutdown signal, then drains.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let plugins_dir = args.plugins_dir_or_default();
    let plugins = match &plugins_dir {
        Some(dir) => Some(load_plugins(dir, &args).await?),
        None => None,
    };
    let defaults = GatewayDefaults {
        engine: args.engine_config()?,
        socketio: args.socketio_config(),
        contract: args.contract_config(),
        redis: args.redis_config(),
        cluster: args.cluster_config(),
        redis_key: args.redis_key.clone(),
        plugins: plugins.clone(),
    };
    let path = defaults.engine.path.clone();
    let tenants_config = match &args.config {
        Some(file) => TenantsConfig::load(file)
            .with_context(|| format!("cannot use the configuration {}", file.display()))?,
        None => TenantsConfig::implicit(&args.redis_key, plugins_dir.as_deref()),
    };
    let tenants = Tenants::start(defaults, &tenants_config).await?;
    let plugin_fleet = match &plugins {
        Some(runtime) => start_plugin_fleet(&args, runtime, &tenants).await?,
        None => None,
    };
    if let Some(file) = &args.config {
        ConfigWatch::new(file.clone(), tenants_config, &tenants).spawn(Duration::from_secs(1));
    }
    let mode = match (&args.config, &args.redis_url, &args.redis_cluster_nodes) {
        (Some(_), _, _) => "tenants from configuration",
        (None, Some(_), _) => "fleet: Redis adapter",
        (None, None, Some(_)) => "fleet: sharded Redis Cluster adapter",
        (None, None, None) => "embedded default: single node, in-memory adapter",
    };

    let listeners = bind(args.host, args.port)
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let ids: Vec<String> = tenants.all().iter().map(|t| t.id().to_owned()).collect();
    for addr in listeners.iter().filter_map(|l| l.local_addr().ok()) {
        tracing::info!(%addr, %path, mode, tenants = ?ids, "ioplex listening");
    }
    let admission = Admission::new(args.listener_limits());
    let health = Health::new(Some(readiness(&tenants)));
    let mut router =
        Router::with_endpoints(Arc::clone(&tenants) as Arc<dyn ioplex::engineio::Endpoints>)
            .with_admission(Arc::clone(&admission))
            .with_handler(
                "/metrics",
                ioplex::metrics::handler(
                    Arc::clone(&tenants),
                    plugins.clone(),
                    Arc::clone(admission.stats()),
                    health.clone(),
                    args.metrics_token.clone(),
                ),
            )
            .with_handler(
                ioplex::status::PATH,
                ioplex::status::handler(Arc::clone(&tenants), args.metrics_token.clone()),
            )
            .with_health(health)
            .with_handler(
                ioplex::api::PREFIX,
                ioplex::api::handler(tenants, plugins, plugin_fleet),
            )
            .with_shutdown_grace(Duration::from_millis(args.shutdown_grace));
    if let Some(dir) = args.static_dir.clone() {
        router = router.with_fallback(ioplex::static_files::handler(dir));
    }
    serve(listeners, router, shutdown_signal()).await?;
    tracing::info!("ioplex stopped");
    Ok(())
}

/// The plugin runtime, with the directory's plugins installed and watched.
async fn load_plugins(dir: &Path, args: &ServeArgs) -> anyhow::Result<Arc<PluginRuntime>> {
    let runtime = PluginRuntime::new(plugin_engine_options(
        args.plugin_cache_dir.as_deref(),
        args.plugin_trusted_keys.clone().unwrap_or_default(),
    ))?;
    let mut source = PluginDir::new(dir.to_path_buf(), Arc::clone(&runtime));
    let report = source.scan().await;
    tracing::info!(
        dir = %dir.display(),
        serving = report.installed.len(),
        refused = report.refused.len(),
        "plugins loaded"
    );
    source.watch(Duration::from_millis(args.plugins_poll.max(50)));
    Ok(runtime)
}

/// Uploaded plugins travel to every node through the gateway's Redis, signed with the fleet key.
async fn start_plugin_fleet(
    args: &ServeArgs,
    runtime: &Arc<PluginRuntime>,
    tenants: &Arc<Tenants>,
) -> anyhow::Result<Option<Arc<PluginFleet>>> {
    let Some(url) = &args.redis_url else {
        return Ok(None);
    };
    let Some(key) = &args.fleet_key else {
        tracing::warn!(
            "no IOPLEX_FLEET_KEY: plugin uploads serve on the receiving node only (set the same key on every node to share them through Redis)"
        );
        return Ok(None);
    };
    let key = FleetKey::new(key).context("IOPLEX_FLEET_KEY")?;
    let known = Arc::clone(tenants);
    let tenant_exists: ioplex::plugin::TenantExists =
        Arc::new(move |id: &str| known.get(id).is_some());
    Ok(Some(
        PluginFleet::start(
            url,
            &args.redis_key,
            Arc::clone(runtime),
            key,
            tenant_exists,
        )
        .await?,
    ))
}

/// `/readyz`: ready while every Redis (and Redis Cluster) the tenants use is connected.
fn readiness(tenants: &Arc<Tenants>) -> Readiness {
    let tenants = Arc::clone(tenants);
    Arc::new(move || {
        let redis = tenants.redis_buses();
        let clusters = tenants.cluster_buses();
        let streams = tenants.streams_buses();
        if redis.iter().all(|(_, bus)| bus.is_connected())
            && clusters.iter().all(|(_, bus)| bus.is_connected())
            && streams.iter().all(|(_, bus)| bus.is_connected())
        {
            Ok(())
        } else {
            Err("Redis unreachable: serving local clients only, reconnecting".into())
        }
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
