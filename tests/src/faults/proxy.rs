//! A loopback TCP proxy the fault suite controls: services are pointed at its port instead of
//! the server's, and the suite cuts, blackholes and restores the network between them.
//!
//! - [`Mode::Pass`]: bytes flow both ways.
//! - [`Mode::Cut`]: every open connection is closed at once and new ones are closed on accept,
//!   as when a link or a firewall drops the route (clients see resets and refused requests).
//! - [`Mode::Blackhole`]: connections stay open but nothing moves either way, and new
//!   connections are accepted but not forwarded, as with a partition that drops packets
//!   (clients see timeouts). Restoring lets held bytes through, as TCP's retransmission would.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Cut,
    Blackhole,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mode = modes.subscribe();
                if *mode.borrow() == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, upstream, mode));
            }
        });
        Ok(Self { addr, mode, task })
    }

    /// Switches the proxy's behaviour for open and new connections.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections see the sender go and close.
        self.mode.send_replace(Mode::Cut);
    }
}

/// Waits while the proxy blackholes; `false` when the connection must close (cut, or the
/// proxy is gone).
async fn wait_passable(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Pass => return true,
            Mode::Cut => return false,
            Mode::Blackhole => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A connection opened during a blackhole waits, unforwarded, like a SYN into the void.
    if !wait_passable(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // When either direction ends (EOF, error, cut), the whole connection closes.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone()) => {}
        () = pump(server_read, client_write, mode) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !wait_passable(&mut mode).await {
            return;
        }
        tokio::select! {
            read = from.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Bytes read just before a blackhole are held until it lifts.
                if !wait_passable(&mut mode).await || to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, within: std::time::Duration) -> Option<Vec<u8>> {
        stream.write_all(b"ping").await.ok()?;
        let mut b = [0u8; 4];
        match tokio::time::timeout(within, stream.read_exact(&mut b)).await {
            Ok(Ok(_)) => Some(b.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_cuts_blackholes_and_restores() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let short = std::time::Duration::from_millis(300);
        let long = std::time::Duration::from_secs(5);
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut stream, long).await.unwrap(), b"ping");

        // A blackhole holds the bytes; restoring delivers them on the same connection.
        proxy.set(Mode::Blackhole);
        assert_eq!(round_trip(&mut stream, short).await, None);
        proxy.set(Mode::Pass);
        let mut b = [0u8; 4];
        tokio::time::timeout(long, stream.read_exact(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b, b"ping");

        // A cut closes the open connection and refuses new ones until restored.
        proxy.set(Mode::Cut);
        let mut b = [0u8; 4];
        let closed = tokio::time::timeout(long, stream.read(&mut b))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut fresh, short).await, None);
        proxy.set(Mode::Pass);
        let mut again = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut again, long).await.unwrap(), b"ping");
    }
}
