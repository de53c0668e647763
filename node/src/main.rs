//! `valori-node`: runs a Valori server. See `valori-node --help`.

use clap::Parser;
use valori_node::Config;

fn main() {
    let config = Config::parse();
    let telemetry = match valori_node::telemetry::Telemetry::init(&config.log) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("valori-node: telemetry: {e:#}");
            std::process::exit(1);
        }
    };
    let result = run(config);
    telemetry.shutdown();
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("valori-node: {e:#}");
        std::process::exit(1);
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = valori_node::open_engine(&config)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((config.http_addr, config.http_port)).await?;
        let addr = listener.local_addr()?;
        let grpc = if config.no_grpc {
            None
        } else {
            Some(tokio::net::TcpListener::bind((config.http_addr, config.grpc_port)).await?)
        };
        // Tests and scripts read these lines to learn the ports (useful with port 0).
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(g) = &grpc {
            println!(
                "valori-node gRPC listening on {scheme}://{}",
                g.local_addr()?
            );
        }
        println!("valori-node listening on {scheme}://{addr}");
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
        valori_node::serve(&config, engine, listener, grpc, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
