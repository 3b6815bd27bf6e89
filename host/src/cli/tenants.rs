//! `ioplex tenants`: what a configuration defines, whether each plugin would be served, and with
//! `--url` what a running node holds now (from its `/status`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ioplex::plugin::{PRECOMPILED_EXTENSION, TrustedKeys};
use ioplex::status::NodeStatus;
use ioplex::tenant::TenantsConfig;

use super::plugin_check::{checking_runtime, read_manifest};

/// `ioplex tenants`: exit code 0 when the configuration and every plugin would be served.
pub async fn run(
    config: Option<&Path>,
    plugins_dir: Option<&Path>,
    url: Option<&str>,
    trusted_keys: TrustedKeys,
) -> anyhow::Result<bool> {
    let tenants = match config {
        Some(file) => match TenantsConfig::load(file) {
            Ok(c) => c,
            Err(err) => {
                println!("configuration refused: {err}");
                return Ok(false);
            }
        },
        None => TenantsConfig::implicit("socket.io", plugins_dir),
    };
    let live = match url {
        Some(url) => Some(fetch_status(url).await?),
        None => None,
    };
    let runtime = match plugins_dir {
        Some(_) => Some(checking_runtime(trusted_keys)?),
        None => None,
    };
    if let Some(live) = &live {
        for (key, cluster) in &live.clusters {
            let shards: Vec<String> = cluster
                .shards
                .iter()
                .map(|shard| match shard.held {
                    Some(held) => format!("{} {held}/{}", shard.server, shard.wanted),
                    None => format!("{} ?/{} (no answer)", shard.server, shard.wanted),
                })
                .collect();
            println!(
                "redis cluster {key}: {}, {} masters, {} lost since start; subscriptions held/wanted: {}",
                if cluster.connected {
                    "connected"
                } else {
                    "disconnected"
                },
                cluster.shards.len(),
                cluster.masters_lost,
                shards.join(", ")
            );
        }
    }
    let mut all_ok = true;
    for (id, t) in &tenants.tenants {
        let mut reached = Vec::new();
        if !t.hosts.is_empty() {
            reached.push(format!("hosts {}", t.hosts.join(", ")));
        }
        reached.push(format!("?tenant={}", t.query_value(id)));
        if t.default {
            reached.push("default".into());
        }
        println!("{id}: {}", reached.join("; "));
        let l = &t.limits;
        let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "  limits: connections {}, events/s {}, payload {}, rooms/socket {}; api keys: {}",
            show(l.max_connections.map(|v| v.to_string())),
            show(l.events_per_second.map(|v| v.to_string())),
            show(l.max_payload.map(|v| v.to_string())),
            show(l.max_rooms_per_socket.map(|v| v.to_string())),
            t.api_keys.len()
        );
        if let Some(live) = &live {
            let now = live.tenants.get(id).copied().unwrap_or_default();
            println!(
                "  live: {} websocket, {} polling connections",
                now.websocket, now.polling
            );
        }
        if let (Some(runtime), Some(dir)) = (&runtime, plugins_dir) {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(id))
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.retain(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("wasm" | PRECOMPILED_EXTENSION)
                )
            });
            files.sort();
            for file in files {
                let name = file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("?")
                    .to_owned();
                let verdict = (|| -> anyhow::Result<String> {
                    let manifest = read_manifest(&file, None)?;
                    let bytes = std::fs::read(&file)?;
                    let plugin = runtime.prepare(id, &name, &bytes, manifest)?;
                    let hooks: Vec<_> = plugin.hooks().iter().map(|h| h.name()).collect();
                    Ok(format!(
                        "ok ({}, {})",
                        plugin.context().version,
                        hooks.join(", ")
                    ))
                })();
                match verdict {
                    Ok(text) => println!("  plugin {name}: {text}"),
                    Err(err) => {
                        all_ok = false;
                        println!("  plugin {name}: refused: {err:#}");
                    }
                }
            }
        }
    }
    Ok(all_ok)
}

/// A running node's `/status`; `IOPLEX_METRICS_TOKEN` is sent as the bearer token when set.
async fn fetch_status(url: &str) -> anyhow::Result<NodeStatus> {
    let uri: http::Uri = format!("{}{}", url.trim_end_matches('/'), ioplex::status::PATH)
        .parse()
        .context("--url must be http://host:port")?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--url must be http://host:port"
    );
    let authority = uri
        .authority()
        .context("--url must be http://host:port")?
        .as_str()
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("cannot reach {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::get(ioplex::status::PATH).header(header::HOST, &authority);
    if let Ok(token) = std::env::var("IOPLEX_METRICS_TOKEN") {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status == StatusCode::OK,
        "{authority} answered {status} to {}: {}",
        ioplex::status::PATH,
        String::from_utf8_lossy(&body).trim()
    );
    serde_json::from_slice(&body)
        .with_context(|| format!("{authority} sent a status that is not ioplex's"))
}
