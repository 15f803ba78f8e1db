//! [`Proxy`]: a loopback TCP proxy between an operator and the API server, to cut its
//! connections or block it for a while in fault tests.
//!
//! # Expected flow
//!
//! Start one in front of the control plane ([`Proxy::start`]), give the operator a client
//! through it ([`Proxy::client`]), then [`cut`](Proxy::cut) every connection whenever the
//! test likes, or [`block`](Proxy::block) new ones for a while (a partition).
//!
//! # Guarantees
//!
//! - It listens on `127.0.0.1` only and connects only to the address it was given.
//! - Bytes pass through untouched (TLS included): the client still verifies the API
//!   server's certificate, which is valid for `127.0.0.1` whatever the port.
//! - Dropping it closes the listener and every connection it carries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use kube::Client;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::ControlPlane;

/// A loopback TCP proxy whose connections a test can cut.
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accepting: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// Bumped by every cut; each connection ends when it changes.
    cuts: watch::Sender<u64>,
    /// While set, new connections are closed at once.
    blocked: AtomicBool,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

impl Proxy {
    /// A proxy on a free loopback port that forwards to `target`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cuts: watch::channel(0).0,
            blocked: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let accepting = tokio::spawn(accept(listener, target, Arc::clone(&shared)));
        Ok(Proxy { address, shared, accepting })
    }

    /// A proxy in front of `control_plane`'s API server.
    ///
    /// # Errors
    ///
    /// When the server's address cannot be read or no port can be bound.
    pub async fn in_front_of(control_plane: &ControlPlane) -> std::io::Result<Proxy> {
        let target =
            control_plane.server().trim_start_matches("https://").parse().map_err(|_| {
                std::io::Error::other(format!("{} is not an address", control_plane.server()))
            })?;
        Self::start(target).await
    }

    /// A client of `control_plane`, with its admin identity, whose every request goes through
    /// this proxy.
    ///
    /// # Errors
    ///
    /// When the kubeconfig is not usable.
    pub async fn client(&self, control_plane: &ControlPlane) -> Result<Client, crate::Error> {
        let mut config = control_plane.config().await?;
        config.cluster_url = format!("https://{}", self.address).parse().expect("a loopback URL is valid");
        Client::try_from(config).map_err(|source| crate::Error::Kubeconfig {
            path: control_plane.kubeconfig_path().display().to_string(),
            source: Box::new(source),
        })
    }

    /// Writes a kubeconfig like `control_plane`'s, with its admin identity, that goes through
    /// this proxy: for an operator run as a process. Readable by the owner only.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_kubeconfig(
        &self,
        control_plane: &ControlPlane,
        path: &std::path::Path,
    ) -> std::io::Result<()> {
        let kubeconfig =
            control_plane.kubeconfig().replace(control_plane.server(), &format!("https://{}", self.address));
        crate::control_plane::write_private(path, &kubeconfig)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every connection it carries now; new ones are accepted as before.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Cuts every connection, and closes new ones at once, until [`unblock`](Proxy::unblock).
    pub fn block(&self) {
        self.shared.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Accepts connections again after [`block`](Proxy::block).
    pub fn unblock(&self) {
        self.shared.blocked.store(false, Ordering::SeqCst);
    }

    /// How many connections it has accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        // Every connection ends with the cut; none outlives the proxy.
        self.cut();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if shared.blocked.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let mut cut = shared.cuts.subscribe();
        cut.mark_unchanged();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
            let mut inbound = inbound;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[tokio::test]
    async fn bytes_pass_through_until_a_cut_and_a_block_refuses_new_connections() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();

        let mut client = TcpStream::connect(proxy.address()).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut answer = [0; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");

        proxy.cut();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), client.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the cut closed the connection: {read:?}");

        proxy.block();
        let mut blocked = TcpStream::connect(proxy.address()).await.unwrap();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), blocked.read(&mut answer)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a blocked proxy closes new connections: {read:?}");
        proxy.unblock();
        assert_eq!(proxy.accepted(), 2);
    }
}
