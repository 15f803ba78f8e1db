//! Starts a real kube-apiserver, etcd and kube-controller-manager (garbage collector and
//! namespace controller) in the foreground, writes their kubeconfig, and stops them on Ctrl-C.
//!
//! `cargo run -p kuberator-test --bin control-plane -- --kubeconfig PATH`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use kuberator_test::ControlPlane;

const USAGE: &str = "usage: control-plane [--kubeconfig PATH]

Starts kube-apiserver, etcd and kube-controller-manager (its garbage collector and namespace
controller only) on loopback, building them first if needed (a cold build takes 10 to 20
minutes), writes a kubeconfig for an admin user to PATH (default ./kubeconfig), and stops
them on Ctrl-C.";

fn kubeconfig_path() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let mut path = PathBuf::from("kubeconfig");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kubeconfig" => path = args.next().ok_or("--kubeconfig needs a path")?.into(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> ExitCode {
    kuberator_test::init_tracing();
    let path = match kubeconfig_path() {
        Ok(path) => path,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{message}\n");
            }
            eprintln!("{USAGE}");
            return if message.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
    };
    // An existing cluster in KUBERATOR_TEST_KUBECONFIG would make this a no-op; be explicit.
    if std::env::var_os(kuberator_test::KUBECONFIG_ENV).is_some() {
        eprintln!(
            "{} is set: this command starts a control plane of its own; unset it",
            kuberator_test::KUBECONFIG_ENV
        );
        return ExitCode::from(2);
    }
    let control_plane = match ControlPlane::start().await {
        Ok(control_plane) => control_plane,
        Err(error) => {
            eprintln!("the control plane did not start: {}", report(&error));
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = control_plane.write_kubeconfig(&path) {
        eprintln!("{}", report(&error));
        return ExitCode::FAILURE;
    }
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    println!("{}", control_plane.kubeconfig());
    println!("# kube-apiserver is ready at {}", control_plane.server());
    println!("# kubeconfig written to {}", path.display());
    let kubectl = control_plane.kubectl().map_or_else(|| "kubectl".into(), |p| p.display().to_string());
    println!("# try: {kubectl} --kubeconfig {} get ns", path.display());
    println!("# Ctrl-C stops it.");
    kuberator::shutdown::signal().await;
    control_plane.stop();
    let _ = std::fs::remove_file(&path);
    println!("# stopped; removed {}", path.display());
    ExitCode::SUCCESS
}

fn report(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}
