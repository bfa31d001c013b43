//! What the browser tests share: `atheria serve`, chromedriver and a Chromium session, page
//! scripts, and a protocol client beside the page.

#![allow(dead_code)] // each test binary uses its part

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "../../../engine/scratch_dir.rs"]
mod scratch_dir;
pub use scratch_dir::scratch;

/// A child process killed when dropped.
pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn atheria_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ATHERIA_BIN") {
        return PathBuf::from(path);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| here.join("../../target"), PathBuf::from);
    let binary = target.join("release/atheria");
    assert!(
        binary.exists(),
        "no atheria binary at {}: build it with `cargo build --release` or set ATHERIA_BIN",
        binary.display()
    );
    binary
}

/// `atheria serve` with `extra` arguments on a free loopback port: the process and the port.
pub fn serve_with(dir: &std::path::Path, extra: &[&str]) -> (Process, u16) {
    let mut child = Command::new(atheria_binary())
        .args(["serve", "--device", "cpu", "--bind", "127.0.0.1:0"])
        .args(extra)
        .args([
            "--snapshots",
            dir.join("snapshots").to_str().unwrap(),
            "--runs",
            dir.join("runs").to_str().unwrap(),
        ])
        .env_remove("ATHERIA_DEVICE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("atheria starts");
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("the live lab is at http://127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let _ = sender.send(port.parse::<u16>().unwrap());
            }
        }
    });
    let port = receiver.recv_timeout(Duration::from_secs(120)).expect("atheria serve listens");
    (Process(child), port)
}

/// chromedriver on a free port: the process and its URL.
pub fn chromedriver() -> (Process, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts (install Debian's chromium-driver)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Process(child), format!("http://127.0.0.1:{port}"))
}

pub async fn browser(driver: &str, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1500,1100",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(driver)
        .await
        .expect("a Chromium session")
}

/// A lab served with its own arguments, and a Chromium session on its page.
pub struct Page {
    pub client: Client,
    pub port: u16,
    // Stopped when the page is dropped, after the session.
    _driver: Process,
    _server: Process,
}

/// Serves a lab with `extra` arguments in a scratch directory `name` and opens its page in a
/// window of `size` (CSS pixels).
pub async fn open_page(name: &str, extra: &[&str], size: (u32, u32)) -> Page {
    let dir = scratch(name);
    let (server, port) = serve_with(&dir, extra);
    let (driver, driver_url) = chromedriver();
    let client = browser(&driver_url, &dir.join("profile")).await;
    client.set_window_size(size.0, size.1).await.unwrap();
    client.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    Page { client, port, _driver: driver, _server: server }
}

/// Evaluates `script` (a function body) in the page.
pub async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap_or_else(|error| panic!("{script}: {error}"))
}

/// Waits until `script` returns true.
pub async fn until(client: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while js(client, script).await != Value::Bool(true) {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the centre of cell (x, y) of the first view.
pub async fn click_cell(client: &Client, x: f64, y: f64) {
    let at = js(
        client,
        &format!(
            "const box = document.querySelector('#canvases .view').getBoundingClientRect();
             return [box.left + lab.view.x + ({x} + 0.5) * lab.view.scale, box.top + lab.view.y + ({y} + 0.5) * lab.view.scale];"
        ),
    )
    .await;
    let (px, py) = (at[0].as_f64().unwrap().round(), at[1].as_f64().unwrap().round());
    let click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x: px, y: py })
        .then(PointerAction::Down { button: fantoccini::actions::MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: fantoccini::actions::MOUSE_BUTTON_LEFT });
    client.perform_actions(click).await.unwrap();
}

/// A hash and the count of distinct colours of the first canvas's pixels.
pub async fn picture(client: &Client) -> (u64, u64) {
    let value = js(
        client,
        "const c = document.querySelector('#canvases canvas'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let h = 0; const colours = new Set();
         for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] * 65536 + d[i + 1] * 256 + d[i + 2]) % 1000000007; colours.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]); }
         return [h, colours.size];",
    )
    .await;
    (value[0].as_u64().unwrap(), value[1].as_u64().unwrap())
}

/// A protocol client beside the page, to read the state back.
pub struct Probe(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
);

impl Probe {
    pub async fn connect(port: u16) -> Probe {
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
        Probe(socket)
    }

    pub async fn ask(&mut self, command: Value) -> Value {
        self.0.send(Message::Text(command.to_string().into())).await.unwrap();
        loop {
            let message =
                tokio::time::timeout(Duration::from_secs(60), self.0.next()).await.unwrap().unwrap().unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if matches!(value["type"].as_str(), Some("ack" | "probe" | "error")) {
                    return value;
                }
            }
        }
    }

    /// The turn of channel 0's phase around (cx, cy) at radius r.
    pub async fn winding(&mut self, cx: f64, cy: f64, r: f64) -> f64 {
        let mut phases = Vec::new();
        for k in 0..48 {
            let angle = k as f64 / 48.0 * std::f64::consts::TAU;
            let (x, y) = ((cx + r * angle.cos()).round() as i64, (cy + r * angle.sin()).round() as i64);
            let probe = self.ask(json!({"cmd": "probe", "x": x, "y": y})).await;
            phases.push(probe["phases"][0].as_f64().unwrap_or_else(|| panic!("{probe}")));
        }
        let pi = std::f64::consts::PI;
        (0..phases.len())
            .map(|i| ((phases[(i + 1) % phases.len()] - phases[i]) + pi).rem_euclid(2.0 * pi) - pi)
            .sum()
    }
}
