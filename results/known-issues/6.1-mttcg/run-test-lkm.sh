#!/bin/bash
# 6.1 under multi-threaded TCG: tests/kernel/test_lkm.py (where the one hang was), run $1
# usage: OUT=DIR run-test-lkm.sh N   (TOOLKIT_LAB_TCG=single for the control runs)
mkdir -p "${OUT:-/tmp/toolkit-mttcg}"
cd "$(dirname "$0")/../../.."
t0=$(date +%s)
TOOLKIT_LAB_TCG=${TOOLKIT_LAB_TCG:-multi} TOOLKIT_LAB_ACCEL=tcg timeout 1500 .venv/bin/toolkit lab run --kernel 6.1 --timeout 1400 -- \
  python -m pytest -m "kernel or core" -p no:cacheprovider tests/kernel/test_lkm.py > ${OUT:-/tmp/toolkit-mttcg}/mt-$1.log 2>&1
echo "run $1: rc=$? $(( $(date +%s) - t0 )) s $(grep -E '[0-9]+ passed' ${OUT:-/tmp/toolkit-mttcg}/mt-$1.log | tail -1)" >> ${OUT:-/tmp/toolkit-mttcg}/mt-summary.txt
