//! `plugins` scenario: what a tenant plugin costs on the request path, measured in-process on the
//! gateway's own runtime (warm instances, the same chain the gateway calls), and how long a reload takes
//! from new bytes to serving while another thread keeps calling.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use hdrhistogram::Histogram;
use ioplex::plugin::{
    LoadedPlugin, PluginManifest, PluginRuntime, PluginSource, WasmEngineOptions, types,
};

const SECRET: &str = "bench-secret";

fn read(dist: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dist.join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| {
        format!(
            "{}: build the plugins first (plugins/build)",
            path.display()
        )
    })
}

fn socket(data_json: &str) -> types::SocketInfo {
    types::SocketInfo {
        tenant: "bench".into(),
        namespace: "/".into(),
        id: "bench-socket-0000000".into(),
        user_id: Some("agent-1".into()),
        data_json: data_json.into(),
        rooms: vec!["company:acme".into()],
    }
}

/// A `message` event whose JSON arguments are 1 KiB: with `sensitive`, one listed word, one card
/// number and one e-mail address (every transform rewrites it), else plain text (every one passes it).
fn message_1k(sensitive: bool) -> types::ClientEvent {
    let mut text = if sensitive {
        "heck pay 4111 1111 1111 1111 and mail jo@example.com ".to_owned()
    } else {
        String::new()
    };
    while text.len() < 1024 - 40 {
        text.push_str("lorem ipsum ");
    }
    let args = serde_json::json!([{ "text": text, "at": 1_764_000_000_000u64 }]).to_string();
    types::ClientEvent {
        socket: socket("null"),
        body: types::EventBody {
            name: "message".into(),
            args_json: args,
            attachments: Vec::new(),
        },
        rooms: vec!["conversation:42".into()],
        wants_ack: true,
    }
}

struct Row {
    what: &'static str,
    plugin: &'static str,
    hist: Histogram<u64>,
    total: Duration,
}

fn measure<T>(
    what: &'static str,
    plugin: &'static str,
    iterations: usize,
    mut call: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Row> {
    for _ in 0..iterations / 10 {
        call()?; // warm-up: instances made, caches filled
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        call()?;
        hist.record(t.elapsed().as_nanos() as u64)?;
    }
    Ok(Row {
        what,
        plugin,
        hist,
        total: started.elapsed(),
    })
}

/// Warm `authorize-join` calls that must be allowed.
fn join_row(
    plugin_label: &'static str,
    plugin: &LoadedPlugin,
    request: &types::JoinRequest,
    iterations: usize,
) -> anyhow::Result<Row> {
    measure(
        "authorize-join",
        plugin_label,
        iterations,
        || match plugin.authorize_join(request)? {
            Ok(()) => Ok(()),
            Err(e) => bail!("{plugin_label} refused: {e}"),
        },
    )
}

/// Warm `transform-event` calls on a 1 KiB event the plugin rewrites, then on one it passes.
fn transform_rows(
    plugin_label: &'static str,
    plugin: &LoadedPlugin,
    rewritten: &types::ClientEvent,
    passed: &types::ClientEvent,
    iterations: usize,
) -> anyhow::Result<[Row; 2]> {
    let rewrite = measure(
        "transform-event, 1 KiB, rewritten",
        plugin_label,
        iterations,
        || match plugin.transform_event(rewritten)? {
            Ok(types::EventAction::Rewrite(_)) => Ok(()),
            other => bail!("{plugin_label} did not rewrite: {other:?}"),
        },
    )?;
    Ok([rewrite, pass_row(plugin_label, plugin, passed, iterations)?])
}

fn pass_row(
    plugin_label: &'static str,
    plugin: &LoadedPlugin,
    passed: &types::ClientEvent,
    iterations: usize,
) -> anyhow::Result<Row> {
    measure(
        "transform-event, 1 KiB, passed",
        plugin_label,
        iterations,
        || match plugin.transform_event(passed)? {
            Ok(types::EventAction::Pass) => Ok(()),
            other => bail!("{plugin_label} did not pass: {other:?}"),
        },
    )
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// One reload measurement: a plugin installed again and again into a runtime.
struct ReloadCase<'a> {
    label: &'static str,
    runtime: &'a Arc<PluginRuntime>,
    tenant: &'static str,
    name: &'static str,
    bytes: &'a [u8],
    manifest: PluginManifest,
    request: types::JoinRequest,
    times: usize,
}

/// Reloads `name` `times` times with `bytes` while a thread calls `authorize-join` about 10,000 times a
/// second (a busy tenant, not a thread spinning on a core the compiler needs); returns the reload
/// durations, the calls made and the calls that failed.
async fn reloads(case: ReloadCase<'_>) -> anyhow::Result<(Vec<Duration>, u64, u64)> {
    let ReloadCase {
        runtime,
        tenant,
        name,
        bytes,
        manifest,
        request,
        times,
        ..
    } = case;
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let caller = {
        let (runtime, stop, calls, failures) = (
            Arc::clone(runtime),
            Arc::clone(&stop),
            Arc::clone(&calls),
            Arc::clone(&failures),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let chain = runtime.slot(tenant).chain();
                if let Err(err) = chain.authorize_join(&request)
                    && failures.fetch_add(1, Ordering::Relaxed) < 3
                {
                    eprintln!("a call failed during a reload: {err:?}");
                }
                calls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let mut took = Vec::with_capacity(times);
    for i in 0..times {
        let mut manifest = manifest.clone();
        manifest.settings.insert("reload".into(), i.to_string());
        let started = Instant::now();
        runtime
            .install(tenant, name, bytes.to_vec(), manifest, PluginSource::Api)
            .await?;
        took.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    caller
        .join()
        .map_err(|_| anyhow::anyhow!("caller thread panicked"))?;
    Ok((
        took,
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    ))
}

/// Prints the tables and returns every row as a JSON object (for `--json`).
pub async fn run(
    dist: &Path,
    iterations: usize,
    reload_times: usize,
) -> anyhow::Result<Vec<serde_json::Value>> {
    ensure!(reload_times > 0, "--reloads must be at least 1");
    let cache = std::env::temp_dir().join(format!("ioplex-bench-cache-{}", std::process::id()));
    let result = run_inner(dist, iterations, reload_times, &cache).await;
    let _ = std::fs::remove_dir_all(&cache);
    result
}

async fn run_inner(
    dist: &Path,
    iterations: usize,
    reload_times: usize,
    cache: &Path,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let runtime = PluginRuntime::new(WasmEngineOptions {
        cache_dir: None,
        ..WasmEngineOptions::default()
    })?;
    let mut auth_manifest = PluginManifest::default();
    auth_manifest
        .settings
        .insert("secret".into(), SECRET.into());
    let (room_auth, redact, profanity, moderation) = (
        read(dist, "room_auth")?,
        read(dist, "redact")?,
        read(dist, "profanity")?,
        read(dist, "moderation")?,
    );
    let auth = runtime
        .install(
            "rust",
            "auth",
            room_auth.clone(),
            auth_manifest.clone(),
            PluginSource::Api,
        )
        .await?;
    let redactor = runtime
        .install(
            "rust",
            "redact",
            redact,
            PluginManifest::default(),
            PluginSource::Api,
        )
        .await?;
    let js = runtime
        .install(
            "js",
            "moderate",
            profanity.clone(),
            PluginManifest::default(),
            PluginSource::Api,
        )
        .await?;
    let python = runtime
        .install(
            "python",
            "moderation",
            moderation,
            PluginManifest::default(),
            PluginSource::Api,
        )
        .await?;

    let claims = r#"{"sub":"agent-1","company":"acme","conversations":["42"],"role":"agent"}"#;
    let join = types::JoinRequest {
        socket: socket(claims),
        room: "conversation:42".into(),
    };
    let event = message_1k(true);
    let plain = message_1k(false);
    let js_iterations = (iterations / 5).max(100);
    let mut rows = vec![join_row("Rust room-auth", &auth, &join, iterations)?];
    rows.extend(transform_rows(
        "Rust redact",
        &redactor,
        &event,
        &plain,
        iterations,
    )?);
    rows.push(join_row("JS moderate", &js, &join, js_iterations)?);
    rows.extend(transform_rows(
        "JS moderate",
        &js,
        &event,
        &plain,
        js_iterations,
    )?);
    rows.push(join_row(
        "Python moderation",
        &python,
        &join,
        js_iterations,
    )?);
    rows.push(pass_row(
        "Python moderation",
        &python,
        &plain,
        js_iterations,
    )?);

    let mut results = Vec::new();
    println!("| hook | plugin | calls | p50 µs | p99 µs | max µs | calls/s (one thread) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        results.push(serde_json::json!({
            "scenario": "plugin-hook",
            "hook": r.what,
            "plugin": r.plugin,
            "calls": r.hist.len(),
            "p50_us": us(r.hist.value_at_quantile(0.5)),
            "p99_us": us(r.hist.value_at_quantile(0.99)),
            "max_us": us(r.hist.max()),
            "calls_per_s": r.hist.len() as f64 / r.total.as_secs_f64(),
        }));
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.0} |",
            r.what,
            r.plugin,
            r.hist.len(),
            us(r.hist.value_at_quantile(0.5)),
            us(r.hist.value_at_quantile(0.99)),
            us(r.hist.max()),
            r.hist.len() as f64 / r.total.as_secs_f64(),
        );
    }

    println!();
    println!(
        "| reload (bytes → serving, another thread calling) | reloads | p50 ms | max ms | calls during | failed calls |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let cached = PluginRuntime::new(WasmEngineOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..WasmEngineOptions::default()
    })?;
    cached
        .install(
            "rust",
            "auth",
            room_auth.clone(),
            auth_manifest.clone(),
            PluginSource::Api,
        )
        .await?; // fills the compile cache
    let js_join = types::JoinRequest {
        socket: socket("null"),
        room: "lobby".into(),
    };
    let cases = [
        ReloadCase {
            label: "Rust room-auth, compiled",
            runtime: &runtime,
            tenant: "rust",
            name: "auth",
            bytes: &room_auth,
            manifest: auth_manifest.clone(),
            request: join.clone(),
            times: reload_times,
        },
        ReloadCase {
            label: "Rust room-auth, from the compile cache",
            runtime: &cached,
            tenant: "rust",
            name: "auth",
            bytes: &room_auth,
            manifest: auth_manifest.clone(),
            request: join.clone(),
            times: reload_times,
        },
        ReloadCase {
            label: "JS moderate, compiled",
            runtime: &runtime,
            tenant: "js",
            name: "moderate",
            bytes: &profanity,
            manifest: PluginManifest::default(),
            request: js_join,
            times: reload_times.div_ceil(3).max(1),
        },
    ];
    for case in cases {
        let label = case.label;
        let (mut took, calls, failures) = reloads(case).await?;
        took.sort();
        let p50_ms = took[took.len() / 2].as_secs_f64() * 1000.0;
        let max_ms = took[took.len() - 1].as_secs_f64() * 1000.0;
        results.push(serde_json::json!({
            "scenario": "plugin-reload",
            "case": label,
            "reloads": took.len(),
            "p50_ms": p50_ms,
            "max_ms": max_ms,
            "calls_during": calls,
            "failed_calls": failures,
        }));
        println!(
            "| {label} | {} | {:.1} | {:.1} | {calls} | {failures} |",
            took.len(),
            p50_ms,
            max_ms,
        );
        ensure!(
            failures == 0,
            "{failures} calls failed during reloads of {label}"
        );
    }
    Ok(results)
}
