//! Pre-checks of the GPU driver libraries, before burn touches them.
//!
//! The dynamic linker binds a library's symbols lazily by default, so a libcuda whose
//! dependency lacks a symbol loads fine and ends the process at its first call ("symbol lookup
//! error", exit 127), which no `catch_unwind` can stop. Opening the same library with immediate
//! binding (`RTLD_NOW`) makes the linker resolve everything up front and report a failure as
//! an error message instead. The CUDA check then resolves the entry points the backend calls
//! and asks the driver what it has; the Vulkan check opens the loader and every installed ICD,
//! and leaves the broken ones out of what wgpu will see.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
use serde::{Deserialize, Serialize};

use super::FailureCause;

/// What a pre-check found: where the library is, what the driver says, and the first failure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DriverInfo {
    /// The library files that were opened, by path.
    pub libraries: Vec<String>,
    /// The driver's version, where it answers (CUDA: `cuDriverGetVersion`, as `12.8`).
    pub version: Option<String>,
    /// Devices the driver reports.
    pub devices: Vec<GpuDevice>,
    /// Vulkan ICD manifests whose library loads.
    pub icds: Vec<String>,
    /// Vulkan ICDs left out because their library cannot load.
    pub broken_icds: Vec<BrokenIcd>,
}

/// One device, as the driver describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The device's name.
    pub name: String,
    /// Total memory in bytes.
    pub memory: u64,
    /// Compute capability (CUDA), as `9.0`.
    pub compute_capability: Option<String>,
}

/// A Vulkan ICD manifest whose library does not load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokenIcd {
    /// The manifest file.
    pub manifest: String,
    /// The library it names.
    pub library: String,
    /// The loader's message.
    pub error: String,
}

/// A pre-check that failed, with the cause and one line to act on.
#[derive(Debug, Clone)]
pub struct DriverProblem {
    /// What kind of failure.
    pub cause: FailureCause,
    /// What failed, in one line.
    pub message: String,
}

impl DriverProblem {
    fn new(cause: FailureCause, message: impl Into<String>) -> Self {
        Self { cause, message: message.into() }
    }
}

/// How the dynamic linker's message for a library that did not open reads.
fn classify_open_error(name: &str, error: &str) -> DriverProblem {
    if error.contains("undefined symbol") || error.contains("version `") {
        DriverProblem::new(
            FailureCause::LibraryMismatch,
            format!("{name} does not load with all its symbols bound: {error}"),
        )
    } else if is_not_found(error) {
        DriverProblem::new(FailureCause::DriverMissing, format!("{name} not found"))
    } else {
        DriverProblem::new(FailureCause::Other, format!("{name} does not load: {error}"))
    }
}

fn is_not_found(error: &str) -> bool {
    error.contains("cannot open shared object") || error.contains("No such file")
}

/// Opens the first of `names` that exists, with immediate binding. `Ok(None)` when none exists;
/// `Err` for one that exists but does not load.
fn open_first(names: &[String]) -> Result<Option<(Library, String)>, DriverProblem> {
    for name in names {
        // SAFETY: opening a library runs its initialisers; these are the driver libraries the
        // backend would load anyway, here with every symbol bound first.
        match unsafe { Library::open(Some(name.as_str()), RTLD_NOW | RTLD_LOCAL) } {
            Ok(library) => return Ok(Some(library_path(library, name))),
            Err(error) => {
                // libloading's message is generic; the linker's own text is its source.
                let text =
                    std::error::Error::source(&error).map_or_else(|| error.to_string(), |s| s.to_string());
                if !is_not_found(&text) {
                    return Err(classify_open_error(name, &text));
                }
            }
        }
    }
    Ok(None)
}

/// The file a loaded library came from (by `dlinfo`), or its name when the system does not say.
fn library_path(library: Library, name: &str) -> (Library, String) {
    /// The head of glibc's `struct link_map` (only these two fields are read).
    #[repr(C)]
    struct LinkMap {
        address: usize,
        name: *const c_char,
    }
    extern "C" {
        fn dlinfo(handle: *mut c_void, request: c_int, info: *mut c_void) -> c_int;
    }
    const RTLD_DI_LINKMAP: c_int = 2;
    let raw = library.into_raw();
    let mut map: *const LinkMap = std::ptr::null();
    // SAFETY: `raw` is a live dlopen handle; RTLD_DI_LINKMAP writes a pointer to its link map.
    let found = unsafe { dlinfo(raw, RTLD_DI_LINKMAP, &mut map as *mut _ as *mut c_void) } == 0;
    let path = if found && !map.is_null() && !unsafe { (*map).name }.is_null() {
        // SAFETY: the link map lives as long as the library; its name is a C string.
        unsafe { CStr::from_ptr((*map).name) }.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    // SAFETY: `raw` came from `into_raw` above and is handed back exactly once.
    let library = unsafe { Library::from_raw(raw) };
    (library, if path.is_empty() { name.to_string() } else { path })
}

/// The names cudarc tries for a CUDA library, in its order.
fn cuda_library_names(stem: &str) -> Vec<String> {
    ["", ".13", ".12", ".11", ".1"].iter().map(|suffix| format!("lib{stem}.so{suffix}")).collect()
}

/// The driver entry points the CUDA backend calls while starting and running a kernel.
const CUDA_ENTRY_POINTS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGet",
    "cuDeviceGetCount",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuCtxSetCurrent",
    "cuStreamCreate",
    "cuMemAlloc_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuLaunchKernel",
];

/// The meaning of the CUDA driver's commonest error codes.
pub fn cuda_error_name(code: i32) -> (&'static str, &'static str) {
    match code {
        1 => ("CUDA_ERROR_INVALID_VALUE", "an invalid argument"),
        2 => ("CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
        3 => ("CUDA_ERROR_NOT_INITIALIZED", "the driver is not initialised"),
        4 => ("CUDA_ERROR_DEINITIALIZED", "the driver is shutting down"),
        34 => ("CUDA_ERROR_STUB_LIBRARY", "this libcuda is the toolkit's stub, not the real driver"),
        35 => ("CUDA_ERROR_INSUFFICIENT_DRIVER", "the installed driver is older than the CUDA runtime"),
        36 => ("CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER", "the call needs a newer driver"),
        46 => ("CUDA_ERROR_DEVICES_UNAVAILABLE", "every device is busy or unavailable"),
        100 => ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"),
        101 => ("CUDA_ERROR_INVALID_DEVICE", "the device index is out of range"),
        222 => ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "the driver is too old for the compiled kernels"),
        304 => ("CUDA_ERROR_OPERATING_SYSTEM", "an operating-system call failed"),
        802 => ("CUDA_ERROR_SYSTEM_NOT_READY", "the system is not ready (is the fabric manager running?)"),
        803 => (
            "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
            "the kernel module and the user-space driver differ in version",
        ),
        804 => (
            "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
            "forward compatibility is not supported on this device",
        ),
        999 => ("CUDA_ERROR_UNKNOWN", "an unknown error"),
        _ => ("CUDA error", "see the CUDA driver API's list of error codes"),
    }
}

fn cuda_init_cause(code: i32) -> FailureCause {
    match code {
        100 | 101 | 46 => FailureCause::NoDevice,
        35 | 36 | 222 | 803 | 804 => FailureCause::DriverTooOld,
        2 => FailureCause::OutOfMemory,
        34 => FailureCause::DriverMissing,
        _ => FailureCause::InitError,
    }
}

type CuInit = unsafe extern "C" fn(u32) -> c_int;
type CuDriverGetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;

/// Checks libcuda and NVRTC with every symbol bound, resolves the entry points, initialises the
/// driver and asks it for its version and devices. `index` is the device that will be used.
pub fn check_cuda(index: usize) -> (DriverInfo, Result<(), DriverProblem>) {
    let mut info = DriverInfo::default();
    let result = check_cuda_into(index, &mut info);
    (info, result)
}

fn check_cuda_into(index: usize, info: &mut DriverInfo) -> Result<(), DriverProblem> {
    let (cuda, path) = open_first(&cuda_library_names("cuda"))?.ok_or_else(|| {
        DriverProblem::new(
            FailureCause::DriverMissing,
            "libcuda.so (the NVIDIA driver) not found on the library path",
        )
    })?;
    info.libraries.push(path.clone());
    // A missing entry point is reported after cuInit has had its say: a driver that refuses
    // to start is better described by its error code.
    let missing = CUDA_ENTRY_POINTS.iter().find(|name| {
        let symbol = format!("{name}\0");
        // SAFETY: only the symbol's presence is checked; it is not called.
        unsafe { cuda.get::<*const c_void>(symbol.as_bytes()) }.is_err()
    });
    let lacks = |name: &str| {
        DriverProblem::new(
            FailureCause::LibraryMismatch,
            format!("{path} lacks the entry point {name}: it is not a complete CUDA driver"),
        )
    };
    // SAFETY: each symbol is a CUDA driver API function with the declared signature (the
    // driver API is C and stable); the library stays loaded while they are used.
    unsafe {
        let init: Symbol<CuInit> = symbol(&cuda, "cuInit").map_err(|_| lacks("cuInit"))?;
        let code = init(0);
        if code != 0 {
            let (name, meaning) = cuda_error_name(code);
            return Err(DriverProblem::new(
                cuda_init_cause(code),
                format!("cuInit failed with {code} {name}: {meaning}"),
            ));
        }
        if let Some(name) = missing {
            return Err(lacks(name));
        }
        let version: Symbol<CuDriverGetVersion> = symbol(&cuda, "cuDriverGetVersion")?;
        let mut value = 0;
        if version(&mut value) == 0 {
            info.version = Some(format!("{}.{}", value / 1000, (value % 1000) / 10));
        }
        let count: Symbol<CuDeviceGetCount> = symbol(&cuda, "cuDeviceGetCount")?;
        let mut devices = 0;
        let code = count(&mut devices);
        if code != 0 {
            let (name, meaning) = cuda_error_name(code);
            return Err(DriverProblem::new(
                cuda_init_cause(code),
                format!("cuDeviceGetCount failed with {code} {name}: {meaning}"),
            ));
        }
        let get: Symbol<CuDeviceGet> = symbol(&cuda, "cuDeviceGet")?;
        let get_name: Symbol<CuDeviceGetName> = symbol(&cuda, "cuDeviceGetName")?;
        let total: Symbol<CuDeviceTotalMem> = symbol(&cuda, "cuDeviceTotalMem_v2")?;
        let attribute: Symbol<CuDeviceGetAttribute> = symbol(&cuda, "cuDeviceGetAttribute")?;
        for ordinal in 0..devices.max(0) {
            let mut device = 0;
            if get(&mut device, ordinal) != 0 {
                continue;
            }
            let mut buffer = [0 as c_char; 256];
            let name = if get_name(buffer.as_mut_ptr(), 255, device) == 0 {
                CStr::from_ptr(buffer.as_ptr()).to_string_lossy().into_owned()
            } else {
                format!("device {ordinal}")
            };
            let mut memory = 0usize;
            let _ = total(&mut memory, device);
            let (mut major, mut minor) = (0, 0);
            // 75 and 76: CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR.
            let capability = (attribute(&mut major, 75, device) == 0
                && attribute(&mut minor, 76, device) == 0)
                .then(|| format!("{major}.{minor}"));
            info.devices.push(GpuDevice { name, memory: memory as u64, compute_capability: capability });
        }
        if devices <= 0 {
            return Err(DriverProblem::new(FailureCause::NoDevice, "the driver reports no CUDA device"));
        }
        if index >= devices as usize {
            return Err(DriverProblem::new(
                FailureCause::NoDevice,
                format!("cuda:{index} requested, the driver reports {devices} device(s)"),
            ));
        }
    }
    let (_nvrtc, nvrtc_path) = open_first(&cuda_library_names("nvrtc"))?.ok_or_else(|| {
        DriverProblem::new(
            FailureCause::NvrtcMissing,
            "libnvrtc.so (CUDA's runtime compiler, which compiles the kernels) not found: install the CUDA toolkit's nvrtc",
        )
    })?;
    info.libraries.push(nvrtc_path);
    Ok(())
}

unsafe fn symbol<T>(library: &Library, name: &str) -> Result<Symbol<T>, DriverProblem> {
    let bytes = format!("{name}\0");
    // SAFETY: the caller states the symbol's type.
    unsafe { library.get::<T>(bytes.as_bytes()) }.map_err(|_| {
        DriverProblem::new(FailureCause::LibraryMismatch, format!("libcuda lacks the entry point {name}"))
    })
}

/// The Vulkan ICD manifests the loader would read: `VK_DRIVER_FILES` or `VK_ICD_FILENAMES`
/// when set, otherwise the JSON files of the standard directories.
fn icd_manifests() -> Vec<PathBuf> {
    for variable in ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"] {
        if let Ok(list) = std::env::var(variable) {
            if !list.trim().is_empty() {
                return list.split(':').filter(|part| !part.is_empty()).map(PathBuf::from).collect();
            }
        }
    }
    let mut dirs: Vec<PathBuf> = vec!["/etc/vulkan/icd.d".into()];
    let data = std::env::var("XDG_DATA_DIRS").unwrap_or_else(|_| "/usr/local/share:/usr/share".into());
    dirs.extend(data.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join("vulkan/icd.d")));
    let mut found = Vec::new();
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect();
            files.sort();
            found.extend(files);
        }
    }
    found
}

/// The library a manifest names, resolved against the manifest's folder when relative.
fn icd_library(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let library = json.get("ICD")?.get("library_path")?.as_str()?.to_string();
    if library.contains('/') && !library.starts_with('/') {
        return manifest.parent().map(|dir| dir.join(&library).to_string_lossy().into_owned());
    }
    Some(library)
}

/// Checks the Vulkan loader and every ICD with all symbols bound. Broken ICDs are listed in
/// the info; when some ICDs work, `VK_DRIVER_FILES`/`VK_ICD_FILENAMES` are set to those alone
/// (by [`quarantine_broken_icds`]) so that the loader never calls into a broken one.
pub fn check_vulkan() -> (DriverInfo, Result<Vec<PathBuf>, DriverProblem>) {
    let mut info = DriverInfo::default();
    let loader = match open_first(&["libvulkan.so.1".to_string(), "libvulkan.so".to_string()]) {
        Ok(Some((_, path))) => path,
        Ok(None) => {
            let problem =
                DriverProblem::new(FailureCause::DriverMissing, "the Vulkan loader libvulkan.so.1 not found");
            return (info, Err(problem));
        }
        Err(problem) => return (info, Err(problem)),
    };
    info.libraries.push(loader);
    let mut working = Vec::new();
    for manifest in icd_manifests() {
        let Some(library) = icd_library(&manifest) else {
            continue;
        };
        match open_first(std::slice::from_ref(&library)) {
            Ok(Some((_, path))) => {
                info.libraries.push(path);
                working.push(manifest);
            }
            Ok(None) => info.broken_icds.push(BrokenIcd {
                manifest: manifest.display().to_string(),
                library: library.clone(),
                error: "library not found".into(),
            }),
            Err(problem) => info.broken_icds.push(BrokenIcd {
                manifest: manifest.display().to_string(),
                library: library.clone(),
                error: problem.message,
            }),
        }
    }
    if working.is_empty() {
        let problem = match info.broken_icds.first() {
            Some(broken) => DriverProblem::new(
                FailureCause::LibraryMismatch,
                format!("every Vulkan driver is broken: {} ({})", broken.library, broken.error),
            ),
            None => {
                DriverProblem::new(FailureCause::DriverMissing, "no Vulkan driver (ICD manifest) installed")
            }
        };
        return (info, Err(problem));
    }
    (info, Ok(working))
}

/// Points the Vulkan loader at the working ICDs only. Call before any thread reads the
/// environment (the probes run before the engine starts its threads).
pub fn quarantine_broken_icds(working: &[PathBuf], broken: &[BrokenIcd]) {
    for icd in broken {
        tracing::warn!("left out the broken Vulkan driver {} ({}): {}", icd.manifest, icd.library, icd.error);
    }
    let list = working.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    for variable in ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"] {
        std::env::set_var(variable, &list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_are_classified_from_the_linker_message() {
        let mismatch = classify_open_error(
            "libcuda.so.1",
            "libcusparse.so.12: undefined symbol: __nvJitLinkCreate_12_8, version libnvJitLink.so.12",
        );
        assert_eq!(mismatch.cause, FailureCause::LibraryMismatch);
        assert!(mismatch.message.contains("__nvJitLinkCreate_12_8"), "{}", mismatch.message);
        let missing = classify_open_error(
            "libcuda.so",
            "libcuda.so: cannot open shared object file: No such file or directory",
        );
        assert_eq!(missing.cause, FailureCause::DriverMissing);
    }

    #[test]
    fn cuda_codes_have_names_and_causes() {
        assert_eq!(cuda_error_name(35).0, "CUDA_ERROR_INSUFFICIENT_DRIVER");
        assert_eq!(cuda_error_name(100).0, "CUDA_ERROR_NO_DEVICE");
        assert_eq!(cuda_init_cause(100), FailureCause::NoDevice);
        assert_eq!(cuda_init_cause(35), FailureCause::DriverTooOld);
        assert_eq!(cuda_init_cause(3), FailureCause::InitError);
    }

    #[test]
    fn a_library_that_exists_reports_its_path() {
        let (_, path) = open_first(&["libc.so.6".to_string()]).unwrap().expect("libc loads");
        assert!(path.starts_with('/') && path.contains("libc"), "{path}");
        assert!(open_first(&["libatheria-none.so".to_string()]).unwrap().is_none());
    }
}
