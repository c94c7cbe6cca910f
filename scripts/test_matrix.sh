#!/usr/bin/env bash
# make test-matrix: one virtual environment per row of test/matrix/ (a distro's Python, numpy,
# OpenCV and ROS 2 wheels), and in each the tests that depend on those versions. Usage:
#   scripts/test_matrix.sh [ROW ...]      (default: every test/matrix/*.txt)
# Venvs are kept under .matrix/ and rebuilt when their row file changes. Exit status 1 if any row fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TESTS=(test/test_conversion.py test/test_engine.py test/test_prepost.py test/test_settings.py
       test/test_model_paths.py test/test_bag_tools.py test/test_bag_errors.py test/test_node_e2e.py
       test/test_reliability_params.py test/test_reliability_lifecycle.py test/test_architecture.py
       test/test_privacy.py test/test_large_frames.py test/test_dds_profile.py
       test/test_foxglove_view.py)

find_python() {  # an installed CPython X.Y that runs: pyenv's newest, else one on PATH (not a pyenv shim)
  local version=$1 candidate
  for candidate in $(ls -d "$HOME"/.pyenv/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V -r) \
                   "$(command -v "python$version" || true)"; do
    if [[ -n "$candidate" ]] && "$candidate" -c 'import venv' 2>/dev/null; then echo "$candidate"; return 0; fi
  done
  return 1
}

rows=("$@")
if [[ ${#rows[@]} -eq 0 ]]; then
  rows=($(ls test/matrix/*.txt | xargs -n1 basename | sed 's/\.txt$//'))
fi
mkdir -p .matrix
summary=()
failed=0
for row in "${rows[@]}"; do
  spec="test/matrix/$row.txt"
  if [[ ! -f "$spec" ]]; then
    echo "test-matrix: no row named $row (rows: $(ls test/matrix/*.txt | xargs -n1 basename | sed 's/\.txt$//' | tr '\n' ' '))" >&2
    exit 2
  fi
  version=$(sed -n 's/^# python: *//p' "$spec" | head -1)
  if ! python=$(find_python "$version"); then
    echo "test-matrix: row $row needs Python $version, which is not installed (pyenv install $version)" >&2
    summary+=("$row: Python $version not installed")
    failed=1
    continue
  fi
  venv=".matrix/$row"
  stamp=$(cat "$spec" $(sed -n 's/^-r \(.*\)/test\/matrix\/\1/p' "$spec") setup.py | sha256sum | cut -c1-16)
  started=$(date +%s)
  if [[ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    if ! { (cd test/matrix && "../../$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$row.txt") &&
           "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .; } > ".matrix/$row.install.log" 2>&1; then
      echo "test-matrix: installing row $row failed; the end of .matrix/$row.install.log:" >&2
      grep -v '^WARNING: Location' ".matrix/$row.install.log" | tail -n 15 >&2
      summary+=("$row: install failed")
      failed=1
      continue
    fi
    echo "$stamp" > "$venv/.installed"
  fi
  installed=$(date +%s)
  versions=$("$venv/bin/python" - <<'PY'
import importlib.metadata as metadata
import sys

import cv2
import numpy
import onnxruntime

print(f'Python {sys.version.split()[0]}, rclpy {metadata.version("ros-rclpy")}, OpenCV {cv2.__version__}, '
      f'numpy {numpy.__version__}, ONNX Runtime {onnxruntime.__version__}')
PY
)
  echo "== $row: $versions"
  if scripts/isolated.sh "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" 2>&1 | tee ".matrix/$row.log" | tail -n 3; then
    result=$(grep -E '^[0-9]+ passed|passed' ".matrix/$row.log" | tail -1)
  else
    # One second run of a failed row, reported as such: a DDS timing flake on a busy 2-core machine
    # shows up in the summary without sinking the run; a real failure fails twice.
    first=$(grep -E '^FAILED|failed' ".matrix/$row.log" | head -3 | tr '\n' ' ')
    cp ".matrix/$row.log" ".matrix/$row.first.log"
    if scripts/isolated.sh "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" > ".matrix/$row.log" 2>&1; then
      result="passed on the second run ($(grep -E 'passed' ".matrix/$row.log" | tail -1)); first run: $first"
    else
      result="FAILED twice: $(grep -E 'failed|error' ".matrix/$row.log" | tail -1)"
      failed=1
    fi
  fi
  summary+=("$row: $versions; install $((installed - started)) s, tests $(( $(date +%s) - installed )) s; $result")
done
echo
echo "test-matrix summary:"
printf '  %s\n' "${summary[@]}"
exit $failed
