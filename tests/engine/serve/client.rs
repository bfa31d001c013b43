//! The live lab's test client: a running `atheria serve` (stopped when dropped), a protocol
//! client over a real WebSocket, and plain HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream as AsyncTcp;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{atheria_command, scratch};

/// The types of the messages that answer a command.
pub const REPLIES: [&str; 7] = ["ack", "error", "probe", "snapshot", "training", "loaded", "train_history"];

/// A running `atheria serve`, stopped when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// Everything it printed on stderr so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts a server on a free loopback port with `extra` arguments; its snapshots and runs
    /// go into a scratch directory.
    pub fn start(name: &str, extra: &[&str]) -> Server {
        let grid: &[&str] = if extra.contains(&"--grid") { &[] } else { &["--grid", "32"] };
        Server::start_with_env(name, &[grid, extra].concat(), &[])
    }

    /// A server with exactly `extra` arguments, and `env` added to its environment.
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = scratch(&format!("serve-{name}"));
        let (snapshots, runs) = (dir.join("snapshots"), dir.join("runs"));
        let mut child = atheria_command()
            .args(["serve", "--device", "cpu", "--bind", "127.0.0.1:0"])
            .args(["--snapshots", snapshots.to_str().unwrap(), "--runs", runs.to_str().unwrap()])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("the live lab is at http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = sender.send(port.parse::<u16>().unwrap());
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let port = receiver
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the server did not start: {}", log.lock().unwrap()));
        Server { child, port, dir, log }
    }

    /// Everything the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn snapshots(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    pub fn runs(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// The server's resident memory, in KiB.
    pub fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop: {}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket = WebSocketStream<MaybeTlsStream<AsyncTcp>>;

/// A protocol client.
pub struct Client {
    socket: Socket,
    pub hello: Value,
}

impl Client {
    pub async fn connect(port: u16, query: &str, origin: Option<&str>) -> Result<Client, String> {
        let mut request = format!("ws://127.0.0.1:{port}/ws{query}").into_client_request().unwrap();
        if let Some(origin) = origin {
            request.headers_mut().insert("Origin", origin.parse().unwrap());
        }
        let (socket, _) =
            tokio_tungstenite::connect_async(request).await.map_err(|error| error.to_string())?;
        let mut client = Client { socket, hello: Value::Null };
        client.hello = client.next_of(&["hello"]).await;
        Ok(client)
    }

    pub async fn send(&mut self, command: Value) {
        self.send_raw(Message::Text(command.to_string().into())).await;
    }

    /// Sends any message, well-formed or not.
    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.unwrap();
    }

    /// Sends a message the server may hang up on (too large): whether it went out.
    pub async fn try_send_raw(&mut self, message: Message) -> bool {
        self.socket.send(message).await.is_ok()
    }

    /// The next text message of one of `types`, skipping frames and other messages.
    pub async fn next_of(&mut self, types: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no {types:?} within 120 s"))
                .expect("the connection is open")
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if types.contains(&value["type"].as_str().unwrap_or_default()) {
                    return value;
                }
            }
        }
    }

    /// Sends `command` and returns its reply (ack, error or the command's own answer).
    pub async fn ask(&mut self, command: Value) -> Value {
        self.send(command).await;
        self.reply().await
    }

    /// The next reply to a command (ack, error or a command's own answer).
    pub async fn reply(&mut self) -> Value {
        self.next_of(&REPLIES).await
    }

    /// The next binary frame: its header and the maps.
    pub async fn frame(&mut self) -> (Value, Vec<u8>) {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(120), self.socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Binary(bytes) = message {
                assert_eq!(&bytes[..4], b"ATHF");
                let length = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
                let header: Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
                return (header, bytes[8 + length..].to_vec());
            }
        }
    }

    /// The next frame taken after `step` steps or later.
    pub async fn frame_at(&mut self, step: u64) -> (Value, Vec<u8>) {
        loop {
            let frame = self.frame().await;
            if frame.0["step"].as_u64().unwrap() >= step {
                return frame;
            }
        }
    }

    /// The phases of channel 0 around (cx, cy) on a ring of radius r, in angle order.
    pub async fn ring_phases(&mut self, cx: i64, cy: i64, r: f64) -> Vec<f64> {
        let mut phases = Vec::new();
        for k in 0..48 {
            let angle = k as f64 / 48.0 * std::f64::consts::TAU;
            let (x, y) =
                ((cx as f64 + r * angle.cos()).round() as i64, (cy as f64 + r * angle.sin()).round() as i64);
            let probe = self.ask(json!({"cmd": "probe", "x": x, "y": y})).await;
            assert_eq!(probe["type"], "probe", "{probe}");
            phases.push(probe["phases"][0].as_f64().unwrap());
        }
        phases
    }
}

/// The total phase turned along a closed path of phases.
pub fn winding(phases: &[f64]) -> f64 {
    let pi = std::f64::consts::PI;
    (0..phases.len())
        .map(|i| {
            let step = phases[(i + 1) % phases.len()] - phases[i];
            (step + pi).rem_euclid(2.0 * pi) - pi
        })
        .sum()
}

/// A plain HTTP request; returns the status code and the body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |at| at + 4);
    (status, response[body_at..].to_vec())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The newest `status` the server published (over HTTP: a WebSocket client's own statuses
/// queue up while it does not read).
pub fn http_status(port: u16) -> Value {
    let (code, body) = http(port, "GET", "/status", b"");
    assert_eq!(code, 200);
    serde_json::from_slice(&body).unwrap()
}

/// The newest status once `ready` holds for it (within 30 s).
pub async fn status_when(port: u16, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let status = http_status(port);
        if ready(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}: {}", http_status(port));
}
