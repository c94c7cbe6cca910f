#!/usr/bin/env bash
# Issue #16's one prepared GPU run (make bench-gpu): set up, run the gpu tests, measure.
#
# On a fresh GPU machine it makes a venv over the machine's python3 that also sees that python's
# own packages (torch, onnx, numpy, OpenCV), installs into it the wheels carried in .whl/ (see
# --fetch-wheels) and any split wheel reassembled from /tmp/seg_node_wheels, then, where a package
# registry is reachable, what is still missing: onnxruntime-gpu[cuda,cudnn] (CUDA 13, cuDNN 9),
# tensorrt-cu13-libs 10.x (onnxruntime-gpu 1.31's TensorRT provider links libnvinfer.so.10, so
# not TensorRT 11) and the ROS 2 wheels. Then `pytest` on the gpu tests, then bench/gpu_bench.py.
# Nothing stops the run: a failed install or test is logged and the run goes on, and a provider
# that cannot run is reported as unavailable.
#
# Results go to $GPU_BENCH_OUT, else $OUT (the device tool's folder), else out/gpu: gpu.log,
# gpu_bench.json, gpu_bench.md and pytest_gpu.xml. The run stops itself after GPU_BENCH_LIMIT_S
# (450 s, installs included); the benchmark plans its steps to end by GPU_BENCH_BUDGET_S (420 s).
#
#   bash bench/gpu.sh                        # the GPU run
#   GPU_BENCH_DRY_RUN=1 bash bench/gpu.sh    # CPU-only check of the whole script: .venv, toy sizes
#   bash bench/gpu.sh --fetch-wheels         # here, with PyPI: the Python 3.12 wheels to carry, in .whl/
#   bash bench/gpu.sh --fetch-ort-parts      # here: onnxruntime-gpu split into .ortpart1..N/ (see README)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here" || exit 1
T0=$(date +%s)
export GPU_BENCH_T0=$T0
export ORT_DISABLE_TELEMETRY=1  # before any Python here imports onnxruntime (importing seg_node sets it too)
export PYTHONUNBUFFERED=1

ORT_GPU='onnxruntime-gpu[cuda,cudnn]==1.31.1'
ORT_GPU_WHEEL='onnxruntime-gpu==1.31.1'
TRT_LIBS='tensorrt-cu13-libs==10.16.1.11'
# The node's ROS 2 runtime (setup.py's pypi extra, without the packages the GPU image has) and
# everything they need at run time (rosidl-generator-py too: message modules import their type
# support through it); the other build-time rosidl generators are left out.
ROS_WHEELS=(
  ros-action-msgs==2.3.0 ros-ament-index-cpp==1.11.0 ros-ament-index-python==1.11.0 ros-builtin-interfaces==2.3.0
  ros-diagnostic-msgs==5.5.1 ros-fastcdr==2.3.3 ros-fastdds==3.2.3 ros-foonathan-memory-vendor==1.3.1
  ros-geometry-msgs==5.5.1 ros-libyaml-vendor==1.7.1 ros-lifecycle-msgs==2.3.0 ros-rcl==10.1.3
  ros-rcl-action==10.1.3 ros-rcl-interfaces==2.3.0 ros-rcl-lifecycle==10.1.3 ros-rcl-logging-interface==3.2.3
  ros-rcl-logging-spdlog==3.2.3 ros-rcl-yaml-param-parser==10.1.3 ros-rclpy==9.1.2 ros-rcpputils==2.13.5
  ros-rcutils==6.9.8 ros-rmw==7.8.2 ros-rmw-dds-common==4.0.0 ros-rmw-fastrtps-cpp==9.3.3
  ros-rmw-fastrtps-shared-cpp==9.3.3 ros-rmw-implementation==3.0.4 ros-rmw-security-common==7.8.2
  ros-rosgraph-msgs==2.3.0 ros-rosidl-core-runtime==0.3.1 ros-rosidl-default-runtime==1.7.1
  ros-rosidl-dynamic-typesupport==0.3.1 ros-rosidl-dynamic-typesupport-fastrtps==0.4.1
  ros-rosidl-generator-py==0.24.2 ros-rosidl-parser==4.9.5
  ros-rosidl-runtime-c==4.9.5 ros-rosidl-runtime-cpp==4.9.5 ros-rosidl-typesupport-c==3.3.3
  ros-rosidl-typesupport-cpp==3.3.3 ros-rosidl-typesupport-fastrtps-c==3.8.1
  ros-rosidl-typesupport-fastrtps-cpp==3.8.1 ros-rosidl-typesupport-interface==4.9.5
  ros-rosidl-typesupport-introspection-c==4.9.5 ros-rosidl-typesupport-introspection-cpp==4.9.5
  ros-rpyutils==0.6.3 ros-sensor-msgs==5.5.1 ros-service-msgs==2.3.0 ros-spdlog-vendor==1.7.0
  ros-std-msgs==5.5.1 ros-tracetools==8.6.0 ros-type-description-interfaces==2.3.0
  ros-unique-identifier-msgs==2.7.0 ros-wheels-bootstrapper==0.1.2
  rosbags==0.11.9 rosbags-image==0.10.4 apsw==3.54.1.0 backports.zstd==1.8.0 lz4==4.4.5 ruamel.yaml==0.19.1
)
# The GPU machine's python3 is 3.12 on x86-64 (see the device notes); pip matches each platform tag exactly.
PLATFORM_ARGS=(--only-binary=:all: --python-version 3.12 --implementation cp)
for tag in manylinux_2_{17,27,28,31,34,35}_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORM_ARGS+=(--platform "$tag")
done

exclude() {  # keep a carried folder out of git (the device tool carries it only when named)
  grep -qx "/$1/" .git/info/exclude 2>/dev/null || echo "/$1/" >> .git/info/exclude
}

case "${1:-}" in
  --fetch-wheels)
    exclude .whl
    python3 -m pip download -q --no-deps "${PLATFORM_ARGS[@]}" -d .whl "${ROS_WHEELS[@]}" || exit 1
    du -sh .whl
    exit 0 ;;
  --fetch-ort-parts)
    # onnxruntime-gpu is ~255 MB, over one call's 64 MiB: four 60 MiB parts, each carried by a call
    # of its own and copied to /tmp/seg_node_wheels on a machine kept warm, and a small fifth one
    # that travels with .whl/ in the run itself (README, "Execution providers").
    rm -rf .ortpart* /tmp/seg_node_ort && mkdir -p /tmp/seg_node_ort
    python3 -m pip download -q --no-deps "${PLATFORM_ARGS[@]}" -d /tmp/seg_node_ort "$ORT_GPU_WHEEL" || exit 1
    wheel=$(ls /tmp/seg_node_ort/*.whl)
    (cd /tmp/seg_node_ort && sha256sum "$(basename "$wheel")" > "$(basename "$wheel").sha256"
     split -b 60M -d -a 1 "$(basename "$wheel")" "$(basename "$wheel").part-")
    n=0
    for part in /tmp/seg_node_ort/*.part-*; do
      n=$((n + 1)); exclude ".ortpart$n"; mkdir -p ".ortpart$n"; mv "$part" ".ortpart$n/"
    done
    cp /tmp/seg_node_ort/*.sha256 .ortpart1/
    du -sh .ortpart*
    exit 0 ;;
esac

DRY=${GPU_BENCH_DRY_RUN:-0}
OUT_DIR=${GPU_BENCH_OUT:-${OUT:-$here/out/gpu}}
WHEELS=${GPU_BENCH_WHEELS:-$here/.whl}
PARTS=${GPU_BENCH_PARTS:-/tmp/seg_node_wheels}
VENV=${GPU_BENCH_VENV:-/tmp/seg_node_gpu_venv}
LIMIT=${GPU_BENCH_LIMIT_S:-$([[ $DRY == 1 ]] && echo 1800 || echo 450)}  # a dry run on 2 cores is slower
BUDGET=${GPU_BENCH_BUDGET_S:-420}
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu.log") 2>&1
step() { echo "[gpu.sh +$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }

# --- Python: the checkout's .venv for a dry run, else a venv over the machine's python3 ----------
if [[ -n ${GPU_BENCH_PYTHON:-} ]]; then
  PY=$GPU_BENCH_PYTHON
elif [[ $DRY == 1 && -z ${GPU_BENCH_FRESH_VENV:-} && -x $here/.venv/bin/python ]]; then
  PY=$here/.venv/bin/python
else
  BASE=${GPU_BENCH_BASE_PYTHON:-python3}
  base_site=$("$BASE" -c 'import site; print(site.getsitepackages()[0])')
  step "venv $VENV over $("$BASE" -V 2>&1) ($base_site)"
  if [[ ! -x $VENV/bin/python ]]; then
    "$BASE" -m venv --without-pip "$VENV" || step "could not make the venv"
    # The machine's python3 is itself a venv (/opt/torch/.venv): --system-site-packages would not
    # reach its torch, so its site-packages is added behind ours (our onnxruntime-gpu wins).
    venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "import site; site.addsitedir('$base_site')" > "$venv_site/zz_seg_node_base_site.pth"
  fi
  PY=$VENV/bin/python
  # No venv module there: install into the machine's python3 itself (the machine is thrown away).
  [[ -x $PY ]] || { step "no venv: using $BASE itself"; PY=$BASE; }
  # Split wheels carried over several calls (--fetch-ort-parts): the parts copied to $PARTS by
  # earlier calls on this warm machine plus any .ortpart*/ carried now; join, check, install.
  mkdir -p "$PARTS"
  for d in "$here"/.ortpart*/; do [[ -d $d ]] && cp -n "$d"* "$PARTS"/; done
  for first in "$PARTS"/*.whl.part-0 "$WHEELS"/*.whl.part-0; do
    [[ -e $first ]] || continue
    whl="$PARTS/$(basename "${first%.part-0}")"
    cat "${first%-0}"-* > "$whl"
    if [[ -e $whl.sha256 ]] && ! (cd "$PARTS" && sha256sum -c --status "$(basename "$whl").sha256"); then
      step "$(basename "$whl"): parts incomplete or corrupt, not installed"; rm -f "$whl"
    fi
  done
  shopt -s nullglob
  carried=("$WHEELS"/*.whl "$PARTS"/*.whl)
  shopt -u nullglob
  if ((${#carried[@]})); then
    step "installing ${#carried[@]} carried wheels"
    PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --no-index --no-deps --no-compile \
      --disable-pip-version-check "${carried[@]}" || step "carried wheels: install failed (going on)"
  fi
  # Whatever is still missing, from a registry when one answers (none does on some machines).
  missing=()
  "$PY" -c 'import rclpy' 2>/dev/null || missing+=("${ROS_WHEELS[@]}")
  "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' \
    2>/dev/null || missing+=("$ORT_GPU")
  "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorrt_libs") is None)' 2>/dev/null \
    || missing+=("$TRT_LIBS")
  if ((${#missing[@]})) && [[ ${GPU_BENCH_OFFLINE:-0} != 1 ]]; then
    if timeout 20 "$PY" -m pip index versions onnxruntime-gpu >/dev/null 2>&1; then
      step "installing from the registry: ${missing[*]:0:3} ..."
      for spec in "${missing[@]}"; do
        timeout $(( $(left) > 300 ? $(left) - 300 : 10 )) "$PY" -m pip install -q --timeout 15 --retries 1 \
          --disable-pip-version-check ${GPU_BENCH_PIP_ARGS:-} "$spec" >/dev/null 2>&1 \
          || step "$spec: not installed (going on without it)"
      done
    else
      step "no package registry answers: going on without ${#missing[@]} missing package(s)"
    fi
  fi
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# CUDA, cuDNN (the machine's torch brought them, in ITS site-packages, where onnxruntime-gpu's
# preload in our venv does not look) and TensorRT (tensorrt-cu13-libs, whose builder loads helper
# libraries by name) live in site-packages folders: put them on the loader's path for every
# process of the run, the node's included.
gpu_libs=$("$PY" -c '
import glob, os, sys
dirs = [d for p in sys.path if os.path.isdir(p) for d in glob.glob(os.path.join(p, "nvidia", "*", "lib"))
        + glob.glob(os.path.join(p, "tensorrt_libs"))]
print(":".join(dict.fromkeys(dirs)))' 2>/dev/null)
[[ -n $gpu_libs ]] && export LD_LIBRARY_PATH="$gpu_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# scripts/isolated.sh needs `ip` for its private network namespace; without it, DDS still stays
# on loopback (localhost discovery and the project's Fast DDS profile).
command -v ip >/dev/null || export SEG_NODE_IN_NETNS=1

step "environment ($PY)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" - <<'EOF'
import importlib.metadata as m
import seg_node  # noqa: F401 - first: telemetry off
import onnxruntime as ort
from seg_node.runtime.engine import usable_providers
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return 'absent'
print({n: v(n) for n in ('onnxruntime', 'onnxruntime-gpu', 'tensorrt-cu13-libs', 'torch', 'onnx', 'numpy',
                         'opencv-python-headless', 'ros-rclpy', 'pytest')})
print('onnxruntime', ort.__version__, 'built with', ort.get_available_providers())
print('seg_node can run', usable_providers(['tensorrt', 'cuda', 'cpu']))
EOF

step "gpu tests"
timeout -k 10 $(( $(left) > 200 ? 180 : 60 )) scripts/isolated.sh "$PY" -m pytest -q -rs -p no:cacheprovider \
  --junitxml "$OUT_DIR/pytest_gpu.xml" test/test_gpu.py test/test_engine_providers.py \
  || step "gpu tests: exit status $? (see above)"

step "benchmark ($(left) s left)"
dry=()
[[ $DRY == 1 ]] && dry=(--dry-run)
timeout -s INT -k 15 "$(( $(left) > 30 ? $(left) : 30 ))" scripts/isolated.sh "$PY" -m bench.gpu_bench --out "$OUT_DIR" \
  --budget-s "$BUDGET" "${dry[@]}" || step "benchmark: exit status $?"

step "done"
[[ -f $OUT_DIR/gpu_bench.md ]] && cat "$OUT_DIR/gpu_bench.md"
ls -la "$OUT_DIR"
[[ -f $OUT_DIR/gpu_bench.json ]]
