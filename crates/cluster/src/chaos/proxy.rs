//! A TCP proxy in front of the collector that, when told to, holds every answer the
//! collector sends for a while before passing it on: a slow collector, as nodes see it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy's switch: milliseconds each answer is held (0: none), and how many answers
/// were held.
#[derive(Clone, Default)]
pub(super) struct Delay(Arc<(AtomicU64, AtomicU64)>);

impl Delay {
    /// Holds every answer from now on for `by`.
    pub(super) fn set(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.0.store(ms, Ordering::Relaxed);
    }

    /// Answers held so far.
    pub(super) fn held(&self) -> u64 {
        self.0.1.load(Ordering::Relaxed)
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.0.0.load(Ordering::Relaxed))
    }
}

/// Starts a proxy on a port of `ip` for `upstream` (`http://127.0.0.1:PORT`); returns its
/// URL.
pub(super) fn start(
    runtime: &tokio::runtime::Runtime,
    ip: &str,
    upstream: &str,
    delay: Delay,
) -> anyhow::Result<String> {
    let target = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = runtime.block_on(tokio::net::TcpListener::bind((ip, 0)))?;
    let url = format!("http://{}", listener.local_addr()?);
    runtime.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, delay) = (target.clone(), delay.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let hold = delay.get();
                    if !hold.is_zero() {
                        delay.0.1.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(hold).await;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    Ok(url)
}
