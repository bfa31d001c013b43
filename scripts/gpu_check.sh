#!/usr/bin/env bash
# The GPU check: everything a lent NVIDIA machine should prove, in one command, within 8
# minutes, with no network, in a checkout of the repository (the fixtures are read from its
# tests/fixtures) with the kit scripts/gpu_kit.sh built:
#
#   bash scripts/gpu_check.sh [--dry-run] [--kit DIR] REPORT_DIR
#
# It writes REPORT_DIR/report.json (every stage's exit status and time, the doctor's report,
# the PyTorch parity of every architecture per backend, every bench record) and
# REPORT_DIR/summary.txt (the same, to read), beside each stage's output. It exits 0 only when
# every stage passed. --dry-run runs the same stages here on wgpu and the CPU, smaller, so that
# CI proves the script works (docs/devices.md).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

dry_run=0
kit=.carry/gpu
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --kit) kit="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) out="$1" ;;
    esac
    shift
done
if [ -z "$out" ]; then
    echo "error: give the folder to write the report to (see --help)" >&2
    exit 2
fi
# The kit's default is in the repository; paths given are the caller's.
if [ "$kit" = .carry/gpu ]; then kit=$root/.carry/gpu; fi
if [ ! -f "$kit/kit.tar.xz" ]; then
    echo "error: $kit/kit.tar.xz is missing: build the kit with scripts/gpu_kit.sh first" >&2
    exit 2
fi
kit=$(cd "$kit" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root" || exit 2
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
# A bare machine may lack xz: Python's lzma reads the kit too.
unpack() {
    if command -v xz >/dev/null; then
        tar -C "$unpacked" -xJf "$kit/kit.tar.xz" atheria engine
    else
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
            "$kit/kit.tar.xz" "$unpacked"
    fi
}
if ! unpack; then
    echo "error: $kit/kit.tar.xz does not unpack: build the kit again with scripts/gpu_kit.sh" >&2
    exit 2
fi
bin=$unpacked/atheria
engine=$unpacked/engine
# The carried test binary finds the binary and the fixtures here, not where it was built.
export ATHERIA_TEST_BINARY="$bin" ATHERIA_TEST_ROOT="$PWD"
unset ATHERIA_DEVICE

# Seconds for every stage together, within a lent machine's 10-minute command.
budget=${ATHERIA_GPU_CHECK_BUDGET:-450}
# Every architecture against PyTorch (1 and 20 steps) on each backend that starts, CUDA
# required; device selection; read-backs counted.
tests=(pytorch_reference:: devices:: readbacks::)
if [ "$dry_run" = 1 ]; then
    # The suite just ran all of these here: one of each kind proves the stage works.
    tests=(pytorch_reference::cpu_matches pytorch_reference::cuda_matches devices::cuda_request
        readbacks::metrics_read_back)
    devices=(wgpu cpu)
    # lavapipe compiles a training step's shaders for minutes: training is timed on the CPU.
    train_devices=(cpu)
    # lavapipe runs wgpu on the CPU, about a second a step: the smallest sizes.
    gpu_grids=(16)
    cpu_grids=(16)
    batches=(1 2)
    bench_steps=(--steps 2 --warmup 1)
    parallel=cpu,cpu
    unset ATHERIA_EXPECT_CUDA
else
    devices=(cuda wgpu cpu)
    train_devices=("${devices[@]}")
    gpu_grids=(64 128 256 512 1024)
    # The CPU's figures at the sizes where it finishes within the budget.
    cpu_grids=(64 128 256)
    batches=(1 16)
    bench_steps=(--steps 5 --warmup 2)
    parallel=cuda:0,cuda:0
    export ATHERIA_EXPECT_CUDA=1
fi

: >"$out/stages.tsv"
started=$(date +%s)
deadline=$((started + budget))
# stage NAME SECONDS COMMAND...: runs COMMAND within SECONDS, its stdout in NAME.out and its
# stderr in NAME.err; a line of stages.tsv says how it ended (124: out of time).
stage() {
    local name=$1 limit=$2
    shift 2
    local begin status milliseconds left
    # Every stage ends before the budget does, so the report is always written.
    left=$((deadline - $(date +%s) - 5))
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -lt 5 ]; then
        printf '%s\t"skipped: out of time"\t0\n' "$name" >>"$out/stages.tsv"
        echo "$name: skipped, out of time" >&2
        return
    fi
    begin=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.out" 2>"$out/$name.err"
    status=$?
    milliseconds=$((($(date +%s%N) - begin) / 1000000))
    printf '%s\t%s\t%d.%03d\n' "$name" "$status" $((milliseconds / 1000)) $((milliseconds % 1000)) >>"$out/stages.tsv"
    echo "$name: exit $status in ${milliseconds} ms" >&2
}

stage doctor 120 "$bin" doctor --json
stage doctor-text 60 "$bin" doctor
stage tests 240 "$engine" --test-threads 1 --nocapture "${tests[@]}"
# Data-parallel training before the benches: when time runs short, benches are what is cut.
rm -rf "$out/parallel-run"
stage parallel 120 "$bin" train --devices "$parallel" --episodes 3 --grid 32 --batch 4 --qca-steps 2 \
    --quiet --out "$out/parallel-run"
for mode in step train; do
    for batch in "${batches[@]}"; do
        flags=()
        measured=("${devices[@]}")
        if [ "$mode" = train ]; then flags=(--train) measured=("${train_devices[@]}"); fi
        for device in "${measured[@]}"; do
            grids=("${gpu_grids[@]}")
            if [ "$device" = cpu ]; then grids=("${cpu_grids[@]}"); fi
            stage "bench-$mode-$device-b$batch" 90 "$bin" bench --device "$device" --strict-device \
                --grid "${grids[@]}" --batch "$batch" "${bench_steps[@]}" --json "${flags[@]}"
        done
    done
done

# The tests print `parity ARCH BACKEND one-step E1 N-step EN` (libtest may put it mid-line).
parity_lines() { grep -o 'parity [^ ]* [^ ]* one-step [^ ]* [0-9]*-step [^ ]*' "$out/tests.out"; }

# The report: stages, the doctor's JSON, parity lines and bench records as they were printed.
json_string() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | awk 'BEGIN { ORS = "" } { if (NR > 1) print "\\n"; print }'; }
{
    printf '{\n"dry_run": %s,\n"seconds": %s,\n' "$([ "$dry_run" = 1 ] && echo true || echo false)" \
        "$(($(date +%s) - started))"
    printf '"host": "%s",\n' "$(uname -srm | json_string)"
    printf '"nvidia_smi": "%s",\n' "$(nvidia-smi -L 2>&1 | json_string)"
    printf '"stages": [\n'
    awk -F'\t' '{ printf "%s{\"name\": \"%s\", \"exit\": %s, \"seconds\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3 }' \
        "$out/stages.tsv"
    printf '\n],\n"doctor": '
    if grep -q '^{' "$out/doctor.out"; then cat "$out/doctor.out"; else echo null; fi
    printf ',\n"parity": [\n'
    parity_lines | awk '{ sub(/-step/, "", $6); printf "%s{\"arch\": \"%s\", \"backend\": \"%s\", \"one_step\": %s, \"steps\": %s, \"last_step\": %s}", (NR > 1 ? ",\n" : ""), $2, $3, $5, $6, $7 }'
    printf '\n],\n"bench": [\n'
    cat "$out"/bench-*.out | grep '^{' | paste -sd, -
    printf '],\n"tests": "%s"\n}\n' "$(grep -E '^test .* \.\.\. |^test result' "$out/tests.out" | json_string)"
} >"$out/report.json"

{
    echo "GPU check$([ "$dry_run" = 1 ] && echo ' (dry run)') on $(uname -n), $(date -u +%Y-%m-%dT%H:%MZ)"
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    echo
    printf '%-28s %6s %8s\n' stage exit seconds
    awk -F'\t' '{ printf "%-28s %6s %8s\n", $1, $2, $3 }' "$out/stages.tsv"
    echo
    echo "doctor:"
    sed 's/^/  /' "$out/doctor-text.out" "$out/doctor-text.err"
    echo
    echo "parity against PyTorch (relative L2 error after 1 step and after the last):"
    parity_lines | sed 's/^parity /  /'
    echo
    echo "tests: $(grep '^test result' "$out/tests.out" | tail -1)"
    grep -E '^test .* \.\.\. (FAILED|ignored)' "$out/tests.out" | sed 's/^/  /'
    echo
    echo "bench (ms per step; read-backs per step):"
    cat "$out"/bench-*.out | grep '^{' |
        sed -E 's/.*"backend":"([^"]*)".*"grid":([0-9]+),"batch":([0-9]+),"mode":"([^"]*)","ms_per_step":([0-9.e+-]+).*"readbacks_per_step":([0-9.e+-]+).*/\1 \4 \2 \3 \5 \6/' |
        awk '{ printf "  %-5s %-10s grid %5s batch %3s  %10.3f ms  %s\n", $1, $2, $3, $4, $5, $6 }'
    echo
    echo "data-parallel training on $parallel: $(grep '^trained' "$out/parallel.err" || tail -1 "$out/parallel.err")"
} >"$out/summary.txt"

cat "$out/summary.txt"
if awk -F'\t' '$2 != 0 { bad = 1 } END { exit !bad }' "$out/stages.tsv"; then
    echo "error: a stage failed: see $out/summary.txt and the stage's .err file" >&2
    exit 1
fi
