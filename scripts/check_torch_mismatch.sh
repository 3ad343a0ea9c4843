#!/usr/bin/env bash
# A compiled svdlora wheel installed next to a torch other than the one it was built for must
# fail clearly: pip reports the unmet torch pin, and `import svdlora` raises an error naming
# the torch it needs -- never an undefined-symbol traceback.
#   scripts/check_torch_mismatch.sh VENV WHEEL_DIR     (VENV holds the other torch; it is
#                                                      left with the mismatched svdlora)
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "$1" && pwd)
wheel=$(ls "$2"/svdlora-*.whl)
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel" || exit 1
need=$(python3 - "$wheel" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    found = re.search(r"^Requires-Dist: torch==([0-9.]+)", z.read(meta).decode(), re.M)
print(found.group(1) if found else "")
PY
)
have=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
echo "wheel requires torch==$need; $VENV has torch $have"
[ -n "$need" ] || { echo "FAIL: the wheel does not pin torch"; exit 1; }
check=$("$VENV/bin/python" -m pip check 2>&1)
echo "pip check: $check"
echo "$check" | grep -q "torch==$need" || { echo "FAIL: pip check does not report the pin"; exit 1; }
err=$(cd "$(mktemp -d)" && "$VENV/bin/python" -c "import svdlora" 2>&1)
status=$?
echo "import svdlora: $(echo "$err" | tail -1)"
[ "$status" != 0 ] || { echo "FAIL: import succeeded"; exit 1; }
echo "$err" | tail -1 | grep -q "MissingExtensionError: svdlora's compiled core was built for torch $need" \
  || { echo "FAIL: unclear error"; exit 1; }
if echo "$err" | grep -qi "undefined symbol"; then echo "FAIL: undefined symbol"; exit 1; fi
echo "torch mismatch check passed"
