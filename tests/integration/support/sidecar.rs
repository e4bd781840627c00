//! The sidecar under test, on its own thread and runtime, so a test may block
//! (running `dig`, sleeping) without starving the server it is testing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;

use dns_sidecar::config::Config;
use std::sync::Arc;

use dns_sidecar::Shared;
use dns_sidecar::{Listeners, RunError};

pub struct Sidecar {
    pub dns: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    reload: tokio::sync::mpsc::UnboundedSender<(Config, mpsc::Sender<Result<(), String>>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sidecar {
    /// Parses `text`, binds its listeners and starts serving.
    pub fn start(text: &str) -> Result<Sidecar, RunError> {
        let config = parse(text);
        let listeners = Listeners::bind(&config)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (reload, mut reload_rx) =
            tokio::sync::mpsc::unbounded_channel::<(Config, mpsc::Sender<Result<(), String>>)>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match dns_sidecar::start(config, listeners) {
                    Ok(mut running) => {
                        let _ = ready_tx.send(Ok((running.local_addrs[0], running.admin_addr, running.shared.clone())));
                        loop {
                            tokio::select! {
                                _ = &mut stop_rx => break,
                                Some((config, done)) = reload_rx.recv() => {
                                    let _ = done.send(running.reload(config).await.map_err(|e| e.to_string()));
                                }
                            }
                        }
                        running.stop().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        });
        let (dns, admin, shared) = ready_rx.recv().expect("sidecar thread")?;
        Ok(Sidecar {
            dns,
            admin,
            shared,
            stop: Some(stop),
            reload,
            thread: Some(thread),
        })
    }

    /// Reloads with `text`, as a SIGHUP does (listener addresses stay).
    pub fn reload(&self, text: &str) -> Result<(), String> {
        let (done, wait) = mpsc::channel();
        self.reload.send((parse(text), done)).expect("sidecar thread");
        wait.recv().expect("sidecar thread")
    }
}

/// Without an `[admin]` table the admin listener goes on 127.0.0.1:0 (the
/// default port would collide between tests running in parallel).
fn parse(text: &str) -> Config {
    let text = if text.contains("[admin]") {
        text.to_string()
    } else {
        format!("{text}\n[admin]\nlisten = \"127.0.0.1:0\"\n")
    };
    Config::from_toml(Path::new("test.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
