"""Ctrl-C during a long `step(n)` stops at a step boundary with KeyboardInterrupt, and the
simulation stays usable; other Python threads run while it steps (the GIL is released)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import atheria


def test_keyboard_interrupt_stops_at_a_step_boundary():
    sim = atheria.Simulation(atheria.Model.default(), grid=32, device="cpu")
    # Python keeps SIGINT ignored when it starts with it ignored, as a shell's background job
    # does: install the handler an interactive session has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent = []

    def interrupt():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(1.0, interrupt)
    # Were the first Ctrl-C lost, a second one ends the call, so that the test fails below
    # instead of stepping for hours.
    watchdog = threading.Timer(30.0, interrupt)
    timer.start()
    watchdog.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            sim.step(10_000_000)
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGINT, previous)
    assert len(sent) == 1, "the first Ctrl-C was lost: only the watchdog's second one stopped the call"
    assert time.monotonic() - started < 30
    reached = sim.step_count
    assert 0 < reached < 10_000_000
    # A whole step's state: finite and normalised, and stepping goes on from there.
    psi = sim.psi
    assert np.isfinite(psi).all()
    assert np.allclose(np.sum(np.abs(psi) ** 2, axis=-1), 1.0, atol=1e-4)
    assert sim.step(1) == reached + 1


def test_other_threads_run_while_stepping():
    sim = atheria.Simulation(atheria.Model.default(), grid=64, device="cpu")
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    started = time.monotonic()
    sim.step(20)
    elapsed = time.monotonic() - started
    stop.set()
    thread.join()
    # With the GIL held for the whole call the counter would barely move.
    assert len(ticks) >= min(10, int(elapsed / 0.01))
