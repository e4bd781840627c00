//! The sidecar under test, on its own thread and runtime, so a test may block
//! (running `dig`, sleeping) without starving the server it is testing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;

use dns_sidecar::config::Config;
use dns_sidecar::routes::SharedRoutes;
use dns_sidecar::{Listeners, RunError};

pub struct Sidecar {
    pub dns: SocketAddr,
    pub routes: SharedRoutes,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sidecar {
    /// Parses `text`, binds 127.0.0.1:0 and starts serving.
    pub fn start(text: &str) -> Result<Sidecar, RunError> {
        let config = Config::from_toml(Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners::bind(&config.dns.listen)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                match dns_sidecar::start(config, listeners) {
                    Ok(running) => {
                        let _ = ready_tx.send(Ok((running.local_addrs[0], running.routes.clone())));
                        let _ = stop_rx.await;
                        running.stop().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        });
        let (dns, routes) = ready_rx.recv().expect("sidecar thread")?;
        Ok(Sidecar { dns, routes, stop: Some(stop), thread: Some(thread) })
    }
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
