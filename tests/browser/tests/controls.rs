//! The page under a hurried user, in headless Chromium at 1400x900: what the user types into
//! Reset survives the status updates, the rewind slider goes back one frame at a time, the
//! charts have axes and sensible ranges and start afresh with a new universe, the fields show
//! the server's state after a reload, everything fits one screen, and a sparse run disables
//! what the server refuses and places matter with a click.

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::{json, Value};

mod support;
use support::{click_cell, js, open_page, until, Probe};

/// The newest status the page has, as the server sent it.
async fn status(client: &Client) -> Value {
    js(client, "return lab.status;").await
}

/// Types `text` into a field as a person does: click into it, select what is there, type over
/// it.
async fn type_into(client: &Client, id: &str, text: &str) {
    let input = client.find(Locator::Id(id)).await.unwrap();
    input.click().await.unwrap();
    js(client, &format!("document.getElementById('{id}').select(); return true;")).await;
    input.send_keys(text).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hurried_user_on_a_laptop_screen() {
    let args = ["--grid", "32", "--batch", "3", "--history", "16"];
    let page = open_page("browser-controls", &args, (1400, 900)).await;
    let (client, port) = (&page.client, page.port);
    until(client, "a frame", "return lab.frame !== null && lab.status !== null;").await;
    let mut probe = Probe::connect(port).await;
    probe.ask(json!({"cmd": "pause"})).await;

    // One screen: a one-line header, the charts above the fold, no sideways scrolling.
    let layout = js(
        client,
        "const chart = document.getElementById('chart-rate').getBoundingClientRect();
         const controls = document.getElementById('controls');
         return [document.querySelector('header').getBoundingClientRect().height, chart.bottom, innerHeight,
                 controls.scrollWidth - controls.clientWidth, document.documentElement.scrollWidth - innerWidth];",
    )
    .await;
    let number = |i: usize| layout[i].as_f64().unwrap();
    assert!(number(0) < 36.0, "the header takes one line: {layout}");
    assert!(number(1) <= number(2), "the charts are above the fold: {layout}");
    assert!(number(3) == 0.0 && number(4) <= 0.0, "nothing scrolls sideways: {layout}");

    // A large grid fills its box without moiré: whole device pixels per cell, or a smooth fit.
    probe.ask(json!({"cmd": "reset", "grid": [256, 256], "batch": 1})).await;
    until(client, "the large grid", "return lab.frame.grid[0] === 256;").await;
    let drawn = js(
        client,
        "const canvas = document.querySelector('#canvases canvas');
         const box = canvas.parentElement.getBoundingClientRect();
         return [lab.view.scale * devicePixelRatio, canvas.style.imageRendering, 256 * lab.view.scale / box.width];",
    )
    .await;
    let (device_pixels, rendering, filled) =
        (drawn[0].as_f64().unwrap(), drawn[1].as_str().unwrap().to_string(), drawn[2].as_f64().unwrap());
    let sharp = device_pixels >= 2.0 && device_pixels.fract() == 0.0 && rendering == "pixelated";
    assert!(sharp || rendering == "auto", "{drawn}");
    assert!(filled > 0.5, "the grid fills its box: {drawn}");
    probe.ask(json!({"cmd": "reset", "grid": [32, 32], "batch": 3})).await;

    // What the user types into Reset is what Reset sends, however many statuses come between.
    type_into(client, "seed", "77").await;
    type_into(client, "grid", "24x28").await;
    client.find(Locator::Id("steps-per-frame")).await.unwrap().click().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let typed =
        js(client, "return [document.getElementById('seed').value, document.getElementById('grid').value];")
            .await;
    assert_eq!(typed, json!(["77", "24x28"]));
    client.find(Locator::Id("reset")).await.unwrap().click().await.unwrap();
    until(
        client,
        "the reset",
        "return lab.status.seed === 77 && lab.status.grid[0] === 24 && lab.status.grid[1] === 28;",
    )
    .await;

    // The charts: axes with ticks, a range that float rounding cannot blow up, and a new
    // universe starts them afresh.
    probe.ask(json!({"cmd": "set", "max_fps": 120})).await;
    for _ in 0..6 {
        probe.ask(json!({"cmd": "step"})).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    until(client, "points", "return lab.series.entropy.length >= 5;").await;
    let axes = js(
        client,
        "const c = document.getElementById('chart-entropy');
         return [JSON.parse(c.dataset.yticks || '[]'), JSON.parse(c.dataset.xticks || '[]'), JSON.parse(c.dataset.range || '[]')];",
    )
    .await;
    assert!(axes[0].as_array().unwrap().len() >= 2, "y ticks: {axes}");
    assert!(axes[1].as_array().unwrap().len() >= 2, "x ticks (steps): {axes}");
    let (low, high) = (axes[2][0].as_f64().unwrap(), axes[2][1].as_f64().unwrap());
    assert!(high - low >= 1e-3 * high.abs().max(low.abs()), "a range wider than rounding: {axes}");
    let energy = js(client, "return lab.series.energy.map(([, y]) => y);").await;
    assert!(
        energy.as_array().unwrap().iter().skip(1).all(Value::is_number),
        "update energy after steps: {energy}"
    );
    probe.ask(json!({"cmd": "reset", "seed": 5})).await;
    until(client, "charts cleared", "return lab.series.entropy.length <= 1;").await;
    let first = js(client, "return lab.series.energy;").await;
    assert!(first.as_array().unwrap().iter().all(|point| point[1].is_null()), "no step led here: {first}");

    // The rewind slider goes back one frame at a time, and says so.
    for _ in 0..4 {
        probe.ask(json!({"cmd": "step"})).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    until(client, "history", "return lab.status.history >= 3 && lab.status.step === 4;").await;
    js(client, "const r = document.getElementById('rewind'); r.value = 1; r.dispatchEvent(new Event('input')); r.dispatchEvent(new Event('change')); return true;").await;
    until(client, "one frame back", "return lab.status.step === 3;").await;
    let slider = js(client, "return [document.getElementById('rewind').value, document.getElementById('rewind-value').textContent];").await;
    assert_eq!(slider, json!(["0", "0 back"]));

    // After a reload the fields show the server's state, not the page's defaults.
    probe.ask(json!({"cmd": "set", "universe": 2})).await;
    client.refresh().await.unwrap();
    until(client, "the status after a reload", "return lab.status !== null && lab.status.universe === 2;")
        .await;
    let universe = js(
        client,
        "return [document.getElementById('universe').value, document.getElementById('batch').value];",
    )
    .await;
    assert_eq!(universe, json!(["2", "3"]));
    assert_eq!(status(client).await["healthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_run_disables_what_it_refuses_and_places_matter_with_a_click() {
    let page = open_page("browser-sparse", &["--sparse", "--grid", "64"], (1400, 900)).await;
    let (client, port) = (&page.client, page.port);
    until(client, "a sparse frame", "return lab.frame !== null && lab.frame.sparse !== undefined;").await;
    let mut probe = Probe::connect(port).await;
    probe.ask(json!({"cmd": "pause"})).await;
    let disabled = js(
        client,
        "return ['snapshot', 'upload', 'rewind', 'universe', 'click-out'].map((id) => document.getElementById(id).disabled)
           .concat([document.querySelector('#views input[value=energy]').disabled, document.getElementById('tool').value]);",
    )
    .await;
    assert_eq!(disabled, json!([true, true, true, true, true, true, "matter"]));
    assert_eq!(status(client).await["sparse"]["matter_cells"], 0);
    click_cell(client, 20.0, 30.0).await;
    until(client, "matter placed", "return lab.status.sparse.matter_cells > 10;").await;
    let cell = probe.ask(json!({"cmd": "probe", "x": 20, "y": 30})).await;
    let densities: Vec<f64> =
        cell["densities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let spread = densities.iter().cloned().fold(f64::MIN, f64::max)
        - densities.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 0.01, "the clicked cell holds matter (uneven channels): {cell}");
}
