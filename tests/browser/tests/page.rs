//! The live lab's page in headless Chromium: it loads, its canvas shows the universe and
//! changes, a click with the vortex tool puts a vortex at the clicked cell (read back through
//! the protocol), the view picker changes the picture, and a training run started from the
//! page grows its chart.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`; .ci/run
//! installs them) and the `atheria` binary of the main crate (`ATHERIA_BIN`, else the release
//! build in `CARGO_TARGET_DIR` or `../../target`). `ATHERIA_SCREENSHOT=FILE` also writes a
//! screenshot of the page.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "../../engine/scratch_dir.rs"]
mod scratch_dir;
use scratch_dir::scratch;

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn atheria_binary() -> PathBuf {
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

/// `atheria serve` on a free loopback port: the process and the port.
fn serve(dir: &std::path::Path) -> (Process, u16) {
    let mut child = Command::new(atheria_binary())
        .args(["serve", "--device", "cpu", "--bind", "127.0.0.1:0", "--grid", "48"])
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
fn chromedriver() -> (Process, String) {
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

async fn browser(driver: &str, profile: &std::path::Path) -> Client {
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

/// Evaluates `script` (a function body) in the page.
async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap_or_else(|error| panic!("{script}: {error}"))
}

/// Waits until `script` returns true.
async fn until(client: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while js(client, script).await != Value::Bool(true) {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A hash and the count of distinct colours of the first canvas's pixels.
async fn picture(client: &Client) -> (u64, u64) {
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
struct Probe(tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>);

impl Probe {
    async fn connect(port: u16) -> Probe {
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
        Probe(socket)
    }

    async fn ask(&mut self, command: Value) -> Value {
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
    async fn winding(&mut self, cx: f64, cy: f64, r: f64) -> f64 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_lab_in_a_real_browser() {
    let dir = scratch("browser-page");
    let (_server, port) = serve(&dir);
    let (_driver, driver_url) = chromedriver();
    let client = browser(&driver_url, &dir.join("profile")).await;
    client.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();

    // The page loads, connects and draws the universe.
    assert_eq!(client.title().await.unwrap(), "atheria live lab");
    until(&client, "connected", "return document.getElementById('connection').textContent === 'connected';")
        .await;
    until(&client, "a canvas", "return document.querySelectorAll('#canvases canvas').length > 0;").await;
    // A fresh random universe, paused: the canvas shows it.
    let mut probe = Probe::connect(port).await;
    probe.ask(json!({"cmd": "pause"})).await;
    probe.ask(json!({"cmd": "reset", "init": "random", "seed": 3})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (first, colours) = picture(&client).await;
    assert!(colours > 20, "the canvas is not blank: {colours} colours");
    // Played from the page, it changes.
    client.find(Locator::Id("play")).await.unwrap().click().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (later, _) = picture(&client).await;
    assert_ne!(first, later, "the picture changes as the universe runs");

    // A uniform phase, paused; then a vortex by a click at cell (17, 30).
    probe.ask(json!({"cmd": "pause"})).await;
    probe.ask(json!({"cmd": "reset", "init": "complex-noise:0", "grid": [48, 48]})).await;
    client.find(Locator::Css("#tool")).await.unwrap().select_by_value("vortex").await.unwrap();
    let (cell_x, cell_y) = (17.0, 30.0);
    let at = js(
        &client,
        &format!(
            "const box = document.querySelector('#canvases .view').getBoundingClientRect();
             return [box.left + lab.view.x + ({cell_x} + 0.5) * lab.view.scale, box.top + lab.view.y + ({cell_y} + 0.5) * lab.view.scale];"
        ),
    )
    .await;
    let (x, y) = (at[0].as_f64().unwrap().round(), at[1].as_f64().unwrap().round());
    let click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x, y })
        .then(PointerAction::Down { button: fantoccini::actions::MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: fantoccini::actions::MOUSE_BUTTON_LEFT });
    client.perform_actions(click).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut turned = 0.0;
    while Instant::now() < deadline {
        turned = probe.winding(cell_x, cell_y, 3.0).await;
        if (turned - std::f64::consts::TAU).abs() < 0.3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        (turned - std::f64::consts::TAU).abs() < 0.3,
        "the phase turns by 2 pi around the clicked cell: {turned}"
    );

    // The view picker: the phase alone, then the entropy alone.
    let only = |name: &str| {
        format!(
            "for (const input of document.querySelectorAll('#views input')) {{
                 if (input.checked !== (input.value === '{name}')) input.click();
             }}
             return true;"
        )
    };
    js(&client, &only("phase")).await;
    until(&client, "the phase view alone", "const v = document.querySelectorAll('#canvases .view'); return v.length === 1 && v[0].dataset.view === 'phase';").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (phase_picture, _) = picture(&client).await;
    js(&client, "document.querySelector('#views input[value=entropy]').click(); return true;").await;
    until(&client, "two views", "return document.querySelectorAll('#canvases canvas').length === 2;").await;
    js(&client, &only("entropy")).await;
    until(&client, "the entropy view alone", "const v = document.querySelectorAll('#canvases .view'); return v.length === 1 && v[0].dataset.view === 'entropy';").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (entropy_picture, _) = picture(&client).await;
    assert_ne!(phase_picture, entropy_picture, "switching the view changes the picture");

    // Training from the page: its chart grows.
    for (id, value) in [
        ("train-d", "8"),
        ("train-h", "8"),
        ("train-grid", "8"),
        ("train-steps", "2"),
        ("train-episodes", "100000"),
    ] {
        let input = client.find(Locator::Id(id)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    client.find(Locator::Id("train-start")).await.unwrap().click().await.unwrap();
    until(&client, "training points", "return lab.training.length >= 5;").await;
    let grown = js(&client, "return lab.training.length;").await.as_u64().unwrap();
    until(&client, "more training points", &format!("return lab.training.length > {grown};")).await;
    let chart = js(
        &client,
        "const c = document.getElementById('train-chart'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let lit = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) lit++; return lit;",
    )
    .await;
    assert!(chart.as_u64().unwrap() > 100, "the training chart is drawn: {chart}");
    // Stopped from the page, with a checkpoint.
    client.find(Locator::Id("train-stop")).await.unwrap().click().await.unwrap();
    until(
        &client,
        "the run stopped",
        "return lab.status && lab.status.training && !lab.status.training.running;",
    )
    .await;

    if let Some(path) = std::env::var_os("ATHERIA_SCREENSHOT") {
        js(&client, "for (const name of ['phase', 'activity', 'real']) document.querySelector(`#views input[value=${name}]`).click(); return true;").await;
        probe.ask(json!({"cmd": "play"})).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        js(&client, "window.scrollTo(0, 0); return true;").await;
        std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
    }
    client.close().await.unwrap();
}
