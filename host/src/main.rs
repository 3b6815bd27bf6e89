//! The `ioplex` binary: with no arguments it serves the embedded default (one node, in-memory adapter,
//! every namespace open, the client contract) on 0.0.0.0:3000. Each command lives in [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, LogFormat, PluginCommand};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let ok = match cli.command {
        Some(Command::Plugin(command)) => {
            cli::init_tracing(LogFormat::Text);
            match command {
                PluginCommand::Check {
                    file,
                    manifest,
                    trusted_keys,
                } => cli::plugin_check::check_plugin(
                    &file,
                    manifest.as_deref(),
                    trusted_keys.unwrap_or_default(),
                )?,
                PluginCommand::Compile {
                    file,
                    manifest,
                    signing_key,
                    output,
                } => cli::plugin_compile::compile(
                    &file,
                    manifest.as_deref(),
                    &signing_key,
                    output.as_deref(),
                )?,
                PluginCommand::Keygen { file } => cli::plugin_compile::keygen(&file)?,
            }
        }
        Some(Command::Tenants {
            plugin_trusted_keys,
            config,
            plugins_dir,
            url,
        }) => {
            cli::init_tracing(LogFormat::Text);
            cli::tenants::run(
                config.as_deref(),
                plugins_dir.as_deref(),
                url.as_deref(),
                plugin_trusted_keys.unwrap_or_default(),
            )
            .await?
        }
        Some(Command::Serve(args)) => serve(*args).await?,
        None => serve(cli.serve).await?,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(args: cli::ServeArgs) -> anyhow::Result<bool> {
    cli::init_tracing(args.log_format);
    cli::serve::run(args).await?;
    Ok(true)
}
