//! A `max serve` on a free loopback port, run on a thread of the test, with a minimal
//! HTTP/1.1 client for it.

use max_serve::http::{serve, ServeConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A server on a free port; dropping the sender shuts it down.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// SmolLM2 as "smollm2".
    pub fn start(model: PathBuf, max_waiting: usize, api_key: Option<&str>) -> Server {
        Self::start_models(vec![("smollm2".into(), model)], max_waiting, api_key)
    }

    /// Several models, on 2 worker threads.
    pub fn start_models(models: Vec<(String, PathBuf)>, max_waiting: usize, api_key: Option<&str>) -> Server {
        Self::start_with_threads(models, max_waiting, api_key, 2)
    }

    /// Several models, on `threads` worker threads.
    pub fn start_with_threads(models: Vec<(String, PathBuf)>, max_waiting: usize, api_key: Option<&str>, threads: usize) -> Server {
        let config = ServeConfig {
            models,
            host: "127.0.0.1".into(),
            port: 0,
            max_batch_size: 2,
            max_cache_length: 128,
            max_waiting,
            api_key: api_key.map(str::to_string),
            threads: Some(threads),
            device: max_runtime::Device::Cpu,
            body_limit: 1 << 16,
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            rt.block_on(serve(config, move |a| addr_tx.send(a).unwrap(), async move {
                let _ = stopped.await;
            }))
            .unwrap();
        });
        let addr = addr_rx.recv().unwrap();
        let s = Server { addr, stop: Some(stop), thread: Some(thread) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.request("GET", "/health", None, None).0 != 200 {
            assert!(Instant::now() < deadline, "not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// A request; returns (status, headers, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> (u16, String, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        let body = body.unwrap_or("");
        let auth = key.map(|k| format!("authorization: Bearer {k}\r\n")).unwrap_or_default();
        write!(s, "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, head.to_lowercase(), rest.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}
