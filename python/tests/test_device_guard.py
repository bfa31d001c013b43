"""A broken GPU install does not take the Python process down: the probe runs in a child
interpreter (`python -m atheria._probe`), and the report names the cause. The installs are the
C stubs of the Rust suite (tests/engine/stubs), built here with `cc`."""

import os
import subprocess
import sys
import textwrap

import pytest

STUBS = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "engine", "stubs")

SCRIPT = textwrap.dedent(
    """
    import atheria
    cuda = [a for a in atheria.devices() if a["backend"] == "cuda"][0]
    print("cuda:", cuda["failure"]["cause"], "|", cuda["failure"]["summary"])
    sim = atheria.Simulation(atheria.Model.default(), grid=8, device="auto")
    sim.step(2)
    print(sim.device_report)
    print("survived", sim.step_count)
    """
)


def cc(output, source, *flags):
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(output), os.path.join(STUBS, source), *flags], check=True)


def cuda_install(root, defines, other_release):
    build, lib = root / "build", root / "lib"
    build.mkdir()
    lib.mkdir()
    cc(build / "libnvJitLink.so.12", "jitlink_full.c")
    flags = [f"-D{d}" for d in defines]
    if "NEEDS_JITLINK" in defines:
        flags += [f"-L{build}", "-l:libnvJitLink.so.12"]
    cc(lib / "libcuda.so.1", "cuda_full.c", *flags)
    (lib / "libcuda.so").write_bytes((lib / "libcuda.so.1").read_bytes())
    cc(lib / "libnvJitLink.so.12", "jitlink_other_release.c" if other_release else "jitlink_full.c")
    return lib


@pytest.mark.parametrize(
    "defines, other_release, expect",
    [
        (["NEEDS_JITLINK"], True, "__nvJitLinkCreate_12_8"),  # the lab's fix note
        (["CRASH"], False, "SIGSEGV"),
    ],
    ids=["undefined-symbol", "crash-in-cuInit"],
)
def test_a_broken_cuda_install_falls_back(tmp_path, defines, other_release, expect):
    lib = cuda_install(tmp_path, defines, other_release)
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout, done.stdout
    assert "survived 2" in done.stdout
    assert "running on" in done.stdout
