//! The guarded constructor. On a machine without an NVIDIA driver (CI) CUDA fails to start and
//! these tests check the fallback; on a GPU machine the same tests check that CUDA is selected.

use atheria::backend::{probe_all, select_device, BackendKind, DeviceRequest, FailureCause, SelectOptions};
use atheria::Error;

fn cuda_starts() -> bool {
    probe_all(&SelectOptions::default())[0].failure.is_none()
}

#[test]
fn cuda_request_runs_somewhere_and_says_why() {
    let selection = select_device(DeviceRequest::Cuda { index: 0 }, &SelectOptions::default()).unwrap();
    let report = &selection.report;
    let cuda = &report.attempts[0];
    assert_eq!(cuda.backend, BackendKind::Cuda);
    match &cuda.failure {
        None => {
            assert_eq!(report.selected, Some(BackendKind::Cuda));
            assert!(!report.fell_back());
        }
        Some(failure) => {
            assert!(
                !crate::support::cuda_expected(),
                "ATHERIA_EXPECT_CUDA=1 but CUDA failed: {}",
                failure.summary
            );
            assert_ne!(report.selected, Some(BackendKind::Cuda));
            assert!(report.fell_back());
            // The runner thread's real cause, not the caller's `RecvError`.
            assert!(!failure.summary.contains("RecvError"), "{}", failure.summary);
            assert_ne!(failure.cause, FailureCause::Other, "unclassified: {}", failure.summary);
            let summary = report.summary();
            assert!(summary.contains("requested cuda:0"), "{summary}");
            assert!(summary.contains(&failure.cause.to_string()), "{summary}");
            assert!(summary.lines().count() <= 2, "{summary}");
        }
    }
}

#[test]
fn strict_request_refuses_to_fall_back() {
    let options = SelectOptions { strict: true, ..SelectOptions::default() };
    // No machine has 1000 CUDA devices, so this request fails everywhere.
    match select_device(DeviceRequest::Cuda { index: 999 }, &options) {
        Err(Error::DeviceUnavailable(message)) => {
            assert!(message.contains("strict"), "{message}");
            assert_eq!(message.lines().count(), 1, "{message}");
            assert!(message.contains("cuda:999"), "{message}");
        }
        other => panic!("expected DeviceUnavailable, got {other:?}"),
    }
}

#[test]
fn missing_cuda_device_falls_back_without_strict() {
    let selection = select_device(DeviceRequest::Cuda { index: 999 }, &SelectOptions::default()).unwrap();
    assert!(selection.report.fell_back());
    assert!(selection.report.attempts[0].failure.is_some());
    // The engine still works after a GPU runtime panicked during the probe.
    let device = burn::backend::ndarray::NdArrayDevice::Cpu;
    let tensor = burn::tensor::Tensor::<burn::backend::NdArray, 1>::from_floats([3.0], &device);
    assert_eq!(crate::support::to_vec(tensor * 2.0), vec![6.0]);
}

#[test]
fn auto_prefers_cuda_and_otherwise_never_picks_a_software_adapter() {
    let selection = select_device(DeviceRequest::Auto, &SelectOptions::default()).unwrap();
    let report = &selection.report;
    if cuda_starts() {
        assert_eq!(report.selected, Some(BackendKind::Cuda));
        return;
    }
    let wgpu = report.attempts.iter().find(|a| a.backend == BackendKind::Wgpu).unwrap();
    if report.selected == Some(BackendKind::Wgpu) {
        assert!(!wgpu.device.contains("software"), "{}", wgpu.device);
    } else {
        assert_eq!(report.selected, Some(BackendKind::Cpu));
        assert!(wgpu.failure.is_some());
    }
}

#[test]
fn explicit_wgpu_starts_on_a_software_adapter() {
    // CI installs lavapipe; `--device wgpu` must use it even though `auto` does not.
    let _device = crate::support::wgpu_device();
    let selection = select_device(DeviceRequest::Wgpu, &SelectOptions::default()).unwrap();
    assert_eq!(selection.report.selected, Some(BackendKind::Wgpu));
}

#[test]
fn cpu_request_probes_nothing_else() {
    let selection = select_device(DeviceRequest::Cpu, &SelectOptions::default()).unwrap();
    assert_eq!(selection.report.selected, Some(BackendKind::Cpu));
    assert_eq!(selection.report.attempts.len(), 1);
    assert!(!selection.report.fell_back());
}

/// A program that calls the library (not the command line, which refuses the value at start)
/// learns of an unreadable `ATHERIA_PROBE_TIMEOUT` as an error from the jobs that select a
/// device (`run`, `bench`, `serve` and data-parallel training), instead of a probe with a limit
/// it did not ask for. In a child of this test binary, so that the variable reaches no other
/// test.
#[test]
fn a_bad_probe_timeout_is_an_error_for_library_callers() {
    if std::env::var("ATHERIA_PROBE_TIMEOUT_CHILD").is_ok() {
        let run = atheria::app::run(&atheria::app::RunOptions { steps: 1, ..Default::default() }, &|_| {});
        let bench = atheria::app::bench(
            &atheria::app::BenchOptions {
                model: atheria::io::model_dir::ModelSource::Default,
                devices: vec![DeviceRequest::Cpu],
                grids: vec![8],
                batch: 1,
                steps: 1,
                warmup: 0,
                seed: 0,
                train: false,
                strict_device: false,
            },
            &|_| {},
            &|_| {},
        );
        let scratch = crate::support::scratch("probe-timeout-library");
        let serve = atheria::serve::serve(
            atheria::serve::ServeOptions {
                device: DeviceRequest::Cpu,
                snapshots: scratch.join("snapshots"),
                runs: scratch.join("runs"),
                bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                ..Default::default()
            },
            // A server that accepted the value would serve until a signal: end the child.
            &|_| {
                println!("ACCEPTED serve: it listens");
                std::process::exit(0)
            },
        );
        let parallel_training = atheria::app::train::train(
            &atheria::app::train::TrainOptions {
                // One tiny episode, should the value be accepted.
                start: atheria::app::train::TrainStart::New(atheria::training::TrainConfig {
                    arch: atheria::models::Architecture::Mlp,
                    d_state: 2,
                    hidden: 4,
                    grid: 8,
                    qca_steps: 1,
                    batch: 2,
                    episodes: 1,
                    ..Default::default()
                }),
                out: scratch.join("run"),
                device: DeviceRequest::Cpu,
                strict_device: false,
                progress: false,
                command: "test".into(),
                observer: None,
                parallel: Some(atheria::app::train::ParallelOptions::local(vec![DeviceRequest::Cpu; 2])),
            },
            &|_| {},
        );
        let results = [
            ("run", run.map(|_| ())),
            ("bench", bench.map(|_| ())),
            ("serve", serve.map(|_| ())),
            ("parallel training", parallel_training.map(|_| ())),
        ];
        for (job, result) in results {
            match result {
                Err(Error::InvalidProbeTimeout(message)) => println!("REFUSED {job}: {message}"),
                other => println!("ACCEPTED {job}: {other:?}"),
            }
        }
        return;
    }
    let output = crate::support::test_in_a_child(
        "devices::a_bad_probe_timeout_is_an_error_for_library_callers",
        [("ATHERIA_PROBE_TIMEOUT_CHILD", "1"), ("ATHERIA_PROBE_TIMEOUT", "soon")],
    );
    let all = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{all}{}", String::from_utf8_lossy(&output.stderr));
    for job in ["run", "bench", "serve", "parallel training"] {
        assert!(all.contains(&format!("REFUSED {job}: ATHERIA_PROBE_TIMEOUT=`soon`")), "{job}: {all}");
    }
}
