//! The live lab's page in headless Chromium: it loads, its canvas shows the universe and
//! changes, a click with the vortex tool puts a vortex at the clicked cell (read back through
//! the protocol), the view picker changes the picture, and a training run started from the
//! page grows its chart.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`; .ci/run
//! installs them) and the `atheria` binary of the main crate (`ATHERIA_BIN`, else the release
//! build in `CARGO_TARGET_DIR` or `../../target`). `ATHERIA_SCREENSHOT=FILE` also writes a
//! screenshot of the page.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::json;

mod support;
use support::{click_cell, js, open_page, picture, until, Probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_lab_in_a_real_browser() {
    let page = open_page("browser-page", &["--grid", "48"], (1500, 1100)).await;
    let (client, port) = (&page.client, page.port);

    // The page loads, connects and draws the universe.
    assert_eq!(client.title().await.unwrap(), "atheria live lab");
    until(client, "connected", "return document.getElementById('connection').textContent === 'connected';")
        .await;
    until(client, "a canvas", "return document.querySelectorAll('#canvases canvas').length > 0;").await;
    // A fresh random universe, paused: the canvas shows it.
    let mut probe = Probe::connect(port).await;
    probe.ask(json!({"cmd": "pause"})).await;
    probe.ask(json!({"cmd": "reset", "init": "random", "seed": 3})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (first, colours) = picture(client).await;
    assert!(colours > 20, "the canvas is not blank: {colours} colours");
    // Played from the page, it changes.
    client.find(Locator::Id("play")).await.unwrap().click().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (later, _) = picture(client).await;
    assert_ne!(first, later, "the picture changes as the universe runs");

    // A uniform phase, paused; then a vortex by a click at cell (17, 30).
    probe.ask(json!({"cmd": "pause"})).await;
    probe.ask(json!({"cmd": "reset", "init": "complex-noise:0", "grid": [48, 48]})).await;
    client.find(Locator::Css("#tool")).await.unwrap().select_by_value("vortex").await.unwrap();
    let (cell_x, cell_y) = (17.0, 30.0);
    click_cell(client, cell_x, cell_y).await;
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
    js(client, &only("phase")).await;
    until(client, "the phase view alone", "const v = document.querySelectorAll('#canvases .view'); return v.length === 1 && v[0].dataset.view === 'phase';").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (phase_picture, _) = picture(client).await;
    js(client, "document.querySelector('#views input[value=entropy]').click(); return true;").await;
    until(client, "two views", "return document.querySelectorAll('#canvases canvas').length === 2;").await;
    js(client, &only("entropy")).await;
    until(client, "the entropy view alone", "const v = document.querySelectorAll('#canvases .view'); return v.length === 1 && v[0].dataset.view === 'entropy';").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (entropy_picture, _) = picture(client).await;
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
    until(client, "training points", "return lab.training.length >= 5;").await;
    let grown = js(client, "return lab.training.length;").await.as_u64().unwrap();
    until(client, "more training points", &format!("return lab.training.length > {grown};")).await;
    let chart = js(
        client,
        "const c = document.getElementById('train-chart'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let lit = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) lit++; return lit;",
    )
    .await;
    assert!(chart.as_u64().unwrap() > 100, "the training chart is drawn: {chart}");
    // Stopped from the page, with a checkpoint.
    client.find(Locator::Id("train-stop")).await.unwrap().click().await.unwrap();
    until(
        client,
        "the run stopped",
        "return lab.status && lab.status.training && !lab.status.training.running;",
    )
    .await;

    // The preview shows the universe being trained (the default panel, not a flat density).
    until(
        client,
        "an informative training picture",
        "const img = document.getElementById('train-frame');
         if (!img.complete || img.naturalWidth === 0) return false;
         const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
         const x = c.getContext('2d'); x.drawImage(img, 0, 0);
         const d = x.getImageData(0, 0, c.width, c.height).data; const colours = new Set();
         for (let i = 0; i < d.length; i += 4) colours.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]);
         return colours.size > 50;",
    )
    .await;
    // Why best is best, and loading it names the model now running.
    let reason = js(client, "return document.getElementById('train-checkpoints').textContent;").await;
    assert!(reason.as_str().unwrap().contains("combined metric"), "{reason}");
    client.find(Locator::Id("train-load")).await.unwrap().click().await.unwrap();
    until(
        client,
        "the header names the loaded model",
        "return document.getElementById('model').textContent.includes('run-');",
    )
    .await;
    client.find(Locator::Id("train-load-last")).await.unwrap().click().await.unwrap();
    until(
        client,
        "the last checkpoint runs",
        "return document.getElementById('messages').textContent.includes('last checkpoint');",
    )
    .await;

    if let Some(path) = std::env::var_os("ATHERIA_SCREENSHOT") {
        js(client, "for (const name of ['phase', 'activity', 'real']) document.querySelector(`#views input[value=${name}]`).click(); return true;").await;
        probe.ask(json!({"cmd": "play"})).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        js(client, "window.scrollTo(0, 0); return true;").await;
        std::fs::write(path, client.screenshot().await.unwrap()).unwrap();
    }
    page.client.clone().close().await.unwrap();
}
