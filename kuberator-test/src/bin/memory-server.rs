//! Serves the in-memory API server over HTTPS on loopback in the foreground, writes its
//! kubeconfig, and stops on Ctrl-C: an API server in a process of its own, for `kubectl`,
//! for an operator run with `cargo run`, and for tests that measure an operator's process
//! apart from the server's.
//!
//! `cargo run -p kuberator-test --bin memory-server -- --kubeconfig PATH`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use kuberator_test::memory::MemoryServer;

const USAGE: &str = "usage: memory-server [--kubeconfig PATH] [--until-stdin-closes]

Serves Kuberator's in-memory API server (see kuberator_test::memory) over HTTPS on a free
loopback port, writes a kubeconfig for it to PATH (default ./kubeconfig; any bearer token is
accepted), prints that path on the first line of stdout, and stops on Ctrl-C, or, with
--until-stdin-closes, when its standard input closes (so that it goes with the process that
started it, however that process ends).";

struct Args {
    kubeconfig: PathBuf,
    until_stdin_closes: bool,
}

fn args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args { kubeconfig: PathBuf::from("kubeconfig"), until_stdin_closes: false };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig" => parsed.kubeconfig = args.next().ok_or("--kubeconfig needs a path")?.into(),
            "--until-stdin-closes" => parsed.until_stdin_closes = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(parsed)
}

/// Completes when standard input reaches its end or fails.
async fn stdin_closed() {
    use tokio::io::AsyncReadExt as _;
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0_u8; 64];
    while matches!(stdin.read(&mut buffer).await, Ok(read) if read > 0) {}
}

#[tokio::main]
async fn main() -> ExitCode {
    kuberator_test::init_tracing();
    let args = match args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{message}\n");
            }
            eprintln!("{USAGE}");
            return if message.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    let server = MemoryServer::new();
    let served = match server.serve().await {
        Ok(served) => served,
        Err(error) => {
            eprintln!("the in-memory server did not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = std::fs::write(&args.kubeconfig, served.kubeconfig()) {
        eprintln!("cannot write the kubeconfig to {}: {error}", args.kubeconfig.display());
        return ExitCode::FAILURE;
    }
    let path = std::fs::canonicalize(&args.kubeconfig).unwrap_or(args.kubeconfig);
    println!("{}", path.display());
    println!("# the in-memory API server is ready at {}", served.server());
    println!("# try: kubectl --kubeconfig {} get ns", path.display());
    println!("# Ctrl-C stops it.");
    if args.until_stdin_closes {
        tokio::select! {
            () = kuberator::shutdown::signal() => {}
            () = stdin_closed() => {}
        }
    } else {
        kuberator::shutdown::signal().await;
    }
    drop(served);
    let _ = std::fs::remove_file(&path);
    println!("# stopped; removed {}", path.display());
    ExitCode::SUCCESS
}
