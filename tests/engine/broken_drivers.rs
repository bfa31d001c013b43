//! Broken GPU installs, made here from the C stubs in `stubs/` with the system C compiler: a
//! libcuda whose dependency comes from another CUDA release, one that only fails to start, one
//! that crashes, one that hangs, a partial one, one with no device, and a left-over Vulkan ICD
//! whose library lacks a symbol. Every command must still work on the CPU, name the cause and
//! print no panic; `--strict-device` must turn each into one `error:` line. A hanging driver
//! must cost its probe's timeout, not minutes (`a_hanging_driver_costs_the_default_timeout...`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use atheria::backend::{select_device, DeviceRequest, SelectOptions};

use crate::support::{atheria_command, scratch};

const STUBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/engine/stubs");

/// Compiles a shared library from stub sources.
fn cc(output: &Path, source: &str, extra: &[&str]) {
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(output)
        .arg(Path::new(STUBS).join(source))
        .args(extra)
        .status()
        .expect("a C compiler (cc) runs");
    assert!(status.success(), "cc {source} {extra:?} failed");
}

/// A broken install: a folder for `LD_LIBRARY_PATH` and the environment that selects it.
struct Install {
    env: Vec<(String, String)>,
    /// Text the report must contain (the cause and its detail).
    expect: Vec<&'static str>,
}

/// A libcuda.so.1 (and libcuda.so) built from `source` with `defines`, linked against a
/// libnvJitLink.so.12 that has the 12.8 entry point; `jitlink` then decides which release of
/// that library sits beside it.
fn cuda_install(name: &str, source: &str, defines: &[&str], other_release: bool) -> PathBuf {
    let dir = scratch(name);
    let (build, lib) = (dir.join("build"), dir.join("lib"));
    std::fs::create_dir_all(&build).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    cc(&build.join("libnvJitLink.so.12"), "jitlink_full.c", &[]);
    let mut flags: Vec<String> = defines.iter().map(|d| format!("-D{d}")).collect();
    if defines.contains(&"NEEDS_JITLINK") {
        flags.extend([format!("-L{}", build.display()), "-l:libnvJitLink.so.12".into()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    cc(&lib.join("libcuda.so.1"), source, &flags);
    std::fs::copy(lib.join("libcuda.so.1"), lib.join("libcuda.so")).unwrap();
    let jitlink = if other_release { "jitlink_other_release.c" } else { "jitlink_full.c" };
    cc(&lib.join("libnvJitLink.so.12"), jitlink, &[]);
    lib
}

fn library_path(lib: &Path) -> (String, String) {
    ("LD_LIBRARY_PATH".into(), lib.display().to_string())
}

fn cuda_cases(prefix: &str) -> Vec<(&'static str, Install)> {
    let short = ("ATHERIA_PROBE_TIMEOUT".to_string(), "3".to_string());
    let mismatch = cuda_install(&format!("{prefix}-stub-jitlink"), "cuda_full.c", &["NEEDS_JITLINK"], true);
    let init_only = cuda_install(&format!("{prefix}-stub-init-only"), "cuda_init_only.c", &[], false);
    let crash = cuda_install(&format!("{prefix}-stub-crash"), "cuda_full.c", &["CRASH"], false);
    let hang = cuda_install(&format!("{prefix}-stub-hang"), "cuda_full.c", &["HANG"], false);
    let partial = cuda_install(&format!("{prefix}-stub-partial"), "cuda_full.c", &["NO_DEVICE_GET"], false);
    let no_device = cuda_install(&format!("{prefix}-stub-no-device"), "cuda_full.c", &[], false);
    vec![
        (
            "undefined symbol in a dependency",
            Install {
                env: vec![library_path(&mismatch)],
                expect: vec!["library/symbol mismatch", "__nvJitLinkCreate_12_8"],
            },
        ),
        (
            "cuInit fails and nothing else exists",
            Install {
                env: vec![library_path(&init_only)],
                expect: vec!["CUDA_ERROR_INSUFFICIENT_DRIVER", "35"],
            },
        ),
        (
            "cuInit crashes",
            Install { env: vec![library_path(&crash)], expect: vec!["driver crashed", "SIGSEGV"] },
        ),
        (
            "cuInit hangs",
            Install { env: vec![library_path(&hang), short.clone()], expect: vec!["timed out"] },
        ),
        (
            "a missing entry point",
            Install {
                env: vec![library_path(&partial), ("STUB_CUDA_INIT_CODE".into(), "0".into())],
                expect: vec!["library/symbol mismatch", "cuDeviceGet"],
            },
        ),
        (
            "no device",
            Install {
                env: vec![library_path(&no_device)],
                expect: vec!["no device", "CUDA_ERROR_NO_DEVICE"],
            },
        ),
    ]
}

/// A Vulkan ICD manifest whose library calls a symbol its dependency no longer has.
fn broken_icd(prefix: &str) -> PathBuf {
    let dir = scratch(&format!("{prefix}-stub-vulkan"));
    let build = dir.join("build");
    std::fs::create_dir_all(&build).unwrap();
    cc(&build.join("libnvJitLink.so.12"), "jitlink_full.c", &[]);
    let library = dir.join("libvulkan_leftover.so");
    cc(
        &library,
        "vulkan_icd.c",
        &[
            &format!("-L{}", build.display()),
            "-l:libnvJitLink.so.12",
            &format!("-Wl,-rpath,{}", dir.display()),
        ],
    );
    cc(&dir.join("libnvJitLink.so.12"), "jitlink_other_release.c", &[]);
    let manifest = dir.join("leftover_icd.json");
    let json = format!(
        r#"{{"file_format_version": "1.0.0", "ICD": {{"library_path": "{}", "api_version": "1.3.0"}}}}"#,
        library.display()
    );
    std::fs::write(&manifest, json).unwrap();
    manifest
}

fn lavapipe_manifest() -> PathBuf {
    std::fs::read_dir("/usr/share/vulkan/icd.d")
        .expect("software Vulkan is installed (.ci/run installs mesa-vulkan-drivers)")
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_string_lossy().starts_with("lvp_icd"))
        .expect("lavapipe's manifest")
}

fn atheria_with(env: &[(String, String)], args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let output = atheria_command()
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("the binary runs");
    (output, start.elapsed())
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// How long a command of these tests may take on two busy cores: a 16x16 run takes well
/// under a second, and `doctor`'s self-tests on lavapipe some seconds (tens when other tests
/// compete for the cores). A probe that hung would cost minutes.
fn limit(args: &[&str]) -> Duration {
    Duration::from_secs(if args.first() == Some(&"doctor") { 180 } else { 60 })
}

/// The command succeeds on the CPU within its [`limit`], names the cause, and prints no panic.
fn assert_survives(case: &str, install: &Install, args: &[&str]) -> String {
    let (output, took) = atheria_with(&install.env, args);
    let all = text(&output);
    assert!(output.status.success(), "{case}: {args:?} exited {:?}: {all}", output.status);
    assert!(took < limit(args), "{case}: {args:?} took {took:?}");
    for needle in &install.expect {
        assert!(all.contains(needle), "{case}: {args:?} does not say '{needle}': {all}");
    }
    for forbidden in ["panicked", "backtrace", "RUST_BACKTRACE", "symbol lookup error"] {
        assert!(!all.contains(forbidden), "{case}: {args:?} printed '{forbidden}': {all}");
    }
    all
}

const RUN: &[&str] = &["run", "--grid", "16", "--steps", "2"];

#[test]
fn broken_cuda_installs_fall_back_with_their_cause() {
    let mut first = true;
    for (case, install) in cuda_cases("cli") {
        let auto = assert_survives(case, &install, RUN);
        assert!(auto.contains("running on"), "{case}: {auto}");
        let cuda = assert_survives(case, &install, &[RUN, &["--device", "cuda"]].concat());
        assert!(!cuda.contains("running on cuda"), "{case}: {cuda}");
        assert_survives(case, &install, &["devices"]);
        // The report as text once (the first case), as JSON for every case: each doctor run
        // self-tests the CPU and lavapipe again, which is what makes it slow.
        if first {
            let doctor = assert_survives(case, &install, &["doctor"]);
            assert!(doctor.contains("hint:") && doctor.contains("parity"), "{case}: {doctor}");
            first = false;
        }
        // The JSON names the cause in its own words (`library-mismatch`), checked below.
        let quiet = Install { env: install.env.clone(), expect: vec![] };
        let json = assert_survives(case, &quiet, &["doctor", "--json"]);
        let start = json.find('{').expect("doctor --json prints an object");
        let report: serde_json::Value =
            serde_json::Deserializer::from_str(&json[start..]).into_iter().next().unwrap().unwrap();
        assert_eq!(report["backends"][0]["attempt"]["backend"], "cuda", "{case}");
        assert!(report["backends"][0]["attempt"]["failure"]["cause"].is_string(), "{case}");
        assert!(report["backends"][0]["hint"].is_string(), "{case}");

        let (strict, _) =
            atheria_with(&install.env, &[RUN, &["--device", "cuda", "--strict-device"]].concat());
        let said = text(&strict);
        assert_eq!(strict.status.code(), Some(1), "{case}: {said}");
        let errors: Vec<&str> = said.lines().filter(|line| line.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{case}: {said}");
        assert!(install.expect.iter().all(|needle| errors[0].contains(needle)), "{case}: {said}");
        assert!(!said.contains("panicked"), "{case}: {said}");
    }
}

#[test]
fn a_hanging_driver_costs_the_default_timeout_not_minutes() {
    let lib = cuda_install("stub-hang-default", "cuda_full.c", &["HANG"], false);
    let install = Install { env: vec![library_path(&lib)], expect: vec!["timed out", "20 s"] };
    assert_survives("cuInit hangs, default timeout", &install, RUN);
}

#[test]
fn a_broken_vulkan_driver_is_left_out_or_falls_back() {
    let broken = broken_icd("cli");
    // Alone: wgpu cannot start, and says why.
    let alone = Install {
        env: vec![("VK_ICD_FILENAMES".into(), broken.display().to_string())],
        expect: vec!["library/symbol mismatch", "__nvJitLinkCreate_12_8"],
    };
    for args in [RUN.to_vec(), [RUN, &["--device", "wgpu"]].concat(), vec!["devices"], vec!["doctor"]] {
        assert_survives("broken Vulkan ICD alone", &alone, &args);
    }
    // Beside a working driver: the broken one is left out and wgpu runs on the other.
    let list = format!("{}:{}", broken.display(), lavapipe_manifest().display());
    let beside = Install { env: vec![("VK_ICD_FILENAMES".into(), list)], expect: vec!["leftover_icd.json"] };
    let run =
        assert_survives("broken Vulkan ICD beside lavapipe", &beside, &[RUN, &["--device", "wgpu"]].concat());
    assert!(run.contains("running on wgpu"), "{run}");
    let devices = assert_survives("broken Vulkan ICD beside lavapipe", &beside, &["devices"]);
    assert!(devices.lines().any(|line| line.starts_with("wgpu") && line.contains(" ok ")), "{devices}");
}

/// The in-process probe (for programs that embed the crate without isolation) in a child of
/// this test binary, which is where `LD_LIBRARY_PATH` can take effect.
#[test]
fn the_in_process_probe_survives_what_can_be_survived() {
    if let Ok(request) = std::env::var("ATHERIA_IN_PROCESS_PROBE") {
        let request: DeviceRequest = request.parse().unwrap();
        let selection = select_device(request, &SelectOptions::default()).expect("falls back to the CPU");
        println!("REPORT {}", selection.report.summary().replace('\n', " "));
        return;
    }
    let cases = cuda_cases("in-process");
    let survivable = [
        "undefined symbol in a dependency",
        "cuInit fails and nothing else exists",
        "a missing entry point",
        "no device",
    ];
    let vulkan = Install {
        env: vec![("VK_ICD_FILENAMES".into(), broken_icd("in-process").display().to_string())],
        expect: vec!["library/symbol mismatch"],
    };
    let runs = cases
        .iter()
        .filter(|(case, _)| survivable.contains(case))
        .map(|(case, install)| (*case, install, "cuda"))
        .chain([("broken Vulkan ICD", &vulkan, "wgpu")]);
    for (case, install, request) in runs {
        let env = install.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let output = crate::support::test_in_a_child(
            "broken_drivers::the_in_process_probe_survives_what_can_be_survived",
            env.chain([("ATHERIA_IN_PROCESS_PROBE", request)]),
        );
        let all = text(&output);
        assert!(output.status.success(), "{case}: {all}");
        let report = all
            .lines()
            .find_map(|line| line.split_once("REPORT ").map(|(_, report)| report))
            .unwrap_or_else(|| panic!("{case}: {all}"));
        assert!(report.contains("running on cpu"), "{case}: {report}");
        assert!(install.expect.iter().all(|needle| report.contains(needle)), "{case}: {report}");
    }
}
