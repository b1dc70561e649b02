//! A fault-injecting HTTP proxy of the test suite's own, in front of the emulator: raw HTTP/1.1
//! over loopback, so it can answer anything a partner, a proxy or a load balancer might — an
//! HTML 200, a redirect, a pathological header, a dripping or dropped answer — scripted per
//! request. A `Sink` is a second listener that must receive nothing (where redirects point).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Pass it to the partner and its answer back.
    Forward,
    /// Pass it on, then replace the answer's status, headers and body (the partner applied it).
    ForwardThen(Canned),
    /// Answer without passing it on (the partner never sees it).
    Respond(Canned),
    /// Pass it on, then answer with these extra headers added to the partner's answer.
    ForwardWithHeaders(Vec<(String, String)>),
    /// Close the connection without answering (before passing it on).
    Drop,
    /// Pass it on, then close the connection without answering (applied, unacknowledged).
    ForwardThenDrop,
    /// Wait, then forward.
    Delay(Duration),
    /// Pass it on, then send the partner's answer one byte per `Duration`.
    Drip(Duration),
}

#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str) -> Canned {
        Canned {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
        }
    }
}

/// The script: request number (0-based, across connections), path and body → what to do.
pub type Script = Arc<dyn Fn(usize, &str, &[u8]) -> Action + Send + Sync>;

pub struct Proxy {
    pub addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// A proxy on 127.0.0.1:0 in front of `upstream` (a base URL such as the emulator's).
    pub fn start(upstream: &str, script: Script) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            script,
            seen: seen.clone(),
            busy: busy.clone(),
        });
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Proxy {
            addr,
            seen,
            busy,
            _runtime: runtime,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until no request is being held or forwarded: a request the client
    /// gave up on may still reach the partner late, as through any proxy.
    pub fn wait_idle(&self) {
        for _ in 0..1000 {
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the proxy is still busy after 10 s");
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    script: Script,
    seen: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
}

/// One parsed request.
struct Req {
    /// As the client sent it (GET and DELETE steps of a batch travel too).
    method: String,
    path: String,
    /// The request's headers but those of the hop (host, length, connection): auth,
    /// signatures and idempotency keys travel on.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (headers, then a Content-Length body); `None` at end of stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let method = head.split_whitespace().next()?.to_string();
            let path = head.split_whitespace().nth(1)?.to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 65536];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "host" | "content-length" | "connection" | "transfer-encoding"
                    )
                })
                .collect();
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some(Req {
                method,
                path,
                headers,
                body,
            });
        }
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn response_bytes(c: &Canned) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} Whatever\r\n", c.status);
    for (k, v) in &c.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", c.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(c.body.as_bytes());
    bytes
}

async fn forward(shared: &Shared, req: &Req) -> Canned {
    let url = format!("{}{}", shared.upstream, req.path);
    let method =
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut request = shared.client.request(method, &url).body(req.body.clone());
    for (k, v) in &req.headers {
        request = request.header(k, v);
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r
                .headers()
                .iter()
                .filter(|(k, _)| {
                    let k = k.as_str();
                    k.starts_with("x-ratelimit")
                        || k.starts_with("ratelimit")
                        || k == "retry-after"
                        || k == "content-type"
                })
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            let body = r.text().await.unwrap_or_default();
            Canned {
                status,
                headers,
                body,
            }
        }
        Err(e) => Canned::new(502, &[], &format!("proxy: upstream failed: {e}")),
    }
}

/// Counts a request as in progress for as long as it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut stream, &mut buf).await {
        let _busy = Busy::new(&shared.busy);
        let n = shared.seen.fetch_add(1, Ordering::SeqCst);
        let action = (shared.script)(n, &req.path, &req.body);
        let answer = match action {
            Action::Forward => forward(&shared, &req).await,
            Action::ForwardThen(canned) => {
                forward(&shared, &req).await;
                canned
            }
            Action::Respond(canned) => canned,
            Action::ForwardWithHeaders(extra) => {
                let mut a = forward(&shared, &req).await;
                a.headers
                    .retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
                a.headers.extend(extra);
                a
            }
            Action::Drop => return,
            Action::ForwardThenDrop => {
                forward(&shared, &req).await;
                return;
            }
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                forward(&shared, &req).await
            }
            Action::Drip(every) => {
                let bytes = response_bytes(&forward(&shared, &req).await);
                for b in bytes {
                    if stream.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
                continue;
            }
        };
        if stream.write_all(&response_bytes(&answer)).await.is_err() {
            return;
        }
    }
}

/// A listener that must receive nothing: it counts connections and bytes.
pub struct Sink {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl Sink {
    pub fn start() -> Sink {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (c, b) = (connections.clone(), bytes.clone());
        runtime.spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        b.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        });
        Sink {
            addr,
            connections,
            bytes,
            _runtime: runtime,
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!(
            "{scheme}://{}/partners/cohort-bridge/cohorts/users",
            self.addr
        )
    }

    /// (connections, bytes) received.
    pub fn received(&self) -> (usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}
