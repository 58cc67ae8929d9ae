//! A TCP proxy that cuts its connections: between a test's clients and the server, it forwards
//! bytes in small pieces of random size (so that a cut often falls inside a WebSocket frame) and
//! ends every connection, in both directions at once with a TCP reset, after a random lifetime.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops when dropped.
pub struct CuttingProxy {
    pub addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    /// Forwards to `upstream`; each connection lives a random time in `lifetime` (milliseconds),
    /// drawn from `seed`.
    pub async fn start(upstream: SocketAddr, lifetime: Range<u64>, seed: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy addr");
        let cuts = Arc::new(AtomicU64::new(0));
        let counted = cuts.clone();
        let task = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let life = Duration::from_millis(rng.random_range(lifetime.clone()));
                let pieces = rng.random();
                let cuts = counted.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if tokio::time::timeout(life, pump(client, server, pieces))
                        .await
                        .is_err()
                    {
                        // The streams were dropped with the timed-out future, with SO_LINGER 0:
                        // both sides see a reset, wherever their frames were.
                        cuts.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        CuttingProxy { addr, cuts, task }
    }

    /// Connections cut so far (not counting those that ended by themselves).
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways in pieces of 1..=512 bytes until either side ends.
async fn pump(client: TcpStream, server: TcpStream, seed: u64) {
    for stream in [&client, &server] {
        // Deprecated because a positive linger blocks the dropping thread; a zero one does not
        // (the close sends a reset at once), and a reset is what this proxy is for.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        let _ = stream.set_nodelay(true);
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = copy_in_pieces(&mut client_read, &mut server_write, seed);
    let down = copy_in_pieces(&mut server_read, &mut client_write, seed.rotate_left(17));
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn copy_in_pieces(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let mut at = 0;
        while at < read {
            let piece = rng.random_range(1..=512).min(read - at);
            if to.write_all(&buffer[at..at + piece]).await.is_err() {
                return;
            }
            at += piece;
        }
    }
}
